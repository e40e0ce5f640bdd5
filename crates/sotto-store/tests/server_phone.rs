//! The phone-number part of the server store ([`PhoneStore`]), one suite
//! run on both backends (`store_tests!`): one-time passwords (attempts,
//! expiry, single use, binding to the number), held messages (one
//! invitation per sender, erasure when sent), API keys (revocation),
//! numbers never stored in clear; and, with a second node on the same
//! PostgreSQL database, the races between nodes: a held message claimed
//! once, OTP attempts capped across nodes, outbox posts leased to one node,
//! status changes reported once, the hold key shared, the sender lock.

mod common;

use std::sync::Arc;

use common::*;
use sotto_store::server::phone::*;
use sotto_store::server::*;

const NUMBER: &str = "+15551234567";
const T: u64 = 1_000_000;
const LEASE: u64 = CLAIM_LEASE_MS;
/// Enough OTPs per number for the tests that are not about that limit.
const OTPS: OtpLimit = OtpLimit {
    per_window: 100,
    window_ms: 3_600_000,
};

store_tests!(
    an_otp_allows_five_attempts_expires_and_is_used_once,
    an_app_made_otp_needs_the_sms_from_its_number_first,
    held_messages_invite_once_per_sender_and_are_erased_when_sent,
    api_keys_are_hashed_and_revocable_and_handles_are_usernames,
    numbers_are_stored_keyed_never_in_clear,
    racing_deliveries_claim_each_held_message_once_and_a_dead_claim_is_taken_again,
    otp_attempts_split_across_nodes_are_still_capped_at_five,
    outbox_posts_are_leased_to_one_node_and_come_back_if_it_dies,
    status_changes_are_reported_once_when_nodes_race,
    every_node_must_hold_the_same_hold_key,
    sender_sessions_and_threads_are_kept_per_sender,
    a_held_message_survives_a_verify_whose_client_hangs_up,
    a_slow_webhook_does_not_make_two_nodes_post_the_same_event,
    otp_guesses_per_number_are_bounded_across_nodes,
);

fn sender<S: PhoneStore + ?Sized>(s: &S, handle: &str, n: u32, key: [u8; 32]) -> SenderRecord {
    s.add_sender(
        NewSender {
            handle: handle.into(),
            name: format!("{handle} Inc"),
            webhook: "http://127.0.0.1:9/hook".into(),
            user: NewUser {
                username_hash: name(handle),
                user: user_key(n),
                device: new_device(dev(n), 0),
            },
            sealed_secrets: b"sealed".to_vec(),
            api_key_hash: key,
        },
        T,
    )
    .unwrap()
}

/// Delivers a claimed held message to `device` as `owner`; whether it
/// was stored.
fn send_held<S: PhoneStore + ?Sized>(
    s: &S,
    id: &str,
    owner: [u8; 16],
    device: DeviceId,
    now: u64,
) -> bool {
    s.send_held(HeldSend {
        id: id.into(),
        claim: owner,
        from: device,
        datagrams: vec![(
            vec![device],
            format!("datagram {id} {owner:?}").into_bytes(),
        )],
        quota: MailboxQuota::UNLIMITED,
        now_ms: now,
    })
    .unwrap()
    .is_some()
}

fn held(id: &str, sender_id: i64, expires_at: u64) -> NewHeld {
    NewHeld {
        id: id.into(),
        sender_id,
        number: NUMBER.into(),
        sealed: format!("sealed-{id}").into_bytes(),
        expires_at,
    }
}

/// The stores of the "nodes" of a test: two over one PostgreSQL
/// database; the one SQLite store twice (one process owns it: its threads
/// race instead).
fn nodes<B: Backend>(b: &B) -> (Arc<B::Store>, Arc<B::Store>)
where
    B::Store: PhoneStore,
{
    let one = Arc::new(b.open());
    let two = b.second_node().map(Arc::new).unwrap_or_else(|| one.clone());
    (one, two)
}

/// Runs `f(i, node)` on `n` threads, alternating the nodes.
fn race<S: Send + Sync + 'static, T: Send + 'static>(
    (one, two): &(Arc<S>, Arc<S>),
    n: usize,
    f: impl Fn(usize, &S) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let node = if i % 2 == 0 { one.clone() } else { two.clone() };
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(i, &node)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn an_otp_allows_five_attempts_expires_and_is_used_once<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let s = b.open();
    s.put_otp(NUMBER, OtpKind::Server, "123456", T, T + 600_000, OTPS)
        .unwrap();
    let check = |otp: &str, now: u64| s.check_otp(NUMBER, OtpKind::Server, otp, now, 5).unwrap();
    // Another number's code, or this code for another number: nothing.
    assert_eq!(
        s.check_otp("+15557654321", OtpKind::Server, "123456", T, 5)
            .unwrap(),
        OtpCheck::Missing
    );
    assert_eq!(check("000000", T), OtpCheck::Wrong { attempts_left: 4 });
    assert_eq!(check("123456", T), OtpCheck::Accepted);
    assert_eq!(check("123456", T), OtpCheck::Used);

    s.put_otp(NUMBER, OtpKind::Server, "654321", T, T + 600_000, OTPS)
        .unwrap();
    for left in (0..5).rev() {
        assert_eq!(
            check("000000", T),
            OtpCheck::Wrong {
                attempts_left: left
            }
        );
    }
    assert_eq!(
        check("654321", T),
        OtpCheck::TooManyAttempts,
        "the sixth, right, attempt"
    );

    s.put_otp(NUMBER, OtpKind::Server, "111111", T, T + 10, OTPS)
        .unwrap();
    assert_eq!(check("111111", T + 10), OtpCheck::Expired);
}

fn an_app_made_otp_needs_the_sms_from_its_number_first<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let s = b.open();
    s.put_otp(NUMBER, OtpKind::App, "12345678", T, T + 600_000, OTPS)
        .unwrap();
    let verify = || s.check_otp(NUMBER, OtpKind::App, "12345678", T, 5).unwrap();
    assert_eq!(verify(), OtpCheck::AwaitingSms);
    assert_eq!(verify(), OtpCheck::AwaitingSms, "polling costs no attempt");
    // An SMS from another number, or with another code, confirms nothing.
    assert_eq!(
        s.confirm_sms_otp("+15550000001", "12345678", T, 5).unwrap(),
        OtpCheck::Missing
    );
    assert_eq!(
        s.confirm_sms_otp(NUMBER, "87654321", T, 5).unwrap(),
        OtpCheck::Wrong { attempts_left: 4 }
    );
    assert_eq!(verify(), OtpCheck::AwaitingSms);
    assert_eq!(
        s.confirm_sms_otp(NUMBER, "12345678", T, 5).unwrap(),
        OtpCheck::Accepted
    );
    assert_eq!(
        s.check_otp(NUMBER, OtpKind::App, "00000000", T, 5).unwrap(),
        OtpCheck::Wrong { attempts_left: 4 }
    );
    assert_eq!(verify(), OtpCheck::Accepted);
    assert_eq!(verify(), OtpCheck::Used);
}

fn held_messages_invite_once_per_sender_and_are_erased_when_sent<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let s = b.open();
    let acme = sender(&s, "acme", 1, [1; 32]);
    let bank = sender(&s, "bank", 2, [2; 32]);
    let hold = |id: &str, sender_id: i64, expires_at: u64| {
        s.hold(held(id, sender_id, expires_at), T).unwrap()
    };
    assert!(hold("m1", acme.id, T + 1000), "first of acme: invite");
    assert!(!hold("m2", acme.id, T + 1000), "second of acme: no SMS");
    assert!(hold("m3", bank.id, T + 10), "first of bank: invite");
    assert_eq!(s.held().unwrap().len(), 3);
    assert_eq!(
        s.claim_held("+15550000001", &[1; 16], T, LEASE).unwrap(),
        vec![]
    );
    let expired = s.expire_held(T + 10).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].id.as_str(), expired[0].status),
        ("m3", MessageStatus::Expired)
    );
    let held: Vec<String> = s
        .claim_held(NUMBER, &[1; 16], T + 10, LEASE)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(held, ["m1", "m2"]);
    assert_eq!(
        s.held().unwrap().len(),
        2,
        "claimed messages are still held to the sender"
    );
    assert_eq!(
        s.message(acme.id, "m2").unwrap().unwrap().status,
        MessageStatus::Held
    );
    assert!(send_held(&s, "m1", [1; 16], acme.device, T + 20));
    assert!(
        !send_held(&s, "m1", [1; 16], acme.device, T + 20),
        "sent once"
    );
    assert_eq!(
        s.message(acme.id, "m1").unwrap().unwrap().status,
        MessageStatus::Sent
    );
    assert_eq!(
        s.message(bank.id, "m1").unwrap(),
        None,
        "another sender's message"
    );
    let left = b.int(
        "SELECT COUNT(*) FROM sender_messages WHERE id IN ('m1', 'm3') AND (sealed IS NOT NULL OR number_key IS NOT NULL)",
        None,
    );
    assert_eq!(
        left, 0,
        "sent and expired messages keep no sealed copy and no number key"
    );
}

fn api_keys_are_hashed_and_revocable_and_handles_are_usernames<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let s = b.open();
    let acme = sender(&s, "acme", 1, [1; 32]);
    assert_eq!(s.sender_by_key(&[1; 32]).unwrap().unwrap().id, acme.id);
    assert_eq!(s.sender_by_key(&[3; 32]).unwrap(), None);
    s.add_api_key("acme", &[4; 32], T).unwrap();
    assert!(s.revoke_api_key("acme", &[1; 32], T).unwrap());
    assert!(!s.revoke_api_key("acme", &[1; 32], T).unwrap());
    assert_eq!(s.sender_by_key(&[1; 32]).unwrap(), None);
    assert!(s.sender_by_key(&[4; 32]).unwrap().is_some());
    // A handle is a username: taken both ways.
    assert!(matches!(
        s.register(
            NewUser {
                username_hash: name("acme"),
                user: user_key(7),
                device: new_device(dev(7), 0)
            },
            T
        ),
        Err(StoreError::UsernameTaken)
    ));
    register(&s, "bob", 8, 8, 0);
    assert!(matches!(
        s.add_sender(
            NewSender {
                handle: "bob".into(),
                name: "Bob".into(),
                webhook: "http://x".into(),
                user: NewUser {
                    username_hash: name("bob"),
                    user: user_key(9),
                    device: new_device(dev(9), 0)
                },
                sealed_secrets: vec![],
                api_key_hash: [5; 32],
            },
            T
        ),
        Err(StoreError::UsernameTaken)
    ));
    assert_eq!(
        s.sender_by_user(&user_key(1)).unwrap().unwrap().handle,
        "acme"
    );
}

fn numbers_are_stored_keyed_never_in_clear<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let s = b.open();
    let acme = sender(&s, "acme", 1, [1; 32]);
    s.put_otp(NUMBER, OtpKind::Server, "123456", T, T + 1, OTPS)
        .unwrap();
    s.hold(
        NewHeld {
            id: "m1".into(),
            sender_id: acme.id,
            number: NUMBER.into(),
            sealed: vec![1, 2, 3],
            expires_at: T + 1,
        },
        T,
    )
    .unwrap();
    s.register_phone(
        NUMBER,
        "tel-0011223344556677",
        NewUser {
            username_hash: name("tel"),
            user: user_key(5),
            device: new_device(dev(5), 2),
        },
        T,
    )
    .unwrap();
    let users = s.phone_users(NUMBER).unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].user, user_key(5));
    assert!(s.phone_users("+15557654321").unwrap().is_empty());
    drop(s);
    for needle in [NUMBER, "5551234567", "123456"] {
        assert!(!b.holds(needle.as_bytes()), "{needle} in clear");
    }
}

/// Two devices of one number verifying at once, on two nodes: each held
/// message is claimed (and so sealed and sent) by one of them only. A
/// claim whose node died is taken again once its lease ran out.
fn racing_deliveries_claim_each_held_message_once_and_a_dead_claim_is_taken_again<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    let acme = sender(&*nodes.0, "acme", 1, [1; 32]);
    let ids: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    for id in &ids {
        nodes.0.hold(held(id, acme.id, T + 10 * LEASE), T).unwrap();
    }
    let claims = race(&nodes, 8, |i, s| {
        let owner = [i as u8; 16];
        s.claim_held(NUMBER, &owner, T + 1, LEASE)
            .unwrap()
            .into_iter()
            .map(|h| (h.id, owner))
            .collect::<Vec<_>>()
    });
    let mut all: Vec<(String, [u8; 16])> = claims.concat();
    all.sort();
    let claimed: Vec<String> = all.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(claimed, ids, "every held message claimed exactly once");
    // The claimer of m00..m09 finishes; the one of the others dies.
    for (id, owner) in &all[..10] {
        assert!(
            !send_held(&*nodes.1, id, [200; 16], acme.device, T + 2),
            "not its claim"
        );
        assert!(send_held(&*nodes.1, id, *owner, acme.device, T + 2));
    }
    assert!(
        nodes
            .0
            .claim_held(NUMBER, &[100; 16], T + LEASE, LEASE)
            .unwrap()
            .is_empty(),
        "a live claim is left alone"
    );
    let again: Vec<String> = nodes
        .1
        .claim_held(NUMBER, &[101; 16], T + 1 + LEASE, LEASE)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(
        again,
        ids[10..],
        "a dead claim is taken again, sent ones never"
    );
    // The first claimer of m15 wakes up: its claim was taken over, so it
    // stores nothing (the message is sealed once).
    let late = all.iter().find(|(id, _)| id == "m15").unwrap().1;
    assert!(!send_held(&*nodes.0, "m15", late, acme.device, T + 3));
    let marks = race(&nodes, 6, move |_, s| {
        send_held(s, "m15", [101; 16], acme.device, T + 3)
    });
    assert_eq!(marks.iter().filter(|m| **m).count(), 1, "sent once");
    assert_eq!(
        b.int("SELECT COUNT(*) FROM mailbox", None),
        11,
        "one mailbox row per message sent, none for a lost claim"
    );
}

/// An attacker guessing an OTP through two nodes at once: the attempts of
/// both are counted on one row, so five guesses in all, then the right
/// code is refused too.
fn otp_attempts_split_across_nodes_are_still_capped_at_five<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    nodes
        .0
        .put_otp(NUMBER, OtpKind::Server, "424242", T, T + 600_000, OTPS)
        .unwrap();
    let results = race(&nodes, 12, |i, s| {
        s.check_otp(NUMBER, OtpKind::Server, &format!("{:06}", i), T, 5)
            .unwrap()
    });
    let wrong = results
        .iter()
        .filter(|r| matches!(r, OtpCheck::Wrong { .. }))
        .count();
    let refused = results
        .iter()
        .filter(|r| **r == OtpCheck::TooManyAttempts)
        .count();
    assert_eq!((wrong, refused), (5, 7), "{results:?}");
    let mut left: Vec<u32> = results
        .iter()
        .filter_map(|r| match r {
            OtpCheck::Wrong { attempts_left } => Some(*attempts_left),
            _ => None,
        })
        .collect();
    left.sort();
    assert_eq!(left, [0, 1, 2, 3, 4], "each attempt counted once");
    assert_eq!(
        nodes
            .1
            .check_otp(NUMBER, OtpKind::Server, "424242", T, 5)
            .unwrap(),
        OtpCheck::TooManyAttempts
    );
    // The right code, raced: accepted once, then used.
    nodes
        .1
        .put_otp(NUMBER, OtpKind::Server, "515151", T, T + 600_000, OTPS)
        .unwrap();
    let results = race(&nodes, 6, |_, s| {
        s.check_otp(NUMBER, OtpKind::Server, "515151", T, 5)
            .unwrap()
    });
    assert_eq!(
        results.iter().filter(|r| **r == OtpCheck::Accepted).count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|r| matches!(r, OtpCheck::Accepted | OtpCheck::Used)));
}

/// Every node's worker takes due posts: each post goes to one of them
/// (no SMS sent twice), and a post whose node died is due again after
/// its lease.
fn outbox_posts_are_leased_to_one_node_and_come_back_if_it_dies<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    for i in 0..30u8 {
        nodes.0.queue(OutboxKind::Sms, 0, vec![i], T).unwrap();
    }
    nodes.0.queue(OutboxKind::Webhook, 3, vec![99], T).unwrap();
    let taken = race(&nodes, 6, |i, s| {
        let mut mine = Vec::new();
        loop {
            let batch = s.due(OutboxKind::Sms, &[i as u8; 16], T, 4, LEASE).unwrap();
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|i| i.sealed[0]));
        }
    });
    let mut all: Vec<u8> = taken.concat();
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<u8>>(), "each post taken once");
    let b2 = [42; 16];
    let first = nodes
        .1
        .due(OutboxKind::Sms, &b2, T + LEASE, 100, LEASE)
        .unwrap();
    assert_eq!(first.len(), 30, "a dead node's posts are due again");
    for item in &first[..29] {
        assert!(nodes.0.posted(item.id, &b2).unwrap());
    }
    assert!(nodes
        .0
        .retry_at(first[29].id, &b2, T + 2 * LEASE + 5)
        .unwrap());
    assert!(nodes
        .1
        .due(OutboxKind::Sms, &b2, T + 2 * LEASE, 100, LEASE)
        .unwrap()
        .is_empty());
    let retried = nodes
        .1
        .due(OutboxKind::Sms, &b2, T + 2 * LEASE + 5, 100, LEASE)
        .unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].sealed.clone(), retried[0].attempts),
        (first[29].sealed.clone(), 1)
    );
    let hooks = nodes.0.due(OutboxKind::Webhook, &b2, T, 10, LEASE).unwrap();
    assert_eq!((hooks.len(), hooks[0].sender_id), (1, 3), "kinds apart");
}

/// A worker round slower than a lease (a webhook taking its full timeout
/// for each of many posts): the post it reaches last was taken over by
/// another node meanwhile. Renewing just before posting tells it so, and
/// only the node holding the lease removes or reschedules the post: the
/// event is posted by one node, once. A lease renewed in time keeps the
/// post from the other node.
fn a_slow_webhook_does_not_make_two_nodes_post_the_same_event<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    let lease = 1_000; // shortened (the server's is CLAIM_LEASE_MS)
    let (slow, quick) = ([1; 16], [2; 16]);
    for i in 0..2u8 {
        nodes.0.queue(OutboxKind::Webhook, 3, vec![i], T).unwrap();
    }
    let batch = nodes
        .0
        .due(OutboxKind::Webhook, &slow, T, 64, lease)
        .unwrap();
    assert_eq!(batch.len(), 2);
    // The slow round posts the first one; it is about to post the second
    // when its lease has run out and the other node took it.
    assert!(nodes.0.renew_lease(batch[0].id, &slow, T, lease).unwrap());
    assert!(nodes.0.posted(batch[0].id, &slow).unwrap());
    let taken = nodes
        .1
        .due(OutboxKind::Webhook, &quick, T + lease, 64, lease)
        .unwrap();
    assert_eq!(
        taken.iter().map(|i| i.id).collect::<Vec<_>>(),
        [batch[1].id]
    );
    assert!(nodes
        .1
        .renew_lease(batch[1].id, &quick, T + lease, lease)
        .unwrap());
    assert!(
        !nodes
            .0
            .renew_lease(batch[1].id, &slow, T + lease + 1, lease)
            .unwrap(),
        "the slow node learns it is not its post any more: it does not post"
    );
    assert!(
        !nodes.0.retry_at(batch[1].id, &slow, T).unwrap(),
        "nor reschedule it"
    );
    assert!(!nodes.0.posted(batch[1].id, &slow).unwrap());
    assert_eq!(
        b.count("outbox"),
        1,
        "still queued for the node that holds it"
    );
    assert!(nodes.1.posted(batch[1].id, &quick).unwrap());
    assert_eq!(b.count("outbox"), 0);
    // A lease renewed before it runs out keeps the post from the others.
    nodes.0.queue(OutboxKind::Webhook, 3, vec![9], T).unwrap();
    let mine = nodes
        .0
        .due(OutboxKind::Webhook, &slow, T + 2 * lease, 64, lease)
        .unwrap();
    assert!(nodes
        .0
        .renew_lease(mine[0].id, &slow, T + 3 * lease - 1, lease)
        .unwrap());
    assert!(nodes
        .1
        .due(OutboxKind::Webhook, &quick, T + 3 * lease, 64, lease)
        .unwrap()
        .is_empty());
}

/// Every node's worker expires held messages and notices deliveries: each
/// change is reported by one node (one webhook event).
fn status_changes_are_reported_once_when_nodes_race<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    let acme = sender(&*nodes.0, "acme", 1, [1; 32]);
    for i in 0..10 {
        nodes
            .0
            .hold(held(&format!("h{i}"), acme.id, T + 5), T)
            .unwrap();
    }
    let expired = race(&nodes, 6, |_, s| s.expire_held(T + 5).unwrap());
    let mut ids: Vec<String> = expired.concat().into_iter().map(|m| m.id).collect();
    ids.sort();
    assert_eq!(ids, (0..10).map(|i| format!("h{i}")).collect::<Vec<_>>());
    assert!(expired
        .concat()
        .iter()
        .all(|m| m.status == MessageStatus::Expired && m.sender == "acme"));
    // A message sent to a device with nothing pending for it counts as
    // acknowledged: delivered, once.
    nodes.1.record_sent("s1", acme.id, &[5; 32], 1, T).unwrap();
    let delivered = race(&nodes, 6, |_, s| s.mark_delivered(T + 6).unwrap());
    let delivered = delivered.concat();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(
        (delivered[0].id.as_str(), delivered[0].status),
        ("s1", MessageStatus::Delivered)
    );
    assert_eq!(
        nodes.0.message(acme.id, "s1").unwrap().unwrap().status,
        MessageStatus::Delivered
    );
}

/// A node started with its own hold key (its operator forgot to share
/// the file) could open nothing the others held: the store tells it.
fn every_node_must_hold_the_same_hold_key<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let (one, two) = nodes(&b);
    assert_eq!(one.bind_hold_key(&[1; 32]).unwrap(), HoldKeyCheck::Bound);
    assert_eq!(two.bind_hold_key(&[1; 32]).unwrap(), HoldKeyCheck::Same);
    assert_eq!(
        two.bind_hold_key(&[2; 32]).unwrap(),
        HoldKeyCheck::Different
    );
    drop((one, two));
    assert_eq!(
        b.open().bind_hold_key(&[1; 32]).unwrap(),
        HoldKeyCheck::Same,
        "kept"
    );
}

/// A sender device's sessions and reply threads: saved, replaced,
/// removed, and never mixed between senders.
fn sender_sessions_and_threads_are_kept_per_sender<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let s = b.open();
    let acme = sender(&s, "acme", 1, [1; 32]);
    let bank = sender(&s, "bank", 2, [2; 32]);
    s.save_sender_sessions(
        acme.id,
        vec![
            ([1; 16], dev(10), b"s1".to_vec()),
            ([2; 16], dev(11), b"s2".to_vec()),
        ],
        vec![],
    )
    .unwrap();
    s.save_sender_sessions(
        acme.id,
        vec![([1; 16], dev(10), b"s1b".to_vec())],
        vec![[2; 16]],
    )
    .unwrap();
    assert_eq!(
        s.sender_sessions(acme.id, &[dev(10), dev(11)]).unwrap(),
        vec![b"s1b".to_vec()]
    );
    assert_eq!(
        s.sender_session(acme.id, &[1; 16]).unwrap(),
        Some(b"s1b".to_vec())
    );
    assert_eq!(s.sender_session(bank.id, &[1; 16]).unwrap(), None);
    assert!(s.sender_sessions(bank.id, &[dev(10)]).unwrap().is_empty());
    s.note_thread(acme.id, &[user_key(5)], "m1").unwrap();
    s.note_thread(acme.id, &[user_key(5)], "m2").unwrap();
    assert_eq!(
        s.thread(acme.id, &user_key(5)).unwrap().as_deref(),
        Some("m2")
    );
    assert_eq!(s.thread(bank.id, &user_key(5)).unwrap(), None);
    assert_eq!(s.senders().unwrap().len(), 2);
    assert_eq!(s.sender("bank").unwrap().unwrap().id, bank.id);
    assert_eq!(s.sender_by_id(acme.id).unwrap().unwrap().handle, "acme");
}

/// Two nodes sealing for one sender at once would both advance the same
/// session from the same state: the store's sender lock lets one at a
/// time hold it, across nodes. (PostgreSQL only: on SQLite one process
/// owns the store and its in-process lock does this.)
#[test]
fn a_sender_lock_is_held_by_one_node_at_a_time() {
    let Some(b) = Postgres::new() else {
        return;
    };
    let (one, two) = (b.open(), Arc::new(b.second_node().unwrap()));
    let held = one.lock_sender(7).unwrap();
    let got = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (g, t) = (got.clone(), two.clone());
    let waiter = std::thread::spawn(move || {
        let lock = t.lock_sender(7).unwrap();
        g.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(lock);
    });
    // Another sender's lock is free meanwhile.
    drop(two.lock_sender(8).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        !got.load(std::sync::atomic::Ordering::SeqCst),
        "the second node waits"
    );
    drop(held);
    waiter.join().unwrap();
    assert!(got.load(std::sync::atomic::Ordering::SeqCst));
    // Released on drop: taken again at once.
    drop(one.lock_sender(7).unwrap());
}

/// Sixteen senders sealing at once on one node (more than the node has
/// connections): each holds its sender lock and, while holding it, loads
/// and saves its sessions. No lock holder may wait for a connection
/// another lock holder keeps, or every store call of the node hangs.
#[test]
fn sixteen_sender_locks_do_not_starve_the_pool() {
    let Some(b) = Postgres::new() else {
        return;
    };
    let s = Arc::new(b.open());
    let senders: Vec<i64> = (0..20u8)
        .map(|i| sender(&*s, &format!("org{i}"), 100 + u32::from(i), [i; 32]).id)
        .collect();
    const HOLDERS: usize = 16;
    let all_hold = Arc::new(std::sync::Barrier::new(HOLDERS));
    let (done, finished) = std::sync::mpsc::channel();
    for (i, id) in senders.iter().copied().enumerate() {
        let (s, all_hold, done) = (s.clone(), all_hold.clone(), done.clone());
        std::thread::spawn(move || {
            let lock = s.lock_sender(id).unwrap();
            if i < HOLDERS {
                // Every holder has its lock before any makes a call.
                all_hold.wait();
            }
            let peer = dev(200 + i as u32);
            s.save_sender_sessions(id, vec![([i as u8; 16], peer, vec![i as u8])], vec![])
                .unwrap();
            let got = s.sender_sessions(id, &[peer]).unwrap();
            drop(lock);
            done.send((id, got)).unwrap();
        });
    }
    for _ in &senders {
        let (id, got) = finished
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("a sender's calls under its lock hang: the pool is starved");
        let i = senders.iter().position(|s| *s == id).unwrap();
        assert_eq!(got, vec![vec![i as u8]]);
    }
    // The node still answers.
    assert_eq!(s.senders().unwrap().len(), 20);
}

/// A verify whose client hangs up (or whose node dies) after claiming the
/// held messages, and a delivery whose sealing fails: nothing is expired
/// while claimed, the background job (claim_registered) takes what was
/// left, a failed message is held again, and every message reaches the
/// phone's device exactly once, the late claimer storing nothing.
fn a_held_message_survives_a_verify_whose_client_hangs_up<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    let s = &*nodes.0;
    let acme = sender(s, "acme", 1, [1; 32]);
    for id in ["m1", "m2"] {
        s.hold(held(id, acme.id, T + 100), T).unwrap();
    }
    let phone = dev(2);
    s.register_phone(
        NUMBER,
        "pat",
        NewUser {
            username_hash: name("pat"),
            user: user_key(2),
            device: new_device(phone, 0),
        },
        T,
    )
    .unwrap();
    let hung_up = [1; 16];
    assert_eq!(
        s.claim_held(NUMBER, &hung_up, T + 1, LEASE).unwrap().len(),
        2
    );
    // Its delivery never finishes. Past their expiry, claimed messages
    // are not expired (they could be in a mailbox already).
    assert!(s.expire_held(T + 200).unwrap().is_empty());
    assert_eq!(s.held().unwrap().len(), 2);
    assert!(
        nodes
            .1
            .claim_registered(&[2; 16], T + 2, LEASE, 0, 10)
            .unwrap()
            .is_empty(),
        "a live claim is left to its delivery"
    );
    // The claim runs out: the background job of any node takes both.
    let job = [2; 16];
    let taken = nodes
        .1
        .claim_registered(&job, T + 1 + LEASE, LEASE, 30_000, 10)
        .unwrap();
    assert_eq!(
        taken.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    assert!(send_held(&*nodes.1, "m1", job, phone, T + 2 + LEASE));
    // Sealing m2 fails: it is held again, not lost.
    assert_eq!(
        nodes
            .1
            .release_held(&["m2".into()], &job, T + 2 + LEASE)
            .unwrap(),
        1
    );
    // The hung-up delivery wakes up: it stores nothing and releases nothing.
    assert!(!send_held(s, "m1", hung_up, phone, T + 3 + LEASE));
    assert!(!send_held(s, "m2", hung_up, phone, T + 3 + LEASE));
    assert_eq!(
        s.release_held(&["m1".into(), "m2".into()], &hung_up, T + 3 + LEASE)
            .unwrap(),
        0
    );
    assert_eq!(
        s.message(acme.id, "m2").unwrap().unwrap().status,
        MessageStatus::Held
    );
    // Retried after a rest, by the job, not only by a later verify.
    assert!(s
        .claim_registered(&[3; 16], T + 3 + LEASE, LEASE, 30_000, 10)
        .unwrap()
        .is_empty());
    let retry = s
        .claim_registered(&[3; 16], T + 2 + LEASE + 30_000, LEASE, 30_000, 10)
        .unwrap();
    assert_eq!(retry.len(), 1);
    assert!(send_held(s, "m2", [3; 16], phone, T + 3 + LEASE + 30_000));
    for id in ["m1", "m2"] {
        assert_eq!(
            s.message(acme.id, id).unwrap().unwrap().status,
            MessageStatus::Sent
        );
    }
    let (items, _) = s.fetch(&phone, 0, 100, 1 << 20).unwrap();
    assert_eq!(items.len(), 2, "each held message reached the device once");
    assert!(s.held().unwrap().is_empty());
    assert!(s.expire_held(T + 10 * LEASE).unwrap().is_empty());
}

/// An attacker asking OTP after OTP for a victim's number through every
/// node (each new OTP brings five new attempts): the OTPs asked are
/// counted per number in the store, so across all nodes the number gets at
/// most `per_window` OTPs, hence `5 x per_window` guesses, per window.
fn otp_guesses_per_number_are_bounded_across_nodes<B: Backend>(b: B)
where
    B::Store: PhoneStore,
{
    let nodes = nodes(&b);
    let limit = OtpLimit {
        per_window: 3,
        window_ms: 3_600_000,
    };
    let asked = race(&nodes, 8, move |i, s| {
        s.put_otp(
            NUMBER,
            OtpKind::Server,
            "424242",
            T + i as u64,
            T + 600_000,
            limit,
        )
        .unwrap()
    });
    assert_eq!(asked.iter().filter(|a| **a).count(), 3, "{asked:?}");
    // Asking on and on, guessing five times after each OTP granted.
    let mut guesses = 0;
    for round in 0..20u64 {
        let s = if round % 2 == 0 { &nodes.0 } else { &nodes.1 };
        let kind = if round % 3 == 0 {
            OtpKind::App
        } else {
            OtpKind::Server
        };
        if !s
            .put_otp(
                NUMBER,
                kind,
                "12345678",
                T + 100 + round,
                T + 600_000,
                limit,
            )
            .unwrap()
        {
            continue;
        }
        guesses += 5;
    }
    assert_eq!(
        guesses, 0,
        "the three of the window were used up by the race"
    );
    // The window over, the number may ask again (up to the limit).
    let later = T + 100 + limit.window_ms;
    let granted = (0..5)
        .filter(|i| {
            nodes
                .1
                .put_otp(
                    NUMBER,
                    OtpKind::Server,
                    "111111",
                    later + i,
                    later + 600_000,
                    limit,
                )
                .unwrap()
        })
        .count();
    assert_eq!(granted, 3);
    assert_eq!(
        nodes
            .0
            .check_otp(NUMBER, OtpKind::Server, "111111", later + 10, 5)
            .unwrap(),
        OtpCheck::Accepted,
        "a refused request does not replace the OTP the number holds"
    );
    // Another number is counted apart.
    assert!(nodes
        .0
        .put_otp(
            "+15550000001",
            OtpKind::Server,
            "222222",
            T,
            T + 600_000,
            limit
        )
        .unwrap());
}
