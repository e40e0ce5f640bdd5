//! One device's protocol state: its keys, its unused prekey secrets and its
//! sessions. The state machine at the centre of sotto: callers hand it bytes,
//! randomness and verified bundles, and get bytes and opened payloads back.
//! It does no I/O; after each call the caller persists what
//! [`Device::take_changes`] reports.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as DhPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::datagram::{self, Datagram, Entry, Payload, MAX_ENTRIES};
use crate::error::{Error, Result};
use crate::keys::{
    DeviceCert, DeviceId, DeviceKey, PrekeyKind, PrekeySecret, SignedPrekey, VerifiedBundle,
};
use crate::session::{Handshake, InitInfo, Session, SessionId};

/// Sessions kept per peer device; the least recently used go first.
pub const MAX_SESSIONS_PER_PEER: usize = 4;
/// Reserve prekeys kept (the current one and its predecessor, for messages
/// in flight when it was replaced).
const RESERVES_KEPT: usize = 2;

/// What changed since the last [`Device::take_changes`]: the caller writes
/// these to its store in one transaction.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Changes {
    pub sessions_upserted: BTreeSet<SessionId>,
    pub sessions_removed: BTreeSet<SessionId>,
    pub prekeys_added: BTreeSet<u32>,
    pub prekeys_removed: BTreeSet<u32>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// A datagram opened by this device.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The sender's device certificate, verified.
    pub sender: DeviceCert,
    pub payload: Payload,
    /// The datagram's message key (AES-256-GCM key of its payload): what a
    /// room member hands over in a history grant
    /// (`room::Grant::Key`) so that another member can open the same
    /// datagram fetched by id.
    pub message_key: Zeroizing<[u8; 32]>,
}

pub struct Device {
    key: DeviceKey,
    cert: DeviceCert,
    prekeys: BTreeMap<u32, PrekeySecret>,
    sessions: HashMap<SessionId, Session>,
    /// The session used to send to each peer device.
    active: HashMap<DeviceId, SessionId>,
    next_prekey_id: u32,
    seq: u64,
    /// Counts seals, for the sessions' `sealed_by` stamp.
    seal_stamp: u64,
    changes: Changes,
}

impl Device {
    /// A device from its keys and a certificate for them.
    pub fn new(key: DeviceKey, cert: DeviceCert) -> Result<Device> {
        Device::restore(key, cert, Vec::new(), Vec::new(), 1)
    }

    /// A device from its stored state.
    pub fn restore(
        key: DeviceKey,
        cert: DeviceCert,
        prekeys: Vec<PrekeySecret>,
        sessions: Vec<Session>,
        next_prekey_id: u32,
    ) -> Result<Device> {
        cert.verify()?;
        if cert.device != key.id() || cert.dh != key.public_keys().dh {
            return Err(Error::BadCertificate);
        }
        let mut device = Device {
            key,
            cert,
            prekeys: prekeys.into_iter().map(|p| (p.id, p)).collect(),
            sessions: HashMap::new(),
            active: HashMap::new(),
            next_prekey_id,
            seq: 0,
            seal_stamp: 0,
            changes: Changes::default(),
        };
        for s in sessions {
            device.seq = device.seq.max(s.seq);
            device.sessions.insert(s.id, s);
        }
        device.rebuild_active();
        Ok(device)
    }

    fn rebuild_active(&mut self) {
        self.active.clear();
        // A session whose send chain is used up is never the one to send on.
        for s in self.sessions.values().filter(|s| !s.send.exhausted()) {
            let better = match self.active.get(&s.peer) {
                Some(cur) => self.sessions[cur].seq < s.seq,
                None => true,
            };
            if better {
                self.active.insert(s.peer, s.id);
            }
        }
    }

    pub fn id(&self) -> DeviceId {
        self.cert.device
    }

    pub fn cert(&self) -> &DeviceCert {
        &self.cert
    }

    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    pub fn next_prekey_id(&self) -> u32 {
        self.next_prekey_id
    }

    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub fn session(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id)
    }

    pub fn prekey(&self, id: u32) -> Option<&PrekeySecret> {
        self.prekeys.get(&id)
    }

    pub fn has_session(&self, peer: &DeviceId) -> bool {
        self.active.contains_key(peer)
    }

    /// Forgets every session with `peer` (e.g. a device that was removed).
    pub fn forget_peer(&mut self, peer: &DeviceId) {
        let ids: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.peer == *peer)
            .map(|s| s.id)
            .collect();
        for id in ids {
            self.remove_session(id);
        }
        self.active.remove(peer);
    }

    fn remove_session(&mut self, id: SessionId) {
        self.sessions.remove(&id);
        self.changes.sessions_upserted.remove(&id);
        self.changes.sessions_removed.insert(id);
    }

    /// `n` new one-time prekeys; their secrets stay here until used.
    pub fn generate_prekeys<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        n: u32,
    ) -> Vec<SignedPrekey> {
        (0..n)
            .map(|_| self.generate_prekey(rng, PrekeyKind::OneTime))
            .collect()
    }

    /// A new reserve prekey, replacing older ones beyond the last two.
    pub fn generate_reserve<R: RngCore + CryptoRng>(&mut self, rng: &mut R) -> SignedPrekey {
        let prekey = self.generate_prekey(rng, PrekeyKind::Reserve);
        let reserves: Vec<u32> = self
            .prekeys
            .values()
            .filter(|p| p.kind == PrekeyKind::Reserve)
            .map(|p| p.id)
            .collect();
        for id in reserves
            .iter()
            .take(reserves.len().saturating_sub(RESERVES_KEPT))
        {
            self.prekeys.remove(id);
            self.changes.prekeys_added.remove(id);
            self.changes.prekeys_removed.insert(*id);
        }
        prekey
    }

    fn generate_prekey<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        kind: PrekeyKind,
    ) -> SignedPrekey {
        let id = self.next_prekey_id;
        self.next_prekey_id = self.next_prekey_id.wrapping_add(1).max(1);
        let (public, secret) = self.key.generate_prekey(rng, id, kind);
        self.prekeys.insert(id, secret);
        self.changes.prekeys_added.insert(id);
        public
    }

    /// Starts a session with the device of a verified bundle; it becomes the
    /// session used to send to that device.
    pub fn start_session<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        bundle: &VerifiedBundle,
    ) -> Result<SessionId> {
        let b = bundle.bundle();
        let ephemeral = StaticSecret::random_from_rng(rng);
        let init = InitInfo {
            ephemeral: DhPublic::from(&ephemeral).to_bytes(),
            prekey_id: b.prekey.id,
            prekey_kind: b.prekey.kind,
        };
        let own = self.cert;
        let hs = Handshake {
            initiator: &own.device,
            initiator_dh: &own.dh,
            responder: &b.cert.device,
            responder_dh: &b.cert.dh,
            prekey_public: &b.prekey.public,
            init: &init,
        };
        self.seq += 1;
        let session = Session::initiate(&hs, &self.key.dh, &ephemeral, self.seq)?;
        let id = session.id;
        self.insert_session(session);
        Ok(id)
    }

    fn insert_session(&mut self, session: Session) {
        let (id, peer) = (session.id, session.peer);
        if !session.send.exhausted() {
            self.active.insert(peer, id);
        }
        self.sessions.insert(id, session);
        self.changes.sessions_removed.remove(&id);
        self.changes.sessions_upserted.insert(id);
        let mut of_peer: Vec<(u64, SessionId)> = self
            .sessions
            .values()
            .filter(|s| s.peer == peer)
            .map(|s| (s.seq, s.id))
            .collect();
        if of_peer.len() > MAX_SESSIONS_PER_PEER {
            of_peer.sort();
            for (_, old) in &of_peer[..of_peer.len() - MAX_SESSIONS_PER_PEER] {
                self.remove_session(*old);
            }
        }
    }

    /// Seals `payload` once and wraps its key for each device in
    /// `recipients`, each of which needs a session (see
    /// [`Device::start_session`]). Nothing changes if any is missing.
    pub fn seal<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        payload: &Payload,
        recipients: &[DeviceId],
    ) -> Result<Vec<u8>> {
        self.seal_with_key(rng, payload, recipients).map(|(d, _)| d)
    }

    /// [`Device::seal`], also returning the datagram's message key (for a
    /// room log's `LocalMeta`, so that history answers can grant it).
    pub fn seal_with_key<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        payload: &Payload,
        recipients: &[DeviceId],
    ) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>)> {
        if payload.sender != self.cert.user {
            return Err(Error::SenderMismatch);
        }
        // First pass, no change: every recipient has a session to send on
        // (an active session's send chain can always advance: see below).
        let mut sessions = Vec::with_capacity(recipients.len());
        for r in recipients {
            sessions.push(*self.active.get(r).ok_or(Error::NoSession)?);
        }
        if sessions.is_empty() {
            return Err(Error::NoRecipients);
        }
        if sessions.len() > MAX_ENTRIES {
            // Only duplicates could bring the count down to the bound.
            let unique: HashSet<&SessionId> = sessions.iter().collect();
            if unique.len() > MAX_ENTRIES {
                return Err(Error::TooLarge {
                    what: "entry count",
                });
            }
        }
        let mut message_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut message_key[..]);
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let me = self.cert.device;
        let ciphertext = datagram::seal_payload(&message_key, &nonce, &me, payload)?;
        let digest = datagram::payload_digest(&nonce, &ciphertext);
        // Second pass: one entry per distinct session (a recipient listed
        // twice is skipped by the session's seal stamp).
        self.seal_stamp += 1;
        let stamp = self.seal_stamp;
        let mut out = datagram::DatagramWriter::new(&self.cert, sessions.len(), ciphertext.len());
        let mut upserted = Vec::with_capacity(sessions.len());
        let mut used_up = Vec::new();
        for id in sessions {
            let session = self.sessions.get_mut(&id).expect("active sessions exist");
            if session.sealed_by == stamp {
                continue;
            }
            session.sealed_by = stamp;
            let (counter, wrap_key) = session.send.step()?;
            if session.send.exhausted() {
                used_up.push(session.peer);
            }
            let aad = datagram::wrap_aad(&me, &session.peer, &id, counter, &digest);
            out.entry(&Entry {
                recipient: session.peer,
                session: id,
                counter,
                init: session.pending_init,
                wrapped: datagram::wrap(&wrap_key, &message_key, &aad),
            });
            upserted.push(id);
        }
        // A session whose send chain just gave its last key stops being the
        // one to send on: the next seal to that device asks for a new session.
        for peer in used_up {
            self.active.remove(&peer);
        }
        if self.changes.sessions_upserted.is_empty() {
            // The usual case after take_changes: build the set in one go.
            self.changes.sessions_upserted = upserted.into_iter().collect();
        } else {
            self.changes.sessions_upserted.extend(upserted);
        }
        Ok((out.finish(&nonce, &ciphertext, &self.key.sign), message_key))
    }

    /// Verifies and opens a datagram addressed to this device. On any error
    /// nothing changes: no session advances and no prekey is used up.
    pub fn open(&mut self, bytes: &[u8]) -> Result<Opened> {
        let dg = Datagram::decode(bytes)?;
        dg.verify()?;
        let me = self.cert.device;
        let sender = dg.sender.device;
        let entry = dg
            .entries
            .iter()
            .find(|e| e.recipient == me)
            .ok_or(Error::NotForThisDevice)?;
        let mut used_prekey = None;
        let mut session = match self.sessions.get(&entry.session) {
            Some(s) if s.peer != sender => return Err(Error::SessionPeerMismatch),
            Some(s) => s.clone(),
            None => {
                let init = entry.init.as_ref().ok_or(Error::UnknownSession)?;
                let prekey = self
                    .prekeys
                    .get(&init.prekey_id)
                    .filter(|p| p.kind == init.prekey_kind)
                    .ok_or(Error::UnknownPrekey(init.prekey_id))?;
                let prekey_public = DhPublic::from(&prekey.secret).to_bytes();
                let hs = Handshake {
                    initiator: &sender,
                    initiator_dh: &dg.sender.dh,
                    responder: &me,
                    responder_dh: &self.cert.dh,
                    prekey_public: &prekey_public,
                    init,
                };
                if hs.session_id() != entry.session {
                    return Err(Error::Malformed { what: "session id" });
                }
                if prekey.kind == PrekeyKind::OneTime {
                    used_prekey = Some(prekey.id);
                }
                Session::respond(&hs, &self.key.dh, &prekey.secret, 0)?
            }
        };
        let wrap_key = session.recv_key(entry.counter)?;
        let aad = datagram::wrap_aad(
            &sender,
            &me,
            &entry.session,
            entry.counter,
            &dg.payload_digest(),
        );
        let message_key = datagram::unwrap(&wrap_key, &entry.wrapped, &aad)?;
        let payload = datagram::open_payload(&message_key, &dg)?;
        if payload.sender != dg.sender.user {
            return Err(Error::SenderMismatch);
        }
        // Everything checked: commit.
        session.pending_init = None;
        self.seq += 1;
        session.seq = self.seq;
        self.insert_session(session);
        if let Some(id) = used_prekey {
            self.prekeys.remove(&id);
            self.changes.prekeys_added.remove(&id);
            self.changes.prekeys_removed.insert(id);
        }
        Ok(Opened {
            sender: dg.sender,
            payload,
            message_key: Zeroizing::new(*message_key),
        })
    }

    /// The stored form of a session, for [`Changes::sessions_upserted`].
    pub fn session_bytes(&self, id: &SessionId) -> Option<Zeroizing<Vec<u8>>> {
        self.sessions.get(id).map(Session::to_bytes)
    }

    /// The stored form of a prekey secret, for [`Changes::prekeys_added`].
    pub fn prekey_bytes(&self, id: u32) -> Option<Zeroizing<Vec<u8>>> {
        self.prekeys.get(&id).map(PrekeySecret::to_bytes)
    }

    /// The signed public halves of the prekeys this device holds, oldest
    /// first (to publish them again, e.g. when a device made with no server
    /// registers with one).
    pub fn held_prekeys(&self) -> Vec<SignedPrekey> {
        let mut v: Vec<SignedPrekey> = self
            .prekeys
            .values()
            .map(|p| self.key.sign_prekey(p))
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Number of unused one-time prekey secrets held.
    pub fn one_time_prekeys(&self) -> usize {
        self.prekeys
            .values()
            .filter(|p| p.kind == PrekeyKind::OneTime)
            .count()
    }
}
