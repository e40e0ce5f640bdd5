//! A large room (issue 13, finding 5): 1 000 members and a log of 10 000
//! entries (the create naming every member, then messages of three members
//! and a member change every 500 entries). Measured, with the thread's CPU
//! time (see `common`):
//!
//! * `apply_one`: one new entry from the network taken in, plus the store
//!   changes it makes (`take_changes`), what a device does per datagram;
//! * `records_all`: what a device wrote per datagram before (every record);
//! * `load_stored`: the replica rebuilt from its stored records
//!   (`from_stored`, no signature checks) and, for comparison,
//!   `load_verified` (`from_records`, every certificate and signature);
//! * `answer_lagging`: a history answer for a member 100 entries behind;
//! * `answer_removed`: a history answer for a member removed half-way,
//!   asking from scratch (entries up to its removal, one datagram's worth).
//!
//!     cargo bench -p sotto-proto --bench room_large -- --measurement-time 3

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand_core::OsRng;
use sotto_proto::room::*;
use sotto_proto::*;

use common::{iter, now};

const MEMBERS: usize = 1000;
const ENTRIES: usize = 10_000;
const T0: u64 = 1_700_000_000_000;

struct Person {
    device: Device,
    name: [u8; 32],
}

fn person(tag: u16) -> (UserPublic, Person) {
    let user = UserKey::generate(&mut OsRng);
    let key = DeviceKey::generate(&mut OsRng);
    let cert = user.certify(&key.public_keys(), 0);
    let mut name = [0u8; 32];
    name[..2].copy_from_slice(&tag.to_be_bytes());
    (
        user.public(),
        Person {
            device: Device::new(key, cert).unwrap(),
            name,
        },
    )
}

fn author(p: &Person) -> Author<'_> {
    Author {
        device: &p.device,
        name: p.name,
    }
}

struct Room {
    log: RoomLog,
    people: Vec<Person>,
    removed: UserPublic,
    /// The heads of the log 100 entries before its end.
    lagging: Vec<EntryHash>,
    t: u64,
}

fn build() -> Room {
    let mut members = Vec::new();
    let mut people = Vec::new();
    for i in 0..MEMBERS as u16 {
        let (user, p) = person(i);
        members.push(Member {
            user,
            name: p.name,
            admin: i < 2,
        });
        if i < 3 {
            people.push(p);
        }
    }
    let removed = members[10].user;
    let config = RoomConfig {
        title: "large".into(),
        description: "1000 members".into(),
        ttl: Ttl::OFF,
        members: members[1..].to_vec(),
    };
    let (mut log, _) = RoomLog::create(&mut OsRng, &author(&people[0]), config, T0).unwrap();
    let mut t = T0;
    let mut lagging = Vec::new();
    let extra = person(9999).0;
    while log.len() < ENTRIES {
        t += 1000;
        let i = log.len();
        let p = &people[i % 3];
        if i == ENTRIES / 2 {
            log.propose(
                &mut OsRng,
                &author(&people[0]),
                Op::RemoveMember(removed),
                t,
            )
            .unwrap();
        } else if i % 500 == 0 {
            let op = if !log.state().unwrap().is_member(&extra) {
                Op::AddMember {
                    user: extra,
                    name: [0xee; 32],
                }
            } else {
                Op::RemoveMember(extra)
            };
            log.propose(&mut OsRng, &author(&people[0]), op, t).unwrap();
        } else {
            log.post(&mut OsRng, &author(p), content::TEXT, vec![0x5a; 80], t)
                .unwrap();
        }
        if log.len() == ENTRIES - 100 {
            lagging = log.heads();
        }
    }
    let _ = log.take_changes();
    Room {
        log,
        people,
        removed,
        lagging,
        t,
    }
}

fn bench(c: &mut Criterion) {
    let mut room = build();
    let group = room.log.group();
    let stored = room.log.records();
    let mut g = c.benchmark_group("room_large");
    g.sample_size(20);

    // One new entry per iteration, signed beforehand by a second replica
    // of the sender (untimed); the log is reloaded when it has grown by
    // 1 000.
    g.bench_function("apply_one", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(200);
                left -= n;
                if room.log.len() > ENTRIES + 1000 {
                    room.log = RoomLog::from_stored(group, stored.clone()).0;
                }
                let mut sender = RoomLog::from_stored(group, room.log.records()).0;
                let mut batch = Vec::new();
                for _ in 0..n {
                    room.t += 1000;
                    let (built, _) = sender
                        .post(
                            &mut OsRng,
                            &author(&room.people[1]),
                            content::TEXT,
                            vec![0x5a; 80],
                            room.t,
                        )
                        .unwrap();
                    batch.push(built.bytes);
                }
                let start = now();
                for e in &batch {
                    let u = room.log.receive(e, LocalMeta::default()).unwrap();
                    black_box(u);
                    black_box(room.log.take_changes());
                }
                total += now() - start;
            }
            total
        })
    });
    g.bench_function("records_all", |b| iter(b, || room.log.records()));
    g.bench_function("load_stored", |b| {
        b.iter_batched(
            || stored.clone(),
            |r| black_box(RoomLog::from_stored(group, r)),
            BatchSize::LargeInput,
        )
    });
    g.sample_size(10);
    g.bench_function("load_verified", |b| {
        b.iter_batched(
            || stored.clone(),
            |r| black_box(RoomLog::from_records(group, r)),
            BatchSize::LargeInput,
        )
    });
    g.sample_size(20);
    let log = RoomLog::from_stored(group, stored.clone()).0;
    let member = Requester::Member(log.entry(&log.heads()[0]).unwrap().user());
    let lagging = HistoryRequest {
        group,
        message_id: None,
        have: room.lagging.clone(),
    };
    g.bench_function("answer_lagging", |b| {
        iter(b, || {
            let a = log.answer(&lagging, member, |_| None).unwrap();
            assert!(a.entries.len() >= 100);
            a
        })
    });
    let scratch = HistoryRequest {
        group,
        message_id: None,
        have: Vec::new(),
    };
    g.bench_function("answer_removed", |b| {
        iter(b, || {
            log.answer(&scratch, Requester::Member(room.removed), |_| None)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
