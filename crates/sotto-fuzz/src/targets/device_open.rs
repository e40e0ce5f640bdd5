//! `Device::open` on hostile input. Each run restores the same receiving
//! device (one unused one-time prekey, one established session with the
//! sender) and feeds it one of:
//!
//! * mode 0: the raw input bytes;
//! * mode 1: a genuine datagram for the device, with the input spliced in at
//!   an input-chosen offset (the signature then fails, but every decoding
//!   path after a splice is reached);
//! * mode 2: as mode 1, then re-signed with the sender's device key, so the
//!   inner layers (entry parsing, session derivation, unwrap, payload
//!   decoding) see the tampered bytes.
//!
//! Whatever happens, `open` must return. If it returns an error, the device
//! state must be unchanged: the genuine datagrams still open afterwards.

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha512};
use sotto_proto::*;

use crate::rng::CounterRng;

struct Fixture {
    key: [u8; 64],
    cert: DeviceCert,
    prekeys: Vec<Vec<u8>>,
    sessions: Vec<Vec<u8>>,
    next_prekey_id: u32,
    sender_sign: [u8; 32],
    /// A first message on the established session (after an init).
    established: Vec<u8>,
    /// A first message to the still unused one-time prekey.
    init: Vec<u8>,
}

fn payload(user: &UserKey, body: &[u8]) -> Payload {
    Payload {
        message_id: [3; 16],
        conversation: [4; 32],
        sender: user.public(),
        sent_at: 1,
        ttl: 0,
        content_type: content::TEXT,
        body: body.to_vec(),
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = CounterRng(1);
        let (alice, bob) = (UserKey::generate(&mut rng), UserKey::generate(&mut rng));
        let (ak, bk) = (DeviceKey::generate(&mut rng), DeviceKey::generate(&mut rng));
        let sender_sign: [u8; 32] = ak.to_bytes()[..32].try_into().unwrap();
        let bob_key: [u8; 64] = *bk.to_bytes();
        let (acert, bcert) = (
            alice.certify(&ak.public_keys(), 1),
            bob.certify(&bk.public_keys(), 1),
        );
        let mut a = Device::new(ak, acert).unwrap();
        let mut b = Device::new(bk, bcert).unwrap();
        let pks = b.generate_prekeys(&mut rng, 2);
        let bundle = PrekeyBundle {
            cert: bcert,
            prekey: pks[0],
        }
        .verify(&bob.public())
        .unwrap();
        a.start_session(&mut rng, &bundle).unwrap();
        let first = a
            .seal(&mut rng, &payload(&alice, b"first"), &[b.id()])
            .unwrap();
        b.open(&first).unwrap();
        let established = a
            .seal(&mut rng, &payload(&alice, b"second"), &[b.id()])
            .unwrap();
        // A second sender device of alice's, to the other prekey.
        let ak2 = DeviceKey::generate(&mut rng);
        let mut a2 = Device::new(
            DeviceKey::from_bytes(&ak2.to_bytes()),
            alice.certify(&ak2.public_keys(), 1),
        )
        .unwrap();
        let bundle = PrekeyBundle {
            cert: bcert,
            prekey: pks[1],
        }
        .verify(&bob.public())
        .unwrap();
        a2.start_session(&mut rng, &bundle).unwrap();
        let init = a2
            .seal(&mut rng, &payload(&alice, b"init"), &[b.id()])
            .unwrap();
        let changes = b.take_changes();
        Fixture {
            key: bob_key,
            cert: bcert,
            prekeys: changes
                .prekeys_added
                .iter()
                .filter_map(|id| b.prekey_bytes(*id))
                .map(|z| z.to_vec())
                .collect(),
            sessions: changes
                .sessions_upserted
                .iter()
                .filter_map(|id| b.session_bytes(id))
                .map(|z| z.to_vec())
                .collect(),
            next_prekey_id: b.next_prekey_id(),
            sender_sign,
            established,
            init,
        }
    })
}

fn device(f: &Fixture) -> Device {
    Device::restore(
        DeviceKey::from_bytes(&f.key),
        f.cert,
        f.prekeys
            .iter()
            .map(|p| PrekeySecret::from_bytes(p).unwrap())
            .collect(),
        f.sessions
            .iter()
            .map(|s| Session::from_bytes(s).unwrap())
            .collect(),
        f.next_prekey_id,
    )
    .unwrap()
}

fn resign(f: &Fixture, bytes: &mut [u8]) {
    if bytes.len() < 64 {
        return;
    }
    let at = bytes.len() - 64;
    let mut h = Sha512::new();
    h.update(&bytes[..at]);
    let sig = SigningKey::from_bytes(&f.sender_sign)
        .sign_prehashed(h, Some(b"sotto/v1/datagram"))
        .unwrap();
    bytes[at..].copy_from_slice(&sig.to_bytes());
}

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    let f = fixture();
    let mut dev = device(f);
    let Some((&mode, rest)) = data.split_first() else {
        assert_eq!(dev.open(data).err(), Some(Error::Truncated));
        return;
    };
    let input: Vec<u8> = match mode % 3 {
        0 => rest.to_vec(),
        m => {
            if rest.len() < 3 {
                return;
            }
            let base = if rest[0] & 1 == 0 {
                &f.established
            } else {
                &f.init
            };
            let at = u16::from_be_bytes([rest[1], rest[2]]) as usize % base.len();
            let patch = &rest[3..];
            let mut out = base.clone();
            // Overwrite in place; a patch running past the end extends it.
            for (i, b) in patch.iter().enumerate() {
                match out.get_mut(at + i) {
                    Some(x) => *x = *b,
                    None => out.push(*b),
                }
            }
            if m == 2 {
                resign(f, &mut out);
            }
            out
        }
    };
    let was_genuine = input == f.established || input == f.init;
    match dev.open(&input) {
        Ok(opened) => {
            // Only a signed datagram from alice's devices can open.
            assert_eq!(opened.sender.user, opened.payload.sender);
        }
        Err(_) => {
            assert!(!was_genuine, "a genuine datagram was refused");
            // Nothing changed: both genuine datagrams still open.
            assert!(dev.take_changes().is_empty());
            dev.open(&f.established)
                .expect("state unchanged after an error");
            dev.open(&f.init).expect("state unchanged after an error");
        }
    }
}

/// The two genuine datagrams the target's device opens (seed material for
/// this and other datagram targets).
pub fn genuine() -> [Vec<u8>; 2] {
    let f = fixture();
    [f.established.clone(), f.init.clone()]
}
