//! Taking entries in: each is checked on its own (decoding, group,
//! certificate, signature), then placed in the resolved order, or held in
//! the bounded pending set while parents are missing.

use std::collections::BTreeSet;

use ed25519_dalek::VerifyingKey;

use crate::datagram::Payload;
use crate::error::Error;
use crate::keys::DeviceCert;

use super::super::entry::{Entry, EntryHash};
use super::super::wire::MessageContent;
use super::super::RoomError;
use super::history::check_content;
use super::{
    Delivery, Held, LocalMeta, LogRecord, Node, PendingInfo, RoomLog, SortKey, Update, MAX_PENDING,
    MAX_PENDING_PER_SENDER,
};

impl RoomLog {
    /// Takes in one encoded entry from anywhere (a delivery, an answer).
    /// Refused entries are an error and leave no trace.
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

    /// Takes in a [`super::super::RoomWire::Entry`] that arrived in `payload`,
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

    /// Merges the meta of an entry already held; true when it was held.
    fn merge_held(&mut self, hash: &EntryHash, meta: LocalMeta, update: &mut Update) -> bool {
        let changed = if let Some(node) = self.nodes.get_mut(hash) {
            node.meta.merge(meta)
        } else if let Some(held) = self.pending.get_mut(hash) {
            held.meta.merge(meta)
        } else {
            return false;
        };
        if changed {
            self.dirty.insert(*hash);
        }
        update.duplicates += 1;
        true
    }

    pub(super) fn ingest(
        &mut self,
        bytes: &[u8],
        meta: LocalMeta,
        update: &mut Update,
        min: &mut Option<SortKey>,
    ) -> Result<(), RoomError> {
        let hash = EntryHash::of(bytes);
        if self.merge_held(&hash, meta.clone(), update) {
            return Ok(());
        }
        if let Some(node) = self.take_aside(&hash) {
            // Dropped before, checked then: placed again.
            self.place(hash, node.entry, node.bytes, node.meta, update, min);
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
        self.place(hash, entry, bytes.to_vec(), meta, update, min);
        Ok(())
    }

    /// [`RoomLog::ingest`] for a record this device stored: decoded, not
    /// verified again (see [`RoomLog::from_stored`]).
    pub(super) fn ingest_trusted(
        &mut self,
        r: LogRecord,
        update: &mut Update,
        min: &mut Option<SortKey>,
    ) -> Result<(), RoomError> {
        if self.merge_held(&r.hash, r.meta.clone(), update) {
            return Ok(());
        }
        let entry = Entry::decode(&r.bytes)?;
        if entry.group != self.group {
            return Err(RoomError::WrongGroup);
        }
        self.place(r.hash, entry, r.bytes, r.meta, update, min);
        Ok(())
    }

    /// Adds a checked entry to the log, or holds it while parents are
    /// missing.
    pub(super) fn place(
        &mut self,
        hash: EntryHash,
        entry: Entry,
        bytes: Vec<u8>,
        meta: LocalMeta,
        update: &mut Update,
        min: &mut Option<SortKey>,
    ) {
        self.dirty.insert(hash);
        // A parent that was dropped (a non-member's entry someone built on)
        // is placed again first.
        for p in &entry.parents {
            if !self.nodes.contains_key(p) {
                if let Some(node) = self.take_aside(p) {
                    self.place(*p, node.entry, node.bytes, node.meta, update, min);
                }
            }
        }
        let missing: Vec<EntryHash> = entry
            .parents
            .iter()
            .filter(|p| !self.nodes.contains_key(p))
            .copied()
            .collect();
        if missing.is_empty() {
            self.add_node(hash, entry, bytes, meta, min);
            self.release(hash, update, min);
            return;
        }
        let sender = entry.sender.user;
        let own = self.pending_by.get(&sender).map_or(0, BTreeSet::len);
        let victim = if own >= MAX_PENDING_PER_SENDER {
            self.oldest_of(&sender)
        } else if self.pending.len() >= MAX_PENDING {
            // The oldest entry of whoever holds the most.
            let top = self
                .pending_by
                .iter()
                .max_by_key(|(u, set)| (set.len(), **u))
                .map(|(u, _)| *u);
            top.and_then(|u| self.oldest_of(&u))
        } else {
            None
        };
        if let Some(v) = victim {
            self.unhold(&v);
            update.evicted.push(v);
        }
        for m in &missing {
            self.waiting.entry(*m).or_default().push(hash);
        }
        update.pending.push(PendingInfo {
            entry: hash,
            message_id: entry.message_id,
            sender,
            sender_name: entry.sender_name,
            device: entry.sender.device,
            missing: missing.clone(),
        });
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending_by
            .entry(sender)
            .or_default()
            .insert((seq, hash));
        self.pending.insert(
            hash,
            Held {
                entry,
                bytes,
                meta,
                missing: missing.len(),
                seq,
            },
        );
    }

    fn oldest_of(&self, sender: &crate::keys::UserPublic) -> Option<EntryHash> {
        self.pending_by
            .get(sender)
            .and_then(|s| s.first())
            .map(|(_, h)| *h)
    }

    /// Drops a held entry (evicted, expired); it is deleted from the store.
    pub(super) fn unhold(&mut self, hash: &EntryHash) {
        let Some(held) = self.pending.remove(hash) else {
            return;
        };
        self.dirty.insert(*hash);
        let sender = held.entry.sender.user;
        if let Some(set) = self.pending_by.get_mut(&sender) {
            set.remove(&(held.seq, *hash));
            if set.is_empty() {
                self.pending_by.remove(&sender);
            }
        }
        for p in &held.entry.parents {
            if let Some(list) = self.waiting.get_mut(p) {
                list.retain(|h| h != hash);
                if list.is_empty() {
                    self.waiting.remove(p);
                }
            }
        }
    }

    /// Places the held entries whose last missing parent was `arrived`
    /// (each then releases its own children).
    fn release(&mut self, arrived: EntryHash, update: &mut Update, min: &mut Option<SortKey>) {
        let Some(children) = self.waiting.remove(&arrived) else {
            return;
        };
        for c in children {
            let ready = match self.pending.get_mut(&c) {
                Some(held) => {
                    held.missing -= 1;
                    held.missing == 0
                }
                None => false,
            };
            if !ready {
                continue;
            }
            let Some(held) = self.pending.remove(&c) else {
                continue;
            };
            let sender = held.entry.sender.user;
            if let Some(set) = self.pending_by.get_mut(&sender) {
                set.remove(&(held.seq, c));
                if set.is_empty() {
                    self.pending_by.remove(&sender);
                }
            }
            // Placed as if it had just arrived: a parent dropped meanwhile
            // is placed again, or the entry waits again.
            self.place(c, held.entry, held.bytes, held.meta, update, min);
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
            let parent = self.nodes.get_mut(p).expect("parent held");
            parent.children += 1;
            time = time.max(parent.key.time);
            height = height.max(parent.key.height.saturating_add(1));
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
                children: 0,
            },
        );
    }

    /// Removes a resolved entry no other entry names as parent (its parents
    /// become heads again when it was their last child). The caller replays.
    pub(super) fn remove_leaf(&mut self, hash: &EntryHash) -> Option<Node> {
        let node = self.nodes.remove(hash)?;
        debug_assert_eq!(node.children, 0);
        self.dirty.insert(*hash);
        self.heads.remove(hash);
        for p in &node.entry.parents {
            if let Some(parent) = self.nodes.get_mut(p) {
                parent.children = parent.children.saturating_sub(1);
                if parent.children == 0 {
                    self.heads.insert(*p);
                }
            }
        }
        if let Ok(at) = self.order.binary_search(&node.key) {
            self.order.remove(at);
        }
        Some(node)
    }

    /// Takes a set-aside entry back, if it is there.
    fn take_aside(&mut self, hash: &EntryHash) -> Option<Node> {
        let (user, at) = self
            .aside
            .iter()
            .find_map(|(u, l)| l.iter().position(|(h, _)| h == hash).map(|i| (*u, i)))?;
        let list = self.aside.get_mut(&user)?;
        let (_, node) = list.remove(at)?;
        self.aside_count -= 1;
        if list.is_empty() {
            self.aside.remove(&user);
        }
        Some(node)
    }

    /// Keeps a dropped entry in memory only (bounded like the pending set:
    /// per sender, then in all, newest kept), so that if its sender becomes
    /// a member again it is placed again and this replica agrees with one
    /// that never dropped it.
    pub(super) fn set_aside(&mut self, hash: EntryHash, node: Node) {
        let sender = node.entry.sender.user;
        let list = self.aside.entry(sender).or_default();
        list.push_front((hash, node));
        self.aside_count += 1;
        if list.len() > MAX_PENDING_PER_SENDER {
            list.pop_back();
            self.aside_count -= 1;
        }
        while self.aside_count > MAX_PENDING {
            let top = self
                .aside
                .iter()
                .max_by_key(|(u, l)| (l.len(), **u))
                .map(|(u, _)| *u);
            let Some(u) = top else { break };
            if let Some(l) = self.aside.get_mut(&u) {
                l.pop_back();
                self.aside_count -= 1;
                if l.is_empty() {
                    self.aside.remove(&u);
                }
            }
        }
    }
}
