//! Round trips: one datagram to 1, 2 and 50 devices across three users,
//! including the sender's own other devices. Every addressed device opens
//! its copy; every other device gets `NotForThisDevice`.

mod common;

use common::*;
use sotto_proto::*;

struct World {
    rng: TestRng,
    users: Vec<UserKey>,
    /// (owner index, device)
    devices: Vec<(usize, Device)>,
}

impl World {
    /// Three users (alice, bob, carol) with `per_user[i]` devices each.
    fn new(seed: &str, per_user: [usize; 3]) -> World {
        let mut rng = TestRng::new(seed);
        let users: Vec<UserKey> = (0..3).map(|_| UserKey::generate(&mut rng)).collect();
        let mut devices = Vec::new();
        for (u, n) in per_user.iter().enumerate() {
            for _ in 0..*n {
                devices.push((u, device(&mut rng, &users[u])));
            }
        }
        World {
            rng,
            users,
            devices,
        }
    }

    /// Starts a session from device `from` to each of `to`.
    fn connect(&mut self, from: usize, to: &[usize]) {
        for &t in to {
            assert_ne!(from, t);
            let owner = self.users[self.devices[t].0].public();
            let (a, b) = pair(&mut self.devices, from, t);
            connect(&mut self.rng, &mut a.1, &mut b.1, &owner);
        }
    }
}

fn pair<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j);
    if i < j {
        let (x, y) = v.split_at_mut(j);
        (&mut x[i], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(i);
        (&mut y[0], &mut x[j])
    }
}

/// Device 0 (alice's first) sends to `recipients`; checks who can open.
fn round_trip(mut w: World, recipients: &[usize], users_addressed: usize) {
    w.connect(0, recipients);
    let alice = w.users[0].public();
    let p = payload(&alice, 1);
    let ids: Vec<DeviceId> = recipients.iter().map(|&r| w.devices[r].1.id()).collect();
    let dg = w.devices[0].1.seal(&mut w.rng, &p, &ids).unwrap();

    let decoded = Datagram::decode(&dg).unwrap();
    assert_eq!(
        decoded.recipients().copied().collect::<Vec<_>>(),
        ids,
        "one entry per device, in order"
    );
    // The payload is sealed once, whatever the number of recipients.
    assert_eq!(
        decoded.ciphertext.len(),
        16 + 32 + 32 + 8 + 4 + 1 + 4 + p.body.len() + 16
    );

    let users_reached: std::collections::BTreeSet<usize> =
        recipients.iter().map(|&r| w.devices[r].0).collect();
    assert_eq!(users_reached.len(), users_addressed);
    for i in 0..w.devices.len() {
        let (_, dev) = &mut w.devices[i];
        if recipients.contains(&i) {
            assert_opens(dev, &dg, &p);
            assert_refused(dev, &dg, Error::Replay);
        } else {
            assert_refused(dev, &dg, Error::NotForThisDevice);
        }
    }

    // Each recipient answers on the session the datagram created.
    for &r in recipients {
        let owner = w.users[w.devices[r].0].public();
        let reply = payload(&owner, 100 + r as u32);
        let me = w.devices[0].1.id();
        let dg = w.devices[r].1.seal(&mut w.rng, &reply, &[me]).unwrap();
        assert!(
            Datagram::decode(&dg).unwrap().entries[0].init.is_none(),
            "a responder never sends an init"
        );
        assert_opens(&mut w.devices[0].1, &dg, &reply);
    }
}

#[test]
fn one_device() {
    // alice: 1 device (the sender), bob: 1, carol: 1. Only bob's is addressed.
    let w = World::new("round trip 1", [1, 1, 1]);
    round_trip(w, &[1], 1);
}

#[test]
fn two_devices_of_two_users() {
    // alice 1, bob 2, carol 1: bob's first device and carol's device.
    let w = World::new("round trip 2", [1, 2, 1]);
    round_trip(w, &[1, 3], 2);
}

#[test]
fn fifty_devices_across_three_users_including_the_senders_own() {
    // alice 18 (the sender and 17 others), bob 18, carol 18: 50 addressed,
    // one device of each user left out.
    let w = World::new("round trip 50", [18, 18, 18]);
    let mut recipients: Vec<usize> = (1..17).collect(); // 16 of alice's other devices
    recipients.extend(18..35); // 17 of bob's
    recipients.extend(36..53); // 17 of carol's
    assert_eq!(recipients.len(), 50);
    round_trip(w, &recipients, 3);
}

#[test]
fn the_senders_own_other_devices_are_recipients_like_any_other() {
    let mut w = World::new("own devices", [3, 1, 0]);
    // alice's device 0 sends to bob and to her own devices 1 and 2.
    w.connect(0, &[1, 2, 3]);
    let alice = w.users[0].public();
    let p = payload(&alice, 7);
    let ids: Vec<DeviceId> = [3, 1, 2].iter().map(|&r| w.devices[r].1.id()).collect();
    let dg = w.devices[0].1.seal(&mut w.rng, &p, &ids).unwrap();
    for r in [1, 2, 3] {
        let opened = w.devices[r].1.open(&dg).unwrap();
        assert_eq!(opened.payload, p);
        assert_eq!(opened.sender.device, w.devices[0].1.id());
        assert_eq!(opened.sender.user, alice);
    }
    // The sender has no entry of its own.
    assert_refused(&mut w.devices[0].1, &dg, Error::NotForThisDevice);
}

#[test]
fn duplicate_recipients_get_one_entry_and_missing_sessions_change_nothing() {
    let mut w = World::new("dupes", [1, 2, 0]);
    w.connect(0, &[1]);
    let alice = w.users[0].public();
    let b1 = w.devices[1].1.id();
    let b2 = w.devices[2].1.id();
    let sender = &mut w.devices[0].1;
    sender.take_changes();
    // No session with b2: refused, and b1's session did not advance.
    assert_eq!(
        sender
            .seal(&mut w.rng, &payload(&alice, 1), &[b1, b2])
            .err(),
        Some(Error::NoSession)
    );
    assert_eq!(
        sender.seal(&mut w.rng, &payload(&alice, 1), &[]).err(),
        Some(Error::NoRecipients)
    );
    let bob = w.users[1].public();
    assert_eq!(
        sender.seal(&mut w.rng, &payload(&bob, 1), &[b1]).err(),
        Some(Error::SenderMismatch)
    );
    assert!(sender.take_changes().is_empty());
    let dg = sender
        .seal(&mut w.rng, &payload(&alice, 2), &[b1, b1])
        .unwrap();
    let decoded = Datagram::decode(&dg).unwrap();
    assert_eq!(decoded.entries.len(), 1);
    assert_eq!(
        decoded.entries[0].counter, 0,
        "the refused seals consumed no message key"
    );
    assert_opens(&mut w.devices[1].1, &dg, &payload(&alice, 2));
}
