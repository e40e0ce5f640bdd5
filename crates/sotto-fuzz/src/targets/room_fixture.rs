//! A small room shared by the room targets: alice (admin) creates it with
//! bob and carol, they chat, alice removes carol and renames the room. Its
//! stored records reload without signature checks, so each run starts from
//! a fresh replica cheaply. Also writes the room targets' seeds.

use std::sync::OnceLock;

use sotto_proto::room::*;
use sotto_proto::*;

use crate::rng::CounterRng;

pub struct Fixture {
    pub group: GroupId,
    pub records: Vec<LogRecord>,
    pub alice: UserPublic,
    pub carol: UserPublic,
    /// alice's device key bytes (re-signing spliced entries).
    pub alice_key: [u8; 64],
    pub alice_cert: DeviceCert,
    /// A message entry with its content, as sent.
    pub message: (Vec<u8>, MessageContent),
}

const T0: u64 = 1_700_000_000_000;

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = CounterRng(7);
        let person = |rng: &mut CounterRng, tag: u8| {
            let user = UserKey::generate(rng);
            let key = DeviceKey::generate(rng);
            let cert = user.certify(&key.public_keys(), 0);
            let bytes: [u8; 64] = *key.to_bytes();
            (
                user.public(),
                Device::new(key, cert).unwrap(),
                bytes,
                [tag; 32],
            )
        };
        let (alice, ad, alice_key, an) = person(&mut rng, 1);
        let (bob, bd, _, bn) = person(&mut rng, 2);
        let (carol, cd, _, cn) = person(&mut rng, 3);
        let config = RoomConfig {
            title: "Fuzz".into(),
            description: "room".into(),
            ttl: Ttl::DAY,
            members: vec![
                Member {
                    user: bob,
                    name: bn,
                    admin: false,
                },
                Member {
                    user: carol,
                    name: cn,
                    admin: false,
                },
            ],
        };
        let a = Author {
            device: &ad,
            name: an,
        };
        let (mut log, _) = RoomLog::create(&mut rng, &a, config, T0).unwrap();
        let b = Author {
            device: &bd,
            name: bn,
        };
        let c = Author {
            device: &cd,
            name: cn,
        };
        let (m, content) = log
            .post(&mut rng, &b, content::TEXT, b"hello".to_vec(), T0 + 1000)
            .unwrap();
        log.post(&mut rng, &c, content::TEXT, b"hi".to_vec(), T0 + 2000)
            .unwrap();
        log.propose(&mut rng, &a, Op::RemoveMember(carol), T0 + 3000)
            .unwrap();
        log.propose(&mut rng, &a, Op::SetTitle("Renamed".into()), T0 + 4000)
            .unwrap();
        log.set_meta(
            &m.hash,
            LocalMeta {
                message_key: Some([9; 32]),
                datagram_id: Some([8; 32]),
                purged: false,
            },
        )
        .unwrap();
        Fixture {
            group: log.group(),
            records: log.records(),
            alice,
            carol,
            alice_key,
            alice_cert: *ad.cert(),
            message: (m.bytes, content),
        }
    })
}

/// A fresh replica of the fixture room.
pub fn replica() -> RoomLog {
    let f = fixture();
    RoomLog::from_stored(f.group, f.records.clone()).0
}

/// Seeds for `room_entry` and `room_wire`: (target, file name, bytes).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let f = fixture();
    let mut out = Vec::new();
    for (i, r) in f.records.iter().enumerate() {
        for mode in 0..3u8 {
            let mut b = vec![mode, 40];
            b.extend_from_slice(&r.bytes);
            out.push(("room_entry", format!("record{i}_mode{mode}"), b));
        }
    }
    let wires = [
        (
            "entry",
            RoomWire::Entry {
                entry: f.message.0.clone(),
                content: Some(f.message.1.clone()),
            },
        ),
        (
            "request",
            RoomWire::Request(HistoryRequest {
                group: f.group,
                message_id: Some([1; 16]),
                have: vec![f.records[1].hash],
            }),
        ),
        (
            "answer",
            RoomWire::Answer(
                replica()
                    .answer(
                        &HistoryRequest {
                            group: f.group,
                            message_id: None,
                            have: vec![],
                        },
                        Requester::Member(f.carol),
                        |_| None,
                    )
                    .unwrap(),
            ),
        ),
    ];
    for (name, w) in wires {
        for requester in 0..2u8 {
            let mut b = vec![requester];
            b.extend(w.encode().unwrap());
            out.push(("room_wire", format!("{name}_{requester}"), b));
        }
    }
    out
}
