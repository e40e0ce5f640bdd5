//! Two or more real nodes over TCP on loopback (Noise, Yamux, the sotto
//! stream): what a user of `sotto p2p` relies on.

mod common;

use std::io::Write;

use common::*;
use rand_core::{OsRng, RngCore};
use sotto_p2p::node::{FileEvent, GroupEvent};
use sotto_p2p::{Event, RejectReason, ShellEvent, Trust};
use sotto_proto::UserKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reject_request_accept_chat_both_ways_close_erases_keys() {
    let alice = peer("alice").await;
    let bob = peer("bob").await;
    bob.connect(&alice).await;

    let q = bob.handle.request(alice.id(), None).await.unwrap();
    assert_eq!(alice.requested_by(&bob).await, q);
    assert_eq!(alice.handle.status().await.unwrap().requests.len(), 1);
    alice.handle.reject(bob.id(), q).await.unwrap();
    let reason = bob
        .wait("rejection", |e| match e {
            ShellEvent::Node(Event::SessionRejected {
                request, reason, ..
            }) if *request == q => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, RejectReason::Declined, "a rejection, not a timeout");

    let s = session(&alice, &bob).await;
    bob.handle
        .send_datagram(s, b"hello, no server here".to_vec())
        .await
        .unwrap();
    assert_eq!(alice.datagram().await, b"hello, no server here");
    alice
        .handle
        .send_datagram(s, b"hi bob".to_vec())
        .await
        .unwrap();
    assert_eq!(bob.datagram().await, b"hi bob");

    assert!(alice.handle.holds_session_keys(s).await.unwrap());
    alice.handle.close(s).await.unwrap();
    bob.wait("session closed", |e| match e {
        ShellEvent::Node(Event::SessionClosed {
            session,
            by_peer: true,
        }) if *session == s => Some(()),
        _ => None,
    })
    .await;
    assert!(!alice.handle.holds_session_keys(s).await.unwrap());
    assert!(!bob.handle.holds_session_keys(s).await.unwrap());
    assert!(bob.handle.send_datagram(s, b"late".to_vec()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_with_a_valid_libp2p_key_cannot_open_a_session_as_alice() {
    let alice_known = UserKey::generate(&mut OsRng).public();
    // carol knows alice's real key (a contact); mallory claims to be alice
    // with a certificate from a user key of its own.
    let carol_user = UserKey::generate(&mut OsRng);
    let carol_id = identity("carol", &carol_user);
    let carol = peer_with("carol", carol_user, carol_id, |c| {
        c.node.known.insert("alice".into(), alice_known);
    })
    .await;
    let mallory_user = UserKey::generate(&mut OsRng);
    let mallory_id = identity("alice", &mallory_user);
    let mallory = peer_with("mallory", mallory_user, mallory_id, |_| {}).await;
    mallory.connect(&carol).await;
    let trust = carol
        .handle
        .status()
        .await
        .unwrap()
        .peers
        .into_iter()
        .find(|p| p.peer == mallory.id().to_string())
        .and_then(|p| p.trust);
    assert_eq!(
        trust,
        Some(Trust::KeyMismatch),
        "shown as not proving alice"
    );
    let q = mallory.handle.request(carol.id(), None).await.unwrap();
    let reason = mallory
        .wait("rejection", |e| match e {
            ShellEvent::Node(Event::SessionRejected {
                request, reason, ..
            }) if *request == q => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, RejectReason::IdentityMismatch);
    assert!(!carol.seen(|e| matches!(e, ShellEvent::Node(Event::SessionRequested { .. }))));
    assert!(carol.handle.status().await.unwrap().sessions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_file_resumes_after_a_dropped_connection_with_identical_bytes() {
    let alice = peer("alice").await;
    let bob = peer("bob").await;
    bob.connect(&alice).await;
    let s = session(&alice, &bob).await;
    let path = bob.dir.path().join("report.pdf");
    let mut data = vec![0u8; 50 << 20];
    OsRng.fill_bytes(&mut data);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();

    let file = bob.handle.send_file(s, path).await.unwrap();
    // Drop the connection once alice has written some of it.
    alice
        .wait("progress past 10 MB", |e| match e {
            ShellEvent::Node(Event::File(FileEvent::Progress {
                done,
                incoming: true,
                ..
            })) if *done >= 10 << 20 => Some(()),
            _ => None,
        })
        .await;
    bob.handle.disconnect(alice.id()).await.unwrap();
    for p in [&alice, &bob] {
        p.wait("peer lost", |e| {
            matches!(e, ShellEvent::Node(Event::PeerLost { .. })).then_some(())
        })
        .await;
    }
    assert!(
        !alice.seen(|e| matches!(e, ShellEvent::FileSaved { .. })),
        "the drop came before the end"
    );
    bob.connect(&alice).await;
    let saved = alice
        .wait("file saved", |e| match e {
            ShellEvent::FileSaved { file: f, path } if *f == file => Some(path.clone()),
            _ => None,
        })
        .await;
    assert!(alice.file_done(true).await);
    assert!(
        bob.file_done(false).await,
        "the sender learns the receiver's check"
    );
    assert_eq!(saved.file_name().unwrap(), "report.pdf");
    assert!(std::fs::read(&saved).unwrap() == data, "identical bytes");
    // Resumed in the same transfer (its verified prefix kept), not offered
    // and received again from the start.
    let offers = alice
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, ShellEvent::Node(Event::File(FileEvent::Offered { .. }))))
        .count();
    assert_eq!(offers, 1, "one offer, resumed after the drop");
    // And the receiver's progress never went back after the drop.
    let events = alice.events.lock().unwrap().clone();
    let done: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            ShellEvent::Node(Event::File(FileEvent::Progress {
                file: f,
                done,
                incoming: true,
                ..
            })) if *f == file => Some(*done),
            _ => None,
        })
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {done:?}"
    );
    assert!(
        done.iter().any(|d| *d >= 10 << 20),
        "progress after the drop"
    );
    assert!(bob.seen(|e| matches!(
        e,
        ShellEvent::Node(Event::File(FileEvent::Progress {
            incoming: false,
            ..
        }))
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_three_a_newcomer_reads_only_what_follows_a_member_leaves() {
    let alice = peer("alice").await;
    let bob = peer("bob").await;
    let carol = peer("carol").await;
    let dave = peer("dave").await;
    let mut sessions = Vec::new();
    for p in [&bob, &carol, &dave] {
        p.connect(&alice).await;
        sessions.push(session(&alice, p).await);
    }
    let g = alice
        .handle
        .group_create("ops".into(), sessions[..2].to_vec())
        .await
        .unwrap();
    for p in [&bob, &carol] {
        p.group_event("invitation", |g| matches!(g, GroupEvent::Invited { .. }))
            .await;
        p.handle.group_join(g).await.unwrap();
        p.group_event(
            "own join",
            |g| matches!(g, GroupEvent::Joined { name, .. } if *name == p.name),
        )
        .await;
    }
    alice
        .handle
        .group_send(g, b"standup in 5".to_vec())
        .await
        .unwrap();
    assert_eq!(bob.group_message().await, b"standup in 5");
    assert_eq!(carol.group_message().await, b"standup in 5");

    alice.handle.group_invite(g, sessions[2]).await.unwrap();
    dave.group_event("invitation", |g| matches!(g, GroupEvent::Invited { .. }))
        .await;
    dave.handle.group_join(g).await.unwrap();
    bob.group_event(
        "dave joined",
        |g| matches!(g, GroupEvent::Joined { name, .. } if name == "dave"),
    )
    .await;
    bob.handle
        .group_send(g, b"welcome dave".to_vec())
        .await
        .unwrap();
    assert_eq!(dave.group_message().await, b"welcome dave");
    assert_eq!(carol.group_message().await, b"welcome dave");

    carol.handle.group_leave(g).await.unwrap();
    bob.group_event(
        "carol left",
        |g| matches!(g, GroupEvent::Left { name, .. } if name == "carol"),
    )
    .await;
    dave.handle
        .group_send(g, b"after carol".to_vec())
        .await
        .unwrap();
    assert_eq!(bob.group_message().await, b"after carol");
    assert_eq!(alice.group_message().await, b"welcome dave");
    assert_eq!(alice.group_message().await, b"after carol");
    assert_eq!(
        dave.group_messages_seen(),
        Vec::<Vec<u8>>::new(),
        "dave never saw the message before he joined"
    );
    assert!(
        carol.group_messages_seen().is_empty(),
        "carol got nothing after leaving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_mdns_find_each_other_through_a_rendezvous_point() {
    let point = sotto_p2p::rendezvous::serve("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let rz = point.address.clone();
    let with_rz = |c: &mut sotto_p2p::ShellConfig| {
        c.rendezvous = vec![rz.clone()];
        c.discover_every = std::time::Duration::from_millis(500);
    };
    let u1 = UserKey::generate(&mut OsRng);
    let id1 = identity("alice", &u1);
    let alice = peer_with("alice", u1, id1, with_rz).await;
    let u2 = UserKey::generate(&mut OsRng);
    let id2 = identity("bob", &u2);
    let bob = peer_with("bob", u2, id2, with_rz).await;
    let b = bob.id();
    let found = alice
        .wait("bob found", |e| match e {
            ShellEvent::Node(Event::PeerFound { peer, identity }) if *peer == b => {
                Some(identity.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(found.name, "bob");
    assert_eq!(found.trust, Trust::FirstSeen);
    let status = alice.handle.status().await.unwrap();
    let via_rz = status
        .peers
        .iter()
        .any(|p| p.peer == b.to_string() && p.via == "rendezvous")
        || bob
            .handle
            .status()
            .await
            .unwrap()
            .peers
            .iter()
            .any(|p| p.via == "rendezvous");
    assert!(via_rz, "found through the rendezvous point, not by address");
    let s = session(&bob, &alice).await;
    alice
        .handle
        .send_datagram(s, b"via rendezvous".to_vec())
        .await
        .unwrap();
    assert_eq!(bob.datagram().await, b"via rendezvous");
    point.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_dialing_each_other_at_once_end_up_with_one_working_link() {
    for _ in 0..3 {
        let alice = peer("alice").await;
        let bob = peer("bob").await;
        // Two connections, one per direction (as when both find the other
        // by mDNS at the same moment).
        let (x, y) = tokio::join!(alice.handle.dial(bob.addr()), bob.handle.dial(alice.addr()));
        x.unwrap();
        y.unwrap();
        for (p, other) in [(&alice, bob.id()), (&bob, alice.id())] {
            p.wait("peer found", |e| match e {
                ShellEvent::Node(Event::PeerFound { peer, .. }) if *peer == other => Some(()),
                _ => None,
            })
            .await;
        }
        let s = session(&alice, &bob).await;
        bob.handle
            .send_datagram(s, b"one link".to_vec())
            .await
            .unwrap();
        assert_eq!(alice.datagram().await, b"one link");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !alice.seen(|e| matches!(e, ShellEvent::Node(Event::PeerLost { .. }))),
            "the link did not flap"
        );
    }
}

/// The node's loop never waits for its application. An application that
/// calls the node while it handles an event (the `p2p up` daemon does, with
/// the device core locked) used to stall for good once the event channel
/// was full: the loop waited for the application, which waited for the
/// loop. A peer that floods datagrams at a node whose application is busy
/// must leave the node answering calls; the flood is held back on the
/// network instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_application_does_not_stall_the_node_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let user = UserKey::generate(&mut OsRng);
    let (alice, mut alice_rx) =
        sotto_p2p::spawn(identity("alice", &user), loopback_config(dir.path()))
            .await
            .unwrap();
    let bob = peer("bob").await;
    bob.handle.dial(alice.addresses()[0].clone()).await.unwrap();
    let a = alice.peer_id();
    bob.wait("alice's hello", |e| match e {
        ShellEvent::Node(Event::PeerFound { peer, .. }) if *peer == a => Some(()),
        _ => None,
    })
    .await;
    let q = bob.handle.request(a, None).await.unwrap();
    // alice's application reads until the request, accepts, then is busy.
    loop {
        let ev = tokio::time::timeout(WAIT, alice_rx.recv())
            .await
            .expect("a request in time")
            .expect("node running");
        if matches!(ev, ShellEvent::Node(Event::SessionRequested { request, .. }) if request == q) {
            break;
        }
    }
    let s = alice.accept(bob.id(), q, None).await.unwrap();
    assert_eq!(bob.opened().await, s);
    // Far more events than the application's channel (4 096) holds.
    for i in 0..8_000u32 {
        if bob
            .handle
            .send_datagram(s, i.to_be_bytes().to_vec())
            .await
            .is_err()
        {
            break; // alice stopped reading and bob dropped the link: fine
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), alice.status())
        .await
        .expect("the node answers calls while its application is busy")
        .unwrap();
    assert_eq!(status.sessions.len(), 1);
    // The application comes back: the events it missed are there, in order.
    let mut got = 0u32;
    while got < 3_000 {
        match tokio::time::timeout(WAIT, alice_rx.recv()).await {
            Ok(Some(ShellEvent::Node(Event::Datagram { data, .. }))) => {
                assert_eq!(data, got.to_be_bytes(), "in order, none lost");
                got += 1;
            }
            Ok(Some(_)) => {}
            other => panic!("datagram {got} missing: {other:?}"),
        }
    }
}
