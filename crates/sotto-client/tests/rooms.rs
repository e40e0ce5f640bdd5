//! Secure rooms end to end: an in-process server on a real socket, real
//! clients in temp dirs, every room message in normal encrypted datagrams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_client::{Client, LineContent, RoomChanges, RoomNotice, Ttl};
use sotto_device::testing::{room_messages, room_notices};
use sotto_proto::room::{EntryKind, RejectReason};
use sotto_server::{Config, Running};
use tempfile::TempDir;

const PW: &str = "correct horse battery staple";

struct Server {
    _running: Running,
    url: String,
    data: PathBuf,
    _dir: TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let running = sotto_server::start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("srv"),
    ))
    .await
    .unwrap();
    Server {
        url: format!("https://{}", running.addr),
        _running: running,
        data: dir.path().join("srv"),
        _dir: dir,
    }
}

fn home(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

async fn register(srv: &Server, home: &Path, name: &str) -> Client {
    Client::register(home, PW, name, &srv.url, None)
        .await
        .unwrap()
        .0
}

async fn link(srv: &Server, existing: &mut Client, home: &Path) -> Client {
    let pending = Client::link_start(home, PW, &srv.url, None).await.unwrap();
    let code = pending.code().to_string();
    let (new, approved) = tokio::join!(
        pending.wait(Duration::from_secs(60)),
        existing.approve(&code)
    );
    approved.unwrap();
    new.unwrap()
}

/// Syncs every client a few rounds, so that requests get answered and
/// answers taken in.
async fn settle(clients: &mut [&mut Client]) {
    for _ in 0..3 {
        for c in clients.iter_mut() {
            let r = c.sync().await.unwrap();
            assert!(r.rejected.is_empty(), "{}: {:?}", c.username(), r.rejected);
        }
    }
}

fn messages(c: &mut Client, room: &str) -> Vec<String> {
    room_messages(&c.room_show(room).unwrap())
}

fn notices(c: &mut Client, room: &str) -> Vec<(String, RoomNotice)> {
    room_notices(&c.room_show(room).unwrap())
}

fn by(who: &str, n: RoomNotice) -> (String, RoomNotice) {
    (who.to_string(), n)
}

fn is_notice(l: &sotto_client::RoomLine) -> bool {
    matches!(l.content, LineContent::Notice(_))
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_two_devices_converge() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut bob2 = link(&srv, &mut bob, &home(&dir, "bob2")).await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    let mut dave = register(&srv, &home(&dir, "dave"), "dave").await;
    settle(&mut [&mut bob, &mut bob2]).await;

    let created = alice
        .room_create(
            "Launch",
            "Q3 launch",
            Ttl::DAY,
            &names(&["bob", "carol"]),
            &names(&["bob"]),
        )
        .await
        .unwrap();
    assert_eq!((created.members, created.ttl), (3, Ttl::DAY));
    settle(&mut [&mut bob, &mut bob2, &mut carol]).await;
    for c in [&mut bob, &mut bob2, &mut carol] {
        let v = c.room_show("Launch").unwrap();
        assert_eq!(
            (v.title.as_str(), v.description.as_str(), v.ttl),
            ("Launch", "Q3 launch", Ttl::DAY)
        );
        let members: Vec<(String, bool)> = v
            .members
            .iter()
            .map(|m| (m.name.clone(), m.admin))
            .collect();
        assert_eq!(
            members,
            vec![
                ("alice".into(), true),
                ("bob".into(), true),
                ("carol".into(), false)
            ],
            "admins first, names resolved"
        );
    }

    bob.room_send("Launch", "draft is in the shared drive")
        .await
        .unwrap();
    settle(&mut [&mut alice, &mut bob2, &mut carol]).await;
    for c in [&mut alice, &mut bob2, &mut carol] {
        assert_eq!(
            messages(c, "Launch"),
            vec!["bob: draft is in the shared drive"]
        );
    }
    let found = carol.room_search("Launch", "DRAFT").unwrap();
    assert_eq!(found.len(), 1);
    assert!(carol
        .room_search("Launch", "nothing like it")
        .unwrap()
        .is_empty());

    let lines = bob
        .room_set(
            "Launch",
            &RoomChanges {
                ttl: Some(Ttl::HOUR),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ttl_changed = RoomNotice::TtlChanged {
        from: Ttl::DAY,
        to: Ttl::HOUR,
    };
    let got: Vec<(&str, &str, &LineContent)> = lines
        .iter()
        .map(|e| (e.title.as_str(), e.line.from.as_str(), &e.line.content))
        .collect();
    assert_eq!(
        got,
        vec![("Launch", "bob", &LineContent::Notice(ttl_changed.clone()))]
    );
    settle(&mut [&mut alice, &mut bob2, &mut carol]).await;
    assert!(notices(&mut carol, "Launch").contains(&by("bob", ttl_changed)));

    // Add dave: his device gets the add entry, asks for the history.
    alice
        .room_set(
            "Launch",
            &RoomChanges {
                add: names(&["dave"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    settle(&mut [&mut dave, &mut alice, &mut bob, &mut bob2, &mut carol]).await;
    let v = dave.room_show("Launch").unwrap();
    assert_eq!(v.ttl, Ttl::HOUR);
    assert_eq!(v.members.len(), 4);
    assert!(
        messages(&mut dave, "Launch").is_empty(),
        "dave gets nothing sent before he joined"
    );
    dave.room_send("Launch", "hello from dave").await.unwrap();
    settle(&mut [&mut alice, &mut bob, &mut bob2, &mut carol]).await;
    assert!(messages(&mut carol, "Launch").contains(&"dave: hello from dave".to_string()));

    // Remove dave, then carol leaves.
    bob.room_set(
        "Launch",
        &RoomChanges {
            remove: names(&["dave"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    settle(&mut [&mut alice, &mut bob2, &mut carol, &mut dave]).await;
    assert!(
        notices(&mut dave, "Launch").contains(&by("bob", RoomNotice::MemberRemoved("dave".into())))
    );
    carol.room_leave("Launch").await.unwrap();
    settle(&mut [&mut alice, &mut bob, &mut bob2, &mut carol]).await;

    let reference = alice.room_show("Launch").unwrap();
    let members: Vec<&str> = reference.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, vec!["alice", "bob"]);
    assert!(notices(&mut alice, "Launch").contains(&by("carol", RoomNotice::Left)));
    for c in [&mut bob, &mut bob2, &mut carol] {
        let v = c.room_show("Launch").unwrap();
        assert_eq!(
            v.head,
            reference.head,
            "{} has the same log head",
            c.username()
        );
        assert_eq!(
            (v.title, v.ttl, v.members, v.entries),
            (
                reference.title.clone(),
                reference.ttl,
                reference.members.clone(),
                reference.entries
            )
        );
    }
    for c in [&mut alice, &mut bob, &mut bob2, &mut carol] {
        assert_eq!(c.room_log("Launch", true).unwrap().broken, None);
    }
}

fn stored(c: &Client, room: &str) -> Vec<String> {
    let mut v = c.room_stored_bodies(room).unwrap();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_control_from_a_non_admin_is_discarded_everywhere() {
    use sotto_proto::room::Op;
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut bob2 = link(&srv, &mut bob, &home(&dir, "bob2")).await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    settle(&mut [&mut bob, &mut bob2]).await;
    alice
        .room_create("Ops", "", Ttl::DAY, &names(&["bob", "carol"]), &[])
        .await
        .unwrap();
    settle(&mut [&mut bob, &mut bob2, &mut carol]).await;
    let head = alice.room_show("Ops").unwrap().head;

    // carol is a member, not an admin: the library refuses locally...
    let e = carol
        .room_set(
            "Ops",
            &RoomChanges {
                ttl: Some(Ttl::HOUR),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not an admin"), "{e}");
    // ...so she signs the entries herself and sends them, validly encrypted.
    carol
        .room_forge("Ops", Op::SetTtl(Ttl::HOUR))
        .await
        .unwrap();
    let alice_key = {
        let records = alice.room_records("Ops").unwrap();
        sotto_proto::room::Entry::decode(&records[0].1)
            .unwrap()
            .sender
            .user
    };
    carol
        .room_forge("Ops", Op::RemoveMember(alice_key))
        .await
        .unwrap();
    carol
        .room_forge("Ops", Op::GrantAdmin(alice_key))
        .await
        .unwrap();
    settle(&mut [&mut alice, &mut bob, &mut bob2]).await;
    for c in [&mut alice, &mut bob, &mut bob2] {
        let v = c.room_show("Ops").unwrap();
        assert_eq!(v.ttl, Ttl::DAY, "{}: TTL unchanged", c.username());
        assert_eq!(v.members.len(), 3, "alice still a member");
        assert_eq!(v.members.iter().filter(|m| m.admin).count(), 1);
        let refused = by(
            "carol",
            RoomNotice::Discarded {
                kind: EntryKind::Authoritative,
                reason: RejectReason::NotAdmin,
            },
        );
        let discarded = notices(c, "Ops").iter().filter(|n| **n == refused).count();
        assert_eq!(discarded, 3, "{}: reported", c.username());
        assert_ne!(
            v.head, head,
            "the discarded entries are in the log (reported), state untouched"
        );
    }
    let h = alice.room_show("Ops").unwrap().head;
    assert_eq!(bob.room_show("Ops").unwrap().head, h);
    assert_eq!(bob2.room_show("Ops").unwrap().head, h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_cannot_read_what_follows() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    alice
        .room_create("Board", "", Ttl::OFF, &names(&["bob", "carol"]), &[])
        .await
        .unwrap();
    alice.room_send("Board", "before removal").await.unwrap();
    settle(&mut [&mut bob, &mut carol]).await;
    assert_eq!(stored(&carol, "Board"), vec!["before removal"]);

    alice
        .room_set(
            "Board",
            &RoomChanges {
                remove: names(&["carol"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    alice.room_send("Board", "after removal").await.unwrap();
    settle(&mut [&mut bob, &mut carol]).await;
    assert_eq!(
        stored(&bob, "Board"),
        vec!["after removal", "before removal"]
    );
    assert_eq!(
        stored(&carol, "Board"),
        vec!["before removal"],
        "nothing new in carol's store"
    );
    assert!(notices(&mut carol, "Board")
        .contains(&by("alice", RoomNotice::MemberRemoved("carol".into()))));
    let v = carol.room_show("Board").unwrap();
    assert!(v.members.iter().all(|m| m.name != "carol"));
    assert!(!carol.rooms().unwrap()[0].member);

    // The datagram of "after removal" (its id as bob recorded it): the
    // server does not give it to carol, and its bytes do not open for her.
    let id = bob.room_datagram_ids("Board").unwrap().pop().unwrap();
    let bytes = bob.fetch_datagram(&id).await.unwrap();
    assert!(bob.can_open(&bytes).await.is_ok());
    assert!(
        carol.fetch_datagram(&id).await.is_err(),
        "not served to carol"
    );
    assert!(
        !carol.can_open(&bytes).await.unwrap(),
        "not sealed to carol's device"
    );
    // Carol's own posts are refused by the members' logs.
    assert!(carol.room_send("Board", "still here?").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_purges_standard_messages_and_keeps_control() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    alice
        .room_create("Brief", "", Ttl::TEN_MINUTES, &names(&["bob"]), &[])
        .await
        .unwrap();
    alice.room_send("Brief", "self-destructs").await.unwrap();
    settle(&mut [&mut bob]).await;
    bob.room_send("Brief", "me too").await.unwrap();
    settle(&mut [&mut alice]).await;
    for c in [&alice, &bob] {
        assert_eq!(stored(c, "Brief"), vec!["me too", "self-destructs"]);
    }
    let entries = bob.room_records("Brief").unwrap().len();

    bob.shift_room_clock(9 * 60 * 1000);
    bob.sync().await.unwrap();
    assert_eq!(stored(&bob, "Brief").len(), 2, "not yet");
    bob.shift_room_clock(2 * 60 * 1000);
    bob.sync().await.unwrap();
    assert!(stored(&bob, "Brief").is_empty(), "purged from the store");
    let v = bob.room_show("Brief").unwrap();
    assert!(v.lines.iter().all(is_notice));
    assert!(
        v.lines
            .iter()
            .any(|l| matches!(l.content, LineContent::Notice(RoomNotice::Created { .. }))),
        "control kept"
    );
    assert_eq!(
        bob.room_records("Brief").unwrap().len(),
        entries,
        "entries stay as tombstones"
    );
    assert_eq!(
        bob.room_log("Brief", true).unwrap().broken,
        None,
        "the log still verifies"
    );
    assert_eq!(v.head, alice.room_show("Brief").unwrap().head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_before_the_add_that_allows_it_is_resolved_by_a_request() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    alice
        .room_create("Late", "", Ttl::OFF, &names(&["bob"]), &[])
        .await
        .unwrap();
    settle(&mut [&mut bob]).await;
    // The add of carol never reaches bob.
    alice.drop_room_deliveries_to(&["bob"]);
    alice
        .room_set(
            "Late",
            &RoomChanges {
                add: names(&["carol"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    alice.drop_room_deliveries_to(&[]);
    settle(&mut [&mut carol, &mut alice]).await;
    assert_eq!(carol.room_show("Late").unwrap().members.len(), 3);

    carol.room_send("Late", "hi, I am new").await.unwrap();
    // bob: a message from a sender not on his member list.
    let r = bob.sync().await.unwrap();
    assert!(r.rejected.is_empty());
    assert!(
        bob.room_show("Late").unwrap().lines.iter().all(is_notice),
        "held"
    );
    assert_eq!(bob.room_show("Late").unwrap().members.len(), 2);
    settle(&mut [&mut carol, &mut bob, &mut alice]).await;
    let v = bob.room_show("Late").unwrap();
    assert_eq!(v.members.len(), 3, "the add came with the answer");
    assert_eq!(messages(&mut bob, "Late"), vec!["carol: hi, I am new"]);
    assert!(
        notices(&mut bob, "Late").contains(&by("alice", RoomNotice::MemberAdded("carol".into())))
    );
    assert_eq!(v.head, alice.room_show("Late").unwrap().head);
    assert_eq!(v.head, carol.room_show("Late").unwrap().head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_recovers_what_its_user_is_entitled_to() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    let room = alice
        .room_create("Plans", "", Ttl::OFF, &names(&["carol"]), &[])
        .await
        .unwrap();
    alice.room_send("Plans", "before bob").await.unwrap();
    alice
        .room_set(
            "Plans",
            &RoomChanges {
                add: names(&["bob"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    settle(&mut [&mut bob, &mut alice, &mut carol]).await;
    alice.room_send("Plans", "after bob joined").await.unwrap();
    carol.room_send("Plans", "carol agrees").await.unwrap();
    settle(&mut [&mut bob]).await;
    bob.room_send("Plans", "bob here").await.unwrap();
    settle(&mut [&mut alice, &mut carol]).await;
    assert_eq!(
        stored(&bob, "Plans"),
        vec!["after bob joined", "bob here", "carol agrees"]
    );

    // A freshly linked device knows nothing of the room; it asks bob's
    // other device, then takes the answer and fetches the granted datagrams.
    let mut bob2 = link(&srv, &mut bob, &home(&dir, "bob2")).await;
    assert!(bob2.rooms().unwrap().is_empty());
    bob2.room_recover(&hex::encode(room.group.0), None)
        .await
        .unwrap();
    settle(&mut [&mut bob, &mut bob2]).await;
    assert_eq!(
        stored(&bob2, "Plans"),
        vec!["after bob joined", "bob here", "carol agrees"],
        "exactly what bob was a member for"
    );
    let v = bob2.room_show("Plans").unwrap();
    assert_eq!(v.head, bob.room_show("Plans").unwrap().head);
    assert_eq!(v.members.len(), 3);

    // Asking another member gives the same, nothing more.
    let mut bob3 = link(&srv, &mut bob, &home(&dir, "bob3")).await;
    bob3.room_recover(&hex::encode(room.group.0), Some("carol"))
        .await
        .unwrap();
    settle(&mut [&mut carol, &mut bob3]).await;
    assert_eq!(
        stored(&bob3, "Plans"),
        vec!["after bob joined", "bob here", "carol agrees"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_log_entry_is_caught_by_verify() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let _bob = register(&srv, &home(&dir, "bob"), "bob").await;
    alice
        .room_create("Audit", "", Ttl::OFF, &names(&["bob"]), &[])
        .await
        .unwrap();
    alice.room_send("Audit", "one").await.unwrap();
    alice.room_send("Audit", "two").await.unwrap();
    assert_eq!(alice.room_log("Audit", true).unwrap().broken, None);

    let records = alice.room_records("Audit").unwrap();
    let mut bytes = records[1].1.clone();
    let last = bytes.len() - 70; // inside the signed body
    bytes[last] ^= 1;
    assert!(alice.tamper_room_record("Audit", 1, &bytes).unwrap());
    let report = alice.room_log("Audit", true).unwrap();
    let broken = report.broken.expect("caught");
    assert_eq!(broken.position, 1, "entry 2: {broken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_edits_converge_then_delete() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    alice
        .room_create(
            "Both",
            "",
            Ttl::DAY,
            &names(&["bob", "carol"]),
            &names(&["bob"]),
        )
        .await
        .unwrap();
    settle(&mut [&mut bob, &mut carol]).await;
    // Two admins change the room without seeing each other's change.
    let set = |title: &str, ttl| RoomChanges {
        title: Some(title.into()),
        ttl: Some(ttl),
        ..Default::default()
    };
    alice
        .room_set("Both", &set("Alpha", Ttl::HOUR))
        .await
        .unwrap();
    bob.room_set("Both", &set("Beta", Ttl::WEEK)).await.unwrap();
    settle(&mut [&mut alice, &mut bob, &mut carol]).await;
    let id = hex::encode(alice.rooms().unwrap()[0].group.0);
    let reference = alice.room_show(&id).unwrap();
    assert!(["Alpha", "Beta"].contains(&reference.title.as_str()));
    for c in [&mut bob, &mut carol] {
        let v = c.room_show(&id).unwrap();
        assert_eq!(
            (&v.title, &v.ttl, &v.head),
            (&reference.title, &reference.ttl, &reference.head)
        );
    }

    alice
        .room_set(
            &id,
            &RoomChanges {
                delete: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    settle(&mut [&mut bob, &mut carol]).await;
    let head = alice.room_show(&id).unwrap().head;
    for c in [&mut alice, &mut bob, &mut carol] {
        let v = c.room_show(&id).unwrap();
        assert!(v.deleted, "{}", c.username());
        assert_eq!(v.head, head);
        assert!(notices(c, &id).contains(&by("alice", RoomNotice::Deleted)));
    }
    let e = bob.room_send(&id, "anyone?").await.unwrap_err();
    assert!(e.to_string().contains("deleted"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_shows_room_lines_as_they_arrive() {
    use sotto_client::Event;
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listen = bob.listen(move |e| {
        let _ = tx.send(e);
    });
    let drive = async {
        let mut got = Vec::new();
        let mut started = false;
        while got.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("event in time")
                .unwrap()
            {
                Event::Room(e) => got.push((e.title, e.line.from, e.line.content)),
                Event::Connected if !started => {
                    started = true;
                    alice
                        .room_create("Live", "", Ttl::OFF, &names(&["bob"]), &[])
                        .await
                        .unwrap();
                    alice.room_send("Live", "pushed to the room").await.unwrap();
                }
                _ => {}
            }
        }
        got
    };
    let got = tokio::select! {
        r = listen => panic!("listen returned: {r:?}"),
        got = drive => got,
    };
    let live = |from: &str, c: LineContent| ("Live".to_string(), from.to_string(), c);
    assert_eq!(
        got,
        [
            live(
                "alice",
                LineContent::Notice(RoomNotice::Created {
                    title: "Live".into(),
                    ttl: Ttl::OFF
                })
            ),
            live("alice", LineContent::Message("pushed to the room".into()))
        ]
    );
}

fn files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_metadata_is_not_readable_on_the_server_or_on_disk() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    alice
        .room_create(
            "UnmistakableTitle",
            "SecretPurposeText",
            Ttl::OFF,
            &names(&["bob"]),
            &[],
        )
        .await
        .unwrap();
    alice
        .room_send("UnmistakableTitle", "PlainMessageText")
        .await
        .unwrap();
    settle(&mut [&mut bob]).await;
    assert_eq!(stored(&bob, "UnmistakableTitle"), vec!["PlainMessageText"]);
    let mut all = Vec::new();
    files(&srv.data, &mut all);
    files(dir.path(), &mut all);
    assert!(!all.is_empty());
    for needle in ["UnmistakableTitle", "SecretPurposeText", "PlainMessageText"] {
        for (p, b) in &all {
            assert!(
                !b.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} readable in {p:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_for_an_unknown_room_is_resolved_by_a_request() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    // The create never reaches bob; the first message does.
    alice.drop_room_deliveries_to(&["bob"]);
    alice
        .room_create("Lost", "", Ttl::OFF, &names(&["bob"]), &[])
        .await
        .unwrap();
    alice.drop_room_deliveries_to(&[]);
    alice.room_send("Lost", "where is the room?").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert!(
        bob.rooms().unwrap().is_empty(),
        "held until the history comes"
    );
    settle(&mut [&mut alice, &mut bob]).await;
    assert_eq!(bob.rooms().unwrap().len(), 1);
    assert_eq!(
        messages(&mut bob, "Lost"),
        vec!["alice: where is the room?"]
    );
    assert_eq!(
        bob.room_show("Lost").unwrap().head,
        alice.room_show("Lost").unwrap().head
    );
}
