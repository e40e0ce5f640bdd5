//! Rooms between devices wired together in memory, no server and no
//! network: the same flows as the end-to-end room tests (create, send,
//! change, add, remove, leave; entries out of order and twice; a message
//! whose sender the log does not know yet; a new device recovering its
//! history from a history answer) reaching the same state on every device.

mod common;

use common::*;
use sotto_device::testing::{room_messages, room_notices, Net, Node};
use sotto_device::{Error, RoomChanges, RoomNotice, RoomRefusal, Ttl};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn create(net: &mut Net, n: &mut Node, title: &str, members: &[&str], admins: &[&str]) {
    let op = n
        .machine
        .room_create(
            net.now,
            title,
            "",
            Ttl::OFF,
            &names(members),
            &names(admins),
        )
        .unwrap();
    net.finish(n, &op).unwrap();
}

fn send(net: &mut Net, n: &mut Node, room: &str, text: &str) {
    let op = n.machine.room_send(net.now, room, text).unwrap();
    net.finish(n, &op).unwrap();
}

fn messages(net: &Net, n: &mut Node, room: &str) -> Vec<String> {
    room_messages(&n.machine.room_show(net.now, room).unwrap())
}

fn notices(net: &Net, n: &mut Node, room: &str) -> Vec<(String, RoomNotice)> {
    room_notices(&n.machine.room_show(net.now, room).unwrap())
}

fn add(net: &mut Net, n: &mut Node, room: &str, who: &str) {
    let changes = RoomChanges {
        add: names(&[who]),
        ..Default::default()
    };
    change(net, n, room, changes);
}

/// Syncs each node a few rounds, so that requests are answered and the
/// answers taken in.
fn settle(net: &mut Net, nodes: &mut [&mut Node]) {
    for _ in 0..3 {
        for n in nodes.iter_mut() {
            let r = net.sync(n);
            assert!(
                r.rejected.is_empty(),
                "{}: {:?}",
                n.machine.username(),
                r.rejected
            );
            assert!(
                r.failures.is_empty(),
                "{}: {:?}",
                n.machine.username(),
                r.failures
            );
        }
    }
}

fn change(net: &mut Net, n: &mut Node, room: &str, changes: RoomChanges) {
    let op = n.machine.room_set(net.now, room, &changes).unwrap();
    net.finish(n, &op).unwrap();
}

fn head(net: &Net, n: &mut Node, room: &str) -> sotto_proto::room::LogHead {
    n.machine.room_show(net.now, room).unwrap().head
}

fn stored(n: &Node, room: &str) -> Vec<String> {
    let mut v = n.machine.room_stored_bodies(room).unwrap();
    v.sort();
    v
}

#[test]
fn three_users_and_a_second_device_converge() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut bob2 = net.link(&mut bob, rng(3));
    let mut carol = register(&mut net, "carol", 4);
    let mut dave = register(&mut net, "dave", 5);
    let op = alice
        .machine
        .room_create(
            net.now,
            "Launch",
            "Q3",
            Ttl::DAY,
            &names(&["bob", "carol"]),
            &names(&["bob"]),
        )
        .unwrap();
    let created = net.finish(&mut alice, &op).unwrap();
    assert_eq!((created.members, created.ttl), (3, Ttl::DAY));
    settle(&mut net, &mut [&mut bob, &mut bob2, &mut carol]);
    for n in [&mut bob, &mut bob2, &mut carol] {
        let v = n.machine.room_show(net.now, "Launch").unwrap();
        let members: Vec<(String, bool)> = v
            .members
            .iter()
            .map(|m| (m.name.clone(), m.admin))
            .collect();
        assert_eq!(
            members,
            [
                ("alice".into(), true),
                ("bob".into(), true),
                ("carol".into(), false)
            ],
            "admins first, names resolved"
        );
    }
    send(&mut net, &mut bob, "Launch", "draft is in the shared drive");
    settle(&mut net, &mut [&mut alice, &mut bob2, &mut carol]);
    for n in [&mut alice, &mut bob2, &mut carol] {
        assert_eq!(
            messages(&net, n, "Launch"),
            ["bob: draft is in the shared drive"]
        );
    }

    // A member's change is refused before anything is signed or sent.
    let e = carol
        .machine
        .room_set(
            net.now,
            "Launch",
            &RoomChanges {
                ttl: Some(Ttl::HOUR),
                ..Default::default()
            },
        )
        .map(|op| net.finish(&mut carol, &op));
    assert!(
        matches!(e, Ok(Err(Error::Room(RoomRefusal::NotAdmin { .. })))),
        "{e:?}"
    );
    change(
        &mut net,
        &mut bob,
        "Launch",
        RoomChanges {
            ttl: Some(Ttl::HOUR),
            ..Default::default()
        },
    );
    settle(&mut net, &mut [&mut alice, &mut bob2, &mut carol]);
    add(&mut net, &mut alice, "Launch", "dave");
    settle(
        &mut net,
        &mut [&mut dave, &mut alice, &mut bob, &mut bob2, &mut carol],
    );
    let v = dave.machine.room_show(net.now, "Launch").unwrap();
    assert_eq!((v.ttl, v.members.len()), (Ttl::HOUR, 4));
    assert!(
        messages(&net, &mut dave, "Launch").is_empty(),
        "nothing from before he joined"
    );
    change(
        &mut net,
        &mut bob,
        "Launch",
        RoomChanges {
            remove: names(&["dave"]),
            ..Default::default()
        },
    );
    let op = carol.machine.room_leave(net.now, "Launch").unwrap();
    net.finish(&mut carol, &op).unwrap();
    settle(
        &mut net,
        &mut [&mut alice, &mut bob, &mut bob2, &mut carol, &mut dave],
    );
    assert!(notices(&net, &mut dave, "Launch")
        .contains(&("bob".into(), RoomNotice::MemberRemoved("dave".into()))));
    assert!(notices(&net, &mut alice, "Launch").contains(&("carol".into(), RoomNotice::Left)));
    let reference = alice.machine.room_show(net.now, "Launch").unwrap();
    let members: Vec<&str> = reference.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, ["alice", "bob"]);
    for n in [&mut bob, &mut bob2, &mut carol, &mut dave] {
        let v = n.machine.room_show(net.now, "Launch").unwrap();
        assert_eq!((v.head, v.entries), (reference.head, reference.entries));
        assert_eq!(n.machine.room_log("Launch", true).unwrap().broken, None);
    }
}

#[test]
fn entries_out_of_order_and_twice_reach_the_same_head() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    create(&mut net, &mut alice, "Ops", &["bob"], &[]);
    for t in ["one", "two", "three"] {
        send(&mut net, &mut alice, "Ops", t);
    }
    change(
        &mut net,
        &mut alice,
        "Ops",
        RoomChanges {
            title: Some("Ops 2".into()),
            ..Default::default()
        },
    );
    // Newest first, each twice: entries wait for their parents, and the
    // create (last) releases them.
    let r = net.deliver_in(&mut bob, |n| (0..n).rev().flat_map(|i| [i, i]).collect());
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    settle(&mut net, &mut [&mut bob, &mut alice]);
    assert_eq!(
        messages(&net, &mut bob, "Ops 2"),
        ["alice: one", "alice: two", "alice: three"]
    );
    assert_eq!(
        head(&net, &mut bob, "Ops 2"),
        head(&net, &mut alice, "Ops 2")
    );
    assert_eq!(net.waiting(&bob.device()), 0, "every datagram acknowledged");
}

#[test]
fn a_message_from_a_sender_the_log_does_not_know_is_resolved_by_a_request() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut carol = register(&mut net, "carol", 3);
    create(&mut net, &mut alice, "Late", &["bob"], &[]);
    settle(&mut net, &mut [&mut bob]);
    // The add of carol never reaches bob.
    alice.machine.drop_room_deliveries_to(&["bob"]);
    add(&mut net, &mut alice, "Late", "carol");
    alice.machine.drop_room_deliveries_to(&[]);
    settle(&mut net, &mut [&mut carol, &mut alice]);
    send(&mut net, &mut carol, "Late", "hi, I am new");
    // bob holds it (its sender is not a member in his log) and asks carol.
    let r = net.deliver_in(&mut bob, |n| (0..n).collect());
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert!(messages(&net, &mut bob, "Late").is_empty(), "held");
    settle(&mut net, &mut [&mut carol, &mut bob]);
    assert_eq!(messages(&net, &mut bob, "Late"), ["carol: hi, I am new"]);
    assert_eq!(head(&net, &mut bob, "Late"), head(&net, &mut carol, "Late"));
}

#[test]
fn a_new_device_recovers_history_from_an_answer() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut carol = register(&mut net, "carol", 3);
    create(&mut net, &mut alice, "Plans", &["carol"], &[]);
    send(&mut net, &mut alice, "Plans", "before bob");
    add(&mut net, &mut alice, "Plans", "bob");
    settle(&mut net, &mut [&mut bob, &mut alice, &mut carol]);
    send(&mut net, &mut alice, "Plans", "after bob joined");
    send(&mut net, &mut carol, "Plans", "carol agrees");
    settle(&mut net, &mut [&mut bob]);
    send(&mut net, &mut bob, "Plans", "bob here");
    settle(&mut net, &mut [&mut alice, &mut carol]);
    let entitled = ["after bob joined", "bob here", "carol agrees"];
    assert_eq!(stored(&bob, "Plans"), entitled);

    // A device linked later asks bob's first device; the answer grants
    // keys (fetched by id) and contents, for what bob was a member for.
    let mut bob2 = net.link(&mut bob, rng(4));
    let group = bob.machine.room_id("Plans").unwrap();
    let op = bob2
        .machine
        .room_recover(net.now, &hex::encode(group.0), None)
        .unwrap();
    net.finish(&mut bob2, &op).unwrap();
    settle(&mut net, &mut [&mut bob, &mut bob2]);
    assert_eq!(
        stored(&bob2, "Plans"),
        entitled,
        "exactly what bob was a member for"
    );
    assert_eq!(
        head(&net, &mut bob2, "Plans"),
        head(&net, &mut bob, "Plans")
    );
}

/// Issue 13, finding 2: mallory, a member, signs entries that claim bob's
/// username (one whose parents no one has, so it waits; one that the log
/// rejects for the name mismatch), then posts normally. Her message shows
/// under her own name: names come only from accepted create and add
/// entries.
#[test]
fn a_pending_or_rejected_entry_cannot_lend_a_member_another_name() {
    use sotto_device::testing::ForgedEntry;
    use sotto_proto::room::{Body, EntryHash, Op as RoomOp};
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut mallory = register(&mut net, "mallory", 3);
    create(&mut net, &mut alice, "Names", &["bob", "mallory"], &[]);
    settle(&mut net, &mut [&mut bob, &mut mallory]);
    let forged = [
        // Waits forever for a parent no one has.
        ForgedEntry {
            parents: Some(vec![EntryHash([0x5a; 32])]),
            claimed_name: Some("bob".into()),
            body: Body::Control(RoomOp::SetTitle("x".into())),
            content: None,
        },
        // Resolves, and is rejected: the name is not hers.
        ForgedEntry {
            claimed_name: Some("bob".into()),
            body: Body::Control(RoomOp::Leave),
            ..ForgedEntry::default()
        },
    ];
    for f in forged {
        let op = mallory
            .machine
            .room_forge_entry(net.now, "Names", f)
            .unwrap();
        net.finish(&mut mallory, &op).unwrap();
    }
    send(&mut net, &mut mallory, "Names", "hi from mallory");
    settle(&mut net, &mut [&mut alice, &mut bob]);
    for n in [&mut alice, &mut bob] {
        assert_eq!(
            messages(&net, n, "Names"),
            ["mallory: hi from mallory"],
            "{}",
            n.machine.username()
        );
        let members: Vec<String> = n
            .machine
            .room_show(net.now, "Names")
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(members, ["alice", "bob", "mallory"]);
    }
}

/// Issue 13, finding 4: carol is removed; then the room gets a new title,
/// a new member and messages. carol asks alice for the room's history
/// (alice's device answers on its own): carol gets nothing from after her
/// removal.
#[test]
fn a_removed_member_asking_for_history_learns_nothing_after_its_removal() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut carol = register(&mut net, "carol", 3);
    let mut dave = register(&mut net, "dave", 4);
    create(&mut net, &mut alice, "Launch", &["bob", "carol"], &[]);
    settle(&mut net, &mut [&mut bob, &mut carol]);
    send(&mut net, &mut alice, "Launch", "before");
    let remove = RoomChanges {
        remove: names(&["carol"]),
        ..Default::default()
    };
    change(&mut net, &mut alice, "Launch", remove);
    settle(&mut net, &mut [&mut bob, &mut carol]);
    let retitle = RoomChanges {
        title: Some("Secret plans".into()),
        ..Default::default()
    };
    change(&mut net, &mut alice, "Launch", retitle);
    add(&mut net, &mut alice, "Secret plans", "dave");
    send(&mut net, &mut alice, "Secret plans", "after carol");
    settle(&mut net, &mut [&mut bob, &mut dave]);
    let group = alice.machine.room_id("Secret plans").unwrap();
    let id = hex::encode(group.0);
    let op = carol
        .machine
        .room_recover(net.now, &id, Some("alice"))
        .unwrap();
    net.finish(&mut carol, &op).unwrap();
    for _ in 0..3 {
        net.sync(&mut alice);
        net.sync(&mut carol);
    }
    let v = carol.machine.room_show(net.now, &id).unwrap();
    assert_eq!(v.title, "Launch");
    let members: Vec<String> = v.members.into_iter().map(|m| m.name).collect();
    assert!(!members.contains(&"dave".to_string()), "{members:?}");
    assert_eq!(messages(&net, &mut carol, &id), ["alice: before"]);
    // bob, a member, sees it all.
    assert_eq!(
        messages(&net, &mut bob, &id),
        ["alice: before", "alice: after carol"]
    );
}
