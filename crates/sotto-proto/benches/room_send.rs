//! Sending one message to a room of 10, 100 and 1 000 members with two
//! devices each (20, 200, 2 000 recipient devices), sessions established:
//! `RoomLog::post` (sign the entry, apply it to the sender's own log),
//! encoding the `RoomWire::Entry`, and one `Device::seal_with_key` to every
//! member device, as `sotto room send` does before posting.
//!
//!     cargo bench -p sotto-proto --bench room_send -- --measurement-time 3
//!
//! Times are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) on
//! Linux; set `SOTTO_BENCH_WALL=1` for wall-clock time.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand_core::OsRng;
use sotto_proto::room::*;
use sotto_proto::*;

use common::iter;

const MEMBERS: [usize; 3] = [10, 100, 1000];
const T0: u64 = 1_700_000_000_000;

fn payload(sender: &UserPublic, group: &GroupId, message_id: [u8; 16], body: Vec<u8>) -> Payload {
    Payload {
        message_id,
        conversation: group.0,
        sender: *sender,
        sent_at: T0,
        ttl: 86_400,
        content_type: content::ROOM_CONTROL,
        body,
    }
}

/// alice's device, a room of alice and `n` members with two devices each,
/// and established sessions from alice to all `2n` devices (each opened a
/// first datagram and answered, so alice's entries carry no init).
fn world(n: usize) -> (UserKey, Device, RoomLog, Vec<DeviceId>) {
    let rng = &mut OsRng;
    let alice = UserKey::generate(rng);
    let key = DeviceKey::generate(rng);
    let cert = alice.certify(&key.public_keys(), 1);
    let mut a = Device::new(key, cert).unwrap();
    let mut devices = Vec::with_capacity(2 * n);
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let user = UserKey::generate(rng);
        let mut name = [0u8; 32];
        name[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        members.push(Member {
            user: user.public(),
            name,
            admin: false,
        });
        for _ in 0..2 {
            let key = DeviceKey::generate(rng);
            let cert = user.certify(&key.public_keys(), 1);
            let mut d = Device::new(key, cert).unwrap();
            let prekey = d.generate_prekeys(rng, 1)[0];
            let bundle = PrekeyBundle { cert, prekey }
                .verify(&user.public())
                .unwrap();
            a.start_session(rng, &bundle).unwrap();
            devices.push((user.public(), d));
        }
    }
    let ids: Vec<DeviceId> = devices.iter().map(|(_, d)| d.id()).collect();
    let group = GroupId([7; 32]);
    let first = a
        .seal(
            rng,
            &payload(&alice.public(), &group, [1; 16], vec![0]),
            &ids,
        )
        .unwrap();
    for (user, d) in &mut devices {
        d.open(&first).unwrap();
        let reply = d
            .seal(rng, &payload(user, &group, [2; 16], vec![0]), &[a.id()])
            .unwrap();
        a.open(&reply).unwrap();
    }
    a.take_changes();
    let config = RoomConfig {
        title: "bench".into(),
        description: String::new(),
        ttl: Ttl::DAY,
        members,
    };
    let author = Author {
        device: &a,
        name: [0xaa; 32],
    };
    let (log, _) = RoomLog::create(rng, &author, config, T0).unwrap();
    (alice, a, log, ids)
}

fn send(c: &mut Criterion) {
    let mut g = c.benchmark_group("room_send");
    g.sample_size(10);
    for n in MEMBERS {
        let (alice, mut a, mut log, ids) = world(n);
        let alice = alice.public();
        let group = log.group();
        let text = vec![0x5a; 200];
        let mut t = T0;
        g.throughput(Throughput::Elements(ids.len() as u64));
        g.bench_with_input(BenchmarkId::new("post_and_seal", 2 * n), &n, |bench, _| {
            iter(bench, || {
                t += 1;
                let author = Author {
                    device: &a,
                    name: [0xaa; 32],
                };
                let (built, content) = log
                    .post(&mut OsRng, &author, content::TEXT, text.clone(), t)
                    .unwrap();
                let body = RoomWire::Entry {
                    entry: built.bytes,
                    content: Some(content),
                }
                .encode()
                .unwrap();
                let p = payload(&alice, &group, built.message_id, body);
                let sealed = a.seal_with_key(&mut OsRng, &p, &ids).unwrap();
                black_box(a.take_changes());
                sealed
            });
        });
    }
    g.finish();
}

criterion_group!(benches, send);
criterion_main!(benches);
