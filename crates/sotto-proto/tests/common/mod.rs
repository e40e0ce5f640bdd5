//! Shared helpers for the integration tests: a deterministic RNG, users and
//! devices, sessions between them, the byte layout of a datagram, and a
//! "forger" that holds a sender's secrets and rewrites datagrams the way a
//! compromised or malicious sender could, to reach the inner layers that the
//! datagram signature otherwise hides.
//!
//! The forger re-implements the wrap and the signature from
//! docs/protocol.md, independently of the crate's code.
#![allow(dead_code)]

use std::ops::Range;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256, Sha512};
use sotto_proto::*;

/// Deterministic, test-only RNG. Output stream: the concatenation of
/// `SHA-256("sotto-test-rng" || seed || u64_be(i))` for i = 0, 1, 2, ...;
/// every draw takes the next bytes of the stream (`next_u32`/`next_u64`
/// read 4/8 bytes little-endian). Documented in docs/protocol.md so the
/// test vectors can be reproduced by another implementation.
pub struct TestRng {
    seed: Vec<u8>,
    block: u64,
    buf: [u8; 32],
    pos: usize,
}

impl TestRng {
    pub fn new(seed: &str) -> Self {
        TestRng {
            seed: seed.as_bytes().to_vec(),
            block: 0,
            buf: [0; 32],
            pos: 32,
        }
    }
}

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for out in dest {
            if self.pos == 32 {
                let mut h = Sha256::new();
                h.update(b"sotto-test-rng");
                h.update(&self.seed);
                h.update(self.block.to_be_bytes());
                self.buf = h.finalize().into();
                self.block += 1;
                self.pos = 0;
            }
            *out = self.buf[self.pos];
            self.pos += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

pub const T0: u64 = 1_700_000_000_000;

/// A new device of `user`, with a certificate.
pub fn device(rng: &mut TestRng, user: &UserKey) -> Device {
    let key = DeviceKey::generate(rng);
    let cert = user.certify(&key.public_keys(), T0);
    Device::new(key, cert).unwrap()
}

/// A verified bundle for `to` with a fresh one-time prekey of its own.
pub fn bundle(rng: &mut TestRng, to: &mut Device, to_user: &UserPublic) -> VerifiedBundle {
    let prekey = to.generate_prekeys(rng, 1)[0];
    PrekeyBundle {
        cert: *to.cert(),
        prekey,
    }
    .verify(to_user)
    .unwrap()
}

/// Starts a session `from` -> `to` on a fresh one-time prekey of `to`.
pub fn connect(
    rng: &mut TestRng,
    from: &mut Device,
    to: &mut Device,
    to_user: &UserPublic,
) -> SessionId {
    let b = bundle(rng, to, to_user);
    from.start_session(rng, &b).unwrap()
}

/// A text payload; `n` goes into the message id and the body.
pub fn payload(sender: &UserPublic, n: u32) -> Payload {
    let mut message_id = [0u8; 16];
    message_id[..4].copy_from_slice(&n.to_be_bytes());
    Payload {
        message_id,
        conversation: [0xc0; 32],
        sender: *sender,
        sent_at: T0 + u64::from(n),
        ttl: 0,
        content_type: content::TEXT,
        body: format!("message {n}").into_bytes(),
    }
}

/// Opens `dg` on `dev` and checks it is the payload `expected`.
pub fn assert_opens(dev: &mut Device, dg: &[u8], expected: &Payload) {
    let opened = dev
        .open(dg)
        .unwrap_or_else(|e| panic!("device failed to open its datagram: {e:?}"));
    assert_eq!(&opened.payload, expected);
    assert_eq!(opened.sender.user, expected.sender);
}

/// Asserts `open` fails with `err` and changes nothing.
pub fn assert_refused(dev: &mut Device, dg: &[u8], err: Error) {
    dev.take_changes();
    assert_eq!(dev.open(dg).err(), Some(err));
    assert!(
        dev.take_changes().is_empty(),
        "a refused datagram changed the device state"
    );
}

// ---------------------------------------------------------------------------
// Layout of a v1 datagram (docs/protocol.md, "Datagram").

pub const CERT_AT: usize = 2;
pub const COUNT_AT: usize = CERT_AT + DeviceCert::LEN;
pub const ENTRIES_AT: usize = COUNT_AT + 2;

pub struct EntrySpan {
    pub all: Range<usize>,
    pub recipient: Range<usize>,
    pub session: Range<usize>,
    pub counter: Range<usize>,
    pub flag: usize,
    pub init: Option<Range<usize>>,
    pub wrapped: Range<usize>,
}

pub struct Layout {
    pub entries: Vec<EntrySpan>,
    pub nonce: Range<usize>,
    pub ciphertext_len: Range<usize>,
    pub ciphertext: Range<usize>,
    pub signature: Range<usize>,
}

/// Where each field of `bytes` (a datagram that decodes) lies.
pub fn layout(bytes: &[u8]) -> Layout {
    let dg = Datagram::decode(bytes).unwrap();
    assert_eq!(
        u16::from_be_bytes([bytes[COUNT_AT], bytes[COUNT_AT + 1]]) as usize,
        dg.entries.len()
    );
    let mut p = ENTRIES_AT;
    let mut entries = Vec::new();
    for e in &dg.entries {
        let start = p;
        let recipient = p..p + 32;
        let session = p + 32..p + 48;
        let counter = p + 48..p + 52;
        let flag = p + 52;
        p += 53;
        let init = e.init.map(|_| {
            p += 37;
            p - 37..p
        });
        let wrapped = p..p + 48;
        p += 48;
        assert_eq!(&bytes[recipient.clone()], &e.recipient.0);
        entries.push(EntrySpan {
            all: start..p,
            recipient,
            session,
            counter,
            flag,
            init,
            wrapped,
        });
    }
    let nonce = p..p + 12;
    let ciphertext_len = p + 12..p + 16;
    let ciphertext = p + 16..p + 16 + dg.ciphertext.len();
    let signature = ciphertext.end..ciphertext.end + 64;
    assert_eq!(
        signature.end,
        bytes.len(),
        "layout does not cover the datagram"
    );
    assert_eq!(&bytes[ciphertext.clone()], dg.ciphertext);
    Layout {
        entries,
        nonce,
        ciphertext_len,
        ciphertext,
        signature,
    }
}

// ---------------------------------------------------------------------------
// The forger: rewrites datagrams with the sender's secrets.

pub const SIGNATURE_CONTEXT: &[u8] = b"sotto/v1/datagram";

/// Re-signs a datagram (Ed25519ph, context "sotto/v1/datagram", over every
/// byte before the signature) with the device key `signer`.
pub fn resign(signer: &DeviceKey, bytes: &mut [u8]) {
    let secret: [u8; 32] = signer.to_bytes()[..32].try_into().unwrap();
    let at = bytes.len() - 64;
    let mut h = Sha512::new();
    h.update(&bytes[..at]);
    let sig = ed25519_dalek::SigningKey::from_bytes(&secret)
        .sign_prehashed(h, Some(SIGNATURE_CONTEXT))
        .unwrap();
    bytes[at..].copy_from_slice(&sig.to_bytes());
}

/// The send chain key and index stored in a session's bytes (version 1:
/// version, id, peer, send key, send index, ...).
pub fn send_chain(session_bytes: &[u8]) -> ([u8; 32], u32) {
    assert_eq!(session_bytes[0], 1);
    let key = session_bytes[49..81].try_into().unwrap();
    let index = u32::from_be_bytes(session_bytes[81..85].try_into().unwrap());
    (key, index)
}

/// Message key `index` of a chain whose key at `start` is `key`.
pub fn chain_message_key(mut key: [u8; 32], start: u32, index: u32) -> [u8; 32] {
    let h = |k: &[u8; 32], label: u8| -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k).unwrap();
        mac.update(&[label]);
        mac.finalize().into_bytes().into()
    };
    for _ in start..index {
        key = h(&key, 2);
    }
    h(&key, 1)
}

pub fn wrap_aad(
    sender: &[u8],
    recipient: &[u8],
    session: &[u8],
    counter: &[u8],
    digest: &[u8; 32],
) -> Vec<u8> {
    let mut aad = b"sotto/v1/wrap".to_vec();
    aad.extend_from_slice(&[PROTOCOL_VERSION, SUITE_V1]);
    for part in [sender, recipient, session, counter, &digest[..]] {
        aad.extend_from_slice(part);
    }
    aad
}

pub fn payload_digest(bytes: &[u8], l: &Layout) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&bytes[l.nonce.clone()]);
    h.update(&bytes[l.ciphertext.clone()]);
    h.finalize().into()
}

/// Unwraps entry `i` of `bytes` with `wrap_key`.
pub fn unwrap_entry(bytes: &[u8], i: usize, wrap_key: &[u8; 32]) -> [u8; 32] {
    let l = layout(bytes);
    let e = &l.entries[i];
    let aad = wrap_aad(
        &bytes[CERT_AT + 33..CERT_AT + 65],
        &bytes[e.recipient.clone()],
        &bytes[e.session.clone()],
        &bytes[e.counter.clone()],
        &payload_digest(bytes, &l),
    );
    let w = &bytes[e.wrapped.clone()];
    let mut key = [0u8; 32];
    key.copy_from_slice(&w[..32]);
    Aes256Gcm::new(wrap_key.into())
        .decrypt_in_place_detached(
            Nonce::from_slice(&[0; 12]),
            &aad,
            &mut key,
            Tag::from_slice(&w[32..]),
        )
        .expect("the forger's wrap key opens the entry");
    key
}

/// Re-wraps `message_key` into entry `i` of `bytes` (after the payload or
/// the entry's fields were changed).
pub fn rewrap_entry(bytes: &mut [u8], i: usize, wrap_key: &[u8; 32], message_key: &[u8; 32]) {
    let l = layout(bytes);
    let e = &l.entries[i];
    let aad = wrap_aad(
        &bytes[CERT_AT + 33..CERT_AT + 65],
        &bytes[e.recipient.clone()],
        &bytes[e.session.clone()],
        &bytes[e.counter.clone()],
        &payload_digest(bytes, &l),
    );
    let mut out = *message_key;
    let tag = Aes256Gcm::new(wrap_key.into())
        .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), &aad, &mut out)
        .unwrap();
    bytes[e.wrapped.start..e.wrapped.start + 32].copy_from_slice(&out);
    bytes[e.wrapped.start + 32..e.wrapped.end].copy_from_slice(&tag);
}
