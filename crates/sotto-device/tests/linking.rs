//! Linking a device, attacked (issue 13, finding 3): the approval must come
//! from someone holding the new device's code, be made by the user key the
//! directory lists under the name it carries, and be the user the new
//! device asked for; link data sent as a datagram is trusted for neither
//! the name nor "verified" contacts.

mod common;

use common::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_device::testing::{Net, Node};
use sotto_device::{Error, LinkSyncBody, Rejection, SyncContact};
use sotto_proto::{content, user_fingerprint, LinkApproval, LinkSecret, UserKey, UserPublic};

fn seeded(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// The link secret in a code `<link id>-<secret>`.
fn secret_of(code: &str) -> LinkSecret {
    LinkSecret::parse(code.rsplit_once('-').unwrap().1).unwrap()
}

/// `bob` knows alice as a verified contact.
fn verified_contact(net: &mut Net, bob: &mut Node, name: &str) {
    let op = bob.machine.verify(net.now, name).unwrap();
    net.finish(bob, &op).unwrap();
    bob.machine.mark_verified(name).unwrap();
}

/// What a forger without bob's user key builds: a certificate for the
/// waiting device from `user_key`, and an approval naming `username`,
/// sealed under `secret` (the right one only if the forger saw the code).
fn forged_approval(
    net: &mut Net,
    link_id: &str,
    user_key: &UserKey,
    username: &str,
    secret: &LinkSecret,
) -> (sotto_proto::DeviceCert, Vec<u8>) {
    let keys = net.link_keys(link_id);
    let cert = user_key.certify(&keys, net.now);
    let sync = LinkSyncBody {
        username: username.into(),
        contacts: vec![],
        blocked: vec![],
    }
    .encode();
    let approval = LinkApproval::new(user_key, link_id, cert, sync)
        .unwrap()
        .encode();
    let sealed = secret
        .seal_approval(&mut seeded(99), link_id, &keys, &approval)
        .unwrap();
    (cert, sealed)
}

#[test]
fn an_honest_link_joins_bob_with_his_verified_contacts() {
    let mut net = net();
    let _alice = register(&mut net, "alice", 1);
    let mut bob = register(&mut net, "bob", 2);
    verified_contact(&mut net, &mut bob, "alice");
    let (id, code) = net.link_request(&mut seeded(3));
    let op = bob.machine.approve(net.now, &code).unwrap();
    net.finish(&mut bob, &op).unwrap();
    let bob2 = net.link_finish(&id, Some("bob"), rng(4)).unwrap();
    assert_eq!(bob2.machine.username(), "bob");
    assert!(!bob2.machine.holds_user_key());
    let bob_key = bob.machine.device().cert().user;
    assert_eq!(bob2.machine.device().cert().user, bob_key);
    let contacts = bob2.machine.contacts().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].username, "alice");
    assert!(
        contacts[0].verified,
        "signed by the user key: stays verified"
    );
    assert_eq!(user_fingerprint(&bob_key).len(), 35);
}

/// mallory saw bob's code and approves his new device with her own
/// account: the device refuses when told to join bob, and joins nothing.
#[test]
fn an_approval_by_another_user_who_saw_the_code_is_refused() {
    let mut net = net();
    let _bob = register(&mut net, "bob", 1);
    let mut mallory = register(&mut net, "mallory", 2);
    let (id, code) = net.link_request(&mut seeded(3));
    let op = mallory.machine.approve(net.now, &code).unwrap();
    net.finish(&mut mallory, &op).unwrap();
    match net.link_finish(&id, Some("bob"), rng(4)) {
        Err(Error::ApprovedByAnotherUser { approver, expected }) => {
            assert_eq!((approver.as_str(), expected.as_str()), ("mallory", "bob"));
            assert_eq!(
                Error::ApprovedByAnotherUser { approver, expected }.to_string(),
                "approved by another user: mallory"
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|n| n.device())),
    }
}

/// Without `--user`, the device joins whoever holds the code and approves,
/// and says so: the name and fingerprint shown are the approver's.
#[test]
fn without_an_expected_user_the_joined_account_is_the_approvers_and_shown() {
    let mut net = net();
    let mut mallory = register(&mut net, "mallory", 2);
    let (id, code) = net.link_request(&mut seeded(3));
    let op = mallory.machine.approve(net.now, &code).unwrap();
    net.finish(&mut mallory, &op).unwrap();
    let node = net.link_finish(&id, None, rng(4)).unwrap();
    assert_eq!(node.machine.username(), "mallory");
}

/// mallory has no code, only the link id (the server shows it, and so
/// does a glance at the screen): her client refuses to approve a request
/// it cannot check, and an approval sealed without the code does not open.
#[test]
fn an_approval_without_the_code_is_refused() {
    let mut net = net();
    let _bob = register(&mut net, "bob", 1);
    let mut mallory = register(&mut net, "mallory", 2);
    let (id, code) = net.link_request(&mut seeded(3));
    let guess = format!(
        "{id}-{}",
        LinkSecret::generate(&mut seeded(5)).text().as_str()
    );
    assert_ne!(guess, code);
    let op = mallory.machine.approve(net.now, &guess).unwrap();
    assert!(matches!(
        net.finish(&mut mallory, &op),
        Err(Error::LinkCodeMismatch)
    ));
    // A modified client seals anyway, under the secret it guessed.
    let mallory_key = UserKey::generate(&mut seeded(6));
    let (cert, sealed) = forged_approval(&mut net, &id, &mallory_key, "bob", &secret_of(&guess));
    net.set_approval(&id, cert, sealed);
    assert!(matches!(
        net.link_finish(&id, None, rng(4)),
        Err(Error::LinkForged)
    ));
}

/// A malicious server, with no code, certifies bob's new device with a user
/// key of its own and hands that over as the approval (sealed under a
/// secret it made up, or not sealed at all): refused, with or without an
/// expected user.
#[test]
fn a_server_forging_an_approval_with_another_user_key_is_refused() {
    for (expected, sealed_at_all) in [(Some("bob"), true), (None, true), (None, false)] {
        let mut net = net();
        let _bob = register(&mut net, "bob", 1);
        let (id, _code) = net.link_request(&mut seeded(3));
        let server_key = UserKey::generate(&mut seeded(7));
        let made_up = LinkSecret::generate(&mut seeded(8));
        let (cert, sealed) = forged_approval(&mut net, &id, &server_key, "bob", &made_up);
        net.register_cert("eve", cert);
        let sealed = if sealed_at_all {
            sealed
        } else {
            LinkApproval::new(&server_key, &id, cert, vec![])
                .unwrap()
                .encode()
        };
        net.set_approval(&id, cert, sealed);
        assert!(
            matches!(
                net.link_finish(&id, expected, rng(4)),
                Err(Error::LinkForged)
            ),
            "{expected:?} {sealed_at_all}"
        );
    }
}

/// The server replays bob's genuine approval of one new device to another
/// waiting device (a stale or other code): it does not open there.
#[test]
fn an_approval_for_another_link_does_not_open() {
    let mut net = net();
    let mut bob = register(&mut net, "bob", 1);
    let (first, code) = net.link_request(&mut seeded(3));
    let (second, _) = net.link_request(&mut seeded(4));
    let op = bob.machine.approve(net.now, &code).unwrap();
    net.finish(&mut bob, &op).unwrap();
    let keys = net.link_keys(&first);
    // Read what the server holds for the first link by rebuilding it the
    // way the server could: hand the first approval to the second device.
    let genuine = net.take_approval(&first).expect("approved");
    net.set_approval(&second, genuine.0, genuine.1.clone());
    assert!(matches!(
        net.link_finish(&second, Some("bob"), rng(5)),
        Err(Error::LinkForged)
    ));
    // The genuine one still works where it belongs.
    net.set_approval(&first, genuine.0, genuine.1);
    assert_eq!(keys, net.link_keys(&first));
    let bob2 = net.link_finish(&first, Some("bob"), rng(6)).unwrap();
    assert_eq!(bob2.machine.username(), "bob");
}

/// mallory saw the code and seals an approval made with her own user key
/// that claims to be bob's: the directory lists another key under "bob".
#[test]
fn an_approval_claiming_a_name_the_directory_gives_another_key_is_refused() {
    let mut net = net();
    let _bob = register(&mut net, "bob", 1);
    let _mallory = register(&mut net, "mallory", 2);
    let (id, code) = net.link_request(&mut seeded(3));
    let mallory_key = UserKey::generate(&mut seeded(6));
    let (cert, sealed) = forged_approval(&mut net, &id, &mallory_key, "bob", &secret_of(&code));
    net.set_approval(&id, cert, sealed);
    match net.link_finish(&id, Some("bob"), rng(4)) {
        Err(Error::LinkUserMismatch { username }) => assert_eq!(username, "bob"),
        other => panic!("expected a refusal, got {:?}", other.map(|n| n.device())),
    }
}

/// Another device of bob's (say a compromised one, without the user key)
/// sends bob2 link data as a datagram: a name other than bob's is refused,
/// and "verified" contacts in it come in unverified.
#[test]
fn link_data_sent_as_a_datagram_is_not_trusted() {
    let mut net = net();
    let mut bob = register(&mut net, "bob", 1);
    let _carol = register(&mut net, "carol", 2);
    let mut bob3 = net.link(&mut bob, rng(3));
    let mut bob2 = net.link(&mut bob, rng(4));
    let fake = UserPublic([7; 32]);
    for username in ["carol", "bob"] {
        let body = LinkSyncBody {
            username: username.into(),
            contacts: vec![SyncContact {
                username: "dave".into(),
                user_key: fake,
                verified: true,
            }],
            blocked: vec![],
        }
        .encode();
        let op = bob3
            .machine
            .send_raw_body(net.now, "bob", content::LINK_SYNC, body)
            .unwrap();
        net.finish(&mut bob3, &op).unwrap();
    }
    let r = net.sync(&mut bob2);
    assert_eq!(
        r.rejected,
        [Rejection::LinkSyncName {
            claimed: "carol".into()
        }]
    );
    assert_eq!(bob2.machine.username(), "bob");
    let contacts = bob2.machine.contacts().unwrap();
    let dave = contacts.iter().find(|c| c.username == "dave").unwrap();
    assert!(!dave.verified, "not signed by the user key: unverified");
}
