//! Messages to peer-to-peer group sessions, as the core takes them in: only
//! inside the group they name (as the host relayed them), only from a
//! current member, once. The in-memory network stands in for the peers
//! (its mailboxes carry the datagrams; the test hands them over as the peer
//! shell would).

mod common;

use common::*;
use sotto_device::testing::{Net, Node};
use sotto_device::{
    group_address, DeliveryTag, Event, GroupMember, GroupScope, Incoming, Message, Rejection,
};

fn member(n: &Node, name: &str) -> GroupMember {
    GroupMember {
        name: name.into(),
        user: n.machine.device().cert().user,
    }
}

fn scope(members: &[&Node]) -> GroupScope {
    GroupScope {
        id: [9; 16],
        title: "ops".into(),
        members: members
            .iter()
            .map(|n| n.machine.device().cert().user)
            .collect(),
    }
}

/// Hands `node` each datagram waiting for it, in group `scope` if given;
/// the events it reported.
fn hand(net: &mut Net, node: &mut Node, scope: Option<&GroupScope>) -> Vec<Event> {
    for d in net.take_mail(&node.device()) {
        let incoming = Incoming {
            tag: DeliveryTag(0),
            datagram: &d,
            received_at: net.now,
        };
        match scope {
            Some(s) => node.machine.receive_in_group(net.now, incoming, s),
            None => node.machine.receive(net.now, incoming),
        }
        .unwrap();
        net.run(node);
    }
    let mut events = Vec::new();
    while let Some(e) = node.machine.poll_event() {
        events.push(e);
    }
    events
}

fn messages(events: &[Event]) -> Vec<&Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn group_send(net: &mut Net, from: &mut Node, s: &GroupScope, to: &[GroupMember], text: &str) {
    let op = from.machine.send_group_text(net.now, s, to, text).unwrap();
    let sent = net.finish(from, &op).unwrap();
    assert_eq!(sent.to, group_address("ops"));
}

#[test]
fn a_group_message_is_taken_in_once_inside_its_group_from_its_author() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut carol = register(&mut net, "carol", 3);
    let s = scope(&[&alice, &bob, &carol]);
    let to = [
        member(&alice, "alice"),
        member(&bob, "bob"),
        member(&carol, "carol"),
    ];

    group_send(&mut net, &mut bob, &s, &to, "standup in 5");
    let got = hand(&mut net, &mut carol, Some(&s));
    let m = messages(&got);
    assert_eq!(m.len(), 1, "{got:?}");
    assert_eq!(
        (m[0].from.as_str(), m[0].to.as_str(), m[0].body.as_str()),
        ("bob", "#ops", "standup in 5")
    );
    assert_eq!(bodies(&mut carol.machine, net.now), ["standup in 5"]);
    assert_eq!(bodies(&mut alice.machine, net.now), Vec::<String>::new());
    let got = hand(&mut net, &mut alice, Some(&s));
    assert_eq!(messages(&got).len(), 1);
    assert_eq!(bodies(&mut bob.machine, net.now), ["standup in 5"]);
}

#[test]
fn attack_a_group_message_outside_its_group_is_refused() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 11);
    let mut bob = register(&mut net, "bob", 12);
    let s = scope(&[&alice, &bob]);
    let to = [member(&alice, "alice"), member(&bob, "bob")];

    // A member's group message handed over as a plain 1:1 datagram (anyone
    // with a session could do that): refused, not stored.
    group_send(&mut net, &mut alice, &s, &to, "in the group only");
    let got = hand(&mut net, &mut bob, None);
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::Rejected(Rejection::OutsideGroup))),
        "{got:?}"
    );
    assert!(bodies(&mut bob.machine, net.now).is_empty());

    // Delivered in another group session than the one it names: refused.
    group_send(&mut net, &mut alice, &s, &to, "wrong group");
    let other = GroupScope {
        id: [8; 16],
        ..s.clone()
    };
    let got = hand(&mut net, &mut bob, Some(&other));
    assert!(
        got.iter()
            .any(|e| matches!(e, Event::Rejected(Rejection::OutsideGroup))),
        "{got:?}"
    );
    assert!(bodies(&mut bob.machine, net.now).is_empty());
}

#[test]
fn attack_a_non_member_cannot_inject_into_a_group() {
    let mut net = net();
    let alice = register(&mut net, "alice", 21);
    let mut bob = register(&mut net, "bob", 22);
    let mut dave = register(&mut net, "dave", 23);
    let real = scope(&[&alice, &bob]);
    // dave seals a message naming the group (same id and title), as if he
    // were a member, and it reaches bob inside the group.
    let forged = scope(&[&alice, &bob, &dave]);
    let to = [
        member(&alice, "alice"),
        member(&bob, "bob"),
        member(&dave, "dave"),
    ];
    group_send(&mut net, &mut dave, &forged, &to, "I am one of you");
    let got = hand(&mut net, &mut bob, Some(&real));
    assert!(
        got.iter().any(|e| matches!(
            e,
            Event::Rejected(Rejection::NotGroupMember { claimed }) if claimed == "dave"
        )),
        "{got:?}"
    );
    assert!(bodies(&mut bob.machine, net.now).is_empty());
}
