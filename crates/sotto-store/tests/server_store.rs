//! The server store, one suite on both backends (SQLite in temp
//! directories, PostgreSQL in a fresh schema per test; see
//! `common/backend.rs`).

use std::sync::Arc;

mod common;

use common::*;
use sotto_store::server::*;

store_tests!(
    register_lookup_and_conflicts,
    one_time_prekeys_are_served_once_then_the_reserve,
    concurrent_claims_never_share_a_prekey,
    two_nodes_racing_for_the_last_prekey_hand_it_out_once,
    a_datagram_is_stored_once_for_many_devices,
    concurrent_sends_get_every_sequence_number_once,
    an_unknown_recipient_refuses_the_send_and_a_block_drops_silently,
    fetch_pages_and_ack_deletes_without_retention,
    acked_items_are_retained_then_purged,
    pending_items_and_sequences_survive_reopen,
    links_wait_get_approved_and_expire,
    nothing_readable_in_the_database,
    non_blocking_writes_answer_once_committed,
);

fn register_lookup_and_conflicts<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 3);
    let u = s.user(&name("alice")).unwrap().unwrap();
    assert_eq!(u.user, user_key(1));
    assert_eq!(u.devices.len(), 1);
    assert_eq!(u.devices[0].device, dev(1));
    assert!(s.user(&name("bob")).unwrap().is_none());
    assert_eq!(s.device(&dev(1)).unwrap().unwrap().user, user_key(1));
    assert_eq!(s.user_by_key(&user_key(1)).unwrap().unwrap(), u);

    let taken = NewUser {
        username_hash: name("alice"),
        user: user_key(2),
        device: new_device(dev(2), 0),
    };
    assert!(matches!(
        s.register(taken, 1).unwrap_err(),
        StoreError::UsernameTaken
    ));
    let same_key = NewUser {
        username_hash: name("bob"),
        user: user_key(1),
        device: new_device(dev(2), 0),
    };
    assert!(matches!(
        s.register(same_key, 1).unwrap_err(),
        StoreError::AlreadyRegistered
    ));
    let same_dev = NewUser {
        username_hash: name("bob"),
        user: user_key(2),
        device: new_device(dev(1), 0),
    };
    assert!(matches!(
        s.register(same_dev, 1).unwrap_err(),
        StoreError::AlreadyRegistered
    ));
    // The failed registrations left nothing behind.
    assert!(s.user(&name("bob")).unwrap().is_none());
    assert_eq!(b.count("users"), 1);
}

fn one_time_prekeys_are_served_once_then_the_reserve<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "bob", 1, 1, 2);
    let mut served = Vec::new();
    for _ in 0..2 {
        let (user, claimed) = s.claim_prekeys(&name("bob"), &[], &user_key(99)).unwrap();
        assert_eq!(user, user_key(1));
        assert!(!claimed[0].reserve);
        served.push(claimed[0].prekey.clone());
    }
    assert_eq!(served, vec![b"otk-1".to_vec(), b"otk-2".to_vec()]);
    assert_eq!(b.count("prekeys"), 0, "served keys are deleted");
    for n in 1..=3 {
        let (_, claimed) = s
            .claim_prekeys(&name("bob"), &[dev(1)], &user_key(99))
            .unwrap();
        assert!(claimed[0].reserve);
        assert_eq!(claimed[0].prekey, b"reserve-1");
        assert_eq!(
            claimed[0].pool,
            PrekeyCount {
                one_time: 0,
                reserve_served: n
            }
        );
    }
    let after = s
        .add_prekeys(
            &dev(1),
            vec![(10, b"otk-10".to_vec())],
            Some((11, b"reserve-2".to_vec())),
        )
        .unwrap();
    assert_eq!(
        after,
        PrekeyCount {
            one_time: 1,
            reserve_served: 0
        }
    );
    let (_, claimed) = s.claim_prekeys(&name("bob"), &[], &user_key(99)).unwrap();
    assert_eq!(
        (claimed[0].prekey.as_slice(), claimed[0].reserve),
        (b"otk-10".as_slice(), false)
    );
    let (_, claimed) = s.claim_prekeys(&name("bob"), &[], &user_key(99)).unwrap();
    assert_eq!(claimed[0].prekey, b"reserve-2");
    assert!(matches!(
        s.claim_prekeys(&name("bob"), &[dev(9)], &user_key(99))
            .unwrap_err(),
        StoreError::UnknownDevice(_)
    ));
    assert!(matches!(
        s.claim_prekeys(&name("nobody"), &[], &user_key(99))
            .unwrap_err(),
        StoreError::UnknownUser
    ));
}

fn concurrent_claims_never_share_a_prekey<B: Backend>(b: B) {
    let s = Arc::new(b.open());
    register(&*s, "bob", 1, 1, 40);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        s.claim_prekeys(&name("bob"), &[], &user_key(99)).unwrap().1[0]
                            .prekey
                            .clone()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Vec<u8>> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
}

/// Two nodes (two stores over one database) claim bob's last one-time
/// prekey at the same moment, 20 times over: each time one gets the key
/// and the other the reserve, never both the key.
fn two_nodes_racing_for_the_last_prekey_hand_it_out_once<B: Backend>(b: B) {
    let nodes = [Arc::new(b.open()), Arc::new(b.open())];
    register(&*nodes[0], "bob", 1, 1, 1);
    for round in 0..20u32 {
        if round > 0 {
            let id = 100 + round;
            nodes[1]
                .add_prekeys(&dev(1), vec![(id, format!("otk-{id}").into_bytes())], None)
                .unwrap();
        }
        let start = Arc::new(std::sync::Barrier::new(2));
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                let (node, start) = (node.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let (_, claimed) = node.claim_prekeys(&name("bob"), &[], &user_key(9)).unwrap();
                    (claimed[0].reserve, claimed[0].prekey.clone())
                })
            })
            .collect();
        let mut got: Vec<(bool, Vec<u8>)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort();
        assert!(!got[0].0, "round {round}: one node hands out the key");
        assert_eq!(
            got[1],
            (true, b"reserve-1".to_vec()),
            "round {round}: the other the reserve"
        );
        assert_eq!(nodes[0].prekey_count(&dev(1)).unwrap().one_time, 0);
    }
}

fn a_datagram_is_stored_once_for_many_devices<B: Backend>(b: B) {
    let s = Arc::new(b.open());
    register(&*s, "sender", 0, 0, 0);
    // 300 users registered from 10 threads: also exercises group commit.
    let handles: Vec<_> = (0..10u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..30u32 {
                    let n = 1 + t * 30 + i;
                    register(&*s, &format!("user{n}"), n, n, 0);
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let recipients: Vec<DeviceId> = (1..=300).map(dev).collect();
    let datagram = vec![0x42u8; 4096];
    let e = s
        .enqueue(&dev(0), &recipients, datagram.clone(), 5_000, Q)
        .unwrap();
    assert_eq!(e.deliveries.len(), 300);
    assert!(e.deliveries.iter().all(|d| d.seq == 1));
    assert_eq!(b.count("datagrams"), 1);
    assert_eq!(b.count("mailbox"), 300);
    // A retry of the same datagram adds nothing.
    let again = s
        .enqueue(&dev(0), &recipients, datagram.clone(), 6_000, Q)
        .unwrap();
    assert_eq!(again.datagram_id, e.datagram_id);
    assert!(again.deliveries.is_empty());
    assert_eq!(b.count("mailbox"), 300);
    let (items, more) = s.fetch(&dev(77), 0, 10, 1 << 20).unwrap();
    assert!(!more);
    assert_eq!(
        items,
        vec![MailboxEntry {
            seq: 1,
            datagram,
            received_at: 5_000
        }]
    );
}

fn concurrent_sends_get_every_sequence_number_once<B: Backend>(b: B) {
    let s = Arc::new(b.open());
    register(&*s, "bob", 1, 1, 0);
    for n in 2..=9 {
        register(&*s, &format!("sender{n}"), n, n, 0);
    }
    // Eight senders at once: their sends are committed together (the
    // SQLite writer's group commit; PostgreSQL's groups of sends).
    let before = B::group_commit(&s);
    let handles: Vec<_> = (2..=9u32)
        .map(|n| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..50u32)
                    .map(|i| {
                        let body = format!("{n}/{i}").into_bytes();
                        s.enqueue(&dev(n), &[dev(1)], body, 1, Q)
                            .unwrap()
                            .deliveries[0]
                            .seq
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    if let (Some((writes_before, commits_before)), Some((writes, commits))) =
        (before, B::group_commit(&s))
    {
        let (writes, commits) = (writes - writes_before, commits - commits_before);
        eprintln!("group commit: {writes} writes in {commits} commits");
        assert!(
            writes >= 400 && commits < writes,
            "concurrent writes share commits"
        );
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
    drop(s);
    let s = b.open();
    let (items, more) = s.fetch(&dev(1), 0, 500, usize::MAX).unwrap();
    assert_eq!((items.len(), more), (400, false));
}

fn an_unknown_recipient_refuses_the_send_and_a_block_drops_silently<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    register(&s, "carol", 3, 3, 0);
    let err = s
        .enqueue(&dev(1), &[dev(2), dev(99)], b"x".to_vec(), 1, Q)
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownDevice(d) if d == dev(99)));
    assert_eq!(b.count("datagrams"), 0);
    s.block(&user_key(3), &name("alice")).unwrap();
    s.block(&user_key(3), &name("alice")).unwrap(); // idempotent
    assert_eq!(s.blocks(&user_key(3)).unwrap(), vec![name("alice")]);
    assert!(s.is_blocked(&name("carol"), &user_key(1)).unwrap());
    assert!(!s.is_blocked(&name("alice"), &user_key(3)).unwrap());
    assert!(!s.is_blocked(&name("carol"), &user_key(2)).unwrap());
    // Accepted as a whole; only bob gets a row.
    let sent = s
        .enqueue(&dev(1), &[dev(2), dev(3)], b"y".to_vec(), 1, Q)
        .unwrap();
    assert_eq!(
        sent.deliveries.iter().map(|d| d.device).collect::<Vec<_>>(),
        vec![dev(2)]
    );
    assert_eq!(s.fetch(&dev(3), 0, 10, 1 << 20).unwrap().0, vec![]);
    // To carol alone: nothing stored at all, and no error.
    let sent = s.enqueue(&dev(1), &[dev(3)], b"v".to_vec(), 1, Q).unwrap();
    assert!(sent.deliveries.is_empty());
    assert_eq!(b.count("datagrams"), 1);
    // A blocked claimant gets the reserve key, uncounted.
    register(&s, "dave", 4, 4, 3);
    s.block(&user_key(4), &name("alice")).unwrap();
    let (_, claimed) = s.claim_prekeys(&name("dave"), &[], &user_key(1)).unwrap();
    assert_eq!(claimed[0].prekey, b"reserve-1");
    assert_eq!(s.prekey_count(&dev(4)).unwrap().one_time, 3);
    assert_eq!(s.prekey_count(&dev(4)).unwrap().reserve_served, 0);
    // Carol may still write to Alice, and Bob to Carol.
    s.enqueue(&dev(3), &[dev(1)], b"z".to_vec(), 1, Q).unwrap();
    s.enqueue(&dev(2), &[dev(3)], b"w".to_vec(), 1, Q).unwrap();
    assert!(matches!(
        s.block(&user_key(3), &name("nobody")).unwrap_err(),
        StoreError::UnknownUser
    ));
    s.unblock(&user_key(3), &name("alice")).unwrap();
    assert!(s.blocks(&user_key(3)).unwrap().is_empty());
    let sent = s.enqueue(&dev(1), &[dev(3)], b"y2".to_vec(), 1, Q).unwrap();
    assert_eq!(sent.deliveries.len(), 1);
}

fn fetch_pages_and_ack_deletes_without_retention<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    register(&s, "bob2", 3, 3, 0);
    for i in 0..5u8 {
        s.enqueue(&dev(1), &[dev(2), dev(3)], vec![i; 100], 10 + i as u64, Q)
            .unwrap();
    }
    assert_eq!(s.pending_items().unwrap(), 10, "the mailbox depth");
    let (page, more) = s.fetch(&dev(2), 0, 2, 1 << 20).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert!(more);
    let (page, more) = s.fetch(&dev(2), 2, 10, 150).unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4],
        "stops after max_bytes"
    );
    assert!(more);
    assert_eq!(s.ack(&dev(2), &[1, 2, 3, 4, 5, 42], 100, 0).unwrap(), 5);
    assert_eq!(s.ack(&dev(2), &[1], 100, 0).unwrap(), 0, "already acked");
    assert!(s.fetch(&dev(2), 0, 10, 1 << 20).unwrap().0.is_empty());
    assert_eq!(b.count("datagrams"), 5, "bob2 has not acked yet");
    assert_eq!(s.pending_items().unwrap(), 5);
    s.ack(&dev(3), &[1, 2, 3, 4, 5], 100, 0).unwrap();
    assert_eq!(b.count("datagrams"), 0, "no row left: datagrams deleted");
    assert_eq!(b.count("mailbox"), 0);
    // Sequence numbers never go back.
    let e = s
        .enqueue(&dev(1), &[dev(2)], b"later".to_vec(), 200, Q)
        .unwrap();
    assert_eq!(e.deliveries[0].seq, 6);
}

fn acked_items_are_retained_then_purged<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    let e = s
        .enqueue(&dev(1), &[dev(2)], b"kept".to_vec(), 1_000, Q)
        .unwrap();
    let retention = 60_000;
    assert_eq!(s.ack(&dev(2), &[1], 2_000, retention).unwrap(), 1);
    assert!(
        s.fetch(&dev(2), 0, 10, 1 << 20).unwrap().0.is_empty(),
        "acked: no longer pending"
    );
    assert_eq!(
        s.datagram_for(&dev(2), &e.datagram_id).unwrap().unwrap(),
        b"kept"
    );
    assert_eq!(
        s.datagram_for(&dev(1), &e.datagram_id).unwrap(),
        None,
        "not addressed to the sender"
    );
    // Another device of the recipient's user (e.g. linked later) may fetch
    // it for history recovery.
    s.create_link("l3", &dev(3), b"r".to_vec(), 2_500).unwrap();
    s.approve_link("l3", &user_key(2), new_device(dev(3), 0), vec![1], 2_500)
        .unwrap();
    assert_eq!(
        s.datagram_for(&dev(3), &e.datagram_id).unwrap().unwrap(),
        b"kept"
    );
    assert_eq!(
        s.purge(2_000 + retention - 1, retention, u64::MAX).unwrap(),
        Purged::default()
    );
    let purged = s.purge(2_000 + retention, retention, u64::MAX).unwrap();
    assert_eq!((purged.mailbox_rows, purged.datagrams), (1, 1));
    assert_eq!(s.datagram_for(&dev(2), &e.datagram_id).unwrap(), None);
}

fn pending_items_and_sequences_survive_reopen<B: Backend>(b: B) {
    {
        let s = b.open();
        register(&s, "alice", 1, 1, 0);
        register(&s, "bob", 2, 2, 0);
        s.enqueue(&dev(1), &[dev(2)], b"one".to_vec(), 1, Q)
            .unwrap();
    }
    {
        // No clean close at all: the store is leaked with its threads and
        // connections; what was acknowledged must be on disk anyway.
        let s = b.open();
        s.enqueue(&dev(1), &[dev(2)], b"two".to_vec(), 2, Q)
            .unwrap();
        std::mem::forget(s);
    }
    let s = b.open();
    let (items, _) = s.fetch(&dev(2), 0, 10, 1 << 20).unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| (i.seq, i.datagram.clone()))
            .collect::<Vec<_>>(),
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
    assert_eq!(
        s.enqueue(&dev(1), &[dev(2)], b"three".to_vec(), 3, Q)
            .unwrap()
            .deliveries[0]
            .seq,
        3
    );
    assert_eq!(
        s.user(&name("alice")).unwrap().unwrap().user,
        user_key(1),
        "same secret after reopen"
    );
}

fn links_wait_get_approved_and_expire<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "bob", 1, 1, 0);
    s.create_link("abc", &dev(2), b"request".to_vec(), 1_000)
        .unwrap();
    let l = s.link("abc", 2_000).unwrap().unwrap();
    assert_eq!(
        (l.device, l.request.as_slice(), l.approved.as_ref()),
        (dev(2), b"request".as_slice(), None)
    );
    let wrong = new_device(dev(3), 0);
    assert!(s
        .approve_link("abc", &user_key(1), wrong, b"sealed".to_vec(), 2_000)
        .is_err());
    s.approve_link(
        "abc",
        &user_key(1),
        new_device(dev(2), 4),
        b"sealed".to_vec(),
        3_000,
    )
    .unwrap();
    let l = s.link("abc", 4_000).unwrap().unwrap();
    let approved = l.approved.unwrap();
    assert_eq!(approved.username_hash, name("bob"));
    assert_eq!(approved.cert, new_device(dev(2), 0).cert);
    assert_eq!(approved.approval, b"sealed");
    assert!(matches!(
        s.approve_link("abc", &user_key(1), new_device(dev(2), 0), vec![2], 3_000)
            .unwrap_err(),
        StoreError::LinkApproved
    ));
    assert_eq!(s.user(&name("bob")).unwrap().unwrap().devices.len(), 2);
    assert_eq!(s.prekey_count(&dev(2)).unwrap().one_time, 4);
    assert!(
        s.link("abc", 1_000 + LINK_TTL_MS).unwrap().is_none(),
        "expired"
    );
    assert!(matches!(
        s.approve_link("zzz", &user_key(1), new_device(dev(5), 0), vec![1], 1)
            .unwrap_err(),
        StoreError::UnknownLink
    ));
    assert_eq!(s.purge(1_000 + LINK_TTL_MS, 0, u64::MAX).unwrap().links, 1);
}

fn nothing_readable_in_the_database<B: Backend>(b: B) {
    let username = b"unmistakable-username-hash-0001";
    let mut uh = [0u8; 32];
    uh[..username.len()].copy_from_slice(username);
    {
        let s = b.open();
        s.register(
            NewUser {
                username_hash: uh,
                user: user_key(1),
                device: new_device(dev(1), 1),
            },
            1,
        )
        .unwrap();
        register(&s, "bob", 2, 2, 0);
        s.block(&user_key(2), &uh).unwrap();
        s.create_link("l1", &dev(9), b"r".to_vec(), 1).unwrap();
        s.approve_link("l1", &user_key(1), new_device(dev(9), 0), vec![1], 2)
            .unwrap();
        s.enqueue(&dev(2), &[dev(1)], b"ciphertext".to_vec(), 1, Q)
            .unwrap();
        std::mem::forget(s); // keep the WAL as a crash would
    }
    let secret = std::fs::read(b.default_secret()).unwrap();
    assert_eq!(secret.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(b.default_secret())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        b.holds(b"ciphertext"),
        "the search itself finds what is there"
    );
    for needle in [&uh[..], &name("bob")[..], &secret[..], b"unmistakable"] {
        assert!(!b.holds(needle), "the database holds a name or the secret");
    }
}

fn non_blocking_writes_answer_once_committed<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    // 200 sends handed over without waiting; each answer arrives once its
    // transaction is committed, so as soon as it is received another
    // connection sees its mailbox row.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..200u32 {
        let tx = tx.clone();
        s.enqueue_with(
            &dev(1),
            &[dev(2)],
            i.to_be_bytes().to_vec(),
            10,
            Q,
            None,
            Box::new(move |answer| {
                tx.send(answer.unwrap().deliveries[0].seq).unwrap();
            }),
        );
    }
    // A refused send is answered too, with the refusal.
    let (etx, erx) = std::sync::mpsc::channel();
    s.enqueue_with(
        &dev(1),
        &[dev(99)],
        b"nobody".to_vec(),
        10,
        Q,
        None,
        Box::new(move |answer| etx.send(answer.map(|_| ())).unwrap()),
    );
    drop(tx);
    let mut seqs: Vec<(u64, i64)> = rx
        .iter()
        .map(|seq| {
            let seen = b.int(
                &format!("SELECT COUNT(*) FROM mailbox WHERE seq = {seq}"),
                None,
            );
            (seq, seen)
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).map(|q| (q, 1)).collect::<Vec<_>>());
    assert!(matches!(erx.recv().unwrap(), Err(StoreError::UnknownDevice(d)) if d == dev(99)));

    // Acks the same way; the second ack of the same items finds none.
    let (atx, arx) = std::sync::mpsc::channel();
    let seqs: Vec<u64> = (1..=150).collect();
    for _ in 0..2 {
        let atx = atx.clone();
        s.ack_with(
            &dev(2),
            &seqs,
            20,
            0,
            Box::new(move |a| atx.send(a.unwrap()).unwrap()),
        );
    }
    let mut answers = [arx.recv().unwrap(), arx.recv().unwrap()];
    answers.sort_unstable();
    assert_eq!(answers, [0, 150]);
    assert_eq!(b.count("mailbox"), 50);
    // Writes still queued when the store is dropped are committed and
    // answered.
    let (dtx, drx) = std::sync::mpsc::channel();
    for i in 0..50u32 {
        let dtx = dtx.clone();
        s.enqueue_with(
            &dev(2),
            &[dev(1)],
            format!("late {i}").into_bytes(),
            30,
            Q,
            None,
            Box::new(move |a| dtx.send(a.is_ok()).unwrap()),
        );
    }
    drop(s);
    drop(dtx);
    assert_eq!(drx.iter().filter(|ok| *ok).count(), 50);
    assert_eq!(b.count("mailbox"), 100);
}
