//! What only the PostgreSQL backend has: versioned migrations of a
//! database shared by several nodes, and nodes that must agree on the
//! server secret. (Everything else runs in the shared suite.)

use std::sync::Arc;

mod common;

use common::*;
use sotto_store::server::*;

/// A database left at the previous schema version (what version 1 made,
/// with users, mailboxes and a block in it) is upgraded in place when a
/// node opens it, and keeps all of it; migrating again changes nothing.
#[test]
fn a_database_at_the_previous_version_is_upgraded_with_its_data() {
    let Some(b) = Postgres::new() else { return };
    {
        let s = b.open();
        register(&s, "alice", 1, 1, 2);
        register(&s, "bob", 2, 2, 0);
        register(&s, "carol", 3, 3, 0);
        s.enqueue(&dev(1), &[dev(2)], b"kept".to_vec(), 1, Q)
            .unwrap();
        s.block(&user_key(2), &name("carol")).unwrap();
    }
    // Back to version 1: version 2 only added the request table, versions
    // 3 and 4 only the phone tables (and their columns), versions 5 and 6
    // only the send and ack functions.
    b.exec(
        "DELETE FROM sotto_schema WHERE version >= 2; DROP TABLE requests;
         DROP TABLE otp_requests, outbox, otps, phone_users, sender_threads,
         sender_invites, sender_messages, sender_sessions, sender_keys, senders;
         DROP FUNCTION sotto_send, sotto_ack, sotto_send_many, sotto_ack_many",
    );
    assert_eq!(b.int("SELECT MAX(version) FROM sotto_schema", None), 1);

    assert_eq!(
        migrate_postgres(b.url()).unwrap(),
        (1, POSTGRES_SCHEMA_VERSION)
    );
    assert_eq!(
        migrate_postgres(b.url()).unwrap(),
        (POSTGRES_SCHEMA_VERSION, POSTGRES_SCHEMA_VERSION),
        "idempotent"
    );
    let s = b.open();
    assert_eq!(s.user(&name("alice")).unwrap().unwrap().user, user_key(1));
    assert_eq!(s.prekey_count(&dev(1)).unwrap().one_time, 2);
    let (items, _) = s.fetch(&dev(2), 0, 10, usize::MAX).unwrap();
    assert_eq!(items[0].datagram, b"kept");
    assert_eq!(s.blocks(&user_key(2)).unwrap(), vec![name("carol")]);
    // What version 2 brought works.
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..2 {
        let tx = tx.clone();
        s.single_use(&[5; 32], 10, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
    }
    let mut answers = [rx.recv().unwrap(), rx.recv().unwrap()];
    answers.sort();
    assert_eq!(answers, [false, true], "a request id is used once");
    // What version 5 brought works on the old rows: the next sequence
    // number, the ack (and the byte count it frees).
    let sent = s
        .enqueue(&dev(1), &[dev(2)], b"new".to_vec(), 2, Q)
        .unwrap();
    assert_eq!(sent.deliveries[0].seq, 2);
    assert_eq!(s.ack(&dev(2), &[items[0].seq], 3, 0).unwrap(), 1);
    assert_eq!(
        b.int(
            "SELECT pending_bytes FROM devices WHERE device = $1",
            Some(&dev(2).0[..])
        ),
        3
    );
}

/// A database at version 4 (before the send and ack functions) with
/// mailboxes holding datagrams, one of them acknowledged and retained, is
/// upgraded in place: sequences go on, quotas count what was there, acks
/// free it, the retained row stays acknowledged.
#[test]
fn a_database_at_version_4_gets_the_send_functions_and_keeps_its_mailboxes() {
    let Some(b) = Postgres::new() else { return };
    let quota = MailboxQuota {
        device_bytes: 1_000,
        user_bytes: 1_000,
    };
    {
        let s = b.open();
        register(&s, "alice", 1, 1, 0);
        register(&s, "bob", 2, 2, 0);
        for i in 0..3u8 {
            s.enqueue(&dev(1), &[dev(2)], vec![i; 300], 1, &quota)
                .unwrap();
        }
        s.ack(&dev(2), &[1], 2, 60_000).unwrap();
    }
    b.exec(
        "DELETE FROM sotto_schema WHERE version >= 5;
         DROP FUNCTION sotto_send, sotto_ack, sotto_send_many, sotto_ack_many",
    );
    assert_eq!(b.int("SELECT MAX(version) FROM sotto_schema", None), 4);
    assert_eq!(
        migrate_postgres(b.url()).unwrap(),
        (4, POSTGRES_SCHEMA_VERSION)
    );
    let s = b.open();
    assert_eq!(
        b.int(
            "SELECT pending_bytes FROM devices WHERE device = $1",
            Some(&dev(2).0[..])
        ),
        600
    );
    let (items, _) = s.fetch(&dev(2), 0, 10, usize::MAX).unwrap();
    assert_eq!(items.iter().map(|i| i.seq).collect::<Vec<_>>(), [2, 3]);
    // 600 + 300 fit, 600 + 300 + 300 do not.
    let sent = s
        .enqueue(&dev(1), &[dev(2)], vec![7; 300], 3, &quota)
        .unwrap();
    assert_eq!(sent.deliveries[0].seq, 4);
    let err = s
        .enqueue(&dev(1), &[dev(2)], vec![8; 300], 3, &quota)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MailboxFull(d) if d == dev(2)),
        "{err}"
    );
    assert_eq!(
        s.ack(&dev(2), &[1, 2, 3], 4, 0).unwrap(),
        2,
        "1 was acked before"
    );
    s.enqueue(&dev(1), &[dev(2)], vec![8; 300], 5, &quota)
        .unwrap();
    assert_eq!(
        b.int(
            "SELECT COUNT(*) FROM mailbox WHERE acked_at IS NOT NULL",
            None
        ),
        1
    );
}

/// Two nodes opening a fresh database at the same moment: one schema, one
/// secret check value; a node started with another secret is refused.
#[test]
fn nodes_starting_together_agree_on_schema_and_secret() {
    let Some(b) = Postgres::new() else { return };
    let secret = b.default_secret();
    std::fs::write(&secret, [1u8; 32]).unwrap();
    let b = Arc::new(b);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || b.open_with(None).map(|_| ()))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(
        b.int("SELECT COUNT(*) FROM sotto_schema", None),
        POSTGRES_SCHEMA_VERSION
    );
    let other = b.scratch().join("other");
    std::fs::write(&other, [2u8; 32]).unwrap();
    let err = b.open_with(Some(&other)).err().unwrap();
    assert!(matches!(err, StoreError::WrongSecret(_)), "{err}");
}

/// Two nodes store groups of sends, each node the same datagrams in the
/// opposite order, to the same users both ways, while acks of those users
/// arrive in groups too. Groups lock users and devices and insert
/// datagrams in one order, so the database finds no deadlock (it would
/// break one after a second, and its sends would go again one by one);
/// every device's rows are numbered once each.
#[test]
fn two_nodes_storing_groups_to_the_same_users_never_deadlock() {
    const ROUNDS: u32 = 10;
    let Some(b) = Postgres::new() else { return };
    let nodes = [Arc::new(b.open()), Arc::new(b.open())];
    for d in 1..=20u32 {
        register(&*nodes[0], &format!("user{d}"), d, d, 0);
    }
    let deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()";
    let before = b.int(deadlocks, None);
    let (tx, rx) = std::sync::mpsc::channel();
    let (atx, arx) = std::sync::mpsc::channel();
    let start = Arc::new(std::sync::Barrier::new(2));
    let handles: Vec<_> = (0..2usize)
        .map(|n| {
            let (node, tx, atx) = (nodes[n].clone(), tx.clone(), atx.clone());
            let start = start.clone();
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    // Both nodes' groups of a round in the database at once.
                    start.wait();
                    for k in 0..60u32 {
                        // Node 0 from the low users to the high ones, node 1
                        // the other way, the same bytes in reverse order.
                        let i = if n == 0 { k } else { 59 - k };
                        let (from, to) = match n {
                            0 => (1 + i % 10, [11 + i % 10, 11 + (i + 3) % 10]),
                            _ => (11 + i % 10, [1 + i % 10, 1 + (i + 3) % 10]),
                        };
                        let tx = tx.clone();
                        node.enqueue_with(
                            &dev(from),
                            &[dev(to[0]), dev(to[1])],
                            format!("{round}/{i}").into_bytes(),
                            1,
                            Q,
                            None,
                            Box::new(move |a| tx.send(a.map(|e| e.deliveries)).unwrap()),
                        );
                    }
                    // Acks in groups on the same node meanwhile.
                    for d in 1..=20u32 {
                        let seqs: Vec<u64> = (1..=6).map(|k| u64::from(round) * 6 + k).collect();
                        let atx = atx.clone();
                        node.ack_with(
                            &dev(d),
                            &seqs,
                            2,
                            60_000,
                            Box::new(move |a| atx.send(a.map(|_| ())).unwrap()),
                        );
                    }
                }
            })
        })
        .collect();
    drop((tx, atx));
    for h in handles {
        h.join().unwrap();
    }
    let mut rows: std::collections::BTreeMap<DeviceId, Vec<u64>> = Default::default();
    for deliveries in rx.iter() {
        let deliveries = deliveries.unwrap();
        assert_eq!(deliveries.len(), 2);
        for d in deliveries {
            rows.entry(d.device).or_default().push(d.seq);
        }
    }
    assert_eq!(
        arx.iter().filter(|a| a.is_ok()).count() as u32,
        2 * ROUNDS * 20
    );
    assert_eq!(rows.len(), 20);
    for (device, mut seqs) in rows {
        seqs.sort_unstable();
        // 120 sends a round of two rows each, over 20 devices.
        assert_eq!(
            seqs,
            (1..=u64::from(ROUNDS) * 12).collect::<Vec<u64>>(),
            "{device:?}"
        );
    }
    for node in &nodes {
        let (writes, calls) = node.write_stats();
        assert!(
            calls < writes,
            "groups formed: {writes} writes in {calls} calls"
        );
    }
    // A backend reports its deadlocks when it is done: close the nodes'
    // connections first.
    drop(nodes);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(b.int(deadlocks, None), before, "deadlocks detected");
}
