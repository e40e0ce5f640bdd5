//! What a WebSocket send frame costs the server to decode: the binary frame
//! (`sotto_api::frame`, what the server takes) against the same datagram
//! in a JSON text frame with base64 (what it would take had sends been JSON
//! like acks), and what each costs the device to build. Datagram sizes: the
//! load generator's 256-byte body (a 760-byte datagram), and 64 KiB.
//!
//!     cargo bench -p sotto-api --bench send_frame

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use serde::{Deserialize, Serialize};
use sotto_api::{b64, frame};

#[derive(Serialize, Deserialize)]
struct JsonSend {
    #[serde(rename = "type")]
    kind: String,
    req: u64,
    datagram: String,
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("send_frame");
    for size in [760usize, 64 * 1024] {
        let datagram: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let binary = frame::encode_send(7, &datagram);
        let json = serde_json::to_string(&JsonSend {
            kind: "send".into(),
            req: 7,
            datagram: b64::encode(&datagram),
        })
        .unwrap();
        g.bench_with_input(BenchmarkId::new("decode_binary", size), &binary, |b, f| {
            b.iter(|| match frame::decode(black_box(f)) {
                Ok(frame::DeviceFrame::Send { req, datagram }) => (req, datagram.to_vec()),
                Err(e) => panic!("{e}"),
            })
        });
        g.bench_with_input(BenchmarkId::new("decode_json", size), &json, |b, f| {
            b.iter(|| {
                let s: JsonSend = serde_json::from_str(black_box(f)).unwrap();
                (s.req, b64::decode(&s.datagram).unwrap())
            })
        });
        g.bench_with_input(
            BenchmarkId::new("encode_binary", size),
            &datagram,
            |b, d| b.iter(|| frame::encode_send(7, black_box(d))),
        );
        g.bench_with_input(BenchmarkId::new("encode_json", size), &datagram, |b, d| {
            b.iter(|| {
                serde_json::to_string(&JsonSend {
                    kind: "send".into(),
                    req: 7,
                    datagram: b64::encode(black_box(d)),
                })
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
