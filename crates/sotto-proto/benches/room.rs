//! Applying a room log on a new device: 1 000 entries (create, messages of
//! three users on concurrent branches, TTL and membership changes) taken in
//! at once, one by one in resolved order, and one by one in reverse order
//! (every entry waits for its parent); and `verify_records` over the log.
//!
//!     cargo bench -p sotto-proto --bench room -- --measurement-time 3

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rand_core::OsRng;
use sotto_proto::room::*;
use sotto_proto::*;

const ENTRIES: usize = 1000;
const T0: u64 = 1_700_000_000_000;

struct Person {
    user: UserKey,
    device: Device,
    name: [u8; 32],
}

fn person(tag: u8) -> Person {
    let user = UserKey::generate(&mut OsRng);
    let key = DeviceKey::generate(&mut OsRng);
    let cert = user.certify(&key.public_keys(), 0);
    Person {
        device: Device::new(key, cert).unwrap(),
        user,
        name: [tag; 32],
    }
}

fn author(p: &Person) -> Author<'_> {
    Author {
        device: &p.device,
        name: p.name,
    }
}

/// Three members, each with its own replica; every round each posts on
/// what it has seen, then they sync: three concurrent branches per round.
fn build_log() -> (GroupId, Vec<LogRecord>) {
    let people: Vec<Person> = (1..=3).map(person).collect();
    let extra = person(9);
    let members = people[1..]
        .iter()
        .map(|p| Member {
            user: p.user.public(),
            name: p.name,
            admin: true,
        })
        .collect();
    let config = RoomConfig {
        title: "bench".into(),
        description: "1000 entries".into(),
        ttl: Ttl::DAY,
        members,
    };
    let (first, create) = RoomLog::create(&mut OsRng, &author(&people[0]), config, T0).unwrap();
    let group = first.group();
    let mut logs = vec![first, RoomLog::new(group), RoomLog::new(group)];
    for l in &mut logs[1..] {
        l.receive(&create.bytes, LocalMeta::default()).unwrap();
    }
    let mut all = vec![create.bytes];
    let mut round = 0u64;
    while all.len() < ENTRIES {
        let mut fresh = Vec::new();
        for (i, (p, l)) in people.iter().zip(logs.iter_mut()).enumerate() {
            if all.len() + fresh.len() >= ENTRIES {
                break;
            }
            let t = T0 + round * 1000 + i as u64;
            let b = match (round % 50, i) {
                (10, 0) => l.propose(&mut OsRng, &author(p), Op::SetTtl(Ttl::HOUR), t),
                (20, 1) => l.propose(
                    &mut OsRng,
                    &author(p),
                    Op::AddMember {
                        user: extra.user.public(),
                        name: extra.name,
                    },
                    t,
                ),
                (30, 2) => l.propose(
                    &mut OsRng,
                    &author(p),
                    Op::RemoveMember(extra.user.public()),
                    t,
                ),
                _ => l
                    .post(&mut OsRng, &author(p), content::TEXT, vec![0x5a; 64], t)
                    .map(|(b, _)| b),
            };
            if let Ok(b) = b {
                fresh.push(b.bytes);
            }
        }
        for l in &mut logs {
            for e in &fresh {
                l.receive(e, LocalMeta::default()).unwrap();
            }
        }
        all.extend(fresh);
        round += 1;
    }
    assert_eq!(logs[0].len(), ENTRIES);
    assert_eq!(logs[0].head(), logs[2].head());
    (group, logs[0].records())
}

fn bench(c: &mut Criterion) {
    let (group, records) = build_log();
    let expected = {
        let mut l = RoomLog::new(group);
        l.receive_many(records.iter().map(|r| (r.bytes.as_slice(), r.meta.clone())));
        l.head()
    };
    // Wall time suffers when the machine is shared; the thread's own CPU
    // time (Linux schedstat) does not.
    let apply = || {
        let mut l = RoomLog::new(group);
        l.receive_many(records.iter().map(|r| (r.bytes.as_slice(), r.meta.clone())));
        assert_eq!(l.head(), expected);
        black_box(l);
    };
    let verify = || {
        black_box(verify_records(&group, &records, Some(&expected)).unwrap());
    };
    for (name, f) in [
        ("batch", &apply as &dyn Fn()),
        ("verify_records", &verify as &dyn Fn()),
    ] {
        if let Some(ms) = cpu_ms_per_run(f, 20) {
            println!("room_apply_1000/{name}: {ms:.1} ms of CPU per run (mean of 20)");
        }
    }
    let mut g = c.benchmark_group("room_apply_1000");
    g.sample_size(20);
    g.bench_function("batch", |b| {
        b.iter(|| {
            let mut l = RoomLog::new(group);
            l.receive_many(records.iter().map(|r| (r.bytes.as_slice(), r.meta.clone())));
            assert_eq!(l.head(), expected);
            black_box(l)
        })
    });
    g.bench_function("one_by_one_in_order", |b| {
        b.iter(|| {
            let mut l = RoomLog::new(group);
            for r in &records {
                l.receive(&r.bytes, r.meta.clone()).unwrap();
            }
            assert_eq!(l.head(), expected);
            black_box(l)
        })
    });
    g.bench_function("one_by_one_reversed", |b| {
        b.iter(|| {
            let mut l = RoomLog::new(group);
            for r in records.iter().rev() {
                l.receive(&r.bytes, r.meta.clone()).unwrap();
            }
            assert_eq!(l.head(), expected);
            black_box(l)
        })
    });
    g.bench_function("verify_records", |b| {
        b.iter(|| black_box(verify_records(&group, &records, Some(&expected)).unwrap()))
    });
    g.finish();
}

/// CPU time of this thread, from `/proc/thread-self/schedstat` (Linux).
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn cpu_ms_per_run(f: &dyn Fn(), runs: u32) -> Option<f64> {
    f();
    let start = thread_cpu_ns()?;
    for _ in 0..runs {
        f();
    }
    Some((thread_cpu_ns()? - start) as f64 / 1e6 / runs as f64)
}

criterion_group!(benches, bench);
criterion_main!(benches);
