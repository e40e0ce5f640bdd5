//! Two and three devices wired together in memory, no server and no
//! network: 1:1 messages, several devices per user, out-of-order and
//! duplicate delivery, a key change, a sender checked against the
//! directory, and what a crash between commit and acknowledgement does.

mod common;

use common::*;
use sotto_device::{Error, Rejection};

#[test]
fn two_users_three_devices_each_see_messages_once() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut bob2 = net.link(&mut bob, rng(3));
    assert_eq!(bob2.machine.username(), "bob");
    assert!(!bob2.machine.holds_user_key());

    let sent = net
        .send(&mut alice, "bob", "the meeting moved to 3pm")
        .unwrap();
    assert!(sent.outgoing);
    for b in [&mut bob, &mut bob2] {
        let r = net.sync(b);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!(texts(&r.messages), ["the meeting moved to 3pm"]);
        assert_eq!(r.messages[0].from, "alice");
        assert_eq!(r.messages[0].id, sent.id);
        assert_eq!(r.messages[0].conversation, sent.conversation);
        // Nothing waits any more: shown once.
        assert!(net.sync(b).messages.is_empty());
    }
    // A reply from bob's second device reaches alice and bob's first device.
    net.send(&mut bob2, "alice", "ok, 3pm it is").unwrap();
    let r = net.sync(&mut alice);
    assert_eq!(texts(&r.messages), ["ok, 3pm it is"]);
    let r = net.sync(&mut bob);
    assert_eq!(texts(&r.messages), ["ok, 3pm it is"]);
    assert!(r.messages[0].outgoing, "a copy of its own user's message");
    for n in [&mut alice, &mut bob, &mut bob2] {
        assert_eq!(
            bodies(&mut n.machine, net.now),
            ["the meeting moved to 3pm", "ok, 3pm it is"]
        );
    }
}

#[test]
fn out_of_order_and_duplicate_delivery_shows_each_message_once() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    for (i, t) in ["one", "two", "three"].iter().enumerate() {
        net.now += 1000 * (i as u64 + 1);
        net.send(&mut alice, "bob", t).unwrap();
    }
    // Newest first, each twice.
    let r = net.deliver_in(&mut bob, |n| (0..n).rev().flat_map(|i| [i, i]).collect());
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(texts(&r.messages), ["three", "two", "one"]);
    assert_eq!(r.duplicates, 3);
    assert_eq!(bodies(&mut bob.machine, net.now), ["one", "two", "three"]);
    assert_eq!(net.waiting(&bob.device()), 0, "every item acknowledged");
}

#[test]
fn a_changed_key_is_refused_until_trusted() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    net.send(&mut alice, "bob", "hi").unwrap();
    net.sync(&mut bob);
    let before = {
        let op = alice.machine.verify(net.now, "bob").unwrap();
        net.finish(&mut alice, &op).unwrap()
    };
    // bob registers again (new user key under the same name).
    let mut bob_new = register(&mut net, "bob", 3);
    let e = net.send(&mut alice, "bob", "are you you?").unwrap_err();
    assert!(
        matches!(&e, Error::KeyChanged { username } if username == "bob"),
        "{e}"
    );
    let op = alice.machine.verify(net.now, "bob").unwrap();
    assert!(matches!(
        net.finish(&mut alice, &op),
        Err(Error::KeyChanged { .. })
    ));
    let op = alice
        .machine
        .presented_safety_number(net.now, "bob")
        .unwrap();
    let presented = net.finish(&mut alice, &op).unwrap();
    assert_ne!(presented, before);
    let op = alice.machine.trust(net.now, "bob").unwrap();
    assert_eq!(net.finish(&mut alice, &op).unwrap(), presented);
    net.send(&mut alice, "bob", "accepted").unwrap();
    assert_eq!(texts(&net.sync(&mut bob_new).messages), ["accepted"]);
    assert!(
        net.sync(&mut bob).messages.is_empty(),
        "the old key's device gets nothing"
    );
}

#[test]
fn a_sender_unknown_here_is_checked_against_the_directory() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut mallory = register(&mut net, "mallory", 3);
    // bob knows neither yet: the first message waits for the directory,
    // the others go on meanwhile.
    net.send(&mut alice, "bob", "from alice").unwrap();
    let forged = sotto_device::TextBody {
        sender: "alice".into(),
        recipient: "bob".into(),
        text: "I am alice".into(),
    };
    let op = mallory
        .machine
        .send_raw_body(net.now, "bob", sotto_proto::content::TEXT, forged.encode())
        .unwrap();
    net.finish(&mut mallory, &op).unwrap();
    let r = net.sync(&mut bob);
    assert_eq!(texts(&r.messages), ["from alice"]);
    assert_eq!(
        r.rejected,
        [Rejection::SenderKeyMismatch {
            claimed: "alice".into()
        }]
    );
    assert_eq!(bodies(&mut bob.machine, net.now), ["from alice"]);
    assert_eq!(bob.machine.contacts().unwrap().len(), 1);
}

#[test]
fn nothing_is_acknowledged_before_its_commit() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    net.send(&mut alice, "bob", "kept").unwrap();
    net.sync(&mut bob); // bob knows alice now
    net.send(&mut alice, "bob", "survives a failed commit")
        .unwrap();
    bob.store.fail_next_commit();
    let r = net.deliver_in(&mut bob, |n| (0..n).collect());
    assert!(r.messages.is_empty());
    assert_eq!(net.waiting(&bob.device()), 1, "not acknowledged");
    let r = net.sync(&mut bob);
    assert_eq!(texts(&r.messages), ["survives a failed commit"]);
    assert_eq!(net.waiting(&bob.device()), 0);

    // Committed but never acknowledged (the device died in between): the
    // next delivery shows it once.
    net.send(&mut alice, "bob", "committed, not acknowledged")
        .unwrap();
    bob.machine.set_skip_ack(true);
    assert_eq!(net.sync(&mut bob).messages.len(), 1);
    bob.restart(rng(9));
    let r = net.sync(&mut bob);
    assert!(r.messages.is_empty(), "{r:?}");
    assert_eq!(r.duplicates, 1);
    assert_eq!(net.waiting(&bob.device()), 0);
    assert_eq!(
        bodies(&mut bob.machine, net.now),
        [
            "kept",
            "survives a failed commit",
            "committed, not acknowledged"
        ]
    );
}

/// Issue 13, finding 12: a lost device is removed with the user key; the
/// next message reaches only the devices that remain, and a device without
/// the user key cannot remove any.
#[test]
fn a_removed_device_no_longer_receives() {
    let mut net = net();
    let mut alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    let mut lost = net.link(&mut bob, rng(3));
    let lost_id = hex::encode(lost.device().0);
    let bob_id = hex::encode(bob.device().0);

    let e = lost.machine.remove_device(net.now, &bob_id).unwrap_err();
    assert!(matches!(e, Error::NoUserKey), "{e}");
    let e = bob.machine.remove_device(net.now, "not hex").unwrap_err();
    assert!(
        matches!(&e, Error::UnknownDevice(id) if id == "not hex"),
        "{e}"
    );
    let op = bob
        .machine
        .remove_device(net.now, &"ab".repeat(32))
        .unwrap();
    let e = net.finish(&mut bob, &op).unwrap_err();
    assert!(matches!(e, Error::UnknownDevice(_)), "{e}");

    let op = bob.machine.remove_device(net.now, &lost_id).unwrap();
    net.finish(&mut bob, &op).unwrap();
    let op = bob.machine.devices(net.now);
    let left = net.finish(&mut bob, &op).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, bob.device());

    net.send(&mut alice, "bob", "after the loss").unwrap();
    assert_eq!(texts(&net.sync(&mut bob).messages), ["after the loss"]);
    assert!(net.sync(&mut lost).messages.is_empty());
}
