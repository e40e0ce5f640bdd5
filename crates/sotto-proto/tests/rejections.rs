//! Every way a datagram, certificate or prekey is refused: each with its own
//! error, and each leaving the receiving device exactly as it was (the
//! genuine datagram still opens afterwards).

mod common;

use common::*;
use sotto_proto::*;

/// alice's device `a` has a session with bob's `b`; `dg` is a first message
/// (with an init) and `dg2` a second one, neither opened yet.
struct Setup {
    rng: TestRng,
    alice: UserKey,
    bob: UserKey,
    a: Device,
    b: Device,
    /// The sender's session with `b`, stored before `dg` was sealed.
    a_session_before: Vec<u8>,
    dg: Vec<u8>,
    dg2: Vec<u8>,
    p: Payload,
}

fn setup(seed: &str) -> Setup {
    let mut rng = TestRng::new(seed);
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let (mut a, mut b) = (device(&mut rng, &alice), device(&mut rng, &bob));
    let sid = connect(&mut rng, &mut a, &mut b, &bob.public());
    let a_session_before = a.session_bytes(&sid).unwrap().to_vec();
    let p = payload(&alice.public(), 1);
    let dg = a.seal(&mut rng, &p, &[b.id()]).unwrap();
    let dg2 = a
        .seal(&mut rng, &payload(&alice.public(), 2), &[b.id()])
        .unwrap();
    Setup {
        rng,
        alice,
        bob,
        a,
        b,
        a_session_before,
        dg,
        dg2,
        p,
    }
}

impl Setup {
    /// Refused with `err`, nothing changed, and the genuine datagrams still
    /// open.
    fn refused_then_genuine_opens(mut self, tampered: &[u8], err: Error) {
        assert_refused(&mut self.b, tampered, err);
        assert_opens(&mut self.b, &self.dg, &self.p);
        let p2 = payload(&self.alice.public(), 2);
        assert_opens(&mut self.b, &self.dg2, &p2);
    }

    fn sender_key(&self) -> DeviceKey {
        DeviceKey::from_bytes(&self.a.key().to_bytes())
    }
}

fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}

// --- The outer layer: the signature covers every byte. --------------------

#[test]
fn flipped_payload_byte_is_a_bad_signature() {
    let s = setup("flip payload");
    let l = layout(&s.dg);
    for at in [
        l.ciphertext.start,
        l.ciphertext.start + 40,
        l.ciphertext.end - 1,
        l.nonce.start,
    ] {
        let t = flipped(&s.dg, at);
        let mut b = setup("flip payload").b;
        assert_refused(&mut b, &t, Error::BadSignature);
    }
    let t = flipped(&s.dg, l.ciphertext.start + 3);
    s.refused_then_genuine_opens(&t, Error::BadSignature);
}

#[test]
fn flipped_header_entry_byte_is_a_bad_signature() {
    let s = setup("flip entry");
    let l = layout(&s.dg);
    let e = &l.entries[0];
    let init = e.init.clone().unwrap();
    for at in [
        e.session.start,
        e.counter.end - 1,
        init.start,
        init.start + 33,
        e.wrapped.start,
        e.wrapped.end - 1,
    ] {
        let mut b = setup("flip entry").b;
        assert_refused(&mut b, &flipped(&s.dg, at), Error::BadSignature);
    }
    let t = flipped(&s.dg, e.wrapped.start + 5);
    s.refused_then_genuine_opens(&t, Error::BadSignature);
}

#[test]
fn flipped_signature_byte_is_a_bad_signature() {
    let s = setup("flip signature");
    let l = layout(&s.dg);
    for at in l.signature.clone() {
        let mut b = setup("flip signature").b;
        let err = b.open(&flipped(&s.dg, at)).unwrap_err();
        // The last byte holds the top bits of the scalar: some flips make it
        // non-canonical, which the strict verification refuses just the same.
        assert_eq!(
            err,
            Error::BadSignature,
            "flip at signature byte {}",
            at - l.signature.start
        );
    }
    let t = flipped(&s.dg, l.signature.start);
    s.refused_then_genuine_opens(&t, Error::BadSignature);
}

#[test]
fn every_single_bit_flip_anywhere_is_refused_and_changes_nothing() {
    let mut s = setup("every flip");
    for at in 0..s.dg.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = s.dg.clone();
            t[at] ^= bit;
            s.b.take_changes();
            assert!(
                s.b.open(&t).is_err(),
                "flip of bit {bit:#x} at {at} was accepted"
            );
            assert!(s.b.take_changes().is_empty());
        }
    }
    let t = flipped(&s.dg, 0);
    s.refused_then_genuine_opens(&t, Error::UnknownVersion(0));
}

// --- The inner layers, reached by re-signing with the sender's key. -------

#[test]
fn re_signed_payload_flip_fails_the_wrap_because_the_wrap_binds_the_payload() {
    let s = setup("resigned payload");
    let l = layout(&s.dg);
    let mut t = flipped(&s.dg, l.ciphertext.start + 10);
    resign(&s.sender_key(), &mut t);
    s.refused_then_genuine_opens(&t, Error::WrapDecrypt);
}

#[test]
fn re_wrapped_and_re_signed_payload_flip_is_a_payload_decrypt_error() {
    let s = setup("rewrapped payload");
    let (chain_key, index) = send_chain(&s.a_session_before);
    let entry = &Datagram::decode(&s.dg).unwrap().entries[0];
    assert_eq!(entry.counter, index);
    let wrap_key = chain_message_key(chain_key, index, entry.counter);
    let message_key = unwrap_entry(&s.dg, 0, &wrap_key);
    // A sender that knows every key flips a byte of the payload, then makes
    // the wrap and the signature match again: only the payload's own AEAD
    // tag is left to catch it.
    let l = layout(&s.dg);
    let mut t = flipped(&s.dg, l.ciphertext.start + 10);
    rewrap_entry(&mut t, 0, &wrap_key, &message_key);
    resign(&s.sender_key(), &mut t);
    s.refused_then_genuine_opens(&t, Error::PayloadDecrypt);
}

#[test]
fn forger_check_rewrapping_an_untouched_datagram_still_opens() {
    // The forger's own re-implementation of wrap and signature agrees with
    // the crate's: re-wrapping and re-signing an untouched datagram (same
    // message key) gives bytes that open.
    let mut s = setup("rewrap untouched");
    let (chain_key, index) = send_chain(&s.a_session_before);
    let wrap_key = chain_message_key(chain_key, index, index);
    let message_key = unwrap_entry(&s.dg, 0, &wrap_key);
    let mut t = s.dg.clone();
    rewrap_entry(&mut t, 0, &wrap_key, &message_key);
    resign(&s.sender_key(), &mut t);
    assert_eq!(t, s.dg, "wrap and Ed25519ph signing are deterministic");
    assert_opens(&mut s.b, &t, &s.p);
}

#[test]
fn re_signed_wrapped_key_flip_is_a_wrap_decrypt_error() {
    let s = setup("resigned wrap");
    let l = layout(&s.dg);
    let mut t = flipped(&s.dg, l.entries[0].wrapped.start + 7);
    resign(&s.sender_key(), &mut t);
    s.refused_then_genuine_opens(&t, Error::WrapDecrypt);
}

#[test]
fn re_signed_counter_change_is_a_wrap_decrypt_error() {
    // Counter 0 -> 1: the receiver derives message key 1 of the chain, which
    // is not the key this entry was wrapped under.
    let s = setup("resigned counter");
    let l = layout(&s.dg);
    let mut t = flipped(&s.dg, l.entries[0].counter.end - 1);
    resign(&s.sender_key(), &mut t);
    s.refused_then_genuine_opens(&t, Error::WrapDecrypt);
}

#[test]
fn re_signed_init_change_is_refused() {
    let s = setup("resigned init");
    let l = layout(&s.dg);
    let init = l.entries[0].init.clone().unwrap();
    // Another ephemeral key: the session id no longer matches the init.
    let mut t = flipped(&s.dg, init.start + 4);
    resign(&s.sender_key(), &mut t);
    let s2 = setup("resigned init");
    s.refused_then_genuine_opens(&t, Error::Malformed { what: "session id" });
    // Another prekey id: this device holds no such prekey.
    let mut t = flipped(&s2.dg, init.start + 32 + 3);
    resign(&s2.sender_key(), &mut t);
    let id = Datagram::decode(&s2.dg).unwrap().entries[0]
        .init
        .unwrap()
        .prekey_id
        ^ 1;
    s2.refused_then_genuine_opens(&t, Error::UnknownPrekey(id));
}

// --- Certificates and prekeys. --------------------------------------------

#[test]
fn device_certificate_not_signed_by_the_user_key_is_refused() {
    let mut rng = TestRng::new("bad cert");
    let (alice, mallory) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let key = DeviceKey::generate(&mut rng);
    let genuine = alice.certify(&key.public_keys(), T0);
    assert_eq!(genuine.verify_for(&alice.public()), Ok(()));

    // Signed by mallory, naming alice.
    let mut forged = mallory.certify(&key.public_keys(), T0);
    forged.user = alice.public();
    assert_eq!(forged.verify(), Err(Error::BadCertificate));
    assert_eq!(
        forged.verify_for(&alice.public()),
        Err(Error::BadCertificate)
    );
    // Signed by mallory, naming mallory, presented as alice's.
    let mallorys = mallory.certify(&key.public_keys(), T0);
    assert_eq!(mallorys.verify(), Ok(()));
    assert_eq!(
        mallorys.verify_for(&alice.public()),
        Err(Error::BadCertificate)
    );
    // Any field changed after signing.
    let mut later = genuine;
    later.created_at += 1;
    assert_eq!(later.verify(), Err(Error::BadCertificate));
    let mut other_dh = genuine;
    other_dh.dh[0] ^= 1;
    assert_eq!(other_dh.verify(), Err(Error::BadCertificate));

    // In a bundle, the certificate is checked before the prekey.
    let (prekey, _) = key.generate_prekey(&mut rng, 1, PrekeyKind::OneTime);
    let bundle = PrekeyBundle {
        cert: forged,
        prekey,
    };
    assert_eq!(
        bundle.verify(&alice.public()).err(),
        Some(Error::BadCertificate)
    );
    assert!(PrekeyBundle {
        cert: genuine,
        prekey
    }
    .verify(&alice.public())
    .is_ok());
    // A device cannot be set up on a bad certificate, nor on another
    // device's.
    assert_eq!(
        Device::new(DeviceKey::from_bytes(&key.to_bytes()), forged).err(),
        Some(Error::BadCertificate)
    );
    let other = DeviceKey::generate(&mut rng);
    assert_eq!(
        Device::new(other, genuine).err(),
        Some(Error::BadCertificate)
    );
}

#[test]
fn datagram_from_a_device_whose_certificate_is_forged_is_refused() {
    // mallory holds a device key and certifies it herself, naming alice; the
    // datagram is otherwise well formed and signed by that device.
    let s = setup("forged sender cert");
    let mut rng = TestRng::new("mallory");
    let mallory = UserKey::generate(&mut rng);
    let key = s.sender_key();
    let mut forged = mallory.certify(&key.public_keys(), T0);
    forged.user = s.alice.public();
    let mut t = s.dg.clone();
    t[CERT_AT..CERT_AT + DeviceCert::LEN].copy_from_slice(&forged.encode());
    resign(&key, &mut t);
    s.refused_then_genuine_opens(&t, Error::BadCertificate);
}

#[test]
fn prekey_not_signed_by_the_device_is_refused() {
    let mut rng = TestRng::new("bad prekey");
    let bob = UserKey::generate(&mut rng);
    let (b, other) = (device(&mut rng, &bob), device(&mut rng, &bob));
    // Signed by another device (of the same user).
    let (by_other, _) = other
        .key()
        .generate_prekey(&mut rng, 1, PrekeyKind::OneTime);
    assert_eq!(by_other.verify(&other.id()), Ok(()));
    let bundle = PrekeyBundle {
        cert: *b.cert(),
        prekey: by_other,
    };
    assert_eq!(
        bundle.verify(&bob.public()).err(),
        Some(Error::BadPrekeySignature)
    );
    // Signed by the device, then altered: public key, id, or kind.
    let (genuine, _) = b.key().generate_prekey(&mut rng, 7, PrekeyKind::OneTime);
    assert!(PrekeyBundle {
        cert: *b.cert(),
        prekey: genuine
    }
    .verify(&bob.public())
    .is_ok());
    let mut pk = genuine;
    pk.public[31] ^= 0x40;
    assert_eq!(pk.verify(&b.id()), Err(Error::BadPrekeySignature));
    let mut pk = genuine;
    pk.id = 8;
    assert_eq!(pk.verify(&b.id()), Err(Error::BadPrekeySignature));
    let mut pk = genuine;
    pk.kind = PrekeyKind::Reserve;
    assert_eq!(pk.verify(&b.id()), Err(Error::BadPrekeySignature));
    assert_eq!(
        PrekeyBundle {
            cert: *b.cert(),
            prekey: pk
        }
        .verify(&bob.public())
        .err(),
        Some(Error::BadPrekeySignature)
    );
}

// --- Addressing, binding and replay. --------------------------------------

#[test]
fn datagram_for_another_device_is_not_for_this_device() {
    let s = setup("other device");
    let mut rng = TestRng::new("bob's second device");
    let mut b2 = device(&mut rng, &s.bob);
    assert_refused(&mut b2, &s.dg, Error::NotForThisDevice);
    let mut a = s.a;
    assert_refused(&mut a, &s.dg, Error::NotForThisDevice);
}

#[test]
fn an_entry_relabelled_for_another_device_does_not_unwrap() {
    // The wrap binds the recipient: alice's device relabels bob's entry for
    // bob's second device (its recipient, session and counter), re-signs,
    // and the second device still cannot recover the message key.
    let mut rng = TestRng::new("relabel");
    let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
    let mut a = device(&mut rng, &alice);
    let (mut b1, mut b2) = (device(&mut rng, &bob), device(&mut rng, &bob));
    connect(&mut rng, &mut a, &mut b1, &bob.public());
    connect(&mut rng, &mut a, &mut b2, &bob.public());
    let first = a
        .seal(&mut rng, &payload(&alice.public(), 0), &[b1.id(), b2.id()])
        .unwrap();
    b1.open(&first).unwrap();
    b2.open(&first).unwrap();
    let for_b1 = a
        .seal(&mut rng, &payload(&alice.public(), 1), &[b1.id()])
        .unwrap();
    let for_b2 = a
        .seal(&mut rng, &payload(&alice.public(), 2), &[b2.id()])
        .unwrap();
    let l1 = layout(&for_b1);
    let l2 = layout(&for_b2);
    let mut t = for_b1.clone();
    let (e1, e2) = (&l1.entries[0], &l2.entries[0]);
    // recipient, session and counter from b2's genuine entry
    t[e1.recipient.start..e1.flag].copy_from_slice(&for_b2[e2.recipient.start..e2.flag]);
    let key = DeviceKey::from_bytes(&a.key().to_bytes());
    resign(&key, &mut t);
    // Same counter as b2's own next message, so only the binding stops it.
    assert_eq!(
        Datagram::decode(&t).unwrap().entries[0].counter,
        Datagram::decode(&for_b2).unwrap().entries[0].counter
    );
    assert_refused(&mut b2, &t, Error::WrapDecrypt);
    assert_refused(&mut b1, &t, Error::NotForThisDevice);
    assert_opens(&mut b2, &for_b2, &payload(&alice.public(), 2));
    assert_opens(&mut b1, &for_b1, &payload(&alice.public(), 1));
}

#[test]
fn a_datagram_re_signed_by_another_sender_is_refused() {
    // The wrap binds the sender: a device of mallory's takes alice's
    // datagram, puts its own (valid) certificate in, re-signs. bob's session
    // belongs to alice's device, and even under a new session id the wrap
    // key would need alice's device key.
    let s = setup("other sender");
    let mut rng = TestRng::new("mallory's device");
    let mallory = UserKey::generate(&mut rng);
    let mkey = DeviceKey::generate(&mut rng);
    let mcert = mallory.certify(&mkey.public_keys(), T0);
    let mut s = s;
    // Let bob hold the session first, so the datagram names a known session.
    assert_opens(&mut s.b, &s.dg, &s.p);
    let mut t = s.dg2.clone();
    t[CERT_AT..CERT_AT + DeviceCert::LEN].copy_from_slice(&mcert.encode());
    resign(&mkey, &mut t);
    assert_refused(&mut s.b, &t, Error::SessionPeerMismatch);
    // A first message re-signed by mallory: the session id commits to the
    // initiating device, so bob refuses to derive a session from it.
    let mut s2 = setup("other sender 2");
    let mut t = s2.dg.clone();
    t[CERT_AT..CERT_AT + DeviceCert::LEN].copy_from_slice(&mcert.encode());
    resign(&mkey, &mut t);
    assert_refused(&mut s2.b, &t, Error::Malformed { what: "session id" });
    assert_opens(&mut s.b, &s.dg2, &payload(&s.alice.public(), 2));
    assert_opens(&mut s2.b, &s2.dg, &s2.p);
}

#[test]
fn replay_of_an_opened_message_is_refused() {
    let mut s = setup("replay");
    assert_opens(&mut s.b, &s.dg, &s.p);
    assert_refused(&mut s.b, &s.dg, Error::Replay);
    assert_opens(&mut s.b, &s.dg2, &payload(&s.alice.public(), 2));
    assert_refused(&mut s.b, &s.dg2, Error::Replay);
    assert_refused(&mut s.b, &s.dg, Error::Replay);
    // The conversation goes on.
    let p3 = payload(&s.alice.public(), 3);
    let dg3 = s.a.seal(&mut s.rng, &p3, &[s.b.id()]).unwrap();
    assert_opens(&mut s.b, &dg3, &p3);
}

#[test]
fn replay_of_a_one_time_prekey_init_after_its_session_is_gone_is_refused() {
    let mut s = setup("replay after eviction");
    assert_opens(&mut s.b, &s.dg, &s.p);
    let init = Datagram::decode(&s.dg).unwrap().entries[0].init.unwrap();
    // bob drops every session with alice's device; the prekey is gone too.
    s.b.forget_peer(&s.a.id());
    assert_refused(&mut s.b, &s.dg, Error::UnknownPrekey(init.prekey_id));
    assert_refused(&mut s.b, &s.dg2, Error::UnknownPrekey(init.prekey_id));
}

// --- Version, suite, structure. -------------------------------------------

#[test]
fn unknown_version_and_suite_are_refused() {
    let s = setup("version");
    let mut t = s.dg.clone();
    t[0] = 2;
    assert_eq!(Datagram::decode(&t).err(), Some(Error::UnknownVersion(2)));
    let mut t0 = s.dg.clone();
    t0[0] = 0;
    assert_eq!(Datagram::decode(&t0).err(), Some(Error::UnknownVersion(0)));
    let mut u = s.dg.clone();
    u[1] = 2;
    assert_eq!(Datagram::decode(&u).err(), Some(Error::UnknownSuite(2)));
    let mut u255 = s.dg.clone();
    u255[1] = 0xff;
    assert_eq!(
        Datagram::decode(&u255).err(),
        Some(Error::UnknownSuite(0xff))
    );
    // The certificate inside has its own version.
    let mut c = s.dg.clone();
    c[CERT_AT] = 9;
    assert_eq!(Datagram::decode(&c).err(), Some(Error::UnknownVersion(9)));
    let mut cert = s.a.cert().encode();
    cert[0] = 2;
    assert_eq!(
        DeviceCert::decode(&cert).err(),
        Some(Error::UnknownVersion(2))
    );
    // Re-signing does not help: the version is checked before anything else.
    let mut r = s.dg.clone();
    r[0] = 2;
    resign(&s.sender_key(), &mut r);
    let mut s = s;
    assert_refused(&mut s.b, &u, Error::UnknownSuite(2));
    s.refused_then_genuine_opens(&r, Error::UnknownVersion(2));
}

#[test]
fn malformed_structures_are_refused_with_their_own_errors() {
    let s = setup("malformed");
    let l = layout(&s.dg);
    // Zero entries.
    let mut t = s.dg.clone();
    t[COUNT_AT..COUNT_AT + 2].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(
        Datagram::decode(&t).err(),
        Some(Error::Malformed {
            what: "entry count"
        })
    );
    // More entries than allowed.
    t[COUNT_AT..COUNT_AT + 2].copy_from_slice(&10_001u16.to_be_bytes());
    assert_eq!(
        Datagram::decode(&t).err(),
        Some(Error::TooLarge {
            what: "entry count"
        })
    );
    // More entries than bytes: refused before allocating for them.
    t[COUNT_AT..COUNT_AT + 2].copy_from_slice(&10_000u16.to_be_bytes());
    assert_eq!(Datagram::decode(&t).err(), Some(Error::Truncated));
    // An unknown entry flag and an unknown prekey kind.
    let mut t = s.dg.clone();
    t[l.entries[0].flag] = 2;
    assert_eq!(
        Datagram::decode(&t).err(),
        Some(Error::Malformed {
            what: "entry flags"
        })
    );
    let mut t = s.dg.clone();
    t[l.entries[0].init.clone().unwrap().end - 1] = 3;
    assert_eq!(
        Datagram::decode(&t).err(),
        Some(Error::Malformed {
            what: "prekey kind"
        })
    );
    // A payload length over the bound.
    let mut t = s.dg.clone();
    t[l.ciphertext_len.clone()].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Datagram::decode(&t).err(),
        Some(Error::TooLarge { what: "payload" })
    );
    // Trailing bytes.
    let mut t = s.dg.clone();
    t.push(0);
    assert_eq!(Datagram::decode(&t).err(), Some(Error::TrailingBytes));
    let mut c = s.a.cert().encode();
    c.push(0);
    assert_eq!(DeviceCert::decode(&c).err(), Some(Error::TrailingBytes));
    let mut b = s.b;
    assert_refused(&mut b, &[], Error::Truncated);
}

#[test]
fn truncated_input_at_every_length_is_truncated() {
    let mut s = setup("truncated");
    // A datagram with an init entry, one without, and one to several devices.
    let mut rng = TestRng::new("truncated more");
    let mut b2 = device(&mut rng, &s.bob);
    connect(&mut rng, &mut s.a, &mut b2, &s.bob.public());
    let multi =
        s.a.seal(
            &mut rng,
            &payload(&s.alice.public(), 9),
            &[s.b.id(), b2.id()],
        )
        .unwrap();
    let no_init = {
        // The same devices (same seed); bob opens and replies, so alice's
        // next entry carries no init.
        let Setup { mut a, mut b, .. } = setup("truncated");
        assert_opens(&mut b, &s.dg, &s.p);
        let reply = b
            .seal(&mut rng, &payload(&s.bob.public(), 5), &[a.id()])
            .unwrap();
        a.open(&reply).unwrap();
        let dg = a
            .seal(&mut rng, &payload(&s.alice.public(), 7), &[b.id()])
            .unwrap();
        assert!(layout(&dg).entries[0].init.is_none());
        dg
    };
    for full in [&s.dg, &s.dg2, &multi, &no_init] {
        assert!(Datagram::decode(full).is_ok());
        for len in 0..full.len() {
            assert_eq!(
                Datagram::decode(&full[..len]).err(),
                Some(Error::Truncated),
                "prefix of {len} bytes"
            );
            assert_refused(&mut s.b, &full[..len], Error::Truncated);
        }
    }
    let cert = s.a.cert().encode();
    for len in 0..cert.len() {
        assert_eq!(
            DeviceCert::decode(&cert[..len]).err(),
            Some(Error::Truncated)
        );
    }
    let mut rng = TestRng::new("prekey");
    let pk = s.b.generate_prekeys(&mut rng, 1)[0].encode();
    for len in 0..pk.len() {
        assert_eq!(
            SignedPrekey::decode(&pk[..len]).err(),
            Some(Error::Truncated)
        );
    }
    let secret = s.b.prekey_bytes(s.b.next_prekey_id() - 1).unwrap();
    for len in 0..secret.len() {
        assert_eq!(
            PrekeySecret::from_bytes(&secret[..len]).err(),
            Some(Error::Truncated)
        );
    }
    // Nothing of the above disturbed bob.
    s.refused_then_genuine_opens(&[], Error::Truncated);
}
