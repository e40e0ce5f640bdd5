//! Attacks on the room log (issue 13, room findings 1, 2, 4 and 5), each
//! performed with validly signed entries as a modified client would make
//! them: a removed creator re-creating the room, entries spoofing a
//! member's name, a removed member asking for history, a non-member
//! flooding entries.

mod common;

use sha2::{Digest, Sha256};

use sotto_proto::room::*;
use sotto_proto::*;

/// The suite's deterministic RNG (tests/common).
use common::TestRng as Rng;

struct Person {
    user: UserKey,
    name: [u8; 32],
    device: Device,
}

impl Person {
    fn new(rng: &mut Rng, label: &str) -> Person {
        let user = UserKey::generate(rng);
        let key = DeviceKey::generate(rng);
        let cert = user.certify(&key.public_keys(), 0);
        Person {
            device: Device::new(key, cert).unwrap(),
            user,
            name: Sha256::digest(label.as_bytes()).into(),
        }
    }
    fn public(&self) -> UserPublic {
        self.user.public()
    }
    fn author(&self) -> Author<'_> {
        Author {
            device: &self.device,
            name: self.name,
        }
    }
    fn member(&self, admin: bool) -> Member {
        Member {
            user: self.public(),
            name: self.name,
            admin,
        }
    }
}

const T0: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;

/// A validly signed entry, whatever the sender's own client would allow.
fn forge(
    p: &Person,
    group: GroupId,
    parents: Vec<EntryHash>,
    name: [u8; 32],
    body: Body,
    timestamp: u64,
    id: u32,
) -> Vec<u8> {
    let mut message_id = [0u8; 16];
    message_id[..4].copy_from_slice(&id.to_be_bytes());
    Draft {
        group,
        message_id,
        parents,
        sender_name: name,
        timestamp,
        body,
    }
    .sign(p.device.key(), p.device.cert())
    .unwrap()
    .encode()
}

fn text(log: &mut RoomLog, rng: &mut Rng, p: &Person, msg: &str, at: u64) -> Built {
    log.post(rng, &p.author(), content::TEXT, msg.as_bytes().to_vec(), at)
        .unwrap()
        .0
}

/// alice (admin) creates a room with bob (admin) and carol; the replicas
/// of alice, bob and carol, and the create entry.
fn room(label: &str) -> (Rng, [Person; 3], Vec<RoomLog>, Vec<u8>) {
    let mut rng = Rng::new(label);
    let alice = Person::new(&mut rng, "alice");
    let bob = Person::new(&mut rng, "bob");
    let carol = Person::new(&mut rng, "carol");
    let config = RoomConfig {
        title: "Room".into(),
        description: "ours".into(),
        ttl: Ttl::OFF,
        members: vec![bob.member(true), carol.member(false)],
    };
    let (a, create) = RoomLog::create(&mut rng, &alice.author(), config, T0).unwrap();
    let group = a.group();
    let mut logs = vec![a, RoomLog::new(group), RoomLog::new(group)];
    for l in &mut logs[1..] {
        l.receive(&create.bytes, LocalMeta::default()).unwrap();
    }
    (rng, [alice, bob, carol], logs, create.bytes)
}

fn sync(logs: &mut [RoomLog], entries: &[Vec<u8>]) {
    for l in logs {
        for e in entries {
            l.receive(e, LocalMeta::default()).unwrap();
        }
    }
}

/// Finding 1: bob (admin) removes alice, the creator; alice signs a second
/// create with the same salt, listing herself as the only admin and
/// backdated to sort first. Under a group id of creator and salt alone it
/// named the same room and took it over; now it names another room and is
/// refused, and the room goes on as it was.
#[test]
fn a_removed_creator_cannot_take_the_room_back() {
    let (mut rng, [alice, bob, carol], mut logs, create) = room("recreate");
    let group = logs[0].group();
    let remove = logs[1]
        .propose(
            &mut rng,
            &bob.author(),
            Op::RemoveMember(alice.public()),
            T0 + MIN,
        )
        .unwrap();
    let hello = text(&mut logs[2], &mut rng, &carol, "still here", T0 + 2 * MIN);
    sync(&mut logs, &[remove.bytes.clone(), hello.bytes.clone()]);
    let head = logs[1].head();
    let Body::Control(Op::Create { salt, .. }) = Entry::decode(&create).unwrap().body else {
        panic!("a create");
    };
    let forged = forge(
        &alice,
        group,
        vec![],
        alice.name,
        Body::Control(Op::Create {
            salt,
            config: RoomConfig {
                title: "Mine now".into(),
                description: String::new(),
                ttl: Ttl::OFF,
                members: vec![alice.member(true)],
            },
        }),
        T0 - MIN,
        1,
    );
    for l in &mut logs[1..] {
        assert!(
            l.receive(&forged, LocalMeta::default()).is_err(),
            "a second create is refused"
        );
        let st = l.state().unwrap();
        assert_eq!(st.title, "Room");
        assert!(!st.is_member(&alice.public()));
        assert!(st.is_admin(&bob.public()));
        assert_eq!(l.len(), 3);
    }
    assert_eq!(logs[1].head(), head, "nothing changed");
    // carol's message is still there, and the log still verifies.
    let timeline = logs[1].timeline();
    assert!(timeline
        .iter()
        .any(|n| n.entry == hello.hash && n.event == Event::Message));
    assert!(logs[1].verify().is_ok());
    // A stored log with the forged create put first does not verify.
    let mut records = logs[1].records();
    records.insert(
        0,
        LogRecord {
            hash: EntryHash::of(&forged),
            bytes: forged.clone(),
            meta: LocalMeta::default(),
        },
    );
    let failure = verify_records(&group, &records, None).unwrap_err();
    assert_eq!(failure.position, 0);
    // And the forged create starts no other room either: it names a group
    // that it does not derive.
    let mut other = RoomLog::new(group);
    assert!(other.receive(&forged, LocalMeta::default()).is_err());
    assert!(other.state().is_none());
}

/// Finding 1: nothing sorts before the create. An admin's change that
/// claims a time before the room was created is rejected everywhere.
#[test]
fn an_entry_claiming_a_time_before_the_create_is_rejected() {
    let (_rng, [_alice, bob, _carol], mut logs, create) = room("backdate");
    let group = logs[0].group();
    let early = forge(
        &bob,
        group,
        vec![EntryHash::of(&create)],
        bob.name,
        Body::Control(Op::SetTitle("Backdated".into())),
        T0 - 1,
        2,
    );
    for l in &mut logs {
        let u = l.receive(&early, LocalMeta::default()).unwrap();
        assert_eq!(u.notices.len(), 1);
        assert!(
            matches!(u.notices[0].event, Event::Rejected { .. }),
            "{:?}",
            u.notices[0].event
        );
        assert_eq!(l.state().unwrap().title, "Room");
    }
}

/// Finding 4: carol is removed; then the room gets a new title, a new
/// member and a message. carol (whose client answers and asks
/// automatically) asks alice for history: she gets what she was entitled
/// to up to her removal, and not one later title, member or message,
/// whether she asks from scratch or with her own heads. Someone who never
/// was a member gets nothing.
#[test]
fn a_removed_member_gets_no_history_after_its_removal() {
    let (mut rng, [alice, _bob, carol], mut logs, _create) = room("history");
    let dave = Person::new(&mut rng, "dave");
    let group = logs[0].group();
    let before = text(&mut logs[0], &mut rng, &alice, "before", T0 + MIN);
    let remove = logs[0]
        .propose(
            &mut rng,
            &alice.author(),
            Op::RemoveMember(carol.public()),
            T0 + 2 * MIN,
        )
        .unwrap();
    sync(
        &mut logs[2..],
        &[before.bytes.clone(), remove.bytes.clone()],
    );
    let retitle = logs[0]
        .propose(
            &mut rng,
            &alice.author(),
            Op::SetTitle("Secret plans".into()),
            T0 + 3 * MIN,
        )
        .unwrap();
    let add = logs[0]
        .propose(
            &mut rng,
            &alice.author(),
            Op::AddMember {
                user: dave.public(),
                name: dave.name,
            },
            T0 + 4 * MIN,
        )
        .unwrap();
    let after = text(&mut logs[0], &mut rng, &alice, "after", T0 + 5 * MIN);
    let later = [retitle.hash, add.hash, after.hash];
    for have in [vec![], logs[2].heads()] {
        let req = HistoryRequest {
            group,
            message_id: None,
            have,
        };
        let ans = logs[0]
            .answer(&req, Requester::Member(carol.public()), |_| None)
            .unwrap();
        let hashes: Vec<EntryHash> = ans.entries.iter().map(|e| EntryHash::of(e)).collect();
        for h in &later {
            assert!(!hashes.contains(h), "an entry after the removal was served");
        }
        let mut fresh = RoomLog::new(group);
        let (u, _) = fresh.receive_answer(&ans);
        assert!(u.invalid.is_empty());
        if let Some(st) = fresh.state() {
            assert_eq!(st.title, "Room");
            assert!(!st.is_member(&dave.public()));
        }
    }
    // From scratch, carol gets everything up to her removal, itself included.
    let req = HistoryRequest {
        group,
        message_id: None,
        have: vec![],
    };
    let ans = logs[0]
        .answer(&req, Requester::Member(carol.public()), |_| None)
        .unwrap();
    assert_eq!(ans.entries.len(), 3, "create, message, removal");
    assert!(!ans.more);
    // A stranger gets nothing at all.
    let eve = Person::new(&mut rng, "eve");
    assert_eq!(
        logs[0]
            .answer(&req, Requester::Member(eve.public()), |_| None)
            .unwrap_err(),
        RoomError::NotEntitled
    );
    // Members, current and new, still get the whole log.
    let ans = logs[0]
        .answer(&req, Requester::Member(dave.public()), |_| None)
        .unwrap();
    assert_eq!(ans.entries.len(), logs[0].len());
}

/// Finding 5: eve, who was never a member, floods entries that name the
/// log's real heads. Each is reported as discarded and then dropped: the
/// log does not grow, and honest members never name her entries as
/// parents.
#[test]
fn a_non_member_flood_is_reported_then_dropped() {
    let (mut rng, [alice, bob, _carol], mut logs, _create) = room("flood");
    let eve = Person::new(&mut rng, "eve");
    let group = logs[1].group();
    let len = logs[1].len();
    let head = logs[1].head();
    let mut reported = 0;
    for i in 0..300u32 {
        let e = forge(
            &eve,
            group,
            logs[1].parents_for_next(),
            eve.name,
            Body::Message { digest: [1; 32] },
            T0 + MIN + i as u64,
            i,
        );
        let u = logs[1].receive(&e, LocalMeta::default()).unwrap();
        reported += u
            .notices
            .iter()
            .filter(|n| {
                n.by == eve.public()
                    && matches!(
                        n.event,
                        Event::Rejected {
                            reason: RejectReason::NotMember,
                            ..
                        }
                    )
            })
            .count();
    }
    assert_eq!(reported, 300, "every one reported");
    assert_eq!(logs[1].len(), len, "none kept");
    assert_eq!(logs[1].head(), head);
    assert!(logs[1]
        .records()
        .iter()
        .all(|r| Entry::decode(&r.bytes).unwrap().sender.user != eve.public()));
    // bob goes on; alice, who never saw the flood, places his message.
    let m = text(&mut logs[1], &mut rng, &bob, "unaffected", T0 + 10 * MIN);
    let u = logs[0].receive(&m.bytes, LocalMeta::default()).unwrap();
    assert!(u.pending.is_empty(), "bob's message names no flood entry");
    assert_eq!(logs[0].head(), logs[1].head());
    let _ = alice;
}

/// Finding 5: eve floods entries whose parents no one has (they wait in the
/// pending set). Her share of the set is capped, her oldest go first, and
/// a member's entry that waits for its parents is still held.
#[test]
fn a_pending_flood_cannot_push_out_a_members_entries() {
    let (mut rng, [_alice, bob, _carol], mut logs, _create) = room("pending");
    let eve = Person::new(&mut rng, "eve");
    let group = logs[1].group();
    let orphan = |p: &Person, i: u32| {
        let mut parent = [0xee; 32];
        parent[..4].copy_from_slice(&i.to_be_bytes());
        forge(
            p,
            group,
            vec![EntryHash(parent)],
            p.name,
            Body::Message { digest: [0; 32] },
            T0 + MIN,
            i,
        )
    };
    // bob's entry waits for a parent first, then eve floods.
    let honest = orphan(&bob, 1_000_000);
    logs[1].receive(&honest, LocalMeta::default()).unwrap();
    let mut refused = 0;
    for i in 0..3000u32 {
        if logs[1]
            .receive(&orphan(&eve, i), LocalMeta::default())
            .is_err()
        {
            refused += 1;
        }
    }
    let pending = logs[1].pending();
    let eves = pending.iter().filter(|p| p.sender == eve.public()).count();
    assert!(eves <= 256, "eve holds {eves}");
    assert!(
        pending.iter().any(|p| p.entry == EntryHash::of(&honest)),
        "bob's entry is still held"
    );
    // The newest of eve's are held, the oldest went.
    assert!(pending
        .iter()
        .any(|p| p.entry == EntryHash::of(&orphan(&eve, 2999))));
    assert!(!pending
        .iter()
        .any(|p| p.entry == EntryHash::of(&orphan(&eve, 0))));
    assert_eq!(refused, 0, "evicted, not refused");
    // A later honest entry is held too.
    let again = orphan(&bob, 1_000_001);
    let u = logs[1].receive(&again, LocalMeta::default()).unwrap();
    assert_eq!(u.pending.len(), 1);
}
