//! Rooms between devices wired together in memory.

mod common;

use common::*;
use sotto_device::testing::{Net, Node};
use sotto_device::{LineContent, RoomNotice, Ttl};

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

/// Messages of a room as `from: text`.
fn messages(net: &Net, n: &mut Node, room: &str) -> Vec<String> {
    n.machine
        .room_show(net.now, room)
        .unwrap()
        .lines
        .into_iter()
        .filter_map(|l| match l.content {
            LineContent::Message(t) => Some(format!("{}: {t}", l.from)),
            LineContent::Notice(_) => None,
        })
        .collect()
}

fn notices(net: &Net, n: &mut Node, room: &str) -> Vec<(String, RoomNotice)> {
    n.machine
        .room_show(net.now, room)
        .unwrap()
        .lines
        .into_iter()
        .filter_map(|l| match l.content {
            LineContent::Notice(x) => Some((l.from, x)),
            LineContent::Message(_) => None,
        })
        .collect()
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

#[test]
fn a_room_reaches_its_members() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    create(&mut net, &mut alice, "Launch", &["bob"], &[]);
    settle(&mut net, &mut [&mut bob]);
    assert_eq!(bob.machine.rooms().unwrap().len(), 1);
    send(&mut net, &mut bob, "Launch", "hello room");
    settle(&mut net, &mut [&mut alice]);
    assert_eq!(messages(&net, &mut alice, "Launch"), ["bob: hello room"]);
    assert!(notices(&net, &mut alice, "Launch").contains(&(
        "alice".into(),
        RoomNotice::Created {
            title: "Launch".into(),
            ttl: Ttl::OFF
        }
    )));
}
