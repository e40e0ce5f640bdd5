//! Sends and acks handed over at once, on both backends: the SQLite
//! writer commits them together, PostgreSQL stores them in groups
//! (`sotto_send_many`, `sotto_ack_many`). Either way each is answered as
//! it would be alone.

use std::collections::BTreeMap;
use std::sync::mpsc;

mod common;

use common::*;
use sotto_store::server::*;

store_tests!(
    a_burst_of_sends_answers_each_as_if_alone,
    a_burst_of_acks_answers_each_device,
    acks_of_a_datagrams_last_rows_at_once_delete_it,
    many_refusals_in_a_burst_leave_the_rest_grouped,
);

/// What a burst's send expects.
#[derive(Debug, PartialEq)]
enum Expect {
    /// Accepted, with rows for these devices.
    To(Vec<DeviceId>),
    Unknown(DeviceId),
    Replayed,
}

/// One send of a burst.
struct Item {
    from: u32,
    to: Vec<u32>,
    body: Vec<u8>,
    quota: MailboxQuota,
    request: Option<[u8; 32]>,
    expect: Expect,
}

fn item(from: u32, to: &[u32], body: &[u8], expect: Expect) -> Item {
    Item {
        from,
        to: to.to_vec(),
        body: body.to_vec(),
        quota: MailboxQuota::UNLIMITED,
        request: None,
        expect,
    }
}

/// Hands over every send of `items` without waiting; their answers, in
/// the order of `items`.
fn burst<S: ServerStore>(s: &S, items: &[Item]) -> Vec<Result<Enqueued>> {
    let (tx, rx) = mpsc::channel::<(usize, Result<Enqueued>)>();
    for (n, i) in items.iter().enumerate() {
        let tx = tx.clone();
        let to: Vec<DeviceId> = i.to.iter().map(|t| dev(*t)).collect();
        let request = i.request.map(|id| RequestId {
            id,
            expires_at: 1_000,
        });
        let reply = Box::new(move |a| tx.send((n, a)).unwrap());
        s.enqueue_with(
            &dev(i.from),
            &to,
            i.body.clone(),
            10,
            &i.quota,
            request,
            reply,
        );
    }
    drop(tx);
    let mut answers: Vec<(usize, Result<Enqueued>)> = rx.iter().collect();
    assert_eq!(answers.len(), items.len(), "every send is answered once");
    answers.sort_by_key(|(n, _)| *n);
    answers.into_iter().map(|(_, a)| a).collect()
}

/// Checks each answer against its item's expectation and adds the rows it
/// made to `rows`.
fn check(items: &[Item], answers: Vec<Result<Enqueued>>, rows: &mut BTreeMap<DeviceId, Vec<u64>>) {
    for (n, (item, answer)) in items.iter().zip(answers).enumerate() {
        match (&item.expect, answer) {
            (Expect::To(devices), Ok(e)) => {
                let mut got: Vec<DeviceId> = e.deliveries.iter().map(|d| d.device).collect();
                got.sort();
                assert_eq!(&got, devices, "send {n}");
                for d in e.deliveries {
                    rows.entry(d.device).or_default().push(d.seq);
                }
            }
            (Expect::Unknown(d), Err(StoreError::UnknownDevice(got))) => assert_eq!(*d, got),
            (Expect::Replayed, Err(StoreError::Replayed)) => {}
            (e, a) => panic!(
                "send {n}: expected {e:?}, got {:?}",
                a.map(|e| e.deliveries)
            ),
        }
    }
}

/// Bursts of sends mixing everything a send can meet: plain sends, sends
/// to several devices, a recipient who blocks the sender; then with them
/// an unknown recipient (a stranger's probe), a request id used before
/// and one used twice in the burst (a replay), a resent datagram, and a
/// mailbox that fills up. Each send gets what it would get alone; nothing
/// refused leaves a row; every device's rows are numbered 1, 2, 3... once
/// each.
fn a_burst_of_sends_answers_each_as_if_alone<B: Backend>(b: B) {
    let s = b.open();
    for (n, who) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
        let n = n as u32 + 1;
        register(&s, who, n, n, 0);
    }
    s.enqueue(&dev(1), &[dev(2)], b"old".to_vec(), 1, Q)
        .unwrap();
    s.block(&user_key(3), &name("alice")).unwrap();
    let (utx, urx) = mpsc::channel();
    s.single_use(&[7; 32], 1_000, Box::new(move |r| utx.send(r).unwrap()));
    urx.recv().unwrap().unwrap();
    let mut rows: BTreeMap<DeviceId, Vec<u64>> = BTreeMap::new();
    // Bob's first row: "old", sent above.
    rows.insert(dev(2), vec![1]);

    // Among alice, bob and dave; carol blocks alice.
    let plain = |i: u32, tag: &str| {
        let (from, to) = [(1, 2), (2, 1), (2, 4), (4, 1), (1, 4), (4, 2)][i as usize % 6];
        item(
            from,
            &[to],
            format!("{tag} {i}").as_bytes(),
            Expect::To(vec![dev(to)]),
        )
    };
    let mut clean: Vec<Item> = (0..120).map(|i| plain(i, "clean")).collect();
    clean.insert(
        40,
        item(2, &[1, 4], b"both", Expect::To(vec![dev(1), dev(4)])),
    );
    clean.insert(60, item(1, &[2, 3], b"blocked", Expect::To(vec![dev(2)])));
    clean.insert(80, item(1, &[3], b"blocked alone", Expect::To(vec![])));
    let before = B::group_commit(&s);
    let answers = burst(&s, &clean);
    if let (Some((w0, c0)), Some((w1, c1))) = (before, B::group_commit(&s)) {
        let (writes, calls) = (w1 - w0, c1 - c0);
        eprintln!("{writes} writes in {calls} commits");
        assert!(calls < writes, "a burst shares commits");
    }
    // Nothing in it needs a send alone: the groups took it all, blocks
    // and all (each a send's answer checked below).
    assert_eq!(B::groups_declined(&s).unwrap_or(0), 0);
    check(&clean, answers, &mut rows);

    let mut mixed: Vec<Item> = (0..60).map(|i| plain(i, "mixed")).collect();
    mixed.insert(10, item(1, &[2, 99], b"probe", Expect::Unknown(dev(99))));
    let mut replayed = item(2, &[1], b"replayed", Expect::Replayed);
    replayed.request = Some([7; 32]);
    mixed.insert(20, replayed);
    // The same bytes from another sender: the datagram is stored once,
    // rows only for devices that have none (dave).
    mixed.insert(30, item(2, &[2, 4], b"old", Expect::To(vec![dev(4)])));
    let probe = mixed.len();
    // One request id twice, and three sends into carol's 1,000 bytes.
    for body in [&b"twice a"[..], b"twice b"] {
        let mut i = item(4, &[2], body, Expect::To(vec![]));
        i.request = Some([8; 32]);
        mixed.push(i);
    }
    for n in 0..3u8 {
        let mut i = item(2, &[3], &[n; 400], Expect::To(vec![]));
        i.quota = MailboxQuota {
            device_bytes: 1_000,
            user_bytes: 1_000,
        };
        mixed.push(i);
    }
    let mut answers = burst(&s, &mixed);
    if let Some(declined) = B::groups_declined(&s) {
        eprintln!("{declined} groups declined");
    }
    let last: Vec<Result<Enqueued>> = answers.drain(probe..).collect();
    check(&mixed[..probe], answers, &mut rows);
    let outcome = |a: &Result<Enqueued>| match a {
        Ok(e) => {
            assert_eq!(e.deliveries.len(), 1);
            "ok"
        }
        Err(StoreError::Replayed) => "replayed",
        Err(StoreError::MailboxFull(d)) if *d == dev(3) => "full",
        Err(e) => panic!("{e}"),
    };
    let mut twice: Vec<&str> = last[..2].iter().map(outcome).collect();
    let mut carol: Vec<&str> = last[2..].iter().map(outcome).collect();
    twice.sort_unstable();
    carol.sort_unstable();
    assert_eq!(
        (twice, carol),
        (vec!["ok", "replayed"], vec!["full", "ok", "ok"])
    );
    for e in last.into_iter().flatten() {
        rows.entry(e.deliveries[0].device)
            .or_default()
            .push(e.deliveries[0].seq);
    }

    let mut stored = 0;
    for (device, mut seqs) in rows {
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "rows of {device:?}");
        let (items, _) = s.fetch(&device, 0, 1_000, usize::MAX).unwrap();
        assert_eq!(items.len() as u64, n, "mailbox of {device:?}");
        stored += n;
    }
    assert_eq!(b.count("mailbox") as u64, stored);
    assert_eq!(
        b.int(
            "SELECT COUNT(*) FROM datagrams WHERE body = $1",
            Some(b"probe")
        ),
        0
    );
}

/// Acks of many devices at once, two of them for the same device and one
/// from a device that does not exist: each answered with its own count.
fn a_burst_of_acks_answers_each_device<B: Backend>(b: B) {
    let s = b.open();
    register(&s, "alice", 1, 1, 0);
    for d in 2..=41u32 {
        register(&s, &format!("user{d}"), d, d, 0);
        for i in 0..3u8 {
            s.enqueue(&dev(1), &[dev(d)], vec![d as u8, i], 1, Q)
                .unwrap();
        }
    }
    let (tx, rx) = mpsc::channel();
    let ack = |device: u32, seqs: &[u64], retention_ms: u64| {
        let tx = tx.clone();
        s.ack_with(
            &dev(device),
            seqs,
            20,
            retention_ms,
            Box::new(move |a| tx.send((device, a)).unwrap()),
        );
    };
    for d in 2..=41u32 {
        // Half keep what they acknowledge for the retention window.
        let retention = if d % 2 == 0 { 60_000 } else { 0 };
        ack(d, &[1, 2, 2, 9], retention);
        if d == 7 {
            ack(7, &[2, 3], retention);
        }
    }
    ack(99, &[1], 0);
    drop(tx);
    let mut seven = Vec::new();
    for (device, answer) in rx.iter() {
        match device {
            99 => assert!(matches!(answer, Err(StoreError::UnknownDevice(d)) if d == dev(99))),
            7 => seven.push(answer.unwrap()),
            d => assert_eq!(answer.unwrap(), 2, "device {d}"),
        }
    }
    // Device 7's two acks share item 2: three items acknowledged in all.
    // (2 then 1, or 2 then 1 the other way round.)
    seven.sort_unstable();
    assert_eq!(seven, [1, 2]);
    for d in 2..=41u32 {
        let (left, _) = s.fetch(&dev(d), 0, 10, usize::MAX).unwrap();
        let left: Vec<u64> = left.iter().map(|e| e.seq).collect();
        assert_eq!(left, if d == 7 { vec![] } else { vec![3] }, "device {d}");
    }
    // Kept rows for the even devices, none for the odd ones; a device's
    // pending bytes follow what it still has to fetch.
    assert_eq!(b.count("mailbox"), 20 * 3 + 19);
    assert_eq!(
        b.int(
            "SELECT pending_bytes FROM devices WHERE device = $1",
            Some(&dev(3).0[..])
        ),
        2
    );
}

/// Datagrams sent to four devices, whose acks (no retention) arrive at
/// the same moment on two nodes, two devices each: each datagram goes with
/// its last row. Neither node may leave one behind because it still saw
/// the other's rows.
fn acks_of_a_datagrams_last_rows_at_once_delete_it<B: Backend>(b: B) {
    let s = std::sync::Arc::new(b.open());
    for n in 1..=5u32 {
        register(&*s, &format!("user{n}"), n, n, 0);
    }
    let second = std::sync::Arc::new(b.second_node());
    let to = [dev(2), dev(3), dev(4), dev(5)];
    for round in 0..5u64 {
        for i in 0..50u32 {
            let body = format!("{round}/{i}").into_bytes();
            s.enqueue(&dev(1), &to, body, 1, Q).unwrap();
        }
        let seqs: Vec<u64> = (round * 50 + 1..=round * 50 + 50).collect();
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let (tx, rx) = mpsc::channel();
        let threads: Vec<_> = [[2u32, 4], [3, 5]]
            .into_iter()
            .enumerate()
            .map(|(n, devices)| {
                let (s, second, start) = (s.clone(), second.clone(), start.clone());
                let (seqs, tx) = (seqs.clone(), tx.clone());
                std::thread::spawn(move || {
                    let node = match (n, second.as_ref()) {
                        (1, Some(second)) => second,
                        _ => &*s,
                    };
                    start.wait();
                    for d in devices {
                        let tx = tx.clone();
                        node.ack_with(&dev(d), &seqs, 2, 0, Box::new(move |a| tx.send(a).unwrap()));
                    }
                })
            })
            .collect();
        drop(tx);
        for t in threads {
            t.join().unwrap();
        }
        let acked: Vec<u32> = rx.iter().map(|a| a.unwrap()).collect();
        assert_eq!(acked, vec![50; 4]);
        assert_eq!(b.count("mailbox"), 0);
        assert_eq!(
            b.count("datagrams"),
            0,
            "round {round}: ciphertext left without a row"
        );
    }
}

/// A member replays twenty request ids inside a burst of a hundred other
/// sends: the replays are refused, and the others are still stored in
/// groups (the group function names every replay in one decline, so the
/// burst does not fall back to sending one by one).
fn many_refusals_in_a_burst_leave_the_rest_grouped<B: Backend>(b: B) {
    let s = b.open();
    for (n, who) in ["alice", "bob", "mallory"].iter().enumerate() {
        let n = n as u32 + 1;
        register(&s, who, n, n, 0);
    }
    let (utx, urx) = mpsc::channel();
    for r in 0..20u8 {
        let utx = utx.clone();
        s.single_use(&[r; 32], 1_000, Box::new(move |a| utx.send(a).unwrap()));
    }
    drop(utx);
    assert!(urx.iter().all(|a| a.is_ok()));
    let mut items = Vec::new();
    for i in 0..120u32 {
        if i % 6 == 3 {
            let mut replay = item(3, &[1], format!("replay {i}").as_bytes(), Expect::Replayed);
            replay.request = Some([(i / 6) as u8; 32]);
            items.push(replay);
        } else {
            let (from, to) = if i % 2 == 0 { (1, 2) } else { (2, 1) };
            items.push(item(
                from,
                &[to],
                format!("m {i}").as_bytes(),
                Expect::To(vec![dev(to)]),
            ));
        }
    }
    let before = B::group_commit(&s);
    let answers = burst(&s, &items);
    let mut rows = BTreeMap::new();
    check(&items, answers, &mut rows);
    // Bob gets the 60 even-numbered, alice the 40 other odd ones.
    for (device, n) in [(dev(1), 40), (dev(2), 60)] {
        let mut seqs = rows.remove(&device).unwrap_or_default();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=n).collect::<Vec<u64>>(), "{device:?}");
    }
    if let (Some((w0, c0)), Some((w1, c1))) = (before, B::group_commit(&s)) {
        let (writes, calls) = (w1 - w0, c1 - c0);
        eprintln!("{writes} writes in {calls} commits");
        assert!(calls * 2 < writes, "the other sends stay grouped");
    }
}
