//! [`RoomLog`]: one device's replica of a room's log, and the deterministic
//! resolution that turns the entries it holds into the room state.

use std::collections::{BTreeSet, HashMap, HashSet};

use ed25519_dalek::VerifyingKey;
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::datagram::Payload;
use crate::device::Device;
use crate::error::Error;
use crate::keys::{DeviceCert, DeviceId, UserPublic};

use super::entry::{
    Body, Draft, Entry, EntryHash, EntryKind, GroupId, MessageId, Op, RoomConfig, MAX_PARENTS,
};
use super::state::{apply, Event, Notice, RoomState};
use super::wire::{
    Grant, HistoryAnswer, HistoryRequest, MessageContent, ANSWER_BUDGET, MAX_ANSWER_ENTRIES,
};
use super::{RejectReason, RoomError, Ttl};

/// Most entries held while their parents are missing.
pub const MAX_PENDING: usize = 1024;
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
    fn merge(&mut self, other: LocalMeta) {
        if self.purged {
            return;
        }
        if self.message_key.is_none() {
            self.message_key = other.message_key;
        }
        if self.datagram_id.is_none() {
            self.datagram_id = other.datagram_id;
        }
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

/// An entry held because some of its parents are missing: ask its sender
/// for the history (a [`HistoryRequest`] naming this message id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInfo {
    pub entry: EntryHash,
    pub message_id: MessageId,
    pub sender: UserPublic,
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
}

struct Held {
    entry: Entry,
    bytes: Vec<u8>,
    meta: LocalMeta,
    missing: usize,
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
    /// Missing parent -> held entries waiting for it.
    waiting: HashMap<EntryHash, Vec<EntryHash>>,
    /// Certificates already verified, with their device key.
    certs: HashMap<[u8; DeviceCert::LEN], VerifyingKey>,
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
            waiting: HashMap::new(),
            certs: HashMap::new(),
        }
    }

    /// A replica from stored records (any order; pending ones included).
    /// Records that no longer verify are left out and reported in
    /// `Update::invalid`; run [`verify_records`] on the stored sequence to
    /// find the first bad one by position.
    pub fn from_records(group: GroupId, records: Vec<LogRecord>) -> (RoomLog, Update) {
        let mut log = RoomLog::new(group);
        let update = log.receive_many(records.into_iter().map(|r| (r.bytes, r.meta)));
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
        let group = GroupId::derive(&me, &salt);
        let mut log = RoomLog::new(group);
        let draft = Draft {
            group,
            message_id: random_id(rng),
            parents: Vec::new(),
            sender_name: author.name,
            timestamp: now,
            body: Body::Control(Op::Create { salt, config }),
        };
        let built = log.commit(draft.sign(author.device.key(), author.device.cert())?)?;
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

    /// Takes in one encoded entry from anywhere (a delivery, an answer, the
    /// store). Refused entries are an error and leave no trace.
    pub fn receive(&mut self, bytes: &[u8], meta: LocalMeta) -> Result<Update, RoomError> {
        let mut update = Update::default();
        let mut min = None;
        self.ingest(bytes, meta, &mut update, &mut min)?;
        self.resolve(min, &mut update);
        Ok(update)
    }

    /// Takes in many entries and resolves once (how a new device applies a
    /// whole log). Refused ones are listed in `Update::invalid`.
    pub fn receive_many<B: AsRef<[u8]>>(
        &mut self,
        items: impl IntoIterator<Item = (B, LocalMeta)>,
    ) -> Update {
        let mut update = Update::default();
        let mut min = None;
        for (i, (bytes, meta)) in items.into_iter().enumerate() {
            if let Err(e) = self.ingest(bytes.as_ref(), meta, &mut update, &mut min) {
                update.invalid.push((i, e));
            }
        }
        self.resolve(min, &mut update);
        update
    }

    /// Takes in a [`super::RoomWire::Entry`] that arrived in `payload`,
    /// opened from a datagram signed by `sender`. Checks the bindings the
    /// datagram adds: the payload names this room and the entry's message
    /// id, the datagram comes from the entry's own device, and the content
    /// (required for a standard entry, refused for a control entry) matches
    /// the entry's digest.
    pub fn receive_delivery(
        &mut self,
        sender: &DeviceCert,
        payload: &Payload,
        entry_bytes: &[u8],
        content: Option<MessageContent>,
        meta: LocalMeta,
    ) -> Result<Delivery, RoomError> {
        let entry = Entry::decode(entry_bytes)?;
        if payload.conversation != self.group.0 || entry.group != self.group {
            return Err(RoomError::WrongGroup);
        }
        if payload.message_id != entry.message_id {
            return Err(RoomError::Mismatch { what: "message id" });
        }
        if sender.device != entry.sender.device || payload.sender != entry.sender.user {
            return Err(RoomError::Mismatch { what: "sender" });
        }
        check_content(&entry, content.as_ref())?;
        let update = self.receive(entry_bytes, meta)?;
        Ok(Delivery {
            entry: EntryHash::of(entry_bytes),
            update,
            content,
        })
    }

    fn ingest(
        &mut self,
        bytes: &[u8],
        meta: LocalMeta,
        update: &mut Update,
        min: &mut Option<SortKey>,
    ) -> Result<(), RoomError> {
        let hash = EntryHash::of(bytes);
        if let Some(node) = self.nodes.get_mut(&hash) {
            node.meta.merge(meta);
            update.duplicates += 1;
            return Ok(());
        }
        if let Some(held) = self.pending.get_mut(&hash) {
            held.meta.merge(meta);
            update.duplicates += 1;
            return Ok(());
        }
        let entry = Entry::decode(bytes)?;
        if entry.group != self.group {
            return Err(RoomError::WrongGroup);
        }
        entry.check_standalone()?;
        let cert_bytes: [u8; DeviceCert::LEN] =
            entry
                .sender
                .encode()
                .try_into()
                .map_err(|_| Error::Malformed {
                    what: "certificate",
                })?;
        let key = match self.certs.get(&cert_bytes) {
            Some(k) => *k,
            None => {
                entry.sender.verify()?;
                let k =
                    VerifyingKey::from_bytes(&entry.sender.device.0).map_err(|_| Error::BadKey)?;
                self.certs.insert(cert_bytes, k);
                k
            }
        };
        entry.verify_with(&key, bytes)?;
        let missing: Vec<EntryHash> = entry
            .parents
            .iter()
            .filter(|p| !self.nodes.contains_key(p))
            .copied()
            .collect();
        if missing.is_empty() {
            self.add_node(hash, entry, bytes.to_vec(), meta, min);
            self.release(hash, min);
            return Ok(());
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(RoomError::PendingFull);
        }
        for m in &missing {
            self.waiting.entry(*m).or_default().push(hash);
        }
        update.pending.push(PendingInfo {
            entry: hash,
            message_id: entry.message_id,
            sender: entry.sender.user,
            device: entry.sender.device,
            missing: missing.clone(),
        });
        self.pending.insert(
            hash,
            Held {
                entry,
                bytes: bytes.to_vec(),
                meta,
                missing: missing.len(),
            },
        );
        Ok(())
    }

    /// Moves held entries whose last missing parent is `arrived` into the
    /// log, transitively.
    fn release(&mut self, arrived: EntryHash, min: &mut Option<SortKey>) {
        let mut stack = vec![arrived];
        while let Some(h) = stack.pop() {
            let Some(children) = self.waiting.remove(&h) else {
                continue;
            };
            for c in children {
                let ready = match self.pending.get_mut(&c) {
                    Some(held) => {
                        held.missing -= 1;
                        held.missing == 0
                    }
                    None => false,
                };
                if ready {
                    let held = self.pending.remove(&c).expect("held");
                    self.add_node(c, held.entry, held.bytes, held.meta, min);
                    stack.push(c);
                }
            }
        }
    }

    fn add_node(
        &mut self,
        hash: EntryHash,
        entry: Entry,
        bytes: Vec<u8>,
        meta: LocalMeta,
        min: &mut Option<SortKey>,
    ) {
        let mut time = entry.timestamp;
        let mut height = 0u32;
        for p in &entry.parents {
            let pk = self.nodes[p].key;
            time = time.max(pk.time);
            height = height.max(pk.height.saturating_add(1));
            self.heads.remove(p);
        }
        let key = SortKey { time, height, hash };
        self.heads.insert(hash);
        let at = self.order.partition_point(|k| *k < key);
        self.order.insert(at, key);
        match min {
            Some(m) if *m <= key => {}
            _ => *min = Some(key),
        }
        self.nodes.insert(
            hash,
            Node {
                entry,
                bytes,
                key,
                meta,
            },
        );
    }

    /// Replays the resolved order from the first position at or after
    /// `min`, reporting outcomes that are new or changed.
    fn resolve(&mut self, min: Option<SortKey>, update: &mut Update) {
        // Report as pending only what is still held at the end of the call.
        update
            .pending
            .retain(|p| self.pending.contains_key(&p.entry));
        let Some(min) = min else { return };
        let start = self.order.partition_point(|k| *k < min);
        let (pos, mut state) = if start >= self.slots.len() {
            // Only appended: carry on from the current state.
            (self.slots.len(), self.state.take())
        } else {
            let j = (start / CHECKPOINT_EVERY).min(self.checkpoints.len() - 1);
            self.checkpoints.truncate(j + 1);
            (j * CHECKPOINT_EVERY, self.checkpoints[j].clone())
        };
        let old: HashMap<EntryHash, Event> = self
            .slots
            .drain(pos..)
            .map(|s| (s.key.hash, s.event))
            .collect();
        let mut head = self
            .slots
            .last()
            .map_or_else(|| LogHead::genesis(&self.group), |s| s.head);
        for i in pos..self.order.len() {
            if i % CHECKPOINT_EVERY == 0 && i / CHECKPOINT_EVERY == self.checkpoints.len() {
                self.checkpoints.push(state.clone());
            }
            let key = self.order[i];
            let node = &self.nodes[&key.hash];
            let ttl = state.as_ref().map_or(Ttl::OFF, |s| s.ttl);
            let event = apply(&mut state, &node.entry);
            head = head.next(&key.hash);
            let revised = match old.get(&key.hash) {
                Some(e) if *e == event => None,
                Some(_) => Some(true),
                None => Some(false),
            };
            if let Some(revised) = revised {
                update.notices.push(Notice {
                    entry: key.hash,
                    message_id: node.entry.message_id,
                    by: node.entry.sender.user,
                    at: node.entry.timestamp,
                    event: event.clone(),
                    revised,
                });
            }
            self.slots.push(Slot {
                key,
                event,
                ttl,
                head,
            });
        }
        self.state = state;
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
            node.meta.message_key = meta.message_key.or(node.meta.message_key);
            node.meta.datagram_id = meta.datagram_id.or(node.meta.datagram_id);
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
        self.pending.clear();
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
    pub fn expire(&mut self, now: u64) -> Vec<Expiry> {
        let out = self.expired(now);
        for e in &out {
            if let Some(n) = self.nodes.get_mut(&e.entry) {
                n.meta = LocalMeta {
                    message_key: None,
                    datagram_id: None,
                    purged: true,
                };
            }
        }
        out
    }

    /// Answers a [`HistoryRequest`] (an unknown-message request, or a
    /// recovery by a new or lagging device): every resolved entry the
    /// requester does not hold (all but the ancestors of its `have` heads),
    /// in resolved order; and a grant for each of those standard entries the
    /// requester is entitled to: accepted while it was a member (or sent by
    /// it), or all of them for a platform admin. A grant carries the message
    /// key and datagram id when this device has them, else the content
    /// `content` gives (verified by the requester against the signed
    /// digest), else nothing. Refused for a user who was never a member.
    ///
    /// The answer is a prefix of the resolved order that fits one datagram
    /// ([`ANSWER_BUDGET`] bytes, [`MAX_ANSWER_ENTRIES`] entries); when more
    /// remain, `more` is set and the requester asks again with its new
    /// heads.
    pub fn answer(
        &self,
        request: &HistoryRequest,
        requester: Requester,
        content: impl FnMut(&EntryHash) -> Option<MessageContent>,
    ) -> Result<HistoryAnswer, RoomError> {
        self.answer_within(request, requester, content, ANSWER_BUDGET)
    }

    /// [`RoomLog::answer`] with an encoded-size budget of `max_bytes`
    /// (at least one entry is always included).
    pub fn answer_within(
        &self,
        request: &HistoryRequest,
        requester: Requester,
        mut content: impl FnMut(&EntryHash) -> Option<MessageContent>,
        max_bytes: usize,
    ) -> Result<HistoryAnswer, RoomError> {
        if request.group != self.group {
            return Err(RoomError::WrongGroup);
        }
        // What the requester holds: its heads' ancestors.
        let mut known: HashSet<EntryHash> = HashSet::new();
        let mut stack: Vec<EntryHash> = request
            .have
            .iter()
            .filter(|h| self.nodes.contains_key(h))
            .copied()
            .collect();
        while let Some(h) = stack.pop() {
            if known.insert(h) {
                stack.extend(self.nodes[&h].entry.parents.iter().copied());
            }
        }
        let mut state: Option<RoomState> = None;
        let mut ever_member = requester == Requester::PlatformAdmin;
        let mut entries = Vec::new();
        let mut grants = Vec::new();
        let mut used = 0usize;
        let mut more = false;
        for k in &self.order {
            let n = &self.nodes[&k.hash];
            let entitled = match requester {
                Requester::PlatformAdmin => true,
                Requester::Member(u) => {
                    n.entry.sender.user == u || state.as_ref().is_some_and(|s| s.is_member(&u))
                }
            };
            let event = apply(&mut state, &n.entry);
            if let Requester::Member(u) = requester {
                ever_member |= state.as_ref().is_some_and(|s| s.is_member(&u));
            }
            if more || known.contains(&k.hash) {
                continue;
            }
            // An entry goes with its grant, or not at all: the requester
            // will not ask again for an entry it holds.
            let grant = if event != Event::Message || !entitled || n.meta.purged {
                None
            } else {
                match (n.meta.message_key, n.meta.datagram_id) {
                    (Some(message_key), Some(datagram_id)) => Some(Grant::Key {
                        entry: k.hash,
                        datagram_id,
                        message_key,
                    }),
                    _ => content(&k.hash).map(|c| Grant::Content {
                        entry: k.hash,
                        content: c,
                    }),
                }
            };
            let size = 4 + n.bytes.len() + grant.as_ref().map_or(0, Grant::encoded_len);
            if !entries.is_empty()
                && (used + size > max_bytes || entries.len() >= MAX_ANSWER_ENTRIES)
            {
                more = true;
                continue;
            }
            used += size;
            entries.push(n.bytes.clone());
            grants.extend(grant);
        }
        if !ever_member {
            return Err(RoomError::NotEntitled);
        }
        Ok(HistoryAnswer {
            group: self.group,
            more,
            entries,
            grants,
        })
    }

    /// Takes in a [`HistoryAnswer`]: its entries (as [`RoomLog::receive_many`])
    /// and its grants, each checked against an accepted standard entry (and
    /// its digest, for content). Key grants are recorded in the entry's
    /// meta; the client fetches and opens those datagrams.
    pub fn receive_answer(&mut self, answer: &HistoryAnswer) -> (Update, Vec<Recovered>) {
        if answer.group != self.group {
            let mut u = Update::default();
            u.invalid.push((0, RoomError::WrongGroup));
            return (u, Vec::new());
        }
        let mut update = self.receive_many(
            answer
                .entries
                .iter()
                .map(|b| (b.as_slice(), LocalMeta::default())),
        );
        let base = answer.entries.len();
        let mut out = Vec::new();
        for (i, g) in answer.grants.iter().enumerate() {
            let hash = match g {
                Grant::Key { entry, .. } | Grant::Content { entry, .. } => *entry,
            };
            let Some(n) = self.nodes.get_mut(&hash) else {
                update.invalid.push((base + i, RoomError::UnknownEntry));
                continue;
            };
            if n.meta.purged {
                continue;
            }
            match g {
                Grant::Key {
                    datagram_id,
                    message_key,
                    ..
                } => {
                    if n.entry.kind() != EntryKind::Standard {
                        update
                            .invalid
                            .push((base + i, RoomError::Mismatch { what: "grant kind" }));
                        continue;
                    }
                    n.meta.merge(LocalMeta {
                        message_key: Some(*message_key),
                        datagram_id: Some(*datagram_id),
                        purged: false,
                    });
                    out.push(Recovered::Fetch {
                        entry: hash,
                        datagram_id: *datagram_id,
                        message_key: *message_key,
                    });
                }
                Grant::Content { content, .. } => match check_content(&n.entry, Some(content)) {
                    Ok(()) => out.push(Recovered::Content {
                        entry: hash,
                        content: content.clone(),
                    }),
                    Err(e) => update.invalid.push((base + i, e)),
                },
            }
        }
        (update, out)
    }

    /// Checks message content against the digest of the standard entry
    /// `hash` (e.g. after opening a fetched datagram).
    pub fn check_content(
        &self,
        hash: &EntryHash,
        content: &MessageContent,
    ) -> Result<(), RoomError> {
        let n = self.nodes.get(hash).ok_or(RoomError::UnknownEntry)?;
        check_content(&n.entry, Some(content))
    }
}

fn check_content(entry: &Entry, content: Option<&MessageContent>) -> Result<(), RoomError> {
    match (&entry.body, content) {
        (Body::Message { digest }, Some(c)) if c.digest() == *digest => Ok(()),
        (Body::Control(_), None) => Ok(()),
        _ => Err(RoomError::Mismatch {
            what: "message content",
        }),
    }
}

fn random_id<R: RngCore + CryptoRng>(rng: &mut R) -> MessageId {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}

/// What [`verify_records`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The stored hash is not SHA-256 of the stored bytes.
    HashMismatch,
    /// The bytes do not decode.
    Undecodable(Error),
    /// Certificate or signature does not verify, or the entry is invalid on
    /// its own.
    Invalid(Error),
    /// The entry belongs to another room.
    WrongGroup,
    /// A parent is not among the records before it.
    MissingParent(EntryHash),
    /// The entry does not sort after the one before it.
    OutOfOrder,
    /// The recomputed head is not the stored one.
    HeadMismatch,
}

/// The first bad entry or link found by [`verify_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// Index in the records (`records.len()` for a head mismatch).
    pub position: usize,
    pub entry: Option<EntryHash>,
    pub problem: Problem,
}

impl core::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "entry {}: ", self.position)?;
        match &self.problem {
            Problem::HashMismatch => write!(f, "stored hash does not match its bytes"),
            Problem::Undecodable(e) => write!(f, "does not decode: {e}"),
            Problem::Invalid(e) => write!(f, "does not verify: {e}"),
            Problem::WrongGroup => write!(f, "belongs to another room"),
            Problem::MissingParent(p) => write!(f, "parent {p:?} is not before it"),
            Problem::OutOfOrder => write!(f, "out of the resolved order"),
            Problem::HeadMismatch => write!(f, "log head does not match"),
        }
    }
}

/// Walks a stored log (resolved order, as [`RoomLog::records`] gives it)
/// and recomputes everything: each entry's hash, decoding, certificate and
/// signature, group, that each parent comes earlier, that the order is the
/// resolved order, and the head (compared with `expected` if given).
/// Returns the head, or the first failure.
pub fn verify_records(
    group: &GroupId,
    records: &[LogRecord],
    expected: Option<&LogHead>,
) -> Result<LogHead, VerifyFailure> {
    let mut keys: HashMap<EntryHash, SortKey> = HashMap::with_capacity(records.len());
    let mut certs: HashMap<[u8; DeviceCert::LEN], VerifyingKey> = HashMap::new();
    let mut head = LogHead::genesis(group);
    let mut prev: Option<SortKey> = None;
    for (position, r) in records.iter().enumerate() {
        let fail = |problem| VerifyFailure {
            position,
            entry: Some(r.hash),
            problem,
        };
        if EntryHash::of(&r.bytes) != r.hash {
            return Err(fail(Problem::HashMismatch));
        }
        let entry = Entry::decode(&r.bytes).map_err(|e| fail(Problem::Undecodable(e)))?;
        if entry.group != *group {
            return Err(fail(Problem::WrongGroup));
        }
        entry
            .check_standalone()
            .map_err(|e| fail(Problem::Invalid(e)))?;
        let cert_bytes: [u8; DeviceCert::LEN] = entry
            .sender
            .encode()
            .try_into()
            .map_err(|_| fail(Problem::Invalid(Error::BadCertificate)))?;
        let key = match certs.get(&cert_bytes) {
            Some(k) => *k,
            None => {
                entry
                    .sender
                    .verify()
                    .map_err(|e| fail(Problem::Invalid(e)))?;
                let k = VerifyingKey::from_bytes(&entry.sender.device.0)
                    .map_err(|_| fail(Problem::Invalid(Error::BadKey)))?;
                certs.insert(cert_bytes, k);
                k
            }
        };
        entry
            .verify_with(&key, &r.bytes)
            .map_err(|e| fail(Problem::Invalid(e)))?;
        let mut time = entry.timestamp;
        let mut height = 0u32;
        for p in &entry.parents {
            let pk = keys
                .get(p)
                .ok_or_else(|| fail(Problem::MissingParent(*p)))?;
            time = time.max(pk.time);
            height = height.max(pk.height.saturating_add(1));
        }
        let key = SortKey {
            time,
            height,
            hash: r.hash,
        };
        if prev.is_some_and(|p| p >= key) {
            return Err(fail(Problem::OutOfOrder));
        }
        prev = Some(key);
        keys.insert(r.hash, key);
        head = head.next(&r.hash);
    }
    if let Some(e) = expected {
        if *e != head {
            return Err(VerifyFailure {
                position: records.len(),
                entry: None,
                problem: Problem::HeadMismatch,
            });
        }
    }
    Ok(head)
}
