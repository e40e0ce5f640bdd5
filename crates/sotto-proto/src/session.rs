//! Pairwise sessions between two devices.
//!
//! A one-time (or reserve) prekey seeds a session with three X25519
//! agreements (see docs/protocol.md, "Sessions"). The session holds one
//! symmetric hash ratchet per direction: every message takes the next key of
//! the sender's chain, and the chain key moves forward, so a captured session
//! state reveals no earlier message key. Keys for messages that arrive out of
//! order are kept, bounded, and erased once used.

use std::collections::BTreeMap;

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::keys::{DeviceId, PrekeyKind};

/// How far ahead of the next expected message a counter may jump.
pub const MAX_SKIP: u32 = 2_000;
/// How many skipped-over message keys one session keeps at most; the oldest
/// are erased first (a message that late is refused as [`Error::Replay`]).
pub const MAX_SKIPPED_KEYS: usize = 2_000;

/// Identifies a session to both of its devices.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct SessionId(pub [u8; 16]);

/// A chain of message keys for one direction.
#[derive(Clone)]
pub(crate) struct Chain {
    key: Zeroizing<[u8; 32]>,
    index: u32,
}

/// `HMAC-SHA-256(key, label)` for both labels, sharing the keyed state.
fn hmac_pair(key: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    let tag = |mut m: Hmac<Sha256>, label: u8| {
        m.update(&[label]);
        Zeroizing::new(<[u8; 32]>::from(m.finalize().into_bytes()))
    };
    (tag(mac.clone(), 1), tag(mac, 2))
}

impl Chain {
    /// No further message key can be taken (the index would overflow).
    pub(crate) fn exhausted(&self) -> bool {
        self.index == u32::MAX
    }

    /// Returns the key for message `index` and moves the chain forward:
    /// message key = HMAC(CK, 0x01), next CK = HMAC(CK, 0x02).
    pub(crate) fn step(&mut self) -> Result<(u32, Zeroizing<[u8; 32]>)> {
        let index = self.index;
        let next = index.checked_add(1).ok_or(Error::TooFarAhead)?;
        let (message_key, next_key) = hmac_pair(&self.key);
        self.key = next_key;
        self.index = next;
        Ok((index, message_key))
    }
}

/// What the initiator repeats in each entry until the responder answers, so
/// the responder can derive the session from whichever message arrives first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitInfo {
    pub ephemeral: [u8; 32],
    pub prekey_id: u32,
    pub prekey_kind: PrekeyKind,
}

impl InitInfo {
    /// `00`, or `01 | 32 ephemeral | u32 prekey id | u8 prekey kind`: the
    /// one encoding of an optional init, in datagram entries and in stored
    /// sessions.
    pub(crate) fn write_optional(init: Option<&InitInfo>, w: &mut Writer) {
        match init {
            None => w.u8(0),
            Some(init) => w
                .u8(1)
                .bytes(&init.ephemeral)
                .u32(init.prekey_id)
                .u8(init.prekey_kind as u8),
        };
    }

    /// Reads what [`InitInfo::write_optional`] wrote; an unknown flag is
    /// malformed `what`.
    pub(crate) fn read_optional(
        r: &mut Reader<'_>,
        what: &'static str,
    ) -> Result<Option<InitInfo>> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(InitInfo {
                ephemeral: r.array()?,
                prekey_id: r.u32()?,
                prekey_kind: PrekeyKind::from_u8(r.u8()?)?,
            })),
            _ => Err(Error::Malformed { what }),
        }
    }
}

/// The two sides' public inputs to a session, named from the initiator.
pub(crate) struct Handshake<'a> {
    pub initiator: &'a DeviceId,
    pub initiator_dh: &'a [u8; 32],
    pub responder: &'a DeviceId,
    pub responder_dh: &'a [u8; 32],
    pub prekey_public: &'a [u8; 32],
    pub init: &'a InitInfo,
}

impl Handshake<'_> {
    pub(crate) fn session_id(&self) -> SessionId {
        let mut h = Sha256::new();
        h.update(b"sotto/v1/session-id");
        h.update(self.initiator.0);
        h.update(self.responder.0);
        h.update(self.init.ephemeral);
        h.update(self.init.prekey_id.to_be_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        SessionId(id)
    }

    /// Turns the three agreements into the two chain keys.
    fn chains(&self, dh: [&[u8; 32]; 3]) -> (Chain, Chain) {
        let mut ikm = Zeroizing::new([0u8; 96]);
        for (i, d) in dh.iter().enumerate() {
            ikm[i * 32..(i + 1) * 32].copy_from_slice(*d);
        }
        let mut info = Vec::with_capacity(32 * 6 + 5);
        info.extend_from_slice(&self.initiator.0);
        info.extend_from_slice(&self.responder.0);
        info.extend_from_slice(self.initiator_dh);
        info.extend_from_slice(self.responder_dh);
        info.extend_from_slice(&self.init.ephemeral);
        info.extend_from_slice(self.prekey_public);
        info.extend_from_slice(&self.init.prekey_id.to_be_bytes());
        info.push(self.init.prekey_kind as u8);
        let hk = Hkdf::<Sha256>::new(Some(b"sotto/v1/session"), &ikm[..]);
        let mut okm = Zeroizing::new([0u8; 64]);
        hk.expand(&info, &mut okm[..])
            .expect("64 bytes is a valid HKDF-SHA256 length");
        let mut a = Zeroizing::new([0u8; 32]);
        let mut b = Zeroizing::new([0u8; 32]);
        a.copy_from_slice(&okm[..32]);
        b.copy_from_slice(&okm[32..]);
        (Chain { key: a, index: 0 }, Chain { key: b, index: 0 })
    }
}

fn agree(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&DhPublic::from(*public));
    if !shared.was_contributory() {
        return Err(Error::BadKey);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// A pairwise session as one of its two devices holds it.
#[derive(Clone)]
pub struct Session {
    pub(crate) id: SessionId,
    pub(crate) peer: DeviceId,
    pub(crate) send: Chain,
    pub(crate) recv: Chain,
    pub(crate) skipped: BTreeMap<u32, Zeroizing<[u8; 32]>>,
    /// Set on the initiator until the first message from the responder.
    pub(crate) pending_init: Option<InitInfo>,
    /// Recency: the session most recently created or received on is the one
    /// used to send to its peer.
    pub(crate) seq: u64,
    /// The last seal that wrote an entry on this session (not stored): lets
    /// a seal skip duplicate recipients without a set of its own.
    pub(crate) sealed_by: u64,
}

impl Session {
    /// The initiator's side: `ephemeral` is fresh and dropped after this call.
    pub(crate) fn initiate(
        hs: &Handshake<'_>,
        own_dh: &StaticSecret,
        ephemeral: &StaticSecret,
        seq: u64,
    ) -> Result<Session> {
        let dh1 = agree(own_dh, hs.prekey_public)?;
        let dh2 = agree(ephemeral, hs.responder_dh)?;
        let dh3 = agree(ephemeral, hs.prekey_public)?;
        let (i2r, r2i) = hs.chains([&dh1, &dh2, &dh3]);
        Ok(Session {
            id: hs.session_id(),
            peer: *hs.responder,
            send: i2r,
            recv: r2i,
            skipped: BTreeMap::new(),
            pending_init: Some(*hs.init),
            seq,
            sealed_by: 0,
        })
    }

    /// The responder's side, from its device secret and the prekey secret.
    pub(crate) fn respond(
        hs: &Handshake<'_>,
        own_dh: &StaticSecret,
        prekey: &StaticSecret,
        seq: u64,
    ) -> Result<Session> {
        let dh1 = agree(prekey, hs.initiator_dh)?;
        let dh2 = agree(own_dh, &hs.init.ephemeral)?;
        let dh3 = agree(prekey, &hs.init.ephemeral)?;
        let (i2r, r2i) = hs.chains([&dh1, &dh2, &dh3]);
        Ok(Session {
            id: hs.session_id(),
            peer: *hs.initiator,
            send: r2i,
            recv: i2r,
            skipped: BTreeMap::new(),
            pending_init: None,
            seq,
            sealed_by: 0,
        })
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn peer(&self) -> DeviceId {
        self.peer
    }

    /// The key for message `counter` from the peer. Erases it from the
    /// session; a second call for the same counter is a replay. Callers run
    /// this on a copy and keep the copy only if the message then opens.
    pub(crate) fn recv_key(&mut self, counter: u32) -> Result<Zeroizing<[u8; 32]>> {
        if counter < self.recv.index {
            return self.skipped.remove(&counter).ok_or(Error::Replay);
        }
        if counter - self.recv.index > MAX_SKIP {
            return Err(Error::TooFarAhead);
        }
        while self.recv.index < counter {
            let (i, key) = self.recv.step()?;
            self.skipped.insert(i, key);
            if self.skipped.len() > MAX_SKIPPED_KEYS {
                self.skipped.pop_first();
            }
        }
        Ok(self.recv.step()?.1)
    }

    /// Serialises the session (its secrets included) for the encrypted store.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(160 + self.skipped.len() * 36);
        w.u8(1).bytes(&self.id.0).bytes(&self.peer.0);
        w.bytes(&self.send.key[..]).u32(self.send.index);
        w.bytes(&self.recv.key[..]).u32(self.recv.index);
        w.u64(self.seq);
        InitInfo::write_optional(self.pending_init.as_ref(), &mut w);
        w.u16(self.skipped.len() as u16);
        for (i, key) in &self.skipped {
            w.u32(*i).bytes(&key[..]);
        }
        Zeroizing::new(std::mem::take(&mut w.buf))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Session> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != 1 {
            return Err(Error::UnknownVersion(version));
        }
        let id = SessionId(r.array()?);
        let peer = DeviceId(r.array()?);
        let send = Chain {
            key: Zeroizing::new(r.array()?),
            index: r.u32()?,
        };
        let recv = Chain {
            key: Zeroizing::new(r.array()?),
            index: r.u32()?,
        };
        let seq = r.u64()?;
        let pending_init = InitInfo::read_optional(&mut r, "session")?;
        let n = r.u16()? as usize;
        if n > MAX_SKIPPED_KEYS {
            return Err(Error::TooLarge {
                what: "skipped keys",
            });
        }
        let mut skipped = BTreeMap::new();
        for _ in 0..n {
            skipped.insert(r.u32()?, Zeroizing::new(r.array()?));
        }
        r.finish()?;
        Ok(Session {
            id,
            peer,
            send,
            recv,
            skipped,
            pending_init,
            seq,
            sealed_by: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain {
            key: Zeroizing::new([7; 32]),
            index: 0,
        }
    }

    fn session() -> Session {
        Session {
            id: SessionId([1; 16]),
            peer: DeviceId([2; 32]),
            send: chain(),
            recv: chain(),
            skipped: BTreeMap::new(),
            pending_init: None,
            seq: 0,
            sealed_by: 0,
        }
    }

    #[test]
    fn chain_keys_differ_per_step_and_from_chain_key() {
        let mut c = chain();
        let (i0, k0) = c.step().unwrap();
        let (i1, k1) = c.step().unwrap();
        assert_eq!((i0, i1), (0, 1));
        assert_ne!(*k0, *k1);
        assert_ne!(*k1, *c.key);
    }

    #[test]
    fn receive_keys_match_send_keys_in_any_order_once() {
        let mut sender = chain();
        let keys: Vec<_> = (0..5).map(|_| sender.step().unwrap().1).collect();
        let mut s = session();
        for i in [3u32, 0, 4, 1, 2] {
            assert_eq!(*s.recv_key(i).unwrap(), *keys[i as usize]);
        }
        for i in 0..5 {
            assert_eq!(s.recv_key(i).err(), Some(Error::Replay));
        }
        assert!(s.skipped.is_empty());
    }

    #[test]
    fn skipping_is_bounded() {
        let mut s = session();
        assert_eq!(s.recv_key(MAX_SKIP + 1).err(), Some(Error::TooFarAhead));
        assert!(s.recv_key(MAX_SKIP).is_ok());
        assert_eq!(s.skipped.len(), MAX_SKIPPED_KEYS.min(MAX_SKIP as usize));
    }

    #[test]
    fn session_bytes_round_trip_and_reject_garbage() {
        let mut s = session();
        s.recv_key(3).unwrap();
        s.pending_init = Some(InitInfo {
            ephemeral: [9; 32],
            prekey_id: 4,
            prekey_kind: PrekeyKind::Reserve,
        });
        let bytes = s.to_bytes();
        let back = Session::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        for len in 0..bytes.len() {
            assert!(Session::from_bytes(&bytes[..len]).is_err());
        }
    }
}
