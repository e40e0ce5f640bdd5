//! Session keys: an ephemeral X25519 agreement authenticated by both device
//! keys, and the AES-256-GCM that seals every message inside the session.
//!
//! ```text
//! requester A                                   responder B
//! Request { id, EKa, cert A, prekey?, sig_A }  ->   sig_A = Ed25519(device A,
//!     "sotto/v1/p2p-request" || 1 || peer A || peer B || id || EKa || cert A || prekey?)
//!                                              <-   Accept { id, EKb, prekey?, sig_B }
//!     sig_B = Ed25519(device B, "sotto/v1/p2p-accept" || 1 || T || prekey?)
//! T   = SHA-256("sotto/v1/p2p-session" || 1 || peer A || peer B || cert A || cert B || id || EKa || EKb)
//! okm = HKDF-SHA-256(salt = T, ikm = X25519(EKa, EKb), info = "sotto/v1/p2p-keys", 80 bytes)
//!     key A->B = okm[0..32], key B->A = okm[32..64], session id = okm[64..80]
//! ```
//!
//! Both ephemeral secrets are erased once the keys are derived (A's when
//! the accept arrives or the request ends, B's inside [`accept`]); the keys
//! live in [`Zeroizing`] buffers and are erased when the session closes.
//! Each direction numbers its messages from 0; the nonce is `0^4 || counter`
//! and the AAD is `session id || counter`, so a message cannot be replayed,
//! moved to another session or to the other direction.

use hkdf::Hkdf;
use libp2p::PeerId;
use rand_core::{CryptoRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use sotto_proto::codec::Writer;
use sotto_proto::{verify_device_signature, DeviceCert, SignedPrekey};
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::identity::Identity;
use crate::wire::{
    seal_frame_finish, sealed_frame_start, write_chunk_frame_head, write_prekey, Accept, FileBytes,
    Id, Inner, Request, CHUNK_FRAME_HEAD, SEALED_HEADER,
};

const REQUEST_CONTEXT: &[u8] = b"sotto/v1/p2p-request";
const ACCEPT_CONTEXT: &[u8] = b"sotto/v1/p2p-accept";
const TRANSCRIPT_CONTEXT: &[u8] = b"sotto/v1/p2p-session";
const KEYS_INFO: &[u8] = b"sotto/v1/p2p-keys";

fn peer_bytes(w: &mut Writer, peer: &PeerId) {
    let b = peer.to_bytes();
    w.u8(b.len() as u8).bytes(&b);
}

fn request_signed_bytes(from: &PeerId, to: &PeerId, q: &Request) -> Vec<u8> {
    let mut w = Writer::with_capacity(512);
    w.bytes(REQUEST_CONTEXT).u8(1);
    peer_bytes(&mut w, from);
    peer_bytes(&mut w, to);
    w.u64(q.id).bytes(&q.ephemeral).bytes(&q.cert.encode());
    write_prekey(&mut w, &q.prekey);
    w.buf
}

struct Transcript<'a> {
    requester: &'a PeerId,
    responder: &'a PeerId,
    requester_cert: &'a DeviceCert,
    responder_cert: &'a DeviceCert,
    request: u64,
    eph_a: &'a [u8; 32],
    eph_b: &'a [u8; 32],
}

impl Transcript<'_> {
    fn hash(&self) -> [u8; 32] {
        let mut w = Writer::with_capacity(512);
        w.bytes(TRANSCRIPT_CONTEXT).u8(1);
        peer_bytes(&mut w, self.requester);
        peer_bytes(&mut w, self.responder);
        w.bytes(&self.requester_cert.encode())
            .bytes(&self.responder_cert.encode())
            .u64(self.request)
            .bytes(self.eph_a)
            .bytes(self.eph_b);
        Sha256::digest(&w.buf).into()
    }
}

fn accept_signed_bytes(transcript: &[u8; 32], prekey: &Option<SignedPrekey>) -> Vec<u8> {
    let mut w = Writer::with_capacity(256);
    w.bytes(ACCEPT_CONTEXT).u8(1).bytes(transcript);
    write_prekey(&mut w, prekey);
    w.buf
}

/// The requester's side of a request waiting for its answer: holds the
/// ephemeral secret, which is erased when this is dropped.
pub struct Outgoing {
    pub request: Request,
    secret: EphemeralSecret,
}

/// Makes a request from `local` to `remote`.
pub fn request<R: RngCore + CryptoRng>(
    rng: &mut R,
    identity: &Identity,
    local: &PeerId,
    remote: &PeerId,
    id: u64,
    prekey: Option<SignedPrekey>,
) -> Outgoing {
    let secret = EphemeralSecret::random_from_rng(&mut *rng);
    let mut request = Request {
        id,
        ephemeral: PublicKey::from(&secret).to_bytes(),
        cert: identity.cert,
        prekey,
        signature: [0; 64],
    };
    request.signature = identity
        .key
        .sign(&request_signed_bytes(local, remote, &request));
    Outgoing { request, secret }
}

/// Checks a request's certificate and signature (`from`: the requester's
/// peer id as Noise proved it; `to`: this node's).
pub fn verify_request(from: &PeerId, to: &PeerId, q: &Request) -> bool {
    q.cert.verify().is_ok()
        && verify_device_signature(
            &q.cert.device,
            &request_signed_bytes(from, to, q),
            &q.signature,
        )
        .is_ok()
}

/// The responder's answer to a verified request, and the session keys.
pub fn accept<R: RngCore + CryptoRng>(
    rng: &mut R,
    identity: &Identity,
    requester: &PeerId,
    local: &PeerId,
    q: &Request,
    prekey: Option<SignedPrekey>,
) -> Option<(Accept, SessionKeys)> {
    let secret = EphemeralSecret::random_from_rng(&mut *rng);
    let eph_b = PublicKey::from(&secret).to_bytes();
    let t = Transcript {
        requester,
        responder: local,
        requester_cert: &q.cert,
        responder_cert: &identity.cert,
        request: q.id,
        eph_a: &q.ephemeral,
        eph_b: &eph_b,
    }
    .hash();
    let shared = secret.diffie_hellman(&PublicKey::from(q.ephemeral));
    if !shared.was_contributory() {
        return None;
    }
    let keys = SessionKeys::derive(&t, shared.as_bytes(), false);
    let signature = identity.key.sign(&accept_signed_bytes(&t, &prekey));
    let accept = Accept {
        request: q.id,
        ephemeral: eph_b,
        prekey,
        signature,
    };
    Some((accept, keys))
}

impl Outgoing {
    /// Checks the responder's answer (its certificate from its hello) and
    /// derives the keys; `None` when the signature or the agreement fails.
    pub fn finish(
        self,
        local: &PeerId,
        responder: &PeerId,
        responder_cert: &DeviceCert,
        a: &Accept,
    ) -> Option<SessionKeys> {
        let t = Transcript {
            requester: local,
            responder,
            requester_cert: &self.request.cert,
            responder_cert,
            request: self.request.id,
            eph_a: &self.request.ephemeral,
            eph_b: &a.ephemeral,
        }
        .hash();
        verify_device_signature(
            &responder_cert.device,
            &accept_signed_bytes(&t, &a.prekey),
            &a.signature,
        )
        .ok()?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(a.ephemeral));
        if !shared.was_contributory() {
            return None;
        }
        Some(SessionKeys::derive(&t, shared.as_bytes(), true))
    }
}

/// One session's keys and counters. The keys are erased when it is dropped.
pub struct SessionKeys {
    pub id: Id,
    send_key: Zeroizing<[u8; 32]>,
    recv_key: Zeroizing<[u8; 32]>,
    send_next: u64,
    /// The highest counter opened so far (messages must grow strictly).
    recv_last: Option<u64>,
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

fn aad(id: &Id, counter: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..16].copy_from_slice(id);
    a[16..].copy_from_slice(&counter.to_be_bytes());
    a
}

// AES-256-GCM is ring's (already built for Noise): its GHASH is several
// times faster than RustCrypto's `polyval` on this hardware (measured, see
// docs/PERFORMANCE.md "Peer to peer"); the bytes are the same AES-256-GCM
// (a test opens ring's output with the `aes-gcm` crate). The key schedule
// lives for one message, as before; neither crate zeroizes it (the 32-byte
// keys themselves stay in `Zeroizing`).
fn key(raw: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).expect("a 32-byte AES-256 key"))
}

/// Encrypts `buf` in place as message `counter` of session `id`; the tag.
fn seal_in_place(raw: &[u8; 32], id: &Id, counter: u64, buf: &mut [u8]) -> Tag {
    key(raw)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce(counter)),
            Aad::from(aad(id, counter)),
            buf,
        )
        .expect("AES-GCM seals any length below 64 GiB")
}

/// Decrypts `ct` in place if `tag` authenticates it as message `counter`.
fn open_in(raw: &[u8; 32], id: &Id, counter: u64, ct: &mut [u8], tag: [u8; 16]) -> bool {
    key(raw)
        .open_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce(counter)),
            Aad::from(aad(id, counter)),
            Tag::from(tag),
            ct,
            0..,
        )
        .is_ok()
}

impl SessionKeys {
    fn derive(transcript: &[u8; 32], shared: &[u8; 32], requester: bool) -> SessionKeys {
        let mut okm = Zeroizing::new([0u8; 80]);
        Hkdf::<Sha256>::new(Some(transcript), shared)
            .expand(KEYS_INFO, &mut okm[..])
            .expect("80 bytes is a valid HKDF-SHA-256 length");
        let mut a_to_b = Zeroizing::new([0u8; 32]);
        let mut b_to_a = Zeroizing::new([0u8; 32]);
        a_to_b.copy_from_slice(&okm[..32]);
        b_to_a.copy_from_slice(&okm[32..64]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&okm[64..]);
        let (send_key, recv_key) = if requester {
            (a_to_b, b_to_a)
        } else {
            (b_to_a, a_to_b)
        };
        SessionKeys {
            id,
            send_key,
            recv_key,
            send_next: 0,
            recv_last: None,
        }
    }

    /// Seals `plaintext` as the next message; returns its counter.
    pub fn seal(&mut self, plaintext: &[u8]) -> (u64, Vec<u8>) {
        let counter = self.send_next;
        self.send_next += 1;
        let mut ct = Vec::with_capacity(plaintext.len() + 16);
        ct.extend_from_slice(plaintext);
        let tag = seal_in_place(&self.send_key, &self.id, counter, &mut ct);
        ct.extend_from_slice(tag.as_ref());
        (counter, ct)
    }

    /// Seals `inner` as the next message straight into its encoded
    /// [`crate::wire::Frame::Sealed`] (the same bytes as sealing its encoding and
    /// encoding that frame, with no copy of the ciphertext).
    pub fn seal_frame(&mut self, inner: &Inner, capacity: usize) -> Vec<u8> {
        let counter = self.send_next;
        self.send_next += 1;
        let mut w = sealed_frame_start(&self.id, counter, capacity + 16);
        inner.encode_into(&mut w);
        let tag = seal_in_place(
            &self.send_key,
            &self.id,
            counter,
            &mut w.buf[SEALED_HEADER..],
        );
        w.buf.extend_from_slice(tag.as_ref());
        seal_frame_finish(&mut w);
        w.buf
    }

    /// Seals a file chunk as the next message: the same frame as
    /// [`SessionKeys::seal_frame`] of [`Inner::FileChunk`], built around
    /// `data` in its own buffer when it has [`CHUNK_FRAME_HEAD`] bytes of
    /// room in front (as the shell's reads leave), else copied once.
    pub fn seal_chunk_frame(&mut self, file: &Id, offset: u64, data: FileBytes) -> Vec<u8> {
        let (mut buf, start) = data.into_parts();
        if start != CHUNK_FRAME_HEAD {
            let mut b = Vec::with_capacity(CHUNK_FRAME_HEAD + buf.len() - start + 16);
            b.resize(CHUNK_FRAME_HEAD, 0);
            b.extend_from_slice(&buf[start..]);
            buf = b;
        }
        let counter = self.send_next;
        self.send_next += 1;
        let len = buf.len() - CHUNK_FRAME_HEAD;
        write_chunk_frame_head(&mut buf, &self.id, counter, file, offset, len);
        let tag = seal_in_place(&self.send_key, &self.id, counter, &mut buf[SEALED_HEADER..]);
        buf.extend_from_slice(tag.as_ref());
        buf
    }

    /// Opens the message `buf[start..]` (ciphertext and tag) in place: on
    /// success `buf[start..]` is the plaintext (the tag is cut off) and the
    /// counter is taken. `false` (and nothing taken) if it does not
    /// authenticate or its counter is not above every one opened before.
    pub fn open_in_place(&mut self, counter: u64, buf: &mut Vec<u8>, start: usize) -> bool {
        if self.recv_last.is_some_and(|last| counter <= last) || buf.len() < start + 16 {
            return false;
        }
        let tag_at = buf.len() - 16;
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&buf[tag_at..]);
        if !open_in(
            &self.recv_key,
            &self.id,
            counter,
            &mut buf[start..tag_at],
            tag,
        ) {
            return false;
        }
        buf.truncate(tag_at);
        self.recv_last = Some(counter);
        true
    }

    /// [`SessionKeys::open`], decrypting in the ciphertext's own buffer.
    pub fn open_owned(&mut self, counter: u64, mut buf: Vec<u8>) -> Option<Zeroizing<Vec<u8>>> {
        self.open_in_place(counter, &mut buf, 0)
            .then(|| Zeroizing::new(buf))
    }

    /// Opens a message; `None` if it does not authenticate or its counter
    /// is not above every counter opened before (replay). Nothing changes
    /// on failure.
    pub fn open(&mut self, counter: u64, ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.open_owned(counter, ciphertext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;
    use sotto_proto::UserKey;

    fn identity(name: &str) -> Identity {
        Identity::new_device(&mut OsRng, name, &UserKey::generate(&mut OsRng), 1)
    }

    fn pair() -> (SessionKeys, SessionKeys) {
        let (a, b) = (identity("alice"), identity("bob"));
        let (pa, pb) = (PeerId::random(), PeerId::random());
        let out = request(&mut OsRng, &a, &pa, &pb, 7, None);
        assert!(verify_request(&pa, &pb, &out.request));
        let (acc, kb) = accept(&mut OsRng, &b, &pa, &pb, &out.request, None).unwrap();
        let ka = out.finish(&pa, &pb, &b.cert, &acc).unwrap();
        (ka, kb)
    }

    #[test]
    fn both_sides_derive_the_same_session_and_messages_open_once() {
        let (mut ka, mut kb) = pair();
        assert_eq!(ka.id, kb.id);
        let (c, ct) = ka.seal(b"hello");
        assert_eq!(&kb.open(c, &ct).unwrap()[..], b"hello");
        assert!(kb.open(c, &ct).is_none(), "a replayed message is refused");
        let (c2, ct2) = kb.seal(b"back");
        assert!(
            kb.open(c2, &ct2).is_none(),
            "a message does not open in its own direction"
        );
        assert_eq!(&ka.open(c2, &ct2).unwrap()[..], b"back");
    }

    #[test]
    fn every_session_has_fresh_keys() {
        let (k1, _) = pair();
        let (k2, _) = pair();
        assert_ne!(k1.id, k2.id);
        assert_ne!(*k1.send_key, *k2.send_key);
    }

    #[test]
    fn a_request_or_accept_signed_for_another_connection_is_refused() {
        let (a, b) = (identity("alice"), identity("bob"));
        let (pa, pb, pm) = (PeerId::random(), PeerId::random(), PeerId::random());
        let out = request(&mut OsRng, &a, &pa, &pb, 1, None);
        // Replayed by a third peer m to b: the signature names a's peer id.
        assert!(!verify_request(&pm, &pb, &out.request));
        // An accept made for another requester peer does not finish.
        let (acc, _) = accept(&mut OsRng, &b, &pm, &pb, &out.request, None).unwrap();
        assert!(out.finish(&pa, &pb, &b.cert, &acc).is_none());
    }

    #[test]
    fn a_frame_sealed_in_place_opens_like_any_sealed_message() {
        let (mut ka, mut kb) = pair();
        let inner = Inner::FileChunk {
            id: [1; 16],
            offset: 9,
            data: vec![7; 1000],
        };
        let bytes = ka.seal_frame(&inner, 1100);
        let crate::wire::Frame::Sealed {
            session,
            counter,
            ciphertext,
        } = crate::wire::Frame::decode(&bytes).unwrap()
        else {
            panic!("a sealed frame");
        };
        assert_eq!((session, counter), (ka.id, 0));
        let mut tampered = ciphertext.clone();
        tampered[3] ^= 1;
        assert!(kb.open_owned(counter, tampered).is_none());
        assert!(
            kb.open_owned(counter, vec![0; 15]).is_none(),
            "shorter than a tag"
        );
        let plain = kb.open_owned(counter, ciphertext.clone()).unwrap();
        assert_eq!(Inner::decode(&plain).unwrap(), inner);
        assert!(kb.open_owned(counter, ciphertext).is_none(), "replayed");
        let (c2, _) = ka.seal(b"next");
        assert_eq!(c2, 1, "one counter for both ways of sealing");
    }

    #[test]
    fn a_chunk_sealed_around_its_bytes_is_the_frame_of_a_file_chunk() {
        let (mut ka, mut kb) = pair();
        let (mut kc, _) = pair();
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let inner = Inner::FileChunk {
            id: [3; 16],
            offset: 77,
            data: data.clone(),
        };
        // The same counter on two copies of one session's keys.
        kc.id = ka.id;
        kc.send_key = ka.send_key.clone();
        let expected = kc.seal_frame(&inner, data.len() + 64);
        let mut room = vec![0xAA; CHUNK_FRAME_HEAD];
        room.extend_from_slice(&data);
        let in_place = ka.seal_chunk_frame(&[3; 16], 77, FileBytes::new(room, CHUNK_FRAME_HEAD));
        assert_eq!(in_place, expected);
        // Without the room in front: copied, same bytes (next counter).
        kc.send_next = 1;
        let expected = kc.seal_frame(&inner, data.len() + 64);
        let copied = ka.seal_chunk_frame(&[3; 16], 77, FileBytes::from(data));
        assert_eq!(copied, expected);
        // Both open at the receiver, in place after the frame's header.
        for (counter, frame) in [(0, in_place), (1, copied)] {
            let mut buf = frame;
            assert!(kb.open_in_place(counter, &mut buf, SEALED_HEADER));
            assert_eq!(Inner::decode(&buf[SEALED_HEADER..]).unwrap(), inner);
        }
    }

    /// The session AEAD is standard AES-256-GCM: what ring seals, the
    /// RustCrypto `aes-gcm` crate (the one sotto-proto uses) opens with
    /// the same key, nonce and AAD, and the other way round.
    #[test]
    fn session_messages_are_plain_aes_256_gcm() {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let (mut ka, mut kb) = pair();
        let other = aes_gcm::Aes256Gcm::new_from_slice(&ka.send_key[..]).unwrap();
        let msg = vec![0x5a; 70_000];
        let (c, ct) = ka.seal(&msg);
        let opened = other
            .decrypt(
                aes_gcm::Nonce::from_slice(&nonce(c)),
                Payload {
                    msg: &ct,
                    aad: &aad(&ka.id, c),
                },
            )
            .unwrap();
        assert_eq!(opened, msg);
        let c2 = 1;
        let theirs = other
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce(c2)),
                Payload {
                    msg: b"back",
                    aad: &aad(&ka.id, c2),
                },
            )
            .unwrap();
        kb.recv_last = Some(0);
        assert_eq!(&kb.open(c2, &theirs).unwrap()[..], b"back");
    }

    #[test]
    fn a_tampered_message_does_not_open_and_changes_nothing() {
        let (mut ka, mut kb) = pair();
        let (c, mut ct) = ka.seal(b"hello");
        ct[0] ^= 1;
        assert!(kb.open(c, &ct).is_none());
        ct[0] ^= 1;
        assert!(kb.open(c, &ct).is_some());
    }
}
