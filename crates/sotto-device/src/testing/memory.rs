//! [`MemoryStore`]: the [`Store`] in memory, for tests. Clones share one
//! state, so a test "restarts" a device by loading a new machine over a
//! clone: what was committed is there, what was not is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use sotto_proto::normalize_username;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::store::{
    Account, ChangeSet, Contact, HistoryQuery, Message, RoomMessageRow, RoomRecord, RoomSave,
    Store, StoreResult,
};

#[derive(Clone, Default)]
struct Data {
    account: Option<Account>,
    prekeys: BTreeMap<u32, Zeroizing<Vec<u8>>>,
    sessions: BTreeMap<[u8; 16], Zeroizing<Vec<u8>>>,
    contacts: BTreeMap<String, Contact>,
    blocked: BTreeSet<String>,
    /// In the order stored.
    messages: Vec<Message>,
    rooms: BTreeMap<[u8; 32], StoredRoom>,
    room_messages: BTreeMap<[u8; 32], RoomMessageRow>,
    room_names: HashMap<[u8; 32], String>,
}

#[derive(Clone)]
struct StoredRoom {
    group: [u8; 32],
    title: String,
    head: [u8; 32],
    next_expiry: Option<u64>,
    records: HashMap<[u8; 32], RoomRecord>,
}

/// The in-memory store. `Clone` shares the state.
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    fail_next: Arc<Mutex<bool>>,
}

impl MemoryStore {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next commit fail (as a full disk would), writing nothing.
    pub fn fail_next_commit(&self) {
        *self.fail_next.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}

fn apply(d: &mut Data, c: ChangeSet) {
    if let Some(a) = c.account {
        d.account = Some(a);
    }
    if let Some(a) = d.account.as_mut() {
        if let Some(u) = c.username {
            a.username = u;
        }
        if let Some(f) = c.server_fingerprint {
            a.server_fingerprint = f;
        }
        if let Some(o) = c.clock_offset_ms {
            a.clock_offset_ms = o;
        }
        if let Some(cur) = c.cursor {
            a.cursor = a.cursor.max(cur);
        }
        if let Some(n) = c.next_prekey_id {
            a.next_prekey_id = n;
        }
    }
    for (id, bytes) in c.sessions {
        match bytes {
            Some(b) => d.sessions.insert(id, b),
            None => d.sessions.remove(&id),
        };
    }
    for (id, bytes) in c.prekeys {
        match bytes {
            Some(b) => d.prekeys.insert(id, b),
            None => d.prekeys.remove(&id),
        };
    }
    for m in c.messages {
        if !d.messages.iter().any(|x| x.id == m.id) {
            d.messages.push(m);
        }
    }
    d.messages.retain(|m| !c.messages_deleted.contains(&m.id));
    if let Some(now) = c.expire_messages_at {
        d.messages
            .retain(|m| m.ttl == 0 || m.sent_at + m.ttl as u64 * 1000 > now);
    }
    for mut contact in c.contacts {
        contact.username = normalize_username(&contact.username);
        d.contacts.insert(contact.username.clone(), contact);
    }
    for (name, block) in c.blocks {
        let name = normalize_username(&name);
        if block {
            d.blocked.insert(name);
        } else {
            d.blocked.remove(&name);
        }
    }
    for r in c.rooms {
        save_room(d, r);
    }
    for m in c.room_messages {
        d.room_messages.entry(m.entry).or_insert(m);
    }
    for e in c.room_messages_deleted {
        d.room_messages.remove(&e);
    }
    for (hash, name) in c.room_names {
        d.room_names.insert(hash, name);
    }
}

fn save_room(d: &mut Data, r: RoomSave) {
    let room = d.rooms.entry(r.group).or_insert_with(|| StoredRoom {
        group: r.group,
        title: String::new(),
        head: [0; 32],
        next_expiry: None,
        records: HashMap::new(),
    });
    room.title = r.title;
    room.head = r.head;
    room.next_expiry = r.next_expiry;
    for rec in r.records {
        room.records.insert(rec.hash, rec);
    }
    for h in r.removed {
        room.records.remove(&h);
    }
}

impl Store for MemoryStore {
    fn account(&self) -> StoreResult<Option<Account>> {
        Ok(self.data().account.clone())
    }

    fn prekeys(&self) -> StoreResult<Vec<Zeroizing<Vec<u8>>>> {
        Ok(self.data().prekeys.values().cloned().collect())
    }

    fn sessions(&self) -> StoreResult<Vec<Zeroizing<Vec<u8>>>> {
        Ok(self.data().sessions.values().cloned().collect())
    }

    fn contact(&self, username: &str) -> StoreResult<Option<Contact>> {
        Ok(self
            .data()
            .contacts
            .get(&normalize_username(username))
            .cloned())
    }

    fn contacts(&self) -> StoreResult<Vec<Contact>> {
        Ok(self.data().contacts.values().cloned().collect())
    }

    fn is_blocked(&self, username: &str) -> StoreResult<bool> {
        Ok(self.data().blocked.contains(&normalize_username(username)))
    }

    fn blocked(&self) -> StoreResult<Vec<String>> {
        Ok(self.data().blocked.iter().cloned().collect())
    }

    fn has_message(&self, id: &[u8; 16]) -> StoreResult<bool> {
        Ok(self.data().messages.iter().any(|m| m.id == *id))
    }

    fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<Message>> {
        let d = self.data();
        let peer = q.peer.as_deref().map(normalize_username);
        let mut hits: Vec<(usize, &Message)> = d
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| q.conversation.is_none() || q.conversation == Some(m.conversation))
            .filter(|(_, m)| match &peer {
                None => true,
                Some(p) => m.from == *p || m.to == *p,
            })
            .collect();
        hits.sort_by_key(|(seq, m)| (m.sent_at, *seq));
        let skip = q.limit.map_or(0, |l| hits.len().saturating_sub(l));
        Ok(hits
            .into_iter()
            .skip(skip)
            .map(|(_, m)| m.clone())
            .collect())
    }

    fn rooms(&self) -> StoreResult<Vec<([u8; 32], String)>> {
        let mut out: Vec<([u8; 32], String)> = self
            .data()
            .rooms
            .values()
            .map(|r| (r.group, r.title.clone()))
            .collect();
        out.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        Ok(out)
    }

    fn rooms_due(&self, now_ms: u64) -> StoreResult<Vec<[u8; 32]>> {
        Ok(self
            .data()
            .rooms
            .values()
            .filter(|r| r.next_expiry.is_some_and(|t| t <= now_ms))
            .map(|r| r.group)
            .collect())
    }

    fn room_head(&self, group: &[u8; 32]) -> StoreResult<Option<[u8; 32]>> {
        Ok(self.data().rooms.get(group).map(|r| r.head))
    }

    fn room_records(&self, group: &[u8; 32]) -> StoreResult<Vec<RoomRecord>> {
        let mut out: Vec<RoomRecord> = self
            .data()
            .rooms
            .get(group)
            .map(|r| r.records.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by_key(|r| (r.pending, r.time, r.height, r.hash));
        Ok(out)
    }

    fn room_message(&self, entry: &[u8; 32]) -> StoreResult<Option<RoomMessageRow>> {
        Ok(self.data().room_messages.get(entry).cloned())
    }

    fn room_messages(&self, group: &[u8; 32]) -> StoreResult<Vec<RoomMessageRow>> {
        let mut out: Vec<RoomMessageRow> = self
            .data()
            .room_messages
            .values()
            .filter(|m| m.group == *group)
            .cloned()
            .collect();
        out.sort_by_key(|m| (m.sent_at, m.entry));
        Ok(out)
    }

    fn name_for_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<String>> {
        let d = self.data();
        Ok(d.room_names.get(hash).cloned().or_else(|| {
            d.contacts
                .values()
                .find(|c| c.username_hash == *hash)
                .map(|c| c.username.clone())
        }))
    }

    fn commit(&mut self, changes: ChangeSet) -> StoreResult<()> {
        if std::mem::take(&mut *self.fail_next.lock().unwrap_or_else(|e| e.into_inner())) {
            return Err(StoreError::Backend("injected commit failure".into()));
        }
        let mut d = self.data();
        // All or nothing: apply to a copy, then swap it in.
        let mut next = d.clone();
        apply(&mut next, changes);
        *d = next;
        Ok(())
    }
}
