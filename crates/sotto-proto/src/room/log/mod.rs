//! [`RoomLog`]: one device's replica of a room's log, and the deterministic
//! resolution that turns the entries it holds into the room state.
//!
//! By job: this module holds the types, making entries and reading the
//! log; `ingest` takes entries in (checks, the bounded pending set);
//! `resolve` replays the resolved order and drops what non-members sent;
//! `history` answers history requests and takes answers in; `verify`
//! recomputes a stored log.

mod history;
mod ingest;
mod resolve;
mod verify;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use ed25519_dalek::VerifyingKey;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::device::Device;
use crate::keys::{DeviceCert, DeviceId, UserPublic};

use super::entry::MAX_PARENTS;
use super::entry::{Body, Draft, Entry, EntryHash, EntryKind, GroupId, MessageId, Op, RoomConfig};
use super::state::{apply, Event, Notice, RoomState};
use super::wire::MessageContent;
use super::{RejectReason, RoomError, Ttl};

pub use verify::{verify_records, Problem, VerifyFailure};

/// Most entries held while their parents are missing. When full, the
/// oldest entry of the sender holding the most is dropped.
pub const MAX_PENDING: usize = 1024;
/// Most entries one sender (user key) may have held while their parents
/// are missing; its oldest is dropped for a new one. A flood from one user
/// (or a few) cannot push out other members' entries.
pub const MAX_PENDING_PER_SENDER: usize = 128;
/// A held entry whose timestamp is this much older than the clock given to
/// [`RoomLog::expire`] is dropped (its parents never came).
pub const PENDING_MAX_AGE_MS: u64 = 7 * 86_400 * 1000;
/// A state snapshot is kept every this many resolved positions, so an entry
/// that sorts into the middle of the log replays only from the snapshot
/// before it.
const CHECKPOINT_EVERY: usize = 64;
const HEAD_CONTEXT: &[u8] = b"sotto/v1/room-head";

/// What a device keeps beside an entry, outside its hash: how to get and
/// open the datagram that carried it. Persist it with the entry bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalMeta {
    /// The datagram's message key (AES-256-GCM key of its payload).
    pub message_key: Option<[u8; 32]>,
    /// The server's id for the datagram (SHA-256 of it).
    pub datagram_id: Option<[u8; 32]>,
    /// The TTL passed: content, key and datagram id were erased.
    pub purged: bool,
}

impl LocalMeta {
    /// Fills what is missing from `other`; true when something changed.
    fn merge(&mut self, other: LocalMeta) -> bool {
        if self.purged {
            return false;
        }
        let before = (self.message_key, self.datagram_id);
        if self.message_key.is_none() {
            self.message_key = other.message_key;
        }
        if self.datagram_id.is_none() {
            self.datagram_id = other.datagram_id;
        }
        before != (self.message_key, self.datagram_id)
    }
}

/// The agreement check: `h0 = SHA-256("sotto/v1/room-head" || group)`,
/// `h(i) = SHA-256(h(i-1) || entry_hash(i))` over the entries in resolved
/// order. Two devices holding the same entries have the same head.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogHead(pub [u8; 32]);

impl core::fmt::Debug for LogHead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "LogHead(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl LogHead {
    pub fn genesis(group: &GroupId) -> LogHead {
        let mut h = Sha256::new();
        h.update(HEAD_CONTEXT);
        h.update(group.0);
        LogHead(h.finalize().into())
    }

    pub fn next(&self, entry: &EntryHash) -> LogHead {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(entry.0);
        LogHead(h.finalize().into())
    }
}

/// The resolved order sorts by this key. `time` is the entry's timestamp
/// raised to its parents' largest `time`; `height` is one more than the
/// parents' largest height (0 for the create). Both only grow along parent
/// links, so sorting by `(time, height, hash)` is a topological order, and
/// the key depends only on the entry and its ancestors: every device
/// computes the same key for an entry, whatever else it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SortKey {
    pub time: u64,
    pub height: u32,
    pub hash: EntryHash,
}

/// An entry as stored: its hash, its encoding and the local meta. What
/// [`RoomLog::records`] exports and [`verify_records`] checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    pub hash: EntryHash,
    pub bytes: Vec<u8>,
    pub meta: LocalMeta,
}

/// A record to write: its place in the resolved order (`None` while it
/// waits for parents). A store that sorts records by `(key.time,
/// key.height, hash)`, pending ones last, gives them back in resolved
/// order without rewriting the others when one sorts into the middle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: LogRecord,
    pub key: Option<SortKey>,
}

/// What changed since the last [`RoomLog::take_changes`]: records to insert
/// or replace (by hash) and records to delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogChanges {
    pub upserts: Vec<StoredRecord>,
    pub removed: Vec<EntryHash>,
}

impl LogChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removed.is_empty()
    }
}

/// An entry held because some of its parents are missing: ask its sender
/// for the history (a [`HistoryRequest`] naming this message id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInfo {
    pub entry: EntryHash,
    pub message_id: MessageId,
    pub sender: UserPublic,
    /// The username hash the entry claims (unchecked: use it only to
    /// address the request, whose delivery checks the directory).
    pub sender_name: [u8; 32],
    pub device: DeviceId,
    pub missing: Vec<EntryHash>,
}

/// What a call that takes entries in did.
#[derive(Clone, Debug, Default)]
pub struct Update {
    /// New outcomes in resolved order: control events (the notices),
    /// accepted messages ([`Event::Message`]), rejections, and entries
    /// whose outcome changed because a concurrent entry sorted before them
    /// (`revised`).
    pub notices: Vec<Notice>,
    /// Entries now held waiting for parents.
    pub pending: Vec<PendingInfo>,
    /// Entries already held (their meta was merged).
    pub duplicates: usize,
    /// Held entries dropped to make room (per-sender or total cap).
    pub evicted: Vec<EntryHash>,
    /// Rejected entries from senders who are not members, reported in
    /// `notices` and then dropped from the log (not kept, not stored).
    pub dropped: Vec<EntryHash>,
    /// Inputs refused outright (undecodable, bad signature, other group),
    /// by index in the batch. Nothing of them is kept.
    pub invalid: Vec<(usize, RoomError)>,
}

/// A message that disappears: erase its content and datagram from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub entry: EntryHash,
    pub message_id: MessageId,
    pub datagram_id: Option<[u8; 32]>,
    /// When it expired (timestamp + TTL), ms.
    pub expired_at: u64,
}

/// Who asks for history: a member (gets keys for what it was a member for)
/// or a platform administrator (gets keys for everything). The answering
/// client decides which one a requester is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    Member(UserPublic),
    PlatformAdmin,
}

/// The device sending an entry and the username hash it goes by.
#[derive(Clone, Copy)]
pub struct Author<'a> {
    pub device: &'a Device,
    pub name: [u8; 32],
}

/// An entry this device made and applied to its own log. Send `bytes`
/// (with the content, for a message) in a [`super::RoomWire::Entry`] to
/// every device of every user in `recipients`.
#[derive(Clone, Debug)]
pub struct Built {
    pub hash: EntryHash,
    pub message_id: MessageId,
    pub bytes: Vec<u8>,
    /// The members before the entry and after it, so that a removed member
    /// learns of its removal and a new member gets the entry that added it
    /// (it then asks for the history, as for any entry with missing
    /// parents). For a message, [`RoomLog::recipients`].
    pub recipients: Vec<UserPublic>,
    pub update: Update,
}

/// The result of [`RoomLog::receive_delivery`].
#[derive(Clone, Debug)]
pub struct Delivery {
    pub entry: EntryHash,
    pub update: Update,
    /// The message, checked against the entry's digest.
    pub content: Option<MessageContent>,
}

/// A message granted by a [`HistoryAnswer`] and checked against the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// Fetch `datagram_id` from the server and open it with
    /// [`super::open_with_message_key`], then [`RoomLog::receive_delivery`].
    Fetch {
        entry: EntryHash,
        datagram_id: [u8; 32],
        message_key: [u8; 32],
    },
    /// The content itself, already checked against the entry's digest.
    Content {
        entry: EntryHash,
        content: MessageContent,
    },
}

struct Node {
    entry: Entry,
    bytes: Vec<u8>,
    key: SortKey,
    meta: LocalMeta,
    /// Resolved entries naming this one as parent.
    children: u32,
}

struct Held {
    entry: Entry,
    bytes: Vec<u8>,
    meta: LocalMeta,
    missing: usize,
    /// Arrival order, for evicting the oldest.
    seq: u64,
}

#[derive(Clone)]
struct Slot {
    key: SortKey,
    event: Event,
    /// The room TTL in force at this position.
    ttl: Ttl,
    head: LogHead,
}

/// One device's replica of a room log.
///
/// Entries go in through [`RoomLog::receive`] / [`RoomLog::receive_many`]
/// (from other devices) or are made by [`RoomLog::create`],
/// [`RoomLog::propose`] and [`RoomLog::post`]. Every entry is checked on
/// its own first (decoding, certificate, signature, group); entries with
/// missing parents wait in a bounded pending set; the rest are placed in the
/// resolved order ([`SortKey`]) and the state is replayed from the first
/// position that changed.
pub struct RoomLog {
    group: GroupId,
    nodes: HashMap<EntryHash, Node>,
    /// All resolved entries, sorted.
    order: Vec<SortKey>,
    /// Outcomes of `order[..slots.len()]`.
    slots: Vec<Slot>,
    /// `checkpoints[j]`: the state before position `j * CHECKPOINT_EVERY`.
    checkpoints: Vec<Option<RoomState>>,
    /// The state after every slot.
    state: Option<RoomState>,
    heads: BTreeSet<EntryHash>,
    pending: HashMap<EntryHash, Held>,
    /// Held entries by sender, oldest first.
    pending_by: HashMap<UserPublic, BTreeSet<(u64, EntryHash)>>,
    next_seq: u64,
    /// Missing parent -> held entries waiting for it.
    waiting: HashMap<EntryHash, Vec<EntryHash>>,
    /// Certificates already verified, with their device key.
    certs: HashMap<[u8; DeviceCert::LEN], VerifyingKey>,
    /// Entries added, changed or removed since the last `take_changes`.
    dirty: HashSet<EntryHash>,
    /// Dropped entries of non-members, newest first, by sender: placed
    /// again if the sender becomes a member again. In memory only.
    aside: HashMap<UserPublic, VecDeque<(EntryHash, Node)>>,
    aside_count: usize,
}

impl RoomLog {
    /// An empty replica for `group`, waiting for entries (e.g. a device that
    /// received a message for a room it does not know yet).
    pub fn new(group: GroupId) -> RoomLog {
        RoomLog {
            group,
            nodes: HashMap::new(),
            order: Vec::new(),
            slots: Vec::new(),
            checkpoints: vec![None],
            state: None,
            heads: BTreeSet::new(),
            pending: HashMap::new(),
            pending_by: HashMap::new(),
            next_seq: 0,
            waiting: HashMap::new(),
            certs: HashMap::new(),
            dirty: HashSet::new(),
            aside: HashMap::new(),
            aside_count: 0,
        }
    }

    /// A replica from records of unknown origin (any order; pending ones
    /// included), every one checked as if it had just arrived. Records that
    /// do not verify are left out and reported in `Update::invalid`; run
    /// [`verify_records`] on the stored sequence to find the first bad one
    /// by position.
    pub fn from_records(group: GroupId, records: Vec<LogRecord>) -> (RoomLog, Update) {
        let mut log = RoomLog::new(group);
        let update = log.receive_many(records.into_iter().map(|r| (r.bytes, r.meta)));
        log.dirty.clear();
        (log, update)
    }

    /// A replica from records this device stored itself (in its encrypted
    /// store), in resolved order then the pending ones: each record is
    /// decoded and placed, but its hash, certificate and signature are not
    /// checked again (they were checked when the entry arrived, and the
    /// store is authenticated). Records that do not decode are left out and
    /// reported. [`verify_records`] (`room log --verify`) still recomputes
    /// everything on demand.
    pub fn from_stored(group: GroupId, records: Vec<LogRecord>) -> (RoomLog, Update) {
        let mut log = RoomLog::new(group);
        let mut update = Update::default();
        let mut min = None;
        for (i, r) in records.into_iter().enumerate() {
            if let Err(e) = log.ingest_trusted(r, &mut update, &mut min) {
                update.invalid.push((i, e));
            }
        }
        log.resolve(min, &mut update);
        // Keep only removals (records the store should no longer hold).
        let (nodes, pending) = (&log.nodes, &log.pending);
        log.dirty
            .retain(|h| !nodes.contains_key(h) && !pending.contains_key(h));
        (log, update)
    }

    /// Creates a room: draws the group salt and message id from `rng`,
    /// signs the create entry with the author's device and returns the new
    /// log with it applied. The author is made a member and admin under
    /// `author.name`; `config` members are sorted and deduped.
    pub fn create<R: RngCore + CryptoRng>(
        rng: &mut R,
        author: &Author<'_>,
        mut config: RoomConfig,
        now: u64,
    ) -> Result<(RoomLog, Built), RoomError> {
        let me = author.device.cert().user;
        config.members.retain(|m| m.user != me);
        config.members.push(super::Member {
            user: me,
            name: author.name,
            admin: true,
        });
        config.normalize();
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        let draft = Draft {
            group: GroupId([0; 32]),
            message_id: random_id(rng),
            parents: Vec::new(),
            sender_name: author.name,
            timestamp: now,
            body: Body::Control(Op::Create { salt, config }),
        };
        // The signature does not cover a create's group: it is derived
        // from the signed create.
        let mut entry = draft.sign(author.device.key(), author.device.cert())?;
        entry.group = GroupId::of_create(&entry);
        let mut log = RoomLog::new(entry.group);
        let built = log.commit(entry)?;
        Ok((log, built))
    }

    /// Makes, signs and applies a control entry. Refused (and nothing
    /// changes) when it would not take effect here: a non-admin's
    /// authoritative op, a non-member, a deleted room, a no-op.
    pub fn propose<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        author: &Author<'_>,
        op: Op,
        now: u64,
    ) -> Result<Built, RoomError> {
        let draft = self.draft(rng, author, Body::Control(op), now);
        let entry = draft.sign(author.device.key(), author.device.cert())?;
        let mut probe = self.state.clone();
        if let Event::Rejected { reason, .. } = apply(&mut probe, &entry) {
            return Err(RoomError::Refused(reason));
        }
        self.commit(entry)
    }

    /// Makes, signs and applies a standard entry for a message. Returns the
    /// entry and the content (with a fresh salt) to seal beside it.
    pub fn post<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        author: &Author<'_>,
        content_type: u8,
        body: Vec<u8>,
        now: u64,
    ) -> Result<(Built, MessageContent), RoomError> {
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut salt);
        let content = MessageContent {
            salt,
            content_type,
            body,
        };
        content.check()?;
        let me = author.device.cert().user;
        let refused = match &self.state {
            None => Some(RejectReason::NoRoom),
            Some(s) if s.deleted => Some(RejectReason::RoomDeleted),
            Some(s) => match s.members.get(&me) {
                None => Some(RejectReason::NotMember),
                Some(m) if m.name != author.name => Some(RejectReason::NameMismatch),
                Some(_) => None,
            },
        };
        if let Some(reason) = refused {
            return Err(RoomError::Refused(reason));
        }
        let draft = self.draft(
            rng,
            author,
            Body::Message {
                digest: content.digest(),
            },
            now,
        );
        let entry = draft.sign(author.device.key(), author.device.cert())?;
        Ok((self.commit(entry)?, content))
    }

    fn draft<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        author: &Author<'_>,
        body: Body,
        now: u64,
    ) -> Draft {
        Draft {
            group: self.group,
            message_id: random_id(rng),
            parents: self.parents_for_next(),
            sender_name: author.name,
            timestamp: now,
            body,
        }
    }

    fn commit(&mut self, entry: Entry) -> Result<Built, RoomError> {
        let message_id = entry.message_id;
        let bytes = entry.encode();
        let hash = EntryHash::of(&bytes);
        let before = self.recipients();
        let update = self.receive(&bytes, LocalMeta::default())?;
        let mut recipients = self.recipients();
        recipients.extend(before);
        recipients.sort();
        recipients.dedup();
        Ok(Built {
            hash,
            message_id,
            bytes,
            recipients,
            update,
        })
    }

    /// The parents a new entry names: the current heads, at most
    /// [`MAX_PARENTS`] (the latest in resolved order; later entries merge
    /// the rest).
    pub fn parents_for_next(&self) -> Vec<EntryHash> {
        let mut heads: Vec<SortKey> = self.heads.iter().map(|h| self.nodes[h].key).collect();
        heads.sort_unstable_by(|a, b| b.cmp(a));
        heads.truncate(MAX_PARENTS);
        heads.into_iter().map(|k| k.hash).collect()
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The room state after every resolved entry; `None` until the create
    /// entry is held.
    pub fn state(&self) -> Option<&RoomState> {
        self.state.as_ref()
    }

    /// The agreement check (see [`LogHead`]).
    pub fn head(&self) -> LogHead {
        self.slots
            .last()
            .map_or_else(|| LogHead::genesis(&self.group), |s| s.head)
    }

    /// Resolved entries (pending ones excluded).
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The entries no other entry names as parent.
    pub fn heads(&self) -> Vec<EntryHash> {
        self.heads.iter().copied().collect()
    }

    pub fn entry(&self, hash: &EntryHash) -> Option<&Entry> {
        self.nodes.get(hash).map(|n| &n.entry)
    }

    pub fn meta(&self, hash: &EntryHash) -> Option<&LocalMeta> {
        self.nodes.get(hash).map(|n| &n.meta)
    }

    /// Entries with this message id (normally one).
    pub fn find_message(&self, id: &MessageId) -> Vec<EntryHash> {
        self.order
            .iter()
            .filter(|k| self.nodes[&k.hash].entry.message_id == *id)
            .map(|k| k.hash)
            .collect()
    }

    /// Records the datagram an entry travelled in (after sealing it, or
    /// when a recovered key arrives). Ignored for purged entries.
    pub fn set_meta(&mut self, hash: &EntryHash, meta: LocalMeta) -> Result<(), RoomError> {
        let node = self.nodes.get_mut(hash).ok_or(RoomError::UnknownEntry)?;
        if !node.meta.purged {
            let before = node.meta.clone();
            node.meta.message_key = meta.message_key.or(node.meta.message_key);
            node.meta.datagram_id = meta.datagram_id.or(node.meta.datagram_id);
            if node.meta != before {
                self.dirty.insert(*hash);
            }
        }
        Ok(())
    }

    /// The whole timeline in resolved order: every entry's event.
    pub fn timeline(&self) -> Vec<Notice> {
        self.slots
            .iter()
            .map(|s| {
                let e = &self.nodes[&s.key.hash].entry;
                Notice {
                    entry: s.key.hash,
                    message_id: e.message_id,
                    by: e.sender.user,
                    at: e.timestamp,
                    event: s.event.clone(),
                    revised: false,
                }
            })
            .collect()
    }

    /// Drops every entry held for missing parents (e.g. when the pending
    /// set is full of entries whose parents never come); ask for history
    /// again to get them back.
    pub fn clear_pending(&mut self) {
        self.dirty.extend(self.pending.keys().copied());
        self.pending.clear();
        self.pending_by.clear();
        self.waiting.clear();
    }

    /// Entries held for missing parents.
    pub fn pending(&self) -> Vec<PendingInfo> {
        let mut v: Vec<PendingInfo> = self
            .pending
            .iter()
            .map(|(h, held)| PendingInfo {
                entry: *h,
                message_id: held.entry.message_id,
                sender: held.entry.sender.user,
                sender_name: held.entry.sender_name,
                device: held.entry.sender.device,
                missing: held
                    .entry
                    .parents
                    .iter()
                    .filter(|p| !self.nodes.contains_key(p))
                    .copied()
                    .collect(),
            })
            .collect();
        v.sort_by_key(|p| p.entry);
        v
    }

    /// The user keys a new message goes to: the members now (whose devices
    /// the client looks up), the sender included for its other devices.
    /// Empty once the room is deleted. Removed and departed members are not
    /// in it, so they receive nothing sent after they went.
    pub fn recipients(&self) -> Vec<UserPublic> {
        match &self.state {
            Some(s) if !s.deleted => s.members.keys().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Resolved entries in resolved order, for the store (pending ones
    /// after them, sorted by hash).
    pub fn records(&self) -> Vec<LogRecord> {
        let mut out: Vec<LogRecord> = self
            .order
            .iter()
            .map(|k| {
                let n = &self.nodes[&k.hash];
                LogRecord {
                    hash: k.hash,
                    bytes: n.bytes.clone(),
                    meta: n.meta.clone(),
                }
            })
            .collect();
        let mut held: Vec<(&EntryHash, &Held)> = self.pending.iter().collect();
        held.sort_by_key(|(h, _)| **h);
        out.extend(held.into_iter().map(|(h, held)| LogRecord {
            hash: *h,
            bytes: held.bytes.clone(),
            meta: held.meta.clone(),
        }));
        out
    }

    /// The username hash of every user the resolved log made a member, by
    /// user key: from the accepted create and the accepted adds only (a
    /// later accepted add of the same user wins). Rejected and pending
    /// entries never supply a name, so no entry can make one member show
    /// under another member's name. Removed members keep their name (their
    /// earlier messages still show under it).
    pub fn names(&self) -> HashMap<UserPublic, [u8; 32]> {
        let mut out = HashMap::new();
        for s in &self.slots {
            let body = &self.nodes[&s.key.hash].entry.body;
            match (&s.event, body) {
                (Event::Created { .. }, Body::Control(Op::Create { config, .. })) => {
                    out.extend(config.members.iter().map(|m| (m.user, m.name)));
                }
                (Event::MemberAdded(_), Body::Control(Op::AddMember { user, name })) => {
                    out.insert(*user, *name);
                }
                _ => {}
            }
        }
        out
    }

    /// Whether [`RoomLog::take_changes`] has anything to give.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The records added, changed (meta, resolved) or removed (dropped,
    /// evicted) since the last call: what to write to the store instead of
    /// the whole log. A replica from [`RoomLog::from_stored`] starts with
    /// none.
    pub fn take_changes(&mut self) -> LogChanges {
        let mut out = LogChanges::default();
        for h in self.dirty.drain() {
            if let Some(n) = self.nodes.get(&h) {
                out.upserts.push(StoredRecord {
                    record: LogRecord {
                        hash: h,
                        bytes: n.bytes.clone(),
                        meta: n.meta.clone(),
                    },
                    key: Some(n.key),
                });
            } else if let Some(held) = self.pending.get(&h) {
                out.upserts.push(StoredRecord {
                    record: LogRecord {
                        hash: h,
                        bytes: held.bytes.clone(),
                        meta: held.meta.clone(),
                    },
                    key: None,
                });
            } else {
                out.removed.push(h);
            }
        }
        out.upserts
            .sort_by_key(|r| (r.key.is_none(), r.key, r.record.hash));
        out.removed.sort();
        out
    }
    /// Recomputes hashes, signatures, parent links, the order and the head
    /// of the resolved log; reports the first bad entry or link.
    pub fn verify(&self) -> Result<LogHead, VerifyFailure> {
        let records: Vec<LogRecord> = self.records().into_iter().take(self.len()).collect();
        verify_records(&self.group, &records, Some(&self.head()))
    }

    /// Standard entries whose TTL has passed at `now` (server master clock,
    /// ms), not yet purged. A message's TTL is the room TTL in force at its
    /// position in the resolved order; `Ttl::OFF` never expires. Control
    /// entries never expire: they are the room's state and every later
    /// entry's authorisation depends on them.
    pub fn expired(&self, now: u64) -> Vec<Expiry> {
        self.slots
            .iter()
            .filter_map(|s| {
                let n = &self.nodes[&s.key.hash];
                if n.entry.kind() != EntryKind::Standard || n.meta.purged {
                    return None;
                }
                let at = n.entry.timestamp.checked_add(s.ttl.millis()?)?;
                (at <= now).then_some(Expiry {
                    entry: s.key.hash,
                    message_id: n.entry.message_id,
                    datagram_id: n.meta.datagram_id,
                    expired_at: at,
                })
            })
            .collect()
    }

    /// [`RoomLog::expired`], and erases their message keys and datagram ids
    /// here (marking them purged). The caller erases the contents and
    /// ciphertexts from its store. The signed entries stay as tombstones
    /// (sender, time, salted digest), so the log still verifies.
    ///
    /// Held entries whose parents did not come within
    /// [`PENDING_MAX_AGE_MS`] of their timestamp are dropped too.
    pub fn expire(&mut self, now: u64) -> Vec<Expiry> {
        let out = self.expired(now);
        for e in &out {
            if let Some(n) = self.nodes.get_mut(&e.entry) {
                n.meta = LocalMeta {
                    message_key: None,
                    datagram_id: None,
                    purged: true,
                };
                self.dirty.insert(e.entry);
            }
        }
        let stale: Vec<EntryHash> = self
            .pending
            .iter()
            .filter(|(_, h)| h.entry.timestamp.saturating_add(PENDING_MAX_AGE_MS) < now)
            .map(|(h, _)| *h)
            .collect();
        for h in stale {
            self.unhold(&h);
        }
        out
    }

    /// When the next message expires ([`RoomLog::expired`]), if one will.
    pub fn next_expiry(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|s| {
                let n = &self.nodes[&s.key.hash];
                if n.entry.kind() != EntryKind::Standard || n.meta.purged {
                    return None;
                }
                n.entry.timestamp.checked_add(s.ttl.millis()?)
            })
            .min()
    }
}

fn random_id<R: RngCore + CryptoRng>(rng: &mut R) -> MessageId {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}
