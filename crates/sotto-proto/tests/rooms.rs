//! Secure rooms (issue 5): the room log state machine on its own, with
//! several users and devices, entries delivered in every order.

use proptest::prelude::*;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use sotto_proto::room::*;
use sotto_proto::*;

/// Deterministic test RNG: SHA-256 in counter mode over a label.
struct Rng {
    seed: Vec<u8>,
    n: u64,
}
impl Rng {
    fn new(label: &str) -> Self {
        Rng {
            seed: label.as_bytes().to_vec(),
            n: 0,
        }
    }
}
impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(&self.seed);
            h.update(self.n.to_be_bytes());
            self.n += 1;
            chunk.copy_from_slice(&h.finalize()[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Rng {}

struct Person {
    user: UserKey,
    name: [u8; 32],
    devices: Vec<Device>,
}

impl Person {
    fn new(rng: &mut Rng, label: &str, devices: usize) -> Person {
        let user = UserKey::generate(rng);
        let devices = (0..devices)
            .map(|_| {
                let key = DeviceKey::generate(rng);
                let cert = user.certify(&key.public_keys(), 0);
                Device::new(key, cert).unwrap()
            })
            .collect();
        Person {
            user,
            name: Sha256::digest(label.as_bytes()).into(),
            devices,
        }
    }
    fn public(&self) -> UserPublic {
        self.user.public()
    }
    fn author(&self, device: usize) -> Author<'_> {
        Author {
            device: &self.devices[device],
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

/// Signs an entry the way a member's own (possibly modified) client could:
/// validly signed, whatever its local checks would say.
fn forge(p: &Person, log: &RoomLog, body: Body, timestamp: u64, id: u8) -> Vec<u8> {
    Draft {
        group: log.group(),
        message_id: [id; 16],
        parents: log.parents_for_next(),
        sender_name: p.name,
        timestamp,
        body,
    }
    .sign(p.devices[0].key(), p.devices[0].cert())
    .unwrap()
    .encode()
}

fn deliver(log: &mut RoomLog, entries: &[Vec<u8>]) -> Update {
    let mut all = Update::default();
    for e in entries {
        let u = log.receive(e, LocalMeta::default()).unwrap();
        all.notices.extend(u.notices);
        all.pending.extend(u.pending);
        all.duplicates += u.duplicates;
    }
    all
}

fn text(log: &mut RoomLog, rng: &mut Rng, p: &Person, dev: usize, msg: &str, at: u64) -> Built {
    log.post(
        rng,
        &p.author(dev),
        content::TEXT,
        msg.as_bytes().to_vec(),
        at,
    )
    .unwrap()
    .0
}

struct Scenario {
    alice: Person,
    bob: Person,
    carol: Person,
    dave: Person,
    group: GroupId,
    /// Every entry, in the order they were made.
    entries: Vec<Vec<u8>>,
    /// The replicas of the devices that took part (alice, bob x2, carol, dave).
    logs: Vec<RoomLog>,
    carol_after_removal: EntryHash,
}

/// Three users, bob with two devices: create, chat (concurrently), change
/// the TTL, make bob admin, add dave (bob's second device) while carol
/// chats, remove carol while she still chats, dave leaves.
fn scenario() -> Scenario {
    let mut rng = Rng::new("rooms-scenario");
    let alice = Person::new(&mut rng, "alice", 1);
    let bob = Person::new(&mut rng, "bob", 2);
    let carol = Person::new(&mut rng, "carol", 1);
    let dave = Person::new(&mut rng, "dave", 1);
    let config = RoomConfig {
        title: "Launch".into(),
        description: "Q3 launch".into(),
        ttl: Ttl::DAY,
        members: vec![bob.member(false), carol.member(false)],
    };
    let (mut a, create) = RoomLog::create(&mut rng, &alice.author(0), config, T0).unwrap();
    let group = a.group();
    let mut entries = vec![create.bytes];
    let mut b1 = RoomLog::new(group);
    let mut b2 = RoomLog::new(group);
    let mut c = RoomLog::new(group);
    let mut d = RoomLog::new(group);
    for l in [&mut b1, &mut b2, &mut c] {
        deliver(l, &entries);
    }
    // bob (device 1) and carol chat concurrently, both on the create only.
    let m1 = text(
        &mut b1,
        &mut rng,
        &bob,
        0,
        "draft is in the shared drive",
        T0 + MIN,
    );
    let m2 = text(&mut c, &mut rng, &carol, 0, "great", T0 + MIN);
    entries.extend([m1.bytes, m2.bytes]);
    deliver(&mut a, &entries[1..3]);
    // alice: TTL 1 day -> 1 hour, bob becomes admin.
    let ttl = a
        .propose(
            &mut rng,
            &alice.author(0),
            Op::SetTtl(Ttl::HOUR),
            T0 + 2 * MIN,
        )
        .unwrap();
    let grant = a
        .propose(
            &mut rng,
            &alice.author(0),
            Op::GrantAdmin(bob.public()),
            T0 + 2 * MIN,
        )
        .unwrap();
    entries.extend([ttl.bytes, grant.bytes]);
    deliver(&mut b2, &entries[1..5]);
    // bob's second device adds dave while carol (who has seen only her own
    // message) chats on.
    let add = b2
        .propose(
            &mut rng,
            &bob.author(1),
            Op::AddMember {
                user: dave.public(),
                name: dave.name,
            },
            T0 + 3 * MIN,
        )
        .unwrap();
    let m3 = text(&mut c, &mut rng, &carol, 0, "anyone there?", T0 + 3 * MIN);
    entries.extend([add.bytes, m3.bytes]);
    deliver(&mut a, &entries[5..7]);
    deliver(&mut d, &entries);
    // dave says hello; alice removes carol; carol, not knowing, posts again.
    let m4 = text(&mut d, &mut rng, &dave, 0, "hello from dave", T0 + 4 * MIN);
    let remove = a
        .propose(
            &mut rng,
            &alice.author(0),
            Op::RemoveMember(carol.public()),
            T0 + 4 * MIN,
        )
        .unwrap();
    entries.extend([m4.bytes, remove.bytes]);
    deliver(&mut c, &entries[..9]);
    // carol's client saw her removal and refuses to post...
    assert_eq!(
        c.post(
            &mut rng,
            &carol.author(0),
            content::TEXT,
            b"x".to_vec(),
            T0 + 5 * MIN
        )
        .unwrap_err(),
        RoomError::Refused(RejectReason::NotMember)
    );
    // ...but a modified client signs one anyway.
    let late = forge(
        &carol,
        &c,
        Body::Message { digest: [7; 32] },
        T0 + 5 * MIN,
        0xc0,
    );
    let carol_after_removal = EntryHash::of(&late);
    entries.push(late);
    deliver(&mut b1, &entries[3..]);
    let m5 = text(&mut b1, &mut rng, &bob, 0, "welcome dave", T0 + 6 * MIN);
    entries.push(m5.bytes);
    deliver(&mut d, &entries[7..]);
    let leave = d
        .propose(&mut rng, &dave.author(0), Op::Leave, T0 + 7 * MIN)
        .unwrap();
    entries.push(leave.bytes);
    let mut logs = vec![a, b1, b2, c, d];
    for l in &mut logs {
        deliver(l, &entries);
    }
    Scenario {
        alice,
        bob,
        carol,
        dave,
        group,
        entries,
        logs,
        carol_after_removal,
    }
}

fn check_final(s: &Scenario, log: &RoomLog) {
    let st = log.state().expect("room exists");
    assert_eq!(st.title, "Launch");
    assert_eq!(st.ttl, Ttl::HOUR);
    let members: Vec<UserPublic> = st.members.keys().copied().collect();
    let mut want = vec![s.alice.public(), s.bob.public()];
    want.sort();
    assert_eq!(members, want);
    assert!(st.is_admin(&s.alice.public()) && st.is_admin(&s.bob.public()));
    assert_eq!(log.recipients(), want);
    // carol's message after her removal was reported as discarded, then
    // dropped (no member's entry names it): every replica holds the rest.
    assert_eq!(log.len(), s.entries.len() - 1);
    assert!(log.entry(&s.carol_after_removal).is_none());
    assert!(log.pending().is_empty());
    assert!(log
        .timeline()
        .iter()
        .all(|n| !matches!(n.event, Event::Rejected { .. })));
}

#[test]
fn every_device_ends_with_the_same_state_and_head() {
    let s = scenario();
    let head = s.logs[0].head();
    for log in &s.logs {
        assert_eq!(log.head(), head);
        assert_eq!(log.state(), s.logs[0].state());
        assert_eq!(log.timeline(), s.logs[0].timeline());
        assert_eq!(log.verify(), Ok(head));
        check_final(&s, log);
    }
    // The notices a client shows.
    let names = |u: &UserPublic| {
        [&s.alice, &s.bob, &s.carol, &s.dave]
            .iter()
            .find(|p| p.public() == *u)
            .map(|p| {
                ["alice", "bob", "carol", "dave"][[&s.alice, &s.bob, &s.carol, &s.dave]
                    .iter()
                    .position(|q| q.public() == p.public())
                    .unwrap()]
            })
            .unwrap()
            .to_string()
    };
    let rendered: Vec<String> = s.logs[0]
        .timeline()
        .iter()
        .filter_map(|n| n.render(names))
        .collect();
    assert_eq!(
        rendered,
        vec![
            "alice created the room \"Launch\" (messages disappear: 1 day)",
            "alice changed the TTL from 1 day to 1 hour",
            "bob was made an admin by alice",
            "dave was added by bob",
            "carol was removed by alice",
            "dave left",
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A fresh replica applying the same entries in any order (one by one,
    /// or in batches) ends with the same state, timeline and head.
    #[test]
    fn any_delivery_order_converges(
        order in Just((0..12usize).collect::<Vec<_>>()).prop_shuffle(),
        batch in 1usize..5,
    ) {
        let s = scenario_cached();
        prop_assert_eq!(s.entries.len(), 12);
        let mut one = RoomLog::new(s.group);
        let mut many = RoomLog::new(s.group);
        for i in &order {
            one.receive(&s.entries[*i], LocalMeta::default()).unwrap();
        }
        for chunk in order.chunks(batch) {
            let u = many.receive_many(chunk.iter().map(|i| (s.entries[*i].clone(), LocalMeta::default())));
            prop_assert!(u.invalid.is_empty());
        }
        for log in [&one, &many] {
            prop_assert_eq!(log.head(), s.logs[0].head());
            prop_assert_eq!(log.state(), s.logs[0].state());
            prop_assert_eq!(log.timeline(), s.logs[0].timeline());
            check_final(s, log);
        }
    }
}

fn scenario_cached() -> &'static Scenario {
    static S: std::sync::OnceLock<Scenario> = std::sync::OnceLock::new();
    S.get_or_init(scenario)
}

// `Scenario` holds `Device`s; the tests only read it.
unsafe impl Sync for Scenario {}

/// Creates a room of alice (admin), bob and carol; returns the replicas.
fn small_room(label: &str) -> (Rng, Person, Person, Person, Vec<RoomLog>, Vec<Vec<u8>>) {
    let mut rng = Rng::new(label);
    let alice = Person::new(&mut rng, "alice", 1);
    let bob = Person::new(&mut rng, "bob", 1);
    let carol = Person::new(&mut rng, "carol", 1);
    let config = RoomConfig {
        title: "Room".into(),
        description: String::new(),
        ttl: Ttl::HOUR,
        members: vec![bob.member(true), carol.member(false)],
    };
    let (a, create) = RoomLog::create(&mut rng, &alice.author(0), config, T0).unwrap();
    let mut logs = vec![
        a,
        RoomLog::new(create_group(&create)),
        RoomLog::new(create_group(&create)),
    ];
    for l in &mut logs[1..] {
        deliver(l, std::slice::from_ref(&create.bytes));
    }
    (rng, alice, bob, carol, logs, vec![create.bytes])
}

fn create_group(b: &Built) -> GroupId {
    Entry::decode(&b.bytes).unwrap().group
}

#[test]
fn a_non_admins_authoritative_op_is_discarded_everywhere() {
    let (mut rng, _alice, _bob, carol, mut logs, _) = small_room("non-admin");
    // carol's own client refuses.
    assert_eq!(
        logs[2]
            .propose(&mut rng, &carol.author(0), Op::SetTtl(Ttl::OFF), T0 + MIN)
            .unwrap_err(),
        RoomError::Refused(RejectReason::NotAdmin)
    );
    // A modified client signs it anyway (a valid signature by a member).
    let forged = [
        forge(
            &carol,
            &logs[2],
            Body::Control(Op::SetTtl(Ttl::OFF)),
            T0 + MIN,
            1,
        ),
        forge(
            &carol,
            &logs[2],
            Body::Control(Op::GrantAdmin(carol.public())),
            T0 + MIN,
            2,
        ),
        forge(&carol, &logs[2], Body::Control(Op::Delete), T0 + MIN, 3),
    ];
    for log in &mut logs {
        let u = deliver(log, &forged);
        assert_eq!(u.notices.len(), 3);
        for n in &u.notices {
            assert_eq!(n.by, carol.public());
            assert_eq!(
                n.event,
                Event::Rejected {
                    kind: EntryKind::Authoritative,
                    reason: RejectReason::NotAdmin
                }
            );
        }
        let st = log.state().unwrap();
        assert_eq!(st.ttl, Ttl::HOUR);
        assert!(!st.is_admin(&carol.public()) && !st.deleted);
    }
    assert_eq!(logs[0].head(), logs[1].head());
    assert_eq!(logs[0].head(), logs[2].head());
    // Leave is non-authoritative: carol may.
    let leave = logs[2]
        .propose(&mut rng, &carol.author(0), Op::Leave, T0 + 2 * MIN)
        .unwrap();
    let u = logs[0].receive(&leave.bytes, LocalMeta::default()).unwrap();
    assert_eq!(u.notices[0].event, Event::Left);
    assert!(!logs[0].state().unwrap().is_member(&carol.public()));
}

#[test]
fn a_removed_members_later_entries_are_rejected_and_it_is_no_recipient() {
    let (mut rng, alice, _bob, carol, mut logs, mut entries) = small_room("removed");
    let before = text(&mut logs[2], &mut rng, &carol, 0, "still here", T0 + MIN);
    let remove = logs[0]
        .propose(
            &mut rng,
            &alice.author(0),
            Op::RemoveMember(carol.public()),
            T0 + 2 * MIN,
        )
        .unwrap();
    assert!(
        remove.recipients.contains(&carol.public()),
        "carol learns of it"
    );
    assert_eq!(remove.recipients.len(), 3);
    entries.extend([before.bytes.clone(), remove.bytes.clone()]);
    deliver(&mut logs[2], &entries);
    let after = [
        forge(
            &carol,
            &logs[2],
            Body::Message { digest: [1; 32] },
            T0 + 3 * MIN,
            1,
        ),
        forge(&carol, &logs[2], Body::Control(Op::Leave), T0 + 3 * MIN, 2),
    ];
    deliver(&mut logs[0], &entries);
    deliver(&mut logs[1], &entries);
    for log in logs[..2].iter_mut() {
        let u = deliver(log, &after);
        let reasons: Vec<Event> = u.notices.into_iter().map(|n| n.event).collect();
        assert_eq!(
            reasons,
            vec![
                Event::Rejected {
                    kind: EntryKind::Standard,
                    reason: RejectReason::NotMember
                },
                Event::Rejected {
                    kind: EntryKind::NonAuthoritative,
                    reason: RejectReason::NotMember
                },
            ]
        );
        assert!(!log.recipients().contains(&carol.public()));
        // Her message from before the removal stands.
        let t = log.timeline();
        assert!(t
            .iter()
            .any(|n| n.entry == before.hash && n.event == Event::Message));
    }
    // A history request from carol gets keys only for what she was a member
    // for (recorded keys stand in for the datagrams' message keys).
    let a = &mut logs[0];
    for (i, h) in [before.hash].iter().enumerate() {
        a.set_meta(
            h,
            LocalMeta {
                message_key: Some([i as u8 + 1; 32]),
                datagram_id: Some([9; 32]),
                purged: false,
            },
        )
        .unwrap();
    }
    let later = text(a, &mut rng, &alice, 0, "after carol", T0 + 4 * MIN);
    a.set_meta(
        &later.hash,
        LocalMeta {
            message_key: Some([0xaa; 32]),
            datagram_id: Some([0xbb; 32]),
            purged: false,
        },
    )
    .unwrap();
    let req = HistoryRequest {
        group: a.group(),
        message_id: None,
        have: vec![],
    };
    let ans = a
        .answer(&req, Requester::Member(carol.public()), |_| None)
        .unwrap();
    let granted: Vec<EntryHash> = ans
        .grants
        .iter()
        .map(|g| match g {
            Grant::Key { entry, .. } | Grant::Content { entry, .. } => *entry,
        })
        .collect();
    assert_eq!(granted, vec![before.hash]);
}

#[test]
fn an_entry_from_a_sender_added_by_an_unseen_entry_waits_then_applies() {
    let (mut rng, alice, bob, carol, mut logs, mut entries) = small_room("pending");
    let dave = Person::new(&mut rng, "dave", 1);
    // bob (an admin) adds dave; carol has not received that yet.
    let add = logs[1]
        .propose(
            &mut rng,
            &bob.author(0),
            Op::AddMember {
                user: dave.public(),
                name: dave.name,
            },
            T0 + MIN,
        )
        .unwrap();
    entries.push(add.bytes.clone());
    let mut d = RoomLog::new(logs[0].group());
    deliver(&mut d, &entries);
    let hello = text(&mut d, &mut rng, &dave, 0, "hi all", T0 + 2 * MIN);
    // dave's message reaches carol first: held, and reported so carol asks
    // dave (group id + message id + her heads).
    let u = logs[2].receive(&hello.bytes, LocalMeta::default()).unwrap();
    assert!(u.notices.is_empty());
    assert_eq!(u.pending.len(), 1);
    let p = &u.pending[0];
    assert_eq!(
        (p.entry, p.message_id, p.sender),
        (hello.hash, hello.message_id, dave.public())
    );
    assert_eq!(p.missing, vec![add.hash]);
    assert!(!logs[2].state().unwrap().is_member(&dave.public()));
    let req = HistoryRequest {
        group: logs[2].group(),
        message_id: Some(p.message_id),
        have: logs[2].heads(),
    };
    let wire = RoomWire::Request(req.clone()).encode().unwrap();
    let RoomWire::Request(req) = RoomWire::decode(&wire).unwrap() else {
        panic!()
    };
    // dave answers with what carol lacks: the add (not the create she has).
    let answer = d
        .answer(&req, Requester::Member(carol.public()), |_| None)
        .unwrap();
    assert_eq!(answer.entries, vec![add.bytes.clone(), hello.bytes.clone()]);
    let wire = RoomWire::Answer(answer).encode().unwrap();
    let RoomWire::Answer(answer) = RoomWire::decode(&wire).unwrap() else {
        panic!()
    };
    let (u, _) = logs[2].receive_answer(&answer);
    let events: Vec<Event> = u.notices.iter().map(|n| n.event.clone()).collect();
    assert_eq!(
        events,
        vec![Event::MemberAdded(dave.public()), Event::Message]
    );
    assert!(logs[2].pending().is_empty());
    assert_eq!(logs[2].head(), d.head());
    let _ = alice;
}

#[test]
fn concurrent_edits_by_two_admins_converge() {
    let (mut rng, alice, bob, _carol, mut logs, entries) = small_room("concurrent");
    // Same heads, same time: alice and bob both retitle and change the TTL.
    let a1 = logs[0]
        .propose(
            &mut rng,
            &alice.author(0),
            Op::SetTitle("Alpha".into()),
            T0 + MIN,
        )
        .unwrap();
    let a2 = logs[0]
        .propose(&mut rng, &alice.author(0), Op::SetTtl(Ttl::WEEK), T0 + MIN)
        .unwrap();
    let b1 = logs[1]
        .propose(
            &mut rng,
            &bob.author(0),
            Op::SetTitle("Bravo".into()),
            T0 + MIN,
        )
        .unwrap();
    let b2 = logs[1]
        .propose(
            &mut rng,
            &bob.author(0),
            Op::RevokeAdmin(alice.public()),
            T0 + MIN,
        )
        .unwrap();
    let all = [a1.bytes, a2.bytes, b1.bytes, b2.bytes];
    deliver(&mut logs[0], &all[2..]);
    deliver(&mut logs[1], &all[..2]);
    deliver(
        &mut logs[2],
        &[
            all[3].clone(),
            all[1].clone(),
            all[2].clone(),
            all[0].clone(),
        ],
    );
    let st = logs[0].state().unwrap().clone();
    for l in &logs {
        assert_eq!(l.state().unwrap(), &st);
        assert_eq!(l.head(), logs[0].head());
        assert_eq!(l.timeline(), logs[0].timeline());
    }
    // The resolved order decides: the last title in it wins, and alice's
    // edits that sort after bob revoked her are discarded.
    let timeline = logs[0].timeline();
    let last_title = timeline
        .iter()
        .rev()
        .find_map(|n| match &n.event {
            Event::TitleChanged { to, .. } => Some(to.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(st.title, last_title);
    assert!(!st.is_admin(&alice.public()));
    let _ = entries;
    // A fresh replica with the entries in yet another order agrees.
    let mut fresh = RoomLog::new(logs[0].group());
    let mut recs = logs[0].records();
    recs.reverse();
    let (fresh2, u) = RoomLog::from_records(logs[0].group(), recs);
    assert!(u.invalid.is_empty());
    fresh.receive_many(logs[1].records().into_iter().map(|r| (r.bytes, r.meta)));
    assert_eq!(fresh.head(), logs[0].head());
    assert_eq!(fresh2.head(), logs[0].head());
}

#[test]
fn a_tampered_entry_is_caught_by_verify_with_its_position() {
    let s = scenario_cached();
    let log = &s.logs[1];
    let records = log.records();
    let head = log.head();
    assert_eq!(verify_records(&s.group, &records, Some(&head)), Ok(head));
    for pos in [0, 3, 7, records.len() - 1] {
        // A flipped byte in the stored entry.
        let mut bad = records.clone();
        let n = bad[pos].bytes.len();
        bad[pos].bytes[n / 2] ^= 1;
        let err = verify_records(&s.group, &bad, Some(&head)).unwrap_err();
        assert_eq!((err.position, err.problem), (pos, Problem::HashMismatch));
        // The same with the stored hash recomputed: the signature (or the
        // decoding) fails at the same position.
        bad[pos].hash = EntryHash::of(&bad[pos].bytes);
        let err = verify_records(&s.group, &bad, None).unwrap_err();
        assert_eq!(err.position, pos);
        assert!(
            matches!(err.problem, Problem::Invalid(_) | Problem::Undecodable(_)),
            "{err}"
        );
    }
    // Every byte of one entry.
    let pos = 4;
    for i in 0..records[pos].bytes.len() {
        let mut bad = records.clone();
        bad[pos].bytes[i] ^= 0x80;
        bad[pos].hash = EntryHash::of(&bad[pos].bytes);
        let err = verify_records(&s.group, &bad, Some(&head)).unwrap_err();
        assert_eq!(err.position, pos, "byte {i}: {err}");
    }
    // A dropped entry breaks the link of a later one.
    let mut gap = records.clone();
    gap.remove(1);
    let err = verify_records(&s.group, &gap, None).unwrap_err();
    assert!(matches!(err.problem, Problem::MissingParent(_)), "{err}");
    // Reordered entries.
    let mut swapped = records.clone();
    swapped.swap(1, 2);
    let err = verify_records(&s.group, &swapped, None).unwrap_err();
    assert_eq!(err.position, 2);
    // The wrong head.
    let err = verify_records(&s.group, &records[..records.len() - 1], Some(&head)).unwrap_err();
    assert_eq!(err.problem, Problem::HeadMismatch);
}

#[test]
fn truncated_and_garbage_entries_are_errors_at_every_length() {
    let s = scenario_cached();
    for bytes in &s.entries {
        let e = Entry::decode(bytes).unwrap();
        assert_eq!(&e.encode(), bytes, "canonical");
        for n in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..n]).is_err(), "prefix {n}");
            let mut log = RoomLog::new(s.group);
            assert!(log.receive(&bytes[..n], LocalMeta::default()).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Entry::decode(&long), Err(Error::TrailingBytes));
    }
    let answer = RoomWire::Answer(HistoryAnswer {
        group: s.group,
        more: true,
        entries: s.entries[..3].to_vec(),
        grants: vec![
            Grant::Key {
                entry: EntryHash([1; 32]),
                datagram_id: [2; 32],
                message_key: [3; 32],
            },
            Grant::Content {
                entry: EntryHash([4; 32]),
                content: MessageContent {
                    salt: [5; 16],
                    content_type: content::TEXT,
                    body: b"hello".to_vec(),
                },
            },
        ],
    });
    let wires = [
        answer,
        RoomWire::Request(HistoryRequest {
            group: s.group,
            message_id: Some([6; 16]),
            have: vec![EntryHash([7; 32]); 3],
        }),
        RoomWire::Entry {
            entry: s.entries[1].clone(),
            content: Some(MessageContent {
                salt: [8; 16],
                content_type: 1,
                body: b"hi".to_vec(),
            }),
        },
    ];
    for w in &wires {
        let bytes = w.encode().unwrap();
        assert_eq!(&RoomWire::decode(&bytes).unwrap(), w);
        for n in 0..bytes.len() {
            assert!(RoomWire::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
    }
    // Huge declared counts are refused before any allocation.
    let mut huge = vec![1u8, 3];
    huge.extend_from_slice(&[0; 32]);
    huge.push(0);
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        RoomWire::decode(&huge),
        Err(Error::TooLarge { .. })
    ));
    huge.truncate(35);
    huge.extend_from_slice(&50_000u32.to_be_bytes());
    assert_eq!(RoomWire::decode(&huge), Err(Error::Truncated));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Entry::decode(&bytes);
        let _ = RoomWire::decode(&bytes);
        let mut log = RoomLog::new(GroupId([0; 32]));
        prop_assert!(log.receive(&bytes, LocalMeta::default()).is_err());
    }

    #[test]
    fn mutated_entries_never_get_in(i in 0usize..12, at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let s = scenario_cached();
        let mut bytes = s.entries[i].clone();
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        let mut log = RoomLog::new(s.group);
        prop_assert!(log.receive(&bytes, LocalMeta::default()).is_err());
    }
}

#[test]
fn standard_messages_expire_after_the_ttl_control_entries_stay() {
    let (mut rng, alice, bob, _carol, mut logs, _) = small_room("ttl");
    let hour = Ttl::HOUR.millis().unwrap();
    let a = &mut logs[0];
    let m1 = text(a, &mut rng, &alice, 0, "one", T0 + MIN);
    let m2 = text(a, &mut rng, &alice, 0, "two", T0 + 2 * MIN);
    a.propose(
        &mut rng,
        &alice.author(0),
        Op::SetTtl(Ttl::OFF),
        T0 + 3 * MIN,
    )
    .unwrap();
    let forever = text(a, &mut rng, &alice, 0, "kept", T0 + 4 * MIN);
    let _ = bob;
    assert!(a.expired(T0 + MIN + hour - 1).is_empty());
    let e = a.expired(T0 + MIN + hour);
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].entry, e[0].message_id), (m1.hash, m1.message_id));
    assert_eq!(e[0].expired_at, T0 + MIN + hour);
    let head = a.head();
    let gone: Vec<EntryHash> = a
        .expire(T0 + 10 * hour)
        .into_iter()
        .map(|e| e.entry)
        .collect();
    assert_eq!(gone, vec![m1.hash, m2.hash]);
    assert!(a.meta(&m1.hash).unwrap().purged);
    assert!(
        a.expired(u64::MAX).is_empty(),
        "TTL off: kept; control entries: kept"
    );
    assert!(a.entry(&forever.hash).is_some());
    // Purged messages stay as tombstones: the log and its head still verify.
    assert_eq!(a.head(), head);
    assert_eq!(a.verify(), Ok(head));
    // Purged keys are not handed out again.
    a.set_meta(
        &m1.hash,
        LocalMeta {
            message_key: Some([1; 32]),
            datagram_id: Some([1; 32]),
            purged: false,
        },
    )
    .unwrap();
    assert_eq!(a.meta(&m1.hash).unwrap().message_key, None);
}

#[test]
fn a_recovering_device_gets_exactly_what_its_user_was_member_for() {
    let (mut rng, alice, bob, carol, mut logs, _) = small_room("recover");
    let dave = Person::new(&mut rng, "dave", 1);
    let a = &mut logs[0];
    let early = text(a, &mut rng, &alice, 0, "before dave", T0 + MIN);
    a.propose(
        &mut rng,
        &alice.author(0),
        Op::AddMember {
            user: dave.public(),
            name: dave.name,
        },
        T0 + 2 * MIN,
    )
    .unwrap();
    let during = text(a, &mut rng, &alice, 0, "with dave", T0 + 3 * MIN);
    a.propose(
        &mut rng,
        &alice.author(0),
        Op::RemoveMember(dave.public()),
        T0 + 4 * MIN,
    )
    .unwrap();
    let late = text(a, &mut rng, &alice, 0, "after dave", T0 + 5 * MIN);
    for (i, h) in [early.hash, during.hash, late.hash].iter().enumerate() {
        a.set_meta(
            h,
            LocalMeta {
                message_key: Some([i as u8; 32]),
                datagram_id: Some([0x10 + i as u8; 32]),
                purged: false,
            },
        )
        .unwrap();
    }
    let req = HistoryRequest {
        group: a.group(),
        message_id: None,
        have: vec![],
    };
    let grants = |who| logs[0].answer(&req, who, |_| None).unwrap();
    // dave's new device: the signed log up to his removal ("after dave" is
    // not in it), keys for "with dave" only.
    let ans = grants(Requester::Member(dave.public()));
    assert_eq!(ans.entries.len(), logs[0].len() - 1);
    let mut fresh = RoomLog::new(req.group);
    let (u, rec) = fresh.receive_answer(&ans);
    assert!(u.invalid.is_empty());
    assert!(fresh.entry(&late.hash).is_none());
    assert_eq!(
        rec,
        vec![Recovered::Fetch {
            entry: during.hash,
            datagram_id: [0x11; 32],
            message_key: [1; 32]
        }]
    );
    // A platform admin gets all three; carol (member throughout) too, with
    // the whole log.
    assert_eq!(grants(Requester::PlatformAdmin).grants.len(), 3);
    let all = grants(Requester::Member(carol.public()));
    assert_eq!((all.grants.len(), all.entries.len()), (3, logs[0].len()));
    // Someone who never was a member gets nothing.
    let stranger = Person::new(&mut rng, "eve", 1);
    assert_eq!(
        logs[0]
            .answer(&req, Requester::Member(stranger.public()), |_| None)
            .unwrap_err(),
        RoomError::NotEntitled
    );
    // Without keys (past the server's retention), content is handed over
    // and checked against the signed digest.
    let mut b = RoomLog::new(req.group);
    b.receive_many(
        logs[0]
            .records()
            .into_iter()
            .map(|r| (r.bytes, LocalMeta::default())),
    );
    let good = MessageContent {
        salt: [0; 16],
        content_type: content::TEXT,
        body: b"forged".to_vec(),
    };
    let ans = b
        .answer(&req, Requester::Member(dave.public()), |_| {
            Some(good.clone())
        })
        .unwrap();
    let mut fresh = RoomLog::new(req.group);
    let (u, rec) = fresh.receive_answer(&ans);
    assert!(
        rec.is_empty(),
        "content that does not match the digest is refused"
    );
    assert_eq!(u.invalid.len(), 1);
    assert!(matches!(u.invalid[0].1, RoomError::Mismatch { .. }));
    let _ = bob;
}

#[test]
fn a_room_message_travels_in_a_datagram() {
    let mut rng = Rng::new("datagram");
    let alice = Person::new(&mut rng, "alice", 1);
    let mut bob = Person::new(&mut rng, "bob", 1);
    let config = RoomConfig {
        title: "T".into(),
        description: String::new(),
        ttl: Ttl::OFF,
        members: vec![bob.member(false)],
    };
    let (mut a, create) = RoomLog::create(&mut rng, &alice.author(0), config, T0).unwrap();
    let mut b = RoomLog::new(a.group());
    // A session alice -> bob.
    let prekey = bob.devices[0].generate_prekeys(&mut rng, 1).remove(0);
    let bundle = PrekeyBundle {
        cert: *bob.devices[0].cert(),
        prekey,
    }
    .verify(&bob.public())
    .unwrap();
    let dev = &alice.devices[0];
    let mut a_dev = Device::new(DeviceKey::from_bytes(&dev.key().to_bytes()), *dev.cert()).unwrap();
    a_dev.start_session(&mut rng, &bundle).unwrap();
    let mut seal_rng = Rng::new("seal");
    let mut send = |wire: RoomWire, id: MessageId, group: GroupId| {
        let payload = Payload {
            message_id: id,
            conversation: group.0,
            sender: alice.public(),
            sent_at: T0,
            ttl: 0,
            content_type: content::ROOM_CONTROL,
            body: wire.encode().unwrap(),
        };
        a_dev
            .seal(&mut seal_rng, &payload, &[bob.devices[0].id()])
            .unwrap()
    };
    let dg1 = send(
        RoomWire::Entry {
            entry: create.bytes.clone(),
            content: None,
        },
        create.message_id,
        a.group(),
    );
    let (msg, content) = a
        .post(
            &mut rng,
            &alice.author(0),
            content::TEXT,
            b"hello bob".to_vec(),
            T0 + 1,
        )
        .unwrap();
    let dg2 = send(
        RoomWire::Entry {
            entry: msg.bytes.clone(),
            content: Some(content.clone()),
        },
        msg.message_id,
        a.group(),
    );
    for dg in [dg1, dg2] {
        let opened = bob.devices[0].open(&dg).unwrap();
        let RoomWire::Entry { entry, content } = RoomWire::decode(&opened.payload.body).unwrap()
        else {
            panic!()
        };
        let d = b
            .receive_delivery(
                &opened.sender,
                &opened.payload,
                &entry,
                content,
                LocalMeta::default(),
            )
            .unwrap();
        assert!(d.update.invalid.is_empty());
    }
    assert_eq!(b.head(), a.head());
    assert_eq!(b.timeline().last().unwrap().event, Event::Message);
    // The content must match the signed digest; the datagram must come from
    // the entry's own device and name its message id.
    let mut other = content.clone();
    other.body = b"hello eve".to_vec();
    let payload = Payload {
        message_id: msg.message_id,
        conversation: a.group().0,
        sender: alice.public(),
        sent_at: T0,
        ttl: 0,
        content_type: content::ROOM_CONTROL,
        body: vec![],
    };
    let cert = *alice.devices[0].cert();
    assert!(matches!(
        b.receive_delivery(
            &cert,
            &payload,
            &msg.bytes,
            Some(other),
            LocalMeta::default()
        ),
        Err(RoomError::Mismatch { .. })
    ));
    let mut wrong_id = payload.clone();
    wrong_id.message_id = [0; 16];
    assert!(matches!(
        b.receive_delivery(
            &cert,
            &wrong_id,
            &msg.bytes,
            Some(content.clone()),
            LocalMeta::default()
        ),
        Err(RoomError::Mismatch { .. })
    ));
    assert!(matches!(
        b.receive_delivery(
            bob.devices[0].cert(),
            &payload,
            &msg.bytes,
            Some(content),
            LocalMeta::default()
        ),
        Err(RoomError::Mismatch { .. })
    ));
}

#[test]
fn ttl_presets_parse_and_render() {
    let cases = [
        ("off", Ttl::OFF, "off"),
        ("10m", Ttl::TEN_MINUTES, "10 minutes"),
        ("1h", Ttl::HOUR, "1 hour"),
        ("1d", Ttl::DAY, "1 day"),
        ("1w", Ttl::WEEK, "1 week"),
        ("30d", Ttl::THIRTY_DAYS, "30 days"),
        ("90", Ttl(90), "90 seconds"),
    ];
    for (s, t, shown) in cases {
        assert_eq!(s.parse::<Ttl>().unwrap(), t);
        assert_eq!(t.to_string(), shown);
    }
    assert!("1y".parse::<Ttl>().is_err());
    assert!("99999999999d".parse::<Ttl>().is_err());
    assert_eq!(Ttl::PRESETS.len(), 6);
}

#[test]
fn group_ids_bind_the_creator() {
    let (mut rng, _alice, bob, _carol, logs, _) = small_room("genesis");
    // bob (a member and admin) cannot start a competing log for the room:
    // a create he signs cannot show the room's group id.
    let config = RoomConfig {
        title: "Mine".into(),
        description: String::new(),
        ttl: Ttl::OFF,
        members: vec![bob.member(true)],
    };
    let mut salt = [0u8; 32];
    rng.fill_bytes(&mut salt);
    let fake = Draft {
        group: logs[0].group(),
        message_id: [1; 16],
        parents: vec![],
        sender_name: bob.name,
        timestamp: 0,
        body: Body::Control(Op::Create { salt, config }),
    }
    .sign(bob.devices[0].key(), bob.devices[0].cert())
    .unwrap()
    .encode();
    let mut l = RoomLog::new(logs[0].group());
    assert!(matches!(
        l.receive(&fake, LocalMeta::default()),
        Err(RoomError::Proto(Error::Malformed { .. }))
    ));
    // And an entry signed by one device but carrying another's certificate
    // does not verify.
    let mut e = Entry::decode(&logs[0].records()[0].bytes).unwrap();
    e.sender = *bob.devices[0].cert();
    assert_eq!(
        l.receive(&e.encode(), LocalMeta::default()).unwrap_err(),
        RoomError::Proto(Error::Malformed {
            what: "room group id"
        })
    );
}

#[test]
fn a_late_concurrent_removal_revises_an_accepted_message() {
    let (mut rng, alice, _bob, carol, mut logs, entries) = small_room("revise");
    // alice removes carol; carol, not having seen it, posts a little later.
    let remove = logs[0]
        .propose(
            &mut rng,
            &alice.author(0),
            Op::RemoveMember(carol.public()),
            T0 + MIN,
        )
        .unwrap();
    let post = text(&mut logs[2], &mut rng, &carol, 0, "hi", T0 + 2 * MIN);
    // bob gets carol's message first: accepted...
    let u = logs[1].receive(&post.bytes, LocalMeta::default()).unwrap();
    assert_eq!(u.notices[0].event, Event::Message);
    assert!(!u.notices[0].revised);
    // ...then the removal, which sorts before it: the message is revised to
    // rejected, as everywhere else.
    let u = logs[1]
        .receive(&remove.bytes, LocalMeta::default())
        .unwrap();
    let events: Vec<(Event, bool)> = u
        .notices
        .iter()
        .map(|n| (n.event.clone(), n.revised))
        .collect();
    assert_eq!(
        events,
        vec![
            (Event::MemberRemoved(carol.public()), false),
            (
                Event::Rejected {
                    kind: EntryKind::Standard,
                    reason: RejectReason::NotMember
                },
                true
            ),
        ]
    );
    deliver(&mut logs[0], std::slice::from_ref(&post.bytes));
    assert_eq!(logs[0].head(), logs[1].head());
    assert_eq!(logs[0].timeline(), logs[1].timeline());
    let _ = entries;
}

/// Two long branches merged late: entries sort deep into the log, so the
/// replay starts from the snapshots (one every 64 positions).
#[test]
fn long_concurrent_branches_resolve_identically() {
    let (mut rng, alice, bob, _carol, mut logs, _) = small_room("branches");
    let mut a_entries = Vec::new();
    let mut b_entries = Vec::new();
    for i in 0..90u64 {
        a_entries.push(text(&mut logs[0], &mut rng, &alice, 0, "a", T0 + 2 * i * 1000).bytes);
        b_entries.push(
            text(
                &mut logs[1],
                &mut rng,
                &bob,
                0,
                "b",
                T0 + (2 * i + 1) * 1000,
            )
            .bytes,
        );
        if i == 45 {
            // bob (admin) changes the TTL on his branch.
            b_entries.push(
                logs[1]
                    .propose(
                        &mut rng,
                        &bob.author(0),
                        Op::SetTtl(Ttl::DAY),
                        T0 + (2 * i + 1) * 1000,
                    )
                    .unwrap()
                    .bytes,
            );
        }
    }
    deliver(&mut logs[0], &b_entries);
    deliver(&mut logs[1], &a_entries);
    assert_eq!(logs[0].head(), logs[1].head());
    assert_eq!(logs[0].timeline(), logs[1].timeline());
    assert_eq!(logs[0].verify(), Ok(logs[0].head()));
    // Reversed in one batch: everything waits for its parent, then
    // cascades; nothing is left to ask for.
    let mut all: Vec<LogRecord> = logs[0].records();
    all.reverse();
    let mut batch = RoomLog::new(logs[0].group());
    let u = batch.receive_many(
        all.iter()
            .map(|r| (r.bytes.as_slice(), LocalMeta::default())),
    );
    assert!(u.pending.is_empty() && u.invalid.is_empty());
    assert_eq!(batch.head(), logs[0].head());
    let mut fresh = RoomLog::new(logs[0].group());
    for r in &all {
        fresh.receive(&r.bytes, LocalMeta::default()).unwrap();
    }
    assert_eq!(fresh.head(), logs[0].head());
    assert_eq!(fresh.state(), logs[0].state());
    assert_eq!(fresh.timeline(), logs[0].timeline());
    // A message's TTL is the one in force at its place in the resolved order.
    let ttl_at = logs[0]
        .timeline()
        .iter()
        .position(|n| matches!(n.event, Event::TtlChanged { .. }))
        .unwrap();
    let expired = logs[0].expired(T0 + 3600 * 1000 + 200_000);
    assert_eq!(
        expired.len(),
        ttl_at - 1,
        "messages before the change: 1 hour"
    );
}

#[test]
fn a_deleted_room_takes_nothing_more() {
    let (mut rng, alice, bob, carol, mut logs, _) = small_room("delete");
    let del = logs[1]
        .propose(&mut rng, &bob.author(0), Op::Delete, T0 + MIN)
        .unwrap();
    assert_eq!(del.recipients.len(), 3, "every member hears of it");
    assert!(logs[1].recipients().is_empty());
    assert_eq!(
        logs[1]
            .post(
                &mut rng,
                &bob.author(0),
                content::TEXT,
                b"x".to_vec(),
                T0 + 2 * MIN
            )
            .unwrap_err(),
        RoomError::Refused(RejectReason::RoomDeleted)
    );
    let late = forge(&carol, &logs[1], Body::Control(Op::Leave), T0 + 2 * MIN, 1);
    for log in logs.iter_mut() {
        deliver(log, std::slice::from_ref(&del.bytes));
        let u = deliver(log, std::slice::from_ref(&late));
        assert_eq!(
            u.notices[0].event,
            Event::Rejected {
                kind: EntryKind::NonAuthoritative,
                reason: RejectReason::RoomDeleted
            }
        );
        assert!(log.state().unwrap().deleted);
    }
    let n = &logs[0].timeline()[1];
    assert_eq!(
        n.render(|u| if *u == bob.public() {
            "bob".into()
        } else {
            "?".into()
        }),
        Some("bob deleted the room".into())
    );
    let _ = alice;
}

/// The room test vector in docs/protocol.md: a create entry and a message
/// from fixed keys (Ed25519 signatures are deterministic).
#[test]
fn room_test_vector_matches_the_docs() {
    let user = UserKey::from_bytes(&[1; 32]);
    let key = DeviceKey::from_bytes(&[2; 64]);
    let cert = user.certify(&key.public_keys(), T0);
    let device = Device::new(DeviceKey::from_bytes(&[2; 64]), cert).unwrap();
    let name = [3; 32];
    let salt = [4; 32];
    let mut create = Draft {
        group: GroupId([0; 32]),
        message_id: [5; 16],
        parents: vec![],
        sender_name: name,
        timestamp: T0,
        body: Body::Control(Op::Create {
            salt,
            config: RoomConfig {
                title: "Launch".into(),
                description: "Q3 launch".into(),
                ttl: Ttl::DAY,
                members: vec![Member {
                    user: user.public(),
                    name,
                    admin: true,
                }],
            },
        }),
    }
    .sign(&key, &cert)
    .unwrap();
    // The group id is derived from the signed create (its group zeroed).
    let group = GroupId::of_create(&create);
    create.group = group;
    let create = create.encode();
    let content = MessageContent {
        salt: [6; 16],
        content_type: content::TEXT,
        body: b"hello".to_vec(),
    };
    let message = Draft {
        group,
        message_id: [7; 16],
        parents: vec![EntryHash::of(&create)],
        sender_name: name,
        timestamp: T0 + 1000,
        body: Body::Message {
            digest: content.digest(),
        },
    }
    .sign(&key, &cert)
    .unwrap()
    .encode();
    let mut log = RoomLog::new(group);
    let u = log.receive_many([
        (message.clone(), LocalMeta::default()),
        (create.clone(), LocalMeta::default()),
    ]);
    assert!(u.invalid.is_empty());
    assert_eq!(log.len(), 2);
    let _ = device;
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .unwrap();
    let section = docs.split("### Room test vector").nth(1).unwrap_or("");
    let lines: Vec<String> = [
        ("group id", hex::encode(group.0)),
        ("create entry hash", hex::encode(EntryHash::of(&create).0)),
        ("message digest", hex::encode(content.digest())),
        ("message entry hash", hex::encode(EntryHash::of(&message).0)),
        ("log head", hex::encode(log.head().0)),
    ]
    .iter()
    .map(|(what, value)| format!("{what}: {value}"))
    .collect();
    println!("{}", lines.join("\n"));
    for line in &lines {
        assert!(
            section.contains(line.as_str()),
            "docs/protocol.md room vector: {line}"
        );
    }
    println!(
        "create entry ({} bytes): {}",
        create.len(),
        hex::encode(&create)
    );
}

#[test]
fn the_pending_set_is_bounded() {
    let (mut rng, _alice, bob, carol, logs, entries) = small_room("bounded");
    let mut log = RoomLog::new(logs[0].group());
    deliver(&mut log, &entries);
    let group = log.group();
    let orphan = |p: &Person, i: u32| {
        let mut parent = [0u8; 32];
        parent[..4].copy_from_slice(&i.to_be_bytes());
        Draft {
            group,
            message_id: [0; 16],
            parents: vec![EntryHash(parent)],
            sender_name: p.name,
            timestamp: T0,
            body: Body::Message { digest: [0; 32] },
        }
        .sign(p.devices[0].key(), p.devices[0].cert())
        .unwrap()
        .encode()
    };
    // One sender holds at most MAX_PENDING_PER_SENDER; its oldest go first.
    let batch: Vec<(Vec<u8>, LocalMeta)> = (0..MAX_PENDING_PER_SENDER as u32 + 1)
        .map(|i| (orphan(&carol, i), LocalMeta::default()))
        .collect();
    let u = log.receive_many(batch);
    assert_eq!(u.pending.len(), MAX_PENDING_PER_SENDER);
    assert_eq!(u.evicted, vec![EntryHash::of(&orphan(&carol, 0))]);
    assert!(u.invalid.is_empty());
    assert_eq!(log.pending().len(), MAX_PENDING_PER_SENDER);
    // In all, at most MAX_PENDING: the sender holding most loses its oldest.
    let mut senders = Vec::new();
    while log.pending().len() < MAX_PENDING {
        let p = Person::new(&mut rng, "sybil", 1);
        for i in 0..MAX_PENDING_PER_SENDER as u32 {
            log.receive(&orphan(&p, i), LocalMeta::default()).unwrap();
        }
        senders.push(p);
    }
    let u = log.receive(&orphan(&bob, 7), LocalMeta::default()).unwrap();
    assert_eq!(u.pending.len(), 1, "bob's entry is held");
    assert_eq!(u.evicted.len(), 1);
    assert_eq!(log.pending().len(), MAX_PENDING);
    log.clear_pending();
    assert!(log.pending().is_empty());
    assert_eq!(log.len(), 1, "the resolved log is untouched");
    let u = log
        .receive(&orphan(&carol, 7), LocalMeta::default())
        .unwrap();
    assert_eq!(u.pending.len(), 1);
    // Held entries whose parents never come expire.
    assert!(log.expire(T0 + PENDING_MAX_AGE_MS).is_empty());
    assert_eq!(log.pending().len(), 1);
    log.expire(T0 + PENDING_MAX_AGE_MS + 1);
    assert!(log.pending().is_empty());
}

#[test]
fn a_large_history_comes_in_pages() {
    let s = scenario_cached();
    let full = &s.logs[0];
    let mut fresh = RoomLog::new(s.group);
    let mut pages = 0;
    loop {
        let req = HistoryRequest {
            group: s.group,
            message_id: None,
            have: fresh.heads(),
        };
        let ans = full
            .answer_within(&req, Requester::PlatformAdmin, |_| None, 1500)
            .unwrap();
        let bytes = RoomWire::Answer(ans.clone()).encode().unwrap();
        assert!(bytes.len() < 1500 + 100 || ans.entries.len() == 1);
        pages += 1;
        let (u, _) = fresh.receive_answer(&ans);
        assert!(u.invalid.is_empty() && u.pending.is_empty());
        if !ans.more {
            break;
        }
        assert!(pages < 20);
    }
    assert!(pages > 2, "{pages}");
    assert_eq!(fresh.head(), full.head());
    assert_eq!(fresh.state(), full.state());
}

/// One random step: who acts, what, and whether replicas sync first.
#[derive(Clone, Debug)]
struct Step {
    actor: usize,
    action: u8,
    target: usize,
    sync: Option<usize>,
    dt: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0usize..4,
        0u8..9,
        0usize..4,
        prop::option::of(0usize..4),
        0u64..3,
    )
        .prop_map(|(actor, action, target, sync, dt)| Step {
            actor,
            action,
            target,
            sync,
            dt,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random concurrent histories (four users acting on replicas that
    /// sync now and then, forged entries included): every replica and a
    /// fresh one fed in shuffled order agree on state, timeline and head.
    #[test]
    fn random_concurrent_histories_converge(
        steps in proptest::collection::vec(step(), 1..30),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(&format!("random-{seed}"));
        let people: Vec<Person> = ["alice", "bob", "carol", "dave"]
            .iter()
            .map(|n| Person::new(&mut rng, n, 1))
            .collect();
        let config = RoomConfig {
            title: "R".into(),
            description: String::new(),
            ttl: Ttl::DAY,
            members: vec![people[1].member(true), people[2].member(false)],
        };
        let (first, create) = RoomLog::create(&mut rng, &people[0].author(0), config, T0).unwrap();
        let group = first.group();
        let mut logs = vec![first, RoomLog::new(group), RoomLog::new(group), RoomLog::new(group)];
        let mut all = vec![create.bytes];
        for l in &mut logs[1..3] {
            deliver(l, &all);
        }
        let mut now = T0;
        for (i, st) in steps.iter().enumerate() {
            now += st.dt * 1000;
            if let Some(who) = st.sync {
                let have: Vec<Vec<u8>> = all.clone();
                logs[who].receive_many(have.into_iter().map(|b| (b, LocalMeta::default())));
            }
            let p = &people[st.actor];
            let target = &people[st.target];
            let op = match st.action {
                0..=2 => None,
                3 => Some(Op::SetTitle(format!("t{i}"))),
                4 => Some(Op::SetTtl(Ttl(i as u32 * 60))),
                5 => Some(Op::AddMember { user: target.public(), name: target.name }),
                6 => Some(Op::RemoveMember(target.public())),
                7 => Some(if i % 2 == 0 { Op::GrantAdmin(target.public()) } else { Op::RevokeAdmin(target.public()) }),
                _ => Some(Op::Leave),
            };
            let log = &mut logs[st.actor];
            if log.state().is_none() {
                continue;
            }
            let made = match op {
                None => log
                    .post(&mut rng, &p.author(0), content::TEXT, vec![i as u8], now)
                    .map(|(b, _)| b.bytes),
                Some(op) => log.propose(&mut rng, &p.author(0), op.clone(), now).map(|b| b.bytes).or_else(|_| {
                    // What the local check refuses, a modified client sends.
                    let bytes = forge(p, log, Body::Control(op), now, i as u8);
                    log.receive(&bytes, LocalMeta::default()).map(|_| bytes)
                }),
            };
            if let Ok(bytes) = made {
                all.push(bytes);
            }
        }
        for l in &mut logs {
            l.receive_many(all.iter().map(|b| (b.as_slice(), LocalMeta::default())));
        }
        let mut order: Vec<usize> = (0..all.len()).collect();
        let mut shuffle = Rng::new(&format!("shuffle-{seed}"));
        for i in (1..order.len()).rev() {
            order.swap(i, (shuffle.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut fresh = RoomLog::new(group);
        for i in order {
            fresh.receive(&all[i], LocalMeta::default()).unwrap();
        }
        // Entries rejected because their sender is not a member (and is
        // not one now) were reported and dropped; everything else is held.
        let st = fresh.state().unwrap();
        for b in &all {
            let h = EntryHash::of(b);
            if fresh.entry(&h).is_none() {
                let e = Entry::decode(b).unwrap();
                prop_assert!(!st.is_member(&e.user()), "only non-members' entries are dropped");
            }
        }
        for l in &logs {
            prop_assert_eq!(l.head(), fresh.head());
            prop_assert_eq!(l.state(), fresh.state());
            prop_assert_eq!(l.timeline(), fresh.timeline());
        }
        prop_assert_eq!(fresh.verify(), Ok(fresh.head()));
    }
}
