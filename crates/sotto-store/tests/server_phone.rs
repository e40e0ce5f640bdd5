//! The phone-number part of the server store ([`PhoneStore`]) on SQLite:
//! one-time passwords (attempts, expiry, single use, binding to the
//! number), held messages (one invitation per sender, erasure when sent),
//! API keys (revocation), and numbers never stored in clear.

mod common;

use common::*;
use sotto_store::server::phone::*;
use sotto_store::server::*;

const NUMBER: &str = "+15551234567";
const T: u64 = 1_000_000;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path()).unwrap();
    (dir, s)
}

fn sender(s: &SqliteStore, handle: &str, n: u32, key: [u8; 32]) -> SenderRecord {
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

#[test]
fn an_otp_allows_five_attempts_expires_and_is_used_once() {
    let (_d, s) = store();
    s.put_otp(NUMBER, OtpKind::Server, "123456", T, T + 600_000)
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

    s.put_otp(NUMBER, OtpKind::Server, "654321", T, T + 600_000)
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

    s.put_otp(NUMBER, OtpKind::Server, "111111", T, T + 10)
        .unwrap();
    assert_eq!(check("111111", T + 10), OtpCheck::Expired);
}

#[test]
fn an_app_made_otp_needs_the_sms_from_its_number_first() {
    let (_d, s) = store();
    s.put_otp(NUMBER, OtpKind::App, "12345678", T, T + 600_000)
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

#[test]
fn held_messages_invite_once_per_sender_and_are_erased_when_sent() {
    let (dir, s) = store();
    let acme = sender(&s, "acme", 1, [1; 32]);
    let bank = sender(&s, "bank", 2, [2; 32]);
    let hold = |id: &str, sender_id: i64, expires_at: u64| {
        s.hold(
            NewHeld {
                id: id.into(),
                sender_id,
                number: NUMBER.into(),
                sealed: format!("sealed-{id}").into_bytes(),
                expires_at,
            },
            T,
        )
        .unwrap()
    };
    assert!(hold("m1", acme.id, T + 1000), "first of acme: invite");
    assert!(!hold("m2", acme.id, T + 1000), "second of acme: no SMS");
    assert!(hold("m3", bank.id, T + 10), "first of bank: invite");
    assert_eq!(s.held().unwrap().len(), 3);
    assert_eq!(s.held_for("+15550000001").unwrap(), vec![]);
    let expired = s.expire_held(T + 10).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0].id.as_str(), expired[0].status),
        ("m3", MessageStatus::Expired)
    );
    let held: Vec<String> = s
        .held_for(NUMBER)
        .unwrap()
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(held, ["m1", "m2"]);
    assert!(s.mark_sent("m1", &[9; 32], 1, T + 20).unwrap());
    assert!(
        !s.mark_sent("m1", &[9; 32], 1, T + 20).unwrap(),
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
    let c = raw(dir.path());
    let left: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sender_messages WHERE id IN ('m1', 'm3') AND (sealed IS NOT NULL OR number_key IS NOT NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        left, 0,
        "sent and expired messages keep no sealed copy and no number key"
    );
}

#[test]
fn api_keys_are_hashed_and_revocable_and_handles_are_usernames() {
    let (_d, s) = store();
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

#[test]
fn numbers_are_stored_keyed_never_in_clear() {
    let (dir, s) = store();
    let acme = sender(&s, "acme", 1, [1; 32]);
    s.put_otp(NUMBER, OtpKind::Server, "123456", T, T + 1)
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
    let mut raw_bytes = Vec::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        raw_bytes.extend(std::fs::read(e.unwrap().path()).unwrap_or_default());
    }
    for needle in [NUMBER, "5551234567", "123456"] {
        assert!(
            !raw_bytes
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "{needle} in clear"
        );
    }
}
