//! One test suite for every [`Store`] backend (the way matrix-sdk-crypto
//! runs `cryptostore_integration_tests!` on each). A backend implements
//! [`Backend`]; [`crate::store_suite!`] makes one `#[test]` per check.

use zeroize::Zeroizing;

use crate::store::{
    Account, ChangeSet, Contact, HistoryQuery, Message, RoomMessageRow, RoomRecord, RoomSave, Store,
};

/// How the suite gets stores of one backend.
pub trait Backend {
    /// A new, empty store.
    fn create(&mut self) -> Box<dyn Store>;
    /// The store made by `create`, opened again (the previous handle is
    /// dropped first): only what was committed is there.
    fn reopen(&mut self) -> Box<dyn Store>;
}

/// Makes one `#[test]` per check of the suite for a backend: pass an
/// expression that makes a fresh [`Backend`].
#[macro_export]
macro_rules! store_suite {
    ($backend:expr) => {
        $crate::store_suite!(@tests $backend;
            account_round_trip,
            device_state_survives_reopen,
            history_dedupes_filters_limits_and_expires,
            contacts_and_blocks,
            rooms_round_trip_and_expiry,
            deletes_come_after_inserts,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let mut backend = $backend;
                $crate::testing::suite::$name(&mut backend);
            }
        )*
    };
}

/// An account with recognisable values.
pub fn account() -> Account {
    Account {
        username: "alice-unique-name".into(),
        user_key: Some(Zeroizing::new([7; 32])),
        device_key: Zeroizing::new([8; 64]),
        device_cert: vec![1, 2, 3],
        server_url: "https://127.0.0.1:7443".into(),
        server_fingerprint: "ab".repeat(32),
        cursor: 0,
        next_prekey_id: 5,
        clock_offset_ms: -3_600_000,
    }
}

/// A received message with id `id`.
pub fn message(id: u8, body: &str) -> Message {
    Message {
        id: [id; 16],
        conversation: [9; 32],
        from: "alice-unique-name".into(),
        to: "bobby-unique-name".into(),
        sent_at: 1000 + id as u64,
        received_at: 2000,
        body: body.into(),
        ttl: 0,
        outgoing: false,
    }
}

fn commit(s: &mut dyn Store, c: ChangeSet) {
    s.commit(c).expect("commit");
}

fn with_account(b: &mut dyn Backend) -> Box<dyn Store> {
    let mut s = b.create();
    commit(
        &mut *s,
        ChangeSet {
            account: Some(account()),
            ..ChangeSet::default()
        },
    );
    s
}

pub fn account_round_trip(b: &mut dyn Backend) {
    let mut s = b.create();
    assert!(s.account().unwrap().is_none());
    commit(
        &mut *s,
        ChangeSet {
            account: Some(account()),
            ..ChangeSet::default()
        },
    );
    commit(
        &mut *s,
        ChangeSet {
            username: Some("renamed".into()),
            server_fingerprint: Some("cd".repeat(32)),
            clock_offset_ms: Some(42),
            cursor: Some(9),
            next_prekey_id: Some(77),
            ..ChangeSet::default()
        },
    );
    // The cursor only moves forward.
    commit(
        &mut *s,
        ChangeSet {
            cursor: Some(3),
            ..ChangeSet::default()
        },
    );
    drop(s);
    let a = b.reopen().account().unwrap().expect("account kept");
    assert_eq!(a.username, "renamed");
    assert_eq!(a.server_fingerprint, "cd".repeat(32));
    assert_eq!((a.clock_offset_ms, a.cursor, a.next_prekey_id), (42, 9, 77));
    assert_eq!(&a.user_key.unwrap()[..], &[7; 32]);
    assert_eq!(&a.device_key[..], &[8; 64][..]);
    assert_eq!(a.device_cert, vec![1, 2, 3]);
    assert_eq!(a.server_url, "https://127.0.0.1:7443");
}

pub fn device_state_survives_reopen(b: &mut dyn Backend) {
    let mut s = with_account(b);
    commit(
        &mut *s,
        ChangeSet {
            sessions: vec![
                ([1; 16], Some(Zeroizing::new(vec![1, 1]))),
                ([2; 16], Some(Zeroizing::new(vec![2, 2]))),
            ],
            prekeys: vec![
                (1, Some(Zeroizing::new(vec![10]))),
                (2, Some(Zeroizing::new(vec![20]))),
            ],
            ..ChangeSet::default()
        },
    );
    commit(
        &mut *s,
        ChangeSet {
            sessions: vec![([1; 16], None), ([2; 16], Some(Zeroizing::new(vec![2, 3])))],
            prekeys: vec![(1, None)],
            ..ChangeSet::default()
        },
    );
    drop(s);
    let s = b.reopen();
    let sessions: Vec<Vec<u8>> = s.sessions().unwrap().iter().map(|z| z.to_vec()).collect();
    assert_eq!(sessions, vec![vec![2, 3]]);
    let prekeys: Vec<Vec<u8>> = s.prekeys().unwrap().iter().map(|z| z.to_vec()).collect();
    assert_eq!(prekeys, vec![vec![20]]);
}

pub fn history_dedupes_filters_limits_and_expires(b: &mut dyn Backend) {
    let mut s = with_account(b);
    let mut other = message(3, "to carol");
    other.to = "carol".into();
    other.conversation = [4; 32];
    let mut short = message(4, "short-lived");
    short.ttl = 10;
    commit(
        &mut *s,
        ChangeSet {
            messages: vec![message(1, "one"), message(2, "two"), other, short],
            ..ChangeSet::default()
        },
    );
    // Delivered again: stored once, the first copy kept.
    commit(
        &mut *s,
        ChangeSet {
            messages: vec![message(1, "one again")],
            ..ChangeSet::default()
        },
    );
    assert!(s.has_message(&[1; 16]).unwrap());
    assert!(!s.has_message(&[9; 16]).unwrap());
    let all = s.history(&HistoryQuery::default()).unwrap();
    let bodies: Vec<&str> = all.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["one", "two", "to carol", "short-lived"]);
    let carol = s
        .history(&HistoryQuery {
            peer: Some("Carol".into()),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(carol.len(), 1);
    let conv = s
        .history(&HistoryQuery {
            conversation: Some([9; 32]),
            limit: Some(2),
            ..HistoryQuery::default()
        })
        .unwrap();
    let bodies: Vec<&str> = conv.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(
        bodies,
        ["two", "short-lived"],
        "the newest two, oldest first"
    );
    // sent_at 1004 + 10 s: still there just before, gone at.
    commit(
        &mut *s,
        ChangeSet {
            expire_messages_at: Some(11_003),
            ..ChangeSet::default()
        },
    );
    assert!(s.has_message(&[4; 16]).unwrap());
    commit(
        &mut *s,
        ChangeSet {
            expire_messages_at: Some(11_004),
            messages_deleted: vec![[2; 16]],
            ..ChangeSet::default()
        },
    );
    drop(s);
    let s = b.reopen();
    let bodies: Vec<String> = s
        .history(&HistoryQuery::default())
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["one", "to carol"]);
}

fn contact(name: &str, key: u8) -> Contact {
    Contact {
        username: name.into(),
        username_hash: sotto_proto::username_hash(name),
        user_key: [key; 32],
        verified: false,
        devices: vec![vec![1, 2], vec![3]],
    }
}

pub fn contacts_and_blocks(b: &mut dyn Backend) {
    let mut s = with_account(b);
    commit(
        &mut *s,
        ChangeSet {
            contacts: vec![contact("bob", 1), contact("carol", 2)],
            blocks: vec![("Mallory".into(), true), ("eve".into(), true)],
            ..ChangeSet::default()
        },
    );
    let mut bob = contact("bob", 1);
    bob.verified = true;
    commit(
        &mut *s,
        ChangeSet {
            contacts: vec![bob.clone()],
            blocks: vec![("eve".into(), false)],
            ..ChangeSet::default()
        },
    );
    drop(s);
    let s = b.reopen();
    assert_eq!(s.contact("BOB").unwrap(), Some(bob));
    assert!(s.contact("dave").unwrap().is_none());
    let names: Vec<String> = s
        .contacts()
        .unwrap()
        .into_iter()
        .map(|c| c.username)
        .collect();
    assert_eq!(names, ["bob", "carol"]);
    assert!(s.is_blocked("mallory").unwrap());
    assert!(!s.is_blocked("eve").unwrap());
    assert_eq!(s.blocked().unwrap(), ["mallory"]);
    // A contact's name is found by its hash.
    assert_eq!(
        s.name_for_hash(&sotto_proto::username_hash("carol"))
            .unwrap()
            .as_deref(),
        Some("carol")
    );
}

fn record(n: u8, pending: bool) -> RoomRecord {
    RoomRecord {
        hash: [n; 32],
        bytes: vec![n; 10],
        message_key: (n & 1 == 0).then_some([9; 32]),
        datagram_id: Some([n ^ 0xff; 32]),
        purged: n == 3,
        pending,
        // Stored out of hash order: the store sorts by (time, height).
        time: if pending { 0 } else { 100 - n as u64 },
        height: n as u32,
    }
}

fn room_row(entry: u8, group: [u8; 32], sent_at: u64) -> RoomMessageRow {
    RoomMessageRow {
        entry: [entry; 32],
        group,
        sender: [3; 32],
        sent_at,
        content_type: 1,
        salt: [4; 16],
        body: format!("body {entry}").into_bytes(),
    }
}

pub fn rooms_round_trip_and_expiry(b: &mut dyn Backend) {
    let mut s = with_account(b);
    let g = [1u8; 32];
    let records = vec![record(1, false), record(2, false), record(3, true)];
    let save = |title: &str, head: u8, records: Vec<RoomRecord>, next: Option<u64>| RoomSave {
        group: g,
        title: title.into(),
        head: [head; 32],
        records,
        removed: Vec::new(),
        next_expiry: next,
    };
    commit(
        &mut *s,
        ChangeSet {
            rooms: vec![
                save("Launch", 7, records.clone(), Some(5_000)),
                RoomSave {
                    group: [2; 32],
                    title: "Alpha".into(),
                    head: [0; 32],
                    records: vec![record(4, false)],
                    removed: Vec::new(),
                    next_expiry: None,
                },
            ],
            room_messages: vec![room_row(2, g, 20), room_row(1, g, 10)],
            room_names: vec![([5; 32], "bob".into())],
            ..ChangeSet::default()
        },
    );
    assert_eq!(
        s.rooms().unwrap(),
        vec![([2; 32], "Alpha".to_string()), (g, "Launch".to_string())],
        "by title"
    );
    assert_eq!(s.room_head(&g).unwrap(), Some([7; 32]));
    assert_eq!(s.room_head(&[9; 32]).unwrap(), None);
    assert_eq!(
        s.room_records(&g).unwrap(),
        vec![records[1].clone(), records[0].clone(), records[2].clone()],
        "resolved order (time, height, hash), pending last"
    );
    assert!(s.rooms_due(4_999).unwrap().is_empty());
    assert_eq!(s.rooms_due(5_000).unwrap(), vec![g]);
    let rows = s.room_messages(&g).unwrap();
    assert_eq!(
        rows,
        vec![room_row(1, g, 10), room_row(2, g, 20)],
        "oldest first"
    );
    // A second copy of a content row is ignored; a save replaces the
    // records it names and deletes the removed ones, leaving the others;
    // no expiry left clears it.
    let mut changed = room_row(1, g, 10);
    changed.body = b"other".to_vec();
    let mut purged = record(1, false);
    purged.purged = true;
    let mut update = save("Launch 2", 8, vec![purged.clone()], None);
    update.removed = vec![[3; 32]];
    commit(
        &mut *s,
        ChangeSet {
            rooms: vec![update],
            room_messages: vec![changed],
            room_messages_deleted: vec![[2; 32]],
            ..ChangeSet::default()
        },
    );
    drop(s);
    let s = b.reopen();
    assert_eq!(
        s.room_records(&g).unwrap(),
        vec![records[1].clone(), purged]
    );
    assert!(s.rooms_due(u64::MAX).unwrap().is_empty());
    assert_eq!(s.room_message(&[1; 32]).unwrap(), Some(room_row(1, g, 10)));
    assert_eq!(s.room_message(&[2; 32]).unwrap(), None);
    assert_eq!(s.name_for_hash(&[5; 32]).unwrap().as_deref(), Some("bob"));
    assert_eq!(s.name_for_hash(&[6; 32]).unwrap(), None);
}

pub fn deletes_come_after_inserts(b: &mut dyn Backend) {
    let mut s = with_account(b);
    let g = [1u8; 32];
    commit(
        &mut *s,
        ChangeSet {
            messages: vec![message(1, "sent, then refused")],
            messages_deleted: vec![[1; 16]],
            room_messages: vec![room_row(1, g, 1)],
            room_messages_deleted: vec![[1; 32]],
            sessions: vec![([1; 16], Some(Zeroizing::new(vec![1])))],
            ..ChangeSet::default()
        },
    );
    assert!(!s.has_message(&[1; 16]).unwrap());
    assert!(s.room_message(&[1; 32]).unwrap().is_none());
    assert_eq!(s.sessions().unwrap().len(), 1);
}
