//! The datagram: one payload sealed once under a fresh message key, one
//! header entry per recipient device carrying that key wrapped for it, and
//! the sender device's signature over everything (wire format v1 in
//! docs/protocol.md).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::keys::{DeviceCert, DeviceId, UserPublic};
use crate::session::{InitInfo, SessionId};
use crate::{PROTOCOL_VERSION, SUITE_V1};

/// Most recipient devices one datagram may address.
pub const MAX_ENTRIES: usize = 10_000;
/// Largest payload body, in bytes.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Largest sealed payload (encoded plaintext plus tag).
pub const MAX_SEALED_PAYLOAD: usize = MAX_BODY + PAYLOAD_FIXED_LEN + 16;
/// Largest datagram the decoder accepts.
pub const MAX_DATAGRAM: usize =
    2 + DeviceCert::LEN + 2 + MAX_ENTRIES * ENTRY_MAX_LEN + 12 + 4 + MAX_SEALED_PAYLOAD + 64;

const PAYLOAD_FIXED_LEN: usize = 16 + 32 + 32 + 8 + 4 + 1 + 4;
const WRAPPED_LEN: usize = 32 + 16;
const ENTRY_MIN_LEN: usize = 32 + 16 + 4 + 1 + WRAPPED_LEN;
const ENTRY_MAX_LEN: usize = ENTRY_MIN_LEN + 32 + 4 + 1;
const SIGNATURE_CONTEXT: &[u8] = b"sotto/v1/datagram";

/// Content types a payload may carry. Unknown values are passed to the
/// caller, which decides what to do with them.
pub mod content {
    /// UTF-8 text.
    pub const TEXT: u8 = 1;
    /// A room control message (create, set, add, remove, leave...).
    pub const ROOM_CONTROL: u8 = 2;
    /// State sent by an approving device to a newly linked device.
    pub const LINK_SYNC: u8 = 3;
    /// Delivery receipt.
    pub const RECEIPT: u8 = 4;
}

/// The sealed part of a datagram, as the sender wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub message_id: [u8; 16],
    /// The 1:1 conversation or the room this message belongs to.
    pub conversation: [u8; 32],
    /// The sending user; checked against the certificate on open.
    pub sender: UserPublic,
    /// Milliseconds since the Unix epoch, by the server's master clock.
    pub sent_at: u64,
    /// Seconds after `sent_at` when the message must disappear; 0 = never.
    pub ttl: u32,
    pub content_type: u8,
    pub body: Vec<u8>,
}

impl Payload {
    pub(crate) fn encode(&self) -> Result<Zeroizing<Vec<u8>>> {
        if self.body.len() > MAX_BODY {
            return Err(Error::TooLarge { what: "body" });
        }
        let mut w = Writer::with_capacity(PAYLOAD_FIXED_LEN + self.body.len() + 16);
        w.bytes(&self.message_id)
            .bytes(&self.conversation)
            .bytes(&self.sender.0);
        w.u64(self.sent_at)
            .u32(self.ttl)
            .u8(self.content_type)
            .var_bytes(&self.body);
        Ok(Zeroizing::new(w.buf))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Payload> {
        let mut r = Reader::new(bytes);
        let payload = Payload {
            message_id: r.array()?,
            conversation: r.array()?,
            sender: UserPublic(r.array()?),
            sent_at: r.u64()?,
            ttl: r.u32()?,
            content_type: r.u8()?,
            body: r.var_bytes(MAX_BODY, "body")?.to_vec(),
        };
        r.finish()?;
        Ok(payload)
    }
}

/// One recipient device's header entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub recipient: DeviceId,
    pub session: SessionId,
    pub counter: u32,
    /// Present while the session is new to the recipient.
    pub init: Option<InitInfo>,
    /// The message key under AES-256-GCM with this entry's wrap key.
    pub wrapped: [u8; WRAPPED_LEN],
}

impl Entry {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.recipient.0)
            .bytes(&self.session.0)
            .u32(self.counter);
        InitInfo::write_optional(self.init.as_ref(), w);
        w.bytes(&self.wrapped);
    }

    fn read(r: &mut Reader<'_>) -> Result<Entry> {
        let recipient = DeviceId(r.array()?);
        let session = SessionId(r.array()?);
        let counter = r.u32()?;
        let init = InitInfo::read_optional(r, "entry flags")?;
        Ok(Entry {
            recipient,
            session,
            counter,
            init,
            wrapped: r.array()?,
        })
    }
}

/// A decoded datagram. Decoding checks structure and bounds only; opening
/// (in [`crate::Device::open`]) checks the signatures and decrypts.
#[derive(Clone, Debug)]
pub struct Datagram<'a> {
    pub sender: DeviceCert,
    pub entries: Vec<Entry>,
    pub nonce: [u8; 12],
    pub ciphertext: &'a [u8],
    pub signature: [u8; 64],
    signed: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// Parses `bytes` without any cryptography: bounded, total, and cheap
    /// enough for the server to learn the recipients.
    pub fn decode(bytes: &'a [u8]) -> Result<Datagram<'a>> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(Error::TooLarge { what: "datagram" });
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let suite = r.u8()?;
        if suite != SUITE_V1 {
            return Err(Error::UnknownSuite(suite));
        }
        let sender = DeviceCert::read(&mut r)?;
        let count = r.u16()? as usize;
        if count > MAX_ENTRIES {
            return Err(Error::TooLarge {
                what: "entry count",
            });
        }
        if count == 0 {
            return Err(Error::Malformed {
                what: "entry count",
            });
        }
        // Allocate only for entries whose bytes are present.
        if bytes.len().saturating_sub(r.position()) < count * ENTRY_MIN_LEN {
            return Err(Error::Truncated);
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(Entry::read(&mut r)?);
        }
        let nonce = r.array()?;
        let ciphertext = r.var_bytes(MAX_SEALED_PAYLOAD, "payload")?;
        let signed_len = r.position();
        let signature = r.array()?;
        r.finish()?;
        Ok(Datagram {
            sender,
            entries,
            nonce,
            ciphertext,
            signature,
            signed: &bytes[..signed_len],
        })
    }

    /// The devices this datagram is addressed to.
    pub fn recipients(&self) -> impl Iterator<Item = &DeviceId> {
        self.entries.iter().map(|e| &e.recipient)
    }

    /// Checks the sender's certificate and the datagram signature.
    pub(crate) fn verify(&self) -> Result<()> {
        self.sender.verify()?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.sender.device.0)
            .map_err(|_| Error::BadKey)?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_prehashed_strict(prehash(self.signed), Some(SIGNATURE_CONTEXT), &signature)
            .map_err(|_| Error::BadSignature)
    }

    pub(crate) fn payload_digest(&self) -> [u8; 32] {
        payload_digest(&self.nonce, self.ciphertext)
    }
}

fn prehash(signed: &[u8]) -> Sha512 {
    let mut h = Sha512::new();
    h.update(signed);
    h
}

pub(crate) fn payload_digest(nonce: &[u8; 12], ciphertext: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(ciphertext);
    h.finalize().into()
}

fn payload_aad(sender: &DeviceId) -> [u8; 16 + 2 + 32] {
    let mut aad = [0u8; 50];
    aad[..16].copy_from_slice(b"sotto/v1/payload");
    aad[16] = PROTOCOL_VERSION;
    aad[17] = SUITE_V1;
    aad[18..].copy_from_slice(&sender.0);
    aad
}

/// The associated data of one wrapped key: binds it to both devices, the
/// session position and this datagram's payload.
pub(crate) fn wrap_aad(
    sender: &DeviceId,
    recipient: &DeviceId,
    session: &SessionId,
    counter: u32,
    digest: &[u8; 32],
) -> [u8; 13 + 2 + 32 + 32 + 16 + 4 + 32] {
    let mut aad = [0u8; 131];
    aad[..13].copy_from_slice(b"sotto/v1/wrap");
    aad[13] = PROTOCOL_VERSION;
    aad[14] = SUITE_V1;
    aad[15..47].copy_from_slice(&sender.0);
    aad[47..79].copy_from_slice(&recipient.0);
    aad[79..95].copy_from_slice(&session.0);
    aad[95..99].copy_from_slice(&counter.to_be_bytes());
    aad[99..].copy_from_slice(digest);
    aad
}

/// Each wrap key is used for exactly one message, so a fixed nonce is safe.
const WRAP_NONCE: [u8; 12] = [0; 12];

pub(crate) fn wrap(wrap_key: &[u8; 32], message_key: &[u8; 32], aad: &[u8]) -> [u8; WRAPPED_LEN] {
    let cipher = Aes256Gcm::new(wrap_key.into());
    let mut out = [0u8; WRAPPED_LEN];
    out[..32].copy_from_slice(message_key);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&WRAP_NONCE), aad, &mut out[..32])
        .expect("32 bytes is within AES-GCM limits");
    out[32..].copy_from_slice(&tag);
    out
}

pub(crate) fn unwrap(
    wrap_key: &[u8; 32],
    wrapped: &[u8; WRAPPED_LEN],
    aad: &[u8],
) -> Result<Zeroizing<[u8; 32]>> {
    let cipher = Aes256Gcm::new(wrap_key.into());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&wrapped[..32]);
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&WRAP_NONCE),
            aad,
            &mut key[..],
            Tag::from_slice(&wrapped[32..]),
        )
        .map_err(|_| Error::WrapDecrypt)?;
    Ok(key)
}

pub(crate) fn seal_payload(
    message_key: &[u8; 32],
    nonce: &[u8; 12],
    sender: &DeviceId,
    payload: &Payload,
) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(message_key.into());
    let plain = payload.encode()?;
    let mut buf = Vec::with_capacity(plain.len() + 16);
    buf.extend_from_slice(&plain);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), &payload_aad(sender), &mut buf)
        .map_err(|_| Error::TooLarge { what: "payload" })?;
    buf.extend_from_slice(&tag);
    Ok(buf)
}

pub(crate) fn open_payload(message_key: &[u8; 32], dg: &Datagram<'_>) -> Result<Payload> {
    let ct = dg.ciphertext;
    if ct.len() < 16 {
        return Err(Error::PayloadDecrypt);
    }
    let (body, tag) = ct.split_at(ct.len() - 16);
    let cipher = Aes256Gcm::new(message_key.into());
    let mut plain = Zeroizing::new(body.to_vec());
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&dg.nonce),
            &payload_aad(&dg.sender.device),
            &mut plain,
            Tag::from_slice(tag),
        )
        .map_err(|_| Error::PayloadDecrypt)?;
    Payload::decode(&plain)
}

/// Writes a datagram entry by entry (no intermediate list of entries), then
/// signs it with the sender's device key.
pub(crate) struct DatagramWriter {
    w: Writer,
    count: usize,
}

const COUNT_OFFSET: usize = 2 + DeviceCert::LEN;

impl DatagramWriter {
    /// Room is made for `capacity` entries and a payload of
    /// `ciphertext_len` bytes; the entry count is written by `finish`.
    pub(crate) fn new(sender: &DeviceCert, capacity: usize, ciphertext_len: usize) -> Self {
        let mut w = Writer::with_capacity(
            COUNT_OFFSET + 2 + capacity * ENTRY_MAX_LEN + 16 + ciphertext_len + 64,
        );
        w.u8(PROTOCOL_VERSION).u8(SUITE_V1);
        sender.write(&mut w);
        w.u16(0);
        DatagramWriter { w, count: 0 }
    }

    pub(crate) fn entry(&mut self, e: &Entry) {
        e.write(&mut self.w);
        self.count += 1;
    }

    pub(crate) fn finish(
        mut self,
        nonce: &[u8; 12],
        ciphertext: &[u8],
        sign: &ed25519_dalek::SigningKey,
    ) -> Vec<u8> {
        assert!(
            (1..=MAX_ENTRIES).contains(&self.count),
            "the caller bounds the entry count"
        );
        self.w.buf[COUNT_OFFSET..COUNT_OFFSET + 2]
            .copy_from_slice(&(self.count as u16).to_be_bytes());
        self.w.bytes(nonce).var_bytes(ciphertext);
        let signature = sign
            .sign_prehashed(prehash(&self.w.buf), Some(SIGNATURE_CONTEXT))
            .expect("the context is shorter than 255 bytes");
        self.w.bytes(&signature.to_bytes());
        self.w.buf
    }
}
