//! What one relayed message costs the SQLite server store: a send to one
//! device (`enqueue_with`) and its acknowledgement (`ack_with`), as the
//! relay scenario of sotto-loadgen makes them (4 senders, 100 recipient
//! users of one device each, 256-byte datagrams, retention 0), with many
//! in flight so that group commit fills its batches as at saturation.
//! The figure is wall time per message on the writer thread, fsyncs
//! included (one per batch), in a temp directory on the disk under
//! `$TMPDIR`.
//!
//!     cargo bench -p sotto-store --bench server_store

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sotto_store::server::*;

const SENDERS: u32 = 4;
const RECIPIENTS: u32 = 100;
/// Messages in flight per round (as many as the writer batches at most).
const IN_FLIGHT: u64 = 512;
const QUOTA: MailboxQuota = MailboxQuota {
    device_bytes: 64 << 20,
    user_bytes: 256 << 20,
};

fn id(n: u32, tag: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[31] = tag;
    b
}

fn register(s: &SqliteStore, n: u32) {
    let d = DeviceId(id(n, 0xd0));
    s.register(
        NewUser {
            username_hash: id(n, 0x5a),
            user: UserPublic(id(n, 0xa0)),
            device: NewDevice {
                device: d,
                cert: d.0.to_vec(),
                prekeys: Vec::new(),
                reserve: b"reserve".to_vec(),
                reserve_id: 1,
            },
        },
        1_000,
    )
    .unwrap();
}

fn relay(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    for n in 0..SENDERS + RECIPIENTS {
        register(&s, n);
    }
    let mut counter = 0u64;
    // Deliveries of the previous round, acknowledged during the next one:
    // sends and acks share batches, as in the relay.
    let mut unacked: Vec<Delivery> = Vec::new();
    let mut g = c.benchmark_group("sqlite_relay");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("enqueue_ack_1_recipient", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(IN_FLIGHT);
                left -= n;
                let start = Instant::now();
                let (sent_tx, sent) = mpsc::channel();
                let (acked_tx, acked) = mpsc::channel();
                let acks = std::mem::take(&mut unacked);
                for i in 0..n as usize {
                    counter += 1;
                    let from = DeviceId(id((counter % SENDERS as u64) as u32, 0xd0));
                    let to = id(SENDERS + (counter % RECIPIENTS as u64) as u32, 0xd0);
                    // distinct datagrams (the digest is unique)
                    let mut datagram = vec![0x5u8; 256];
                    datagram[..8].copy_from_slice(&counter.to_be_bytes());
                    let tx = sent_tx.clone();
                    s.enqueue_with(
                        &from,
                        &[DeviceId(to)],
                        datagram,
                        counter,
                        &QUOTA,
                        None,
                        Box::new(move |r| tx.send(r.unwrap()).unwrap()),
                    );
                    if let Some(d) = acks.get(i) {
                        let tx = acked_tx.clone();
                        s.ack_with(
                            &d.device,
                            &[d.seq],
                            counter,
                            0,
                            Box::new(move |r| tx.send(r.unwrap()).unwrap()),
                        );
                    }
                }
                for _ in 0..n {
                    unacked.push(sent.recv().unwrap().deliveries[0]);
                }
                for _ in 0..acks.len().min(n as usize) {
                    assert_eq!(acked.recv().unwrap(), 1);
                }
                // a shorter round than the last: the rest waits
                unacked.extend_from_slice(&acks[(n as usize).min(acks.len())..]);
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
