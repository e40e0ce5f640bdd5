//! Sessions: out-of-order and duplicate delivery, the skipped-key bounds,
//! sessions from the reserve prekey, erasure of used one-time prekeys, and a
//! device restored from its stored state carrying on a conversation.

mod common;

use std::collections::BTreeMap;

use common::*;
use sotto_proto::session::{MAX_SKIP, MAX_SKIPPED_KEYS};
use sotto_proto::*;

struct Pair {
    rng: TestRng,
    alice: UserPublic,
    bob: UserPublic,
    a: Device,
    b: Device,
}

fn pair(seed: &str) -> Pair {
    let mut rng = TestRng::new(seed);
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let (mut a, mut b) = (device(&mut rng, &alice), device(&mut rng, &bob));
    connect(&mut rng, &mut a, &mut b, &bob.public());
    Pair {
        rng,
        alice: alice.public(),
        bob: bob.public(),
        a,
        b,
    }
}

impl Pair {
    /// alice seals messages `from..to` to bob.
    fn a_seals(&mut self, range: std::ops::Range<u32>) -> Vec<(Payload, Vec<u8>)> {
        range
            .map(|n| {
                let p = payload(&self.alice, n);
                let dg = self.a.seal(&mut self.rng, &p, &[self.b.id()]).unwrap();
                (p, dg)
            })
            .collect()
    }
}

fn counter(dg: &[u8]) -> u32 {
    Datagram::decode(dg).unwrap().entries[0].counter
}

#[test]
fn out_of_order_and_duplicate_delivery_in_a_session() {
    let mut s = pair("out of order");
    let msgs = s.a_seals(0..10);
    // Delivery order with duplicates; the first message to arrive is not
    // the first sent (it still carries the init, as all do until bob replies).
    let order = [3, 3, 0, 9, 1, 0, 2, 8, 4, 9, 5, 6, 7, 7, 3];
    let mut opened = [false; 10];
    for i in order {
        let (p, dg) = &msgs[i];
        if opened[i] {
            assert_refused(&mut s.b, dg, Error::Replay);
        } else {
            assert_opens(&mut s.b, dg, p);
            opened[i] = true;
        }
    }
    assert!(opened.iter().all(|o| *o));
    // bob answers; alice opens; then both directions go on, with alice's
    // later messages no longer carrying the init.
    let r = payload(&s.bob, 100);
    let dg = s.b.seal(&mut s.rng, &r, &[s.a.id()]).unwrap();
    assert_opens(&mut s.a, &dg, &r);
    let later = s.a_seals(10..12);
    assert!(Datagram::decode(&later[0].1).unwrap().entries[0]
        .init
        .is_none());
    assert_opens(&mut s.b, &later[1].1, &later[1].0);
    assert_opens(&mut s.b, &later[0].1, &later[0].0);
    for (_, dg) in &msgs {
        assert_refused(&mut s.b, dg, Error::Replay);
    }
}

#[test]
fn the_initiator_repeats_the_init_until_the_responder_answers() {
    let mut s = pair("init repeats");
    let msgs = s.a_seals(0..3);
    for (_, dg) in &msgs {
        assert!(Datagram::decode(dg).unwrap().entries[0].init.is_some());
    }
    // The responder derives the session from whichever arrives first.
    assert_opens(&mut s.b, &msgs[2].1, &msgs[2].0);
    assert_opens(&mut s.b, &msgs[0].1, &msgs[0].0);
    let r = payload(&s.bob, 1);
    let dg = s.b.seal(&mut s.rng, &r, &[s.a.id()]).unwrap();
    assert!(Datagram::decode(&dg).unwrap().entries[0].init.is_none());
    assert_opens(&mut s.a, &dg, &r);
    let next = s.a_seals(3..4);
    assert!(Datagram::decode(&next[0].1).unwrap().entries[0]
        .init
        .is_none());
    assert_opens(&mut s.b, &next[0].1, &next[0].0);
    assert_opens(&mut s.b, &msgs[1].1, &msgs[1].0);
}

#[test]
fn skipping_ahead_is_bounded_and_the_oldest_skipped_keys_go_first() {
    let mut s = pair("bounded skip");
    let n = MAX_SKIP + 2;
    let msgs = s.a_seals(0..n + 1);
    assert_eq!(counter(&msgs[n as usize].1), n);
    // Counter MAX_SKIP + 1 from the next expected (0): too far ahead.
    assert_refused(&mut s.b, &msgs[MAX_SKIP as usize + 1].1, Error::TooFarAhead);
    // Exactly MAX_SKIP ahead: fine; the MAX_SKIP keys before it are kept.
    let (p, dg) = &msgs[MAX_SKIP as usize];
    assert_opens(&mut s.b, dg, p);
    // Now the next expected is MAX_SKIP + 1 and MAX_SKIPPED_KEYS keys are
    // held; skipping one more erases the oldest (message 0).
    assert_eq!(MAX_SKIPPED_KEYS, MAX_SKIP as usize);
    let (p, dg) = &msgs[n as usize];
    assert_opens(&mut s.b, dg, p);
    assert_refused(&mut s.b, &msgs[0].1, Error::Replay);
    for i in [
        1usize,
        2,
        1000,
        MAX_SKIP as usize - 1,
        MAX_SKIP as usize + 1,
    ] {
        assert_opens(&mut s.b, &msgs[i].1, &msgs[i].0);
    }
    assert_refused(&mut s.b, &msgs[MAX_SKIP as usize].1, Error::Replay);
}

#[test]
fn a_session_from_the_reserve_prekey() {
    let mut rng = TestRng::new("reserve");
    let (alice, bob, carol) = (
        UserKey::generate(&mut rng),
        UserKey::generate(&mut rng),
        UserKey::generate(&mut rng),
    );
    let (mut a, mut b, mut c) = (
        device(&mut rng, &alice),
        device(&mut rng, &bob),
        device(&mut rng, &carol),
    );
    // bob's pool is empty: the server hands out the reserve prekey.
    let reserve = b.generate_reserve(&mut rng);
    assert_eq!(reserve.kind, PrekeyKind::Reserve);
    assert_eq!(b.one_time_prekeys(), 0);
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: reserve,
    }
    .verify(&bob.public())
    .unwrap();
    a.start_session(&mut rng, &bundle).unwrap();
    c.start_session(&mut rng, &bundle).unwrap();
    let pa = payload(&alice.public(), 1);
    let pc = payload(&carol.public(), 2);
    let from_a = a.seal(&mut rng, &pa, &[b.id()]).unwrap();
    let from_c = c.seal(&mut rng, &pc, &[b.id()]).unwrap();
    let init = Datagram::decode(&from_a).unwrap().entries[0].init.unwrap();
    assert_eq!(
        (init.prekey_id, init.prekey_kind),
        (reserve.id, PrekeyKind::Reserve)
    );
    b.take_changes();
    assert_opens(&mut b, &from_a, &pa);
    // The reserve prekey is kept for the next sender.
    assert!(b.prekey(reserve.id).is_some());
    assert!(b.take_changes().prekeys_removed.is_empty());
    assert_opens(&mut b, &from_c, &pc);
    assert!(b.prekey(reserve.id).is_some());
    assert_refused(&mut b, &from_a, Error::Replay);
    // Both sessions carry on in both directions.
    let r = payload(&bob.public(), 3);
    let to_both = b.seal(&mut rng, &r, &[a.id(), c.id()]).unwrap();
    assert_opens(&mut a, &to_both, &r);
    assert_opens(&mut c, &to_both, &r);
    // A reserve prekey claiming to be one-time is not found.
    let mut t = from_a.clone();
    let l = layout(&t);
    t[l.entries[0].init.clone().unwrap().end - 1] = PrekeyKind::OneTime as u8;
    resign(&DeviceKey::from_bytes(&a.key().to_bytes()), &mut t);
    b.forget_peer(&a.id());
    assert_refused(&mut b, &t, Error::UnknownPrekey(reserve.id));
}

#[test]
fn replacing_the_reserve_keeps_the_previous_one_for_messages_in_flight() {
    let mut rng = TestRng::new("reserve rotation");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let (mut a, mut b) = (device(&mut rng, &alice), device(&mut rng, &bob));
    let r1 = b.generate_reserve(&mut rng);
    let r2 = b.generate_reserve(&mut rng);
    assert!(b.prekey(r1.id).is_some() && b.prekey(r2.id).is_some());
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: r1,
    }
    .verify(&bob.public())
    .unwrap();
    a.start_session(&mut rng, &bundle).unwrap();
    let p = payload(&alice.public(), 1);
    let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
    let r3 = b.generate_reserve(&mut rng);
    // Only the last two are kept: r1 is erased.
    assert!(b.prekey(r1.id).is_none());
    assert!(b.take_changes().prekeys_removed.contains(&r1.id));
    assert_refused(&mut b, &dg, Error::UnknownPrekey(r1.id));
    assert!(b.prekey(r2.id).is_some() && b.prekey(r3.id).is_some());
}

#[test]
fn known_limit_a_reserve_init_replayed_after_its_session_was_evicted_opens_again() {
    // docs/protocol.md, "Known limits": the reserve prekey is not erased, so
    // once the session a reserve-based init created is gone (evicted or
    // forgotten), a replay of that init derives it again. The payload's
    // message id is unchanged: the client's message-id dedupe refuses it.
    let mut rng = TestRng::new("reserve replay");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let (mut a, mut b) = (device(&mut rng, &alice), device(&mut rng, &bob));
    let reserve = b.generate_reserve(&mut rng);
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: reserve,
    }
    .verify(&bob.public())
    .unwrap();
    a.start_session(&mut rng, &bundle).unwrap();
    let p = payload(&alice.public(), 1);
    let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
    assert_opens(&mut b, &dg, &p);
    assert_refused(&mut b, &dg, Error::Replay);
    // Evict: MAX_SESSIONS_PER_PEER newer sessions from the same device.
    for _ in 0..MAX_SESSIONS_PER_PEER {
        let fresh = bundle_for(&mut rng, &mut b, &bob.public());
        a.start_session(&mut rng, &fresh).unwrap();
        let q = payload(&alice.public(), 2);
        let d = a.seal(&mut rng, &q, &[b.id()]).unwrap();
        assert_opens(&mut b, &d, &q);
    }
    let replayed = b
        .open(&dg)
        .expect("the documented limit: the session is derived again");
    assert_eq!(
        replayed.payload.message_id, p.message_id,
        "same message id: the client drops it"
    );
}

fn bundle_for(rng: &mut TestRng, to: &mut Device, user: &UserPublic) -> VerifiedBundle {
    bundle(rng, to, user)
}

#[test]
fn a_used_one_time_prekey_secret_is_erased() {
    let mut rng = TestRng::new("erase");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let (mut a1, mut a2, mut b) = (
        device(&mut rng, &alice),
        device(&mut rng, &alice),
        device(&mut rng, &bob),
    );
    let pks = b.generate_prekeys(&mut rng, 3);
    assert_eq!(b.one_time_prekeys(), 3);
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: pks[1],
    }
    .verify(&bob.public())
    .unwrap();
    a1.start_session(&mut rng, &bundle).unwrap();
    // A second device given the same prekey (a server that hands it out
    // twice, or a race).
    a2.start_session(&mut rng, &bundle).unwrap();
    let p = payload(&alice.public(), 1);
    let dg1 = a1.seal(&mut rng, &p, &[b.id()]).unwrap();
    let dg2 = a2.seal(&mut rng, &p, &[b.id()]).unwrap();
    b.take_changes();
    // An error before the prekey is used keeps it.
    let mut bad = dg1.clone();
    let l = layout(&bad);
    bad[l.entries[0].wrapped.start] ^= 1;
    resign(&DeviceKey::from_bytes(&a1.key().to_bytes()), &mut bad);
    assert_refused(&mut b, &bad, Error::WrapDecrypt);
    assert_eq!(b.one_time_prekeys(), 3);

    assert_opens(&mut b, &dg1, &p);
    assert_eq!(b.one_time_prekeys(), 2);
    assert!(b.prekey(pks[1].id).is_none());
    assert!(b.prekey_bytes(pks[1].id).is_none());
    let changes = b.take_changes();
    assert_eq!(
        changes.prekeys_removed.iter().copied().collect::<Vec<_>>(),
        vec![pks[1].id]
    );
    assert_eq!(changes.sessions_upserted.len(), 1);
    // The second session on the same prekey cannot be derived any more.
    assert_refused(&mut b, &dg2, Error::UnknownPrekey(pks[1].id));
    // The other prekeys are still there.
    assert!(b.prekey(pks[0].id).is_some() && b.prekey(pks[2].id).is_some());
}

/// A store as the client keeps it, fed from `take_changes`.
#[derive(Default)]
struct Store {
    sessions: BTreeMap<SessionId, Vec<u8>>,
    prekeys: BTreeMap<u32, Vec<u8>>,
}

impl Store {
    fn save(&mut self, dev: &mut Device) {
        let c = dev.take_changes();
        for id in &c.sessions_removed {
            self.sessions.remove(id);
        }
        for id in &c.sessions_upserted {
            self.sessions
                .insert(*id, dev.session_bytes(id).unwrap().to_vec());
        }
        for id in &c.prekeys_removed {
            self.prekeys.remove(id);
        }
        for id in &c.prekeys_added {
            self.prekeys
                .insert(*id, dev.prekey_bytes(*id).unwrap().to_vec());
        }
    }

    fn restore(&self, key: &[u8; 64], cert: &[u8], next_prekey_id: u32) -> Device {
        Device::restore(
            DeviceKey::from_bytes(key),
            DeviceCert::decode(cert).unwrap(),
            self.prekeys
                .values()
                .map(|b| PrekeySecret::from_bytes(b).unwrap())
                .collect(),
            self.sessions
                .values()
                .map(|b| Session::from_bytes(b).unwrap())
                .collect(),
            next_prekey_id,
        )
        .unwrap()
    }
}

#[test]
fn a_device_restored_from_its_stored_state_continues_the_conversation() {
    let mut rng = TestRng::new("persistence");
    let (alice, bob, carol) = (
        UserKey::generate(&mut rng),
        UserKey::generate(&mut rng),
        UserKey::generate(&mut rng),
    );
    let (mut a, mut c) = (device(&mut rng, &alice), device(&mut rng, &carol));
    let mut b = device(&mut rng, &bob);
    let (b_key, b_cert) = (*b.key().to_bytes(), b.cert().encode());
    let mut store = Store::default();
    // bob publishes prekeys; alice starts; some messages, one left unopened.
    let pks = b.generate_prekeys(&mut rng, 4);
    store.save(&mut b);
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: pks[0],
    }
    .verify(&bob.public())
    .unwrap();
    a.start_session(&mut rng, &bundle).unwrap();
    let msgs: Vec<(Payload, Vec<u8>)> = (0..4)
        .map(|n| {
            let p = payload(&alice.public(), n);
            let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
            (p, dg)
        })
        .collect();
    assert_opens(&mut b, &msgs[0].1, &msgs[0].0);
    assert_opens(&mut b, &msgs[2].1, &msgs[2].0); // 1 skipped
    store.save(&mut b);
    let reply = payload(&bob.public(), 50);
    let r = b.seal(&mut rng, &reply, &[a.id()]).unwrap();
    store.save(&mut b);
    assert_opens(&mut a, &r, &reply);
    let next_id = b.next_prekey_id();
    drop(b);

    // The restart.
    let mut b = store.restore(&b_key, &b_cert, next_id);
    assert_eq!(b.one_time_prekeys(), 3);
    assert!(b.prekey(pks[0].id).is_none());
    assert_refused(&mut b, &msgs[0].1, Error::Replay);
    assert_refused(&mut b, &msgs[2].1, Error::Replay);
    // The skipped key survived; the next in order too.
    assert_opens(&mut b, &msgs[1].1, &msgs[1].0);
    assert_opens(&mut b, &msgs[3].1, &msgs[3].0);
    store.save(&mut b);
    // Sending continues from the stored send chain: alice opens.
    let reply2 = payload(&bob.public(), 51);
    let r2 = b.seal(&mut rng, &reply2, &[a.id()]).unwrap();
    assert_eq!(counter(&r2), 1);
    assert_opens(&mut a, &r2, &reply2);
    assert_refused(&mut a, &r, Error::Replay);
    // A stored prekey still works for a new sender, and new prekeys do not
    // reuse an id.
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: pks[3],
    }
    .verify(&bob.public())
    .unwrap();
    c.start_session(&mut rng, &bundle).unwrap();
    let pc = payload(&carol.public(), 60);
    let dc = c.seal(&mut rng, &pc, &[b.id()]).unwrap();
    assert_opens(&mut b, &dc, &pc);
    let fresh = b.generate_prekeys(&mut rng, 1)[0];
    assert!(pks.iter().all(|p| p.id != fresh.id));
    store.save(&mut b);

    // And a second restart, from that state: everything still holds.
    let next_id = b.next_prekey_id();
    drop(b);
    let mut b = store.restore(&b_key, &b_cert, next_id);
    assert_eq!(b.one_time_prekeys(), 3);
    assert_refused(&mut b, &dc, Error::Replay);
    let more = payload(&alice.public(), 70);
    let dm = a.seal(&mut rng, &more, &[b.id()]).unwrap();
    assert_opens(&mut b, &dm, &more);
}

#[test]
fn a_used_up_send_chain_is_not_sent_on_and_a_seal_to_it_changes_nothing() {
    // A send chain at its last index (restored from such state): that
    // session is not used to send, a seal naming its device is refused
    // before any other session moves, and a new session fixes it.
    let mut rng = TestRng::new("exhausted");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let mut a = device(&mut rng, &alice);
    let (mut b1, mut b2) = (device(&mut rng, &bob), device(&mut rng, &bob));
    let s1 = connect(&mut rng, &mut a, &mut b1, &bob.public());
    let s2 = connect(&mut rng, &mut a, &mut b2, &bob.public());
    let mut stuck = a.session_bytes(&s2).unwrap().to_vec();
    stuck[81..85].copy_from_slice(&u32::MAX.to_be_bytes());
    let before1 = a.session_bytes(&s1).unwrap().to_vec();
    let mut a = Device::restore(
        DeviceKey::from_bytes(&a.key().to_bytes()),
        *a.cert(),
        Vec::new(),
        vec![
            Session::from_bytes(&before1).unwrap(),
            Session::from_bytes(&stuck).unwrap(),
        ],
        1,
    )
    .unwrap();
    assert!(a.has_session(&b1.id()));
    assert!(!a.has_session(&b2.id()));
    let p = payload(&alice.public(), 1);
    assert_eq!(
        a.seal(&mut rng, &p, &[b1.id(), b2.id()]).err(),
        Some(Error::NoSession)
    );
    assert!(a.take_changes().is_empty());
    assert_eq!(a.session_bytes(&s1).unwrap().to_vec(), before1);
    connect(&mut rng, &mut a, &mut b2, &bob.public());
    let dg = a.seal(&mut rng, &p, &[b1.id(), b2.id()]).unwrap();
    assert_eq!(counter(&dg), 0);
    assert_opens(&mut b1, &dg, &p);
    assert_opens(&mut b2, &dg, &p);
}

#[test]
fn the_last_key_of_a_send_chain_is_used_then_the_session_is_retired() {
    let mut rng = TestRng::new("last key");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let mut a = device(&mut rng, &alice);
    let mut b = device(&mut rng, &bob);
    let sid = connect(&mut rng, &mut a, &mut b, &bob.public());
    let mut last = a.session_bytes(&sid).unwrap().to_vec();
    last[81..85].copy_from_slice(&(u32::MAX - 1).to_be_bytes());
    let mut a = Device::restore(
        DeviceKey::from_bytes(&a.key().to_bytes()),
        *a.cert(),
        Vec::new(),
        vec![Session::from_bytes(&last).unwrap()],
        1,
    )
    .unwrap();
    let p = payload(&alice.public(), 1);
    let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
    assert_eq!(counter(&dg), u32::MAX - 1);
    assert!(!a.has_session(&b.id()));
    assert_eq!(
        a.seal(&mut rng, &p, &[b.id()]).err(),
        Some(Error::NoSession)
    );
}
