//! What the server store bounds or refuses: mailbox quotas, the time to
//! live of unacknowledged items, single-use request ids, prekey ids that
//! were published before, device removal, and the server secret's file.

mod common;

use common::*;
use sotto_store::server::*;

store_tests!(
    a_full_mailbox_refuses_new_datagrams_and_keeps_what_it_holds,
    unacknowledged_items_expire_after_their_time_to_live,
    a_request_id_is_accepted_once_within_its_window,
    a_prekey_id_is_never_published_twice,
    a_removed_device_leaves_the_directory_with_its_prekeys_and_mailbox,
    the_secret_can_live_elsewhere_and_a_wrong_or_missing_one_is_refused,
    the_block_list_names_no_user_in_the_database,
    two_nodes_racing_to_fill_a_mailbox_stop_at_its_quota,
    a_node_remembering_a_removed_device_honours_its_new_owners_blocks,
    a_send_to_thousands_of_devices_counts_each_users_quota_once,
    a_node_remembering_a_removed_sender_device_sends_as_its_new_user,
);

/// Links a second device `d` to user `u` (as an approved link does).
fn add_device<S: ServerStore>(s: &S, u: u32, d: u32) {
    s.create_link(&format!("l{d}"), &dev(d), vec![], 1).unwrap();
    s.approve_link(
        &format!("l{d}"),
        &user_key(u),
        new_device(dev(d), 0),
        vec![1],
        1,
    )
    .unwrap();
}

fn single_use<S: ServerStore>(s: &S, id: [u8; 32], expires: u64) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    s.single_use(
        &id,
        expires,
        Box::new(move |r| {
            tx.send(r).unwrap();
        }),
    );
    rx.recv().unwrap()
}

fn a_full_mailbox_refuses_new_datagrams_and_keeps_what_it_holds<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "mallory", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    add_device(&s, 2, 3);
    let quota = MailboxQuota {
        device_bytes: 1000,
        user_bytes: 1500,
    };
    // 400 + 400 fit one device; the third would take it to 1200.
    for i in 0..2u8 {
        s.enqueue(&dev(1), &[dev(2)], vec![i; 400], 1, &quota)
            .unwrap();
    }
    let err = s
        .enqueue(&dev(1), &[dev(2)], vec![9; 400], 1, &quota)
        .unwrap_err();
    assert!(matches!(err, StoreError::MailboxFull(d) if d == dev(2)));
    // The user quota: bob's other device has room, but both together
    // would hold 800 + 2 * 400 > 1500.
    let err = s
        .enqueue(&dev(1), &[dev(3), dev(2)], vec![7; 400], 1, &quota)
        .unwrap_err();
    assert!(matches!(err, StoreError::MailboxFull(_)));
    s.enqueue(&dev(1), &[dev(3)], vec![8; 400], 1, &quota)
        .unwrap();
    // Nothing already accepted was lost; acknowledging makes room again.
    let (items, _) = s.fetch(&dev(2), 0, 10, usize::MAX).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(s.ack(&dev(2), &[items[0].seq], 2, 0).unwrap(), 1);
    s.enqueue(&dev(1), &[dev(2)], vec![9; 400], 1, &quota)
        .unwrap();
    // With retention, an acked (retained) item no longer counts either.
    let (items, _) = s.fetch(&dev(2), 0, 10, usize::MAX).unwrap();
    s.ack(&dev(2), &[items[0].seq], 3, 60_000).unwrap();
    s.enqueue(&dev(1), &[dev(2)], vec![10; 300], 1, &quota)
        .unwrap();
    let pending = b.int(
        "SELECT pending_bytes FROM devices WHERE device = $1",
        Some(&dev(2).0[..]),
    );
    assert_eq!(pending, 700);
}

fn unacknowledged_items_expire_after_their_time_to_live<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    let quota = MailboxQuota {
        device_bytes: 100,
        user_bytes: 100,
    };
    s.enqueue(&dev(1), &[dev(2)], vec![1; 100], 1_000, &quota)
        .unwrap();
    assert!(s
        .enqueue(&dev(1), &[dev(2)], vec![2; 1], 1_500, &quota)
        .is_err());
    let ttl = 10_000;
    assert_eq!(s.purge(1_000 + ttl - 1, 0, ttl).unwrap().expired, 0);
    let purged = s.purge(1_000 + ttl, 0, ttl).unwrap();
    assert_eq!((purged.expired, purged.datagrams), (1, 1));
    assert!(s.fetch(&dev(2), 0, 10, usize::MAX).unwrap().0.is_empty());
    // Its room is back.
    s.enqueue(&dev(1), &[dev(2)], vec![3; 100], 20_000, &quota)
        .unwrap();
}

fn a_request_id_is_accepted_once_within_its_window<B: Backend>(b: B) {
    let s = b.open();
    single_use(&s, [1; 32], 5_000).unwrap();
    assert!(matches!(
        single_use(&s, [1; 32], 5_000),
        Err(StoreError::Replayed)
    ));
    single_use(&s, [2; 32], 5_000).unwrap();
    // Remembered across a restart (another node would see it too).
    drop(s);
    let s = b.open();
    assert!(matches!(
        single_use(&s, [2; 32], 5_000),
        Err(StoreError::Replayed)
    ));
    // Forgotten only once the window is over.
    assert_eq!(s.purge(4_999, 0, u64::MAX).unwrap().requests, 0);
    assert_eq!(s.purge(5_000, 0, u64::MAX).unwrap().requests, 2);
}

fn a_prekey_id_is_never_published_twice<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "bob", 1, 1, 3); // ids 1..=3, reserve 4
    let (_, claimed) = s.claim_prekeys(&name("bob"), &[], &user_key(9)).unwrap();
    assert_eq!(claimed[0].prekey, b"otk-1");
    // Re-uploading the served key, a published id, or a repeated id: all
    // refused, and nothing changes.
    for (prekeys, reserve) in [
        (vec![(1, vec![1u8; 8])], None),
        (vec![(3, vec![3u8; 8])], None),
        (vec![(5, vec![5u8; 8]), (5, vec![5u8; 8])], None),
        (vec![(6, vec![6u8; 8])], Some((4, b"old reserve".to_vec()))),
    ] {
        let err = s.add_prekeys(&dev(1), prekeys, reserve).unwrap_err();
        assert!(matches!(err, StoreError::PrekeyIdReused { .. }), "{err}");
    }
    assert_eq!(s.prekey_count(&dev(1)).unwrap().one_time, 2);
    // Exhaust the pool: the reserve is served and counted.
    for _ in 0..3 {
        s.claim_prekeys(&name("bob"), &[], &user_key(9)).unwrap();
    }
    assert_eq!(s.prekey_count(&dev(1)).unwrap().reserve_served, 1);
    // An upload of nothing new (a replayed empty refill) is refused too
    // only if it names an old id; new ids are taken and reset the counter.
    let count = s
        .add_prekeys(&dev(1), vec![(7, vec![7u8; 8])], Some((8, b"r2".to_vec())))
        .unwrap();
    assert_eq!(
        count,
        PrekeyCount {
            one_time: 1,
            reserve_served: 0
        }
    );
    assert!(s
        .add_prekeys(&dev(1), vec![(7, vec![7u8; 8])], Some((8, b"r2".to_vec())))
        .is_err());
}

fn a_removed_device_leaves_the_directory_with_its_prekeys_and_mailbox<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 2);
    add_device(&s, 2, 3);
    s.add_prekeys(&dev(3), vec![(5, vec![5; 8])], None).unwrap();
    s.enqueue(&dev(1), &[dev(2), dev(3)], b"both".to_vec(), 1, Q)
        .unwrap();
    s.enqueue(&dev(1), &[dev(3)], b"only 3".to_vec(), 1, Q)
        .unwrap();
    // Not alice's device.
    assert!(matches!(
        s.remove_device(&user_key(1), &dev(3)),
        Err(StoreError::UnknownDevice(_))
    ));
    s.remove_device(&user_key(2), &dev(3)).unwrap();
    assert!(s.device(&dev(3)).unwrap().is_none());
    let bob = s.user(&name("bob")).unwrap().unwrap();
    assert_eq!(
        bob.devices.iter().map(|d| d.device).collect::<Vec<_>>(),
        vec![dev(2)]
    );
    assert_eq!(b.count("prekeys"), 2, "bob's first device's");
    assert_eq!(b.count("mailbox"), 1);
    assert_eq!(b.count("datagrams"), 1, "'only 3' is gone");
    assert!(matches!(
        s.enqueue(&dev(1), &[dev(3)], b"x".to_vec(), 1, Q),
        Err(StoreError::UnknownDevice(_))
    ));
}

fn the_secret_can_live_elsewhere_and_a_wrong_or_missing_one_is_refused<B: Backend>(b: B) {
    let secret = b.scratch().join("vault").join("secret");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    {
        let s = b.open_with(Some(&secret)).unwrap();
        register(&s, "alice", 1, 1, 0);
    }
    assert!(secret.exists());
    assert!(
        !b.default_secret().exists(),
        "nothing secret in the data directory"
    );
    // Without the secret file the users would be orphaned: refused.
    let err = b.open_with(None).err().unwrap();
    assert!(matches!(err, StoreError::NoSecret(_)), "{err}");
    // Another secret: refused too.
    let other = b.scratch().join("other");
    std::fs::write(&other, [7u8; 32]).unwrap();
    let err = b.open_with(Some(&other)).err().unwrap();
    assert!(matches!(err, StoreError::WrongSecret(_)), "{err}");
    // The right one finds alice.
    let s = b.open_with(Some(&secret)).unwrap();
    assert!(s.user(&name("alice")).unwrap().is_some());
}

fn the_block_list_names_no_user_in_the_database<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "carol", 3, 3, 0);
    s.block(&user_key(3), &name("alice")).unwrap();
    drop(s);
    let row = b.blobs("SELECT pair FROM block_list UNION ALL SELECT owner FROM block_list UNION ALL SELECT sealed FROM block_list");
    assert_eq!(row.len(), 3, "one block");
    let stored_users = b.blobs("SELECT user_key FROM users UNION ALL SELECT name_key FROM users");
    for value in &row {
        assert!(!stored_users.contains(value));
        assert_ne!(value.as_slice(), &name("alice")[..]);
    }
}

/// Two nodes (two stores over one database) send to bob's two devices
/// from 16 threads at once, against a user quota with room for exactly
/// ten 100-byte datagrams: ten are accepted, every other send is refused
/// as full, and the byte count matches what is stored; an ack on one node
/// makes room for a send on the other.
fn two_nodes_racing_to_fill_a_mailbox_stop_at_its_quota<B: Backend>(b: B) {
    let nodes = [std::sync::Arc::new(b.open()), std::sync::Arc::new(b.open())];
    register(&*nodes[0], "alice", 1, 1, 0);
    register(&*nodes[0], "bob", 2, 2, 0);
    add_device(&*nodes[1], 2, 3);
    let quota = MailboxQuota {
        device_bytes: 10_000,
        user_bytes: 1_000,
    };
    let start = std::sync::Arc::new(std::sync::Barrier::new(16));
    let handles: Vec<_> = (0..16u8)
        .map(|t| {
            let (node, start) = (nodes[t as usize % 2].clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let to = dev(2 + u32::from(t) % 2);
                (0..5u8)
                    .map(
                        |i| match node.enqueue(&dev(1), &[to], vec![t * 5 + i; 100], 1, &quota) {
                            Ok(e) => {
                                assert_eq!(e.deliveries.len(), 1);
                                true
                            }
                            Err(StoreError::MailboxFull(d)) => {
                                assert!(d == dev(2) || d == dev(3), "{d:?}");
                                false
                            }
                            Err(e) => panic!("{e}"),
                        },
                    )
                    .filter(|ok| *ok)
                    .count()
            })
        })
        .collect();
    let accepted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(accepted, 10, "exactly the quota's room");
    assert_eq!(b.count("mailbox"), 10);
    assert_eq!(
        b.int(
            "SELECT CAST(SUM(pending_bytes) AS BIGINT) FROM devices",
            None
        ),
        1_000
    );
    let err = nodes[0]
        .enqueue(&dev(1), &[dev(2)], vec![0xee; 100], 1, &quota)
        .unwrap_err();
    assert!(matches!(err, StoreError::MailboxFull(_)), "{err}");
    let (items, _) = nodes[1].fetch(&dev(2), 0, 1, usize::MAX).unwrap();
    let (items3, _) = nodes[1].fetch(&dev(3), 0, 1, usize::MAX).unwrap();
    let (d, item) = match items.first() {
        Some(i) => (dev(2), i),
        None => (dev(3), &items3[0]),
    };
    assert_eq!(nodes[1].ack(&d, &[item.seq], 2, 0).unwrap(), 1);
    nodes[0]
        .enqueue(&dev(1), &[dev(2)], vec![0xee; 100], 1, &quota)
        .unwrap();
    assert_eq!(
        b.int(
            "SELECT CAST(SUM(pending_bytes) AS BIGINT) FROM devices",
            None
        ),
        1_000
    );
}

/// A node that sent to bob's second device remembers whose it is; the
/// device is removed on the other node and its id registered again by
/// carol, who blocks alice. The first node's next send to that id must
/// honour carol's block (not bob's absence of one), and once carol
/// unblocks her, reach carol's device from sequence 1.
fn a_node_remembering_a_removed_device_honours_its_new_owners_blocks<B: Backend>(b: B) {
    let nodes = [b.open(), b.open()];
    register(&nodes[0], "alice", 1, 1, 0);
    register(&nodes[0], "bob", 2, 2, 0);
    add_device(&nodes[0], 2, 3);
    let sent = nodes[0]
        .enqueue(&dev(1), &[dev(3)], b"to bob".to_vec(), 1, Q)
        .unwrap();
    assert_eq!(sent.deliveries[0].device, dev(3));
    nodes[1].remove_device(&user_key(2), &dev(3)).unwrap();
    register(&nodes[1], "carol", 3, 3, 0);
    nodes[1].block(&user_key(3), &name("alice")).unwrap();
    let sent = nodes[0]
        .enqueue(&dev(1), &[dev(3)], b"to carol?".to_vec(), 2, Q)
        .unwrap();
    assert!(sent.deliveries.is_empty(), "carol blocks alice");
    assert!(nodes[1]
        .fetch(&dev(3), 0, 10, usize::MAX)
        .unwrap()
        .0
        .is_empty());
    nodes[1].unblock(&user_key(3), &name("alice")).unwrap();
    let sent = nodes[0]
        .enqueue(&dev(1), &[dev(3)], b"to carol".to_vec(), 3, Q)
        .unwrap();
    assert_eq!(
        sent.deliveries,
        vec![Delivery {
            device: dev(3),
            seq: 1
        }]
    );
    let (items, _) = nodes[1].fetch(&dev(3), 0, 10, usize::MAX).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].datagram, b"to carol");
}

/// A send may name thousands of devices: one to bob's 1,200 and carol's
/// 600, interleaved, is accepted whole, and each user's quota counts the
/// send once per device of that user (not per device of the send): bob's
/// mailbox takes exactly two such sends, and a third is refused naming
/// bob's first device, not carol's before it.
fn a_send_to_thousands_of_devices_counts_each_users_quota_once<B: Backend>(b: B) {
    const C: usize = 600; // carol's devices; bob has twice as many
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    register(&s, "bob", 2, 2, 0);
    register(&s, "carol", 3, 3, 0);
    let (mut bob, mut carol) = (vec![dev(2)], vec![dev(3)]);
    for d in 10_000..10_000 + 2 * C as u32 - 1 {
        add_device(&s, 2, d);
        bob.push(dev(d));
    }
    for d in 20_000..20_000 + C as u32 - 1 {
        add_device(&s, 3, d);
        carol.push(dev(d));
    }
    // carol, bob, bob, carol, bob, bob, ...
    let all: Vec<DeviceId> = (0..3 * C)
        .map(|i| match i % 3 {
            0 => carol[i / 3],
            _ => bob[i - i / 3 - 1],
        })
        .collect();
    // 10-byte datagrams: room for two on each device, and for two sends
    // on bob's (and so four on carol's).
    let quota = |device_bytes: u64| MailboxQuota {
        device_bytes,
        user_bytes: 2 * 2 * C as u64 * 10,
    };
    for n in 1..=2u8 {
        let sent = s
            .enqueue(&dev(1), &all, vec![n; 10], 1, &quota(20))
            .unwrap();
        let mut got: Vec<(DeviceId, u64)> =
            sent.deliveries.iter().map(|d| (d.device, d.seq)).collect();
        got.sort();
        let mut want: Vec<(DeviceId, u64)> = all.iter().map(|d| (*d, u64::from(n))).collect();
        want.sort();
        assert_eq!(got, want, "send {n} reaches every device once");
    }
    let carol_then_bob: Vec<DeviceId> = carol.iter().chain(&bob).copied().collect();
    let err = s
        .enqueue(&dev(1), &carol_then_bob, vec![3; 10], 1, &quota(1_000))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MailboxFull(d) if d == bob[0]),
        "{err}"
    );
    let carol_reversed: Vec<DeviceId> = carol.iter().rev().copied().collect();
    let err = s
        .enqueue(&dev(1), &carol_reversed, vec![4; 10], 1, &quota(20))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MailboxFull(d) if d == carol[C - 1]),
        "{err}"
    );
    let sent = s
        .enqueue(&dev(1), &carol_reversed, vec![5; 10], 1, &quota(30))
        .unwrap();
    assert_eq!(sent.deliveries.len(), C);
    assert!(sent.deliveries.iter().all(|d| d.seq == 3));
    assert_eq!(b.count("mailbox"), 7 * C as i64);
    assert_eq!(
        b.int(
            "SELECT CAST(SUM(pending_bytes) AS BIGINT) FROM devices",
            None
        ),
        (2 * C * 20 + C * 30) as i64
    );
}

/// A node that sent from alice's second device remembers whose it is; the
/// device is removed on the other node and its id registered again by
/// dave, whom carol blocks (alice she does not). The first node's next
/// send from that id must be dave's: carol gets nothing, bob gets it.
fn a_node_remembering_a_removed_sender_device_sends_as_its_new_user<B: Backend>(b: B) {
    let nodes = [b.open(), b.open()];
    register(&nodes[0], "alice", 1, 1, 0);
    register(&nodes[0], "bob", 2, 2, 0);
    register(&nodes[0], "carol", 3, 3, 0);
    add_device(&nodes[0], 1, 4);
    let sent = nodes[0]
        .enqueue(&dev(4), &[dev(3)], b"alice to carol".to_vec(), 1, Q)
        .unwrap();
    assert_eq!(sent.deliveries.len(), 1);
    nodes[1].remove_device(&user_key(1), &dev(4)).unwrap();
    register(&nodes[1], "dave", 5, 4, 0);
    nodes[1].block(&user_key(3), &name("dave")).unwrap();
    let sent = nodes[0]
        .enqueue(&dev(4), &[dev(3), dev(2)], b"dave".to_vec(), 2, Q)
        .unwrap();
    assert_eq!(
        sent.deliveries,
        vec![Delivery {
            device: dev(2),
            seq: 1
        }],
        "carol blocks dave"
    );
    let (items, _) = nodes[1].fetch(&dev(3), 0, 10, usize::MAX).unwrap();
    assert_eq!(items.len(), 1, "only alice's datagram");
    assert_eq!(items[0].datagram, b"alice to carol");
}
