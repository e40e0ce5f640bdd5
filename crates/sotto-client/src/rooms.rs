//! Secure rooms on this device: the commands (create, send, show, search,
//! set, leave, log, recover) over the sans-IO `sotto_proto::room::RoomLog`.
//! Delivery, the unknown-message requests and history answers live in
//! `room_sync.rs`.
//!
//! A room's log is stored in the encrypted store as its records (signed
//! entries in resolved order, each with the message key and datagram id
//! it travelled with) and its head; message contents are stored beside
//! them until their TTL passes (then deleted, not hidden). Member usernames
//! travel only as hashes in the log: a device learns the names behind them
//! from its contacts and from a names hint (content type [`ROOM_NAMES`])
//! sent with each create and add, which checks itself (a name is kept only
//! under its own hash).

use std::collections::HashMap;

use rand_core::OsRng;
use serde::Serialize;
use sotto_api::username_hash;
use sotto_proto::room::{
    verify_records, Author, Body, Entry, EntryHash, EntryKind, Event, GroupId, LocalMeta, LogHead,
    LogRecord, Member, MessageContent, Notice, Op, Problem, RoomConfig, RoomError, RoomLog, Ttl,
};
use sotto_proto::{content, UserPublic};
use sotto_store::client::{RoomMessageRow, RoomRecord};

use crate::{check_username, Client, Error, Result};

/// Client content type of a names hint: `01 | u16 n | n x name`, the
/// usernames behind a room's member hashes.
pub const ROOM_NAMES: u8 = 5;

/// Per-client room state that is not in the store: work queued during a
/// sync, and the test clock shift.
#[derive(Default)]
pub(crate) struct RoomRuntime {
    pub(crate) outbox: Vec<crate::room_sync::Outgoing>,
    /// Added to the master clock for room times (test hook).
    pub(crate) clock_shift_ms: i64,
    /// Username hashes room datagrams are not sent to (test hook).
    pub(crate) drop_to: Vec<[u8; 32]>,
    /// Logs kept between the datagrams of one sync, so that a batch of
    /// messages for a room verifies its log once. Each cached log equals
    /// the stored one (it is saved after every change); loading takes it
    /// out, so a log changed elsewhere is never read stale, and it is
    /// dropped whenever the device state is reloaded from the store.
    pub(crate) cache: std::sync::Mutex<HashMap<[u8; 32], RoomLog>>,
    pub(crate) caching: bool,
}

impl RoomRuntime {
    pub(crate) fn cache_on(&mut self, on: bool) {
        self.caching = on;
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A room as `sotto rooms` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomSummary {
    /// Hex group id.
    pub id: String,
    pub title: String,
    /// `off`, `1 hour`, `1 day`, ...
    pub ttl: String,
    pub ttl_seconds: u32,
    pub members: usize,
    /// This user is a member (false after leaving or removal).
    pub member: bool,
    pub deleted: bool,
}

/// A member as `room show` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomMemberView {
    pub name: String,
    pub admin: bool,
}

/// One line of a room's timeline: a message or a notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomLine {
    /// Hex message id.
    pub id: String,
    /// Master-clock ms.
    pub at: u64,
    pub from: String,
    /// `message` or `notice`.
    pub kind: &'static str,
    pub text: String,
}

/// What `room show` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub ttl: String,
    pub ttl_seconds: u32,
    /// Admins first.
    pub members: Vec<RoomMemberView>,
    pub deleted: bool,
    /// Hex log head (the same on every device holding the same entries).
    pub head: String,
    pub entries: usize,
    pub lines: Vec<RoomLine>,
}

/// One entry of `room log`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomLogLine {
    pub position: usize,
    /// Hex entry hash.
    pub entry: String,
    pub message_id: String,
    pub from: String,
    pub at: u64,
    /// `authoritative`, `non-authoritative` or `standard`.
    pub kind: &'static str,
    /// The entry's event (`message`, a notice, `discarded: ...`).
    pub event: String,
}

/// What `room log` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoomLogReport {
    pub id: String,
    /// Hex stored head.
    pub head: String,
    pub entries: Vec<RoomLogLine>,
    /// With `--verify`: `None` when the chain checks, else the first bad
    /// link.
    pub broken: Option<String>,
}

/// What `room set` changes (applied in this order, all or nothing).
#[derive(Clone, Debug, Default)]
pub struct RoomChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub ttl: Option<Ttl>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub admin: Vec<String>,
    pub unadmin: Vec<String>,
    pub delete: bool,
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::Authoritative => "authoritative",
        EntryKind::NonAuthoritative => "non-authoritative",
        EntryKind::Standard => "standard",
    }
}

/// The username hash of every user the log mentions (members at create,
/// added members, senders), by user key.
pub(crate) fn member_names(log: &RoomLog) -> HashMap<UserPublic, [u8; 32]> {
    let mut out = HashMap::new();
    for r in log.records() {
        let Ok(e) = Entry::decode(&r.bytes) else {
            continue;
        };
        out.insert(e.sender.user, e.sender_name);
        match &e.body {
            Body::Control(Op::Create { config, .. }) => {
                for m in &config.members {
                    out.insert(m.user, m.name);
                }
            }
            Body::Control(Op::AddMember { user, name }) => {
                out.insert(*user, *name);
            }
            _ => {}
        }
    }
    out
}

pub(crate) fn to_records(log: &RoomLog) -> Vec<RoomRecord> {
    let resolved = log.len();
    log.records()
        .into_iter()
        .enumerate()
        .map(|(i, r)| RoomRecord {
            hash: r.hash.0,
            bytes: r.bytes,
            message_key: r.meta.message_key,
            datagram_id: r.meta.datagram_id,
            purged: r.meta.purged,
            pending: i >= resolved,
        })
        .collect()
}

fn from_record(r: RoomRecord) -> LogRecord {
    LogRecord {
        hash: EntryHash(r.hash),
        bytes: r.bytes,
        meta: LocalMeta {
            message_key: r.message_key,
            datagram_id: r.datagram_id,
            purged: r.purged,
        },
    }
}

impl Client {
    /// The master clock for room times (entry timestamps, TTL expiry).
    pub(crate) async fn room_now(&self) -> Result<u64> {
        let now = self.api.now().await? as i64;
        Ok((now + self.rooms.clock_shift_ms).max(0) as u64)
    }

    fn room_now_offline(&self) -> u64 {
        (self.api.now_offline() as i64 + self.rooms.clock_shift_ms).max(0) as u64
    }

    /// Test hook: moves this client's room clock (server clock + offset)
    /// forward by `ms`, e.g. past a room TTL.
    #[doc(hidden)]
    pub fn shift_room_clock(&mut self, ms: i64) {
        self.rooms.clock_shift_ms += ms;
    }

    /// Test hook: overwrites the stored bytes of log record `pos` of a room.
    #[doc(hidden)]
    pub fn tamper_room_record(&self, room: &str, pos: usize, bytes: &[u8]) -> Result<bool> {
        let group = self.find_room(room)?;
        Ok(self.store.tamper_room_record(&group.0, pos, bytes)?)
    }

    /// Test hook: the stored log records of a room (hash, encoded entry).
    #[doc(hidden)]
    pub fn room_records(&self, room: &str) -> Result<Vec<(EntryHash, Vec<u8>)>> {
        let group = self.find_room(room)?;
        Ok(self
            .store
            .room_records(&group.0)?
            .into_iter()
            .map(|r| (EntryHash(r.hash), r.bytes))
            .collect())
    }

    /// Test hook: the bodies of the room messages held in the store.
    #[doc(hidden)]
    pub fn room_stored_bodies(&self, room: &str) -> Result<Vec<String>> {
        let group = self.find_room(room)?;
        Ok(self
            .store
            .room_messages(&group.0)?
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect())
    }

    /// The room's log as stored (`None` for an unknown room).
    pub(crate) fn load_room(&self, group: &GroupId) -> Result<Option<RoomLog>> {
        let cached = self
            .rooms
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group.0);
        if cached.is_some() {
            return Ok(cached);
        }
        let records = self.store.room_records(&group.0)?;
        if records.is_empty() {
            return Ok(None);
        }
        let (log, _) =
            RoomLog::from_records(*group, records.into_iter().map(from_record).collect());
        Ok(Some(log))
    }

    /// Keeps a log (already saved) for the next datagram of this sync.
    pub(crate) fn keep_room(&self, log: RoomLog) {
        if self.rooms.caching {
            self.rooms
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(log.group().0, log);
        }
    }

    pub(crate) fn save_room(&mut self, log: &RoomLog) -> Result<()> {
        let title = log.state().map(|s| s.title.clone()).unwrap_or_default();
        // Every message not yet purged, with when it expires.
        let next = log.expired(u64::MAX).iter().map(|e| e.expired_at).min();
        self.store.save_room(
            &log.group().0,
            &title,
            &log.head().0,
            &to_records(log),
            next,
        )?;
        Ok(())
    }

    /// The room a user means: a hex group id, or a title (exact, then
    /// ignoring case). A title shared by several rooms is an error listing
    /// their ids.
    pub(crate) fn find_room(&self, name: &str) -> Result<GroupId> {
        let rooms = self.store.rooms()?;
        if let Some(id) = sotto_api::hex32(name.trim()) {
            if rooms.iter().any(|(g, _)| *g == id) {
                return Ok(GroupId(id));
            }
        }
        let mut hits: Vec<&[u8; 32]> = rooms
            .iter()
            .filter(|(_, t)| t == name)
            .map(|(g, _)| g)
            .collect();
        if hits.is_empty() {
            hits = rooms
                .iter()
                .filter(|(_, t)| t.to_lowercase() == name.to_lowercase())
                .map(|(g, _)| g)
                .collect();
        }
        match hits.as_slice() {
            [] => Err(Error::UnknownRoom(name.to_string())),
            [one] => Ok(GroupId(**one)),
            many => Err(Error::AmbiguousRoom {
                title: name.to_string(),
                ids: many.iter().map(hex::encode).collect(),
            }),
        }
    }

    fn open_room(&self, name: &str) -> Result<RoomLog> {
        let group = self.find_room(name)?;
        self.load_room(&group)?
            .ok_or_else(|| Error::UnknownRoom(name.to_string()))
    }

    fn author_name(&self) -> Result<[u8; 32]> {
        Ok(username_hash(self.require_username()?))
    }

    /// A display name for a user of the room.
    pub(crate) fn display_name(
        &self,
        names: &HashMap<UserPublic, [u8; 32]>,
        user: &UserPublic,
    ) -> String {
        if *user == self.device.cert().user && !self.username.is_empty() {
            return self.username.clone();
        }
        if let Some(hash) = names.get(user) {
            if let Ok(Some(n)) = self.store.name_for_hash(hash) {
                return n;
            }
        }
        format!("user-{}", &hex::encode(user.0)[..8])
    }

    pub(crate) fn render(&self, log: &RoomLog, notices: &[Notice]) -> Vec<String> {
        let names = member_names(log);
        let title = log.state().map(|s| s.title.clone()).unwrap_or_default();
        notices
            .iter()
            .filter_map(|n| {
                let line = match n.event {
                    // A message shows as "from: text" when its content is here.
                    Event::Message => {
                        let row = self.store.room_message_by_entry(&n.entry.0).ok()??;
                        format!(
                            "{}: {}",
                            self.display_name(&names, &n.by),
                            String::from_utf8_lossy(&row.body)
                        )
                    }
                    _ => n.render(|u| self.display_name(&names, u))?,
                };
                Some(format!("[{title}] {line}"))
            })
            .collect()
    }

    /// Resolves usernames to room members (user key from the directory,
    /// TOFU-checked against contacts) and records their names.
    async fn resolve_members(
        &mut self,
        usernames: &[String],
    ) -> Result<Vec<(UserPublic, [u8; 32])>> {
        let mut out = Vec::new();
        for u in usernames {
            let name = check_username(u).map_err(|_| Error::UnknownUser(u.clone()))?;
            let (user, _) = self.resolve(&name).await?;
            let hash = username_hash(&name);
            self.store.put_room_name(&hash, &name)?;
            out.push((user, hash));
        }
        Ok(out)
    }

    // ------------------------------------------------------------------
    // Commands
    // ------------------------------------------------------------------

    /// Creates a room with this user as admin, `members` (usernames) as
    /// members and `admins` (usernames, made members too) as further
    /// admins, and sends the create entry to every member device.
    pub async fn room_create(
        &mut self,
        title: &str,
        description: &str,
        ttl: Ttl,
        members: &[String],
        admins: &[String],
    ) -> Result<RoomSummary> {
        let _guard = self.begin().await?;
        let me = self.require_username()?.to_string();
        let mut all: Vec<String> = members
            .iter()
            .chain(admins)
            .map(|m| m.trim().to_lowercase())
            .collect();
        all.retain(|m| !m.is_empty() && *m != me);
        all.sort();
        all.dedup();
        let admins: Vec<String> = admins.iter().map(|a| a.trim().to_lowercase()).collect();
        let resolved = self.resolve_members(&all).await?;
        let config = RoomConfig {
            title: title.to_string(),
            description: description.to_string(),
            ttl,
            members: resolved
                .iter()
                .zip(&all)
                .map(|((user, name), username)| Member {
                    user: *user,
                    name: *name,
                    admin: admins.contains(username),
                })
                .collect(),
        };
        let now = self.room_now().await?;
        let author = Author {
            device: &self.device,
            name: self.author_name()?,
        };
        let (mut log, built) =
            RoomLog::create(&mut OsRng, &author, config, now).map_err(room_error)?;
        let mut names: Vec<String> = all.clone();
        names.push(me);
        self.send_names(&log, &built.recipients, &names).await?;
        self.send_entry(&mut log, &built, None).await?;
        self.save_room(&log)?;
        Ok(self.summary(&log))
    }

    fn summary(&self, log: &RoomLog) -> RoomSummary {
        let me = self.device.cert().user;
        let st = log.state();
        RoomSummary {
            id: hex::encode(log.group().0),
            title: st.map(|s| s.title.clone()).unwrap_or_default(),
            ttl: st.map(|s| s.ttl.to_string()).unwrap_or_default(),
            ttl_seconds: st.map(|s| s.ttl.0).unwrap_or(0),
            members: st.map(|s| s.members.len()).unwrap_or(0),
            member: st.is_some_and(|s| s.is_member(&me)),
            deleted: st.is_some_and(|s| s.deleted),
        }
    }

    /// The rooms on this device (known state only), by title.
    pub fn rooms(&self) -> Result<Vec<RoomSummary>> {
        let mut out = Vec::new();
        for (g, _) in self.store.rooms()? {
            if let Some(log) = self.load_room(&GroupId(g))? {
                if log.state().is_some() {
                    out.push(self.summary(&log));
                }
            }
        }
        Ok(out)
    }

    /// Sends a text message to the room: one datagram to every device of
    /// every current member (and this user's other devices).
    pub async fn room_send(&mut self, room: &str, text: &str) -> Result<RoomLine> {
        let _guard = self.begin().await?;
        let mut log = self.open_room(room)?;
        let now = self.room_now().await?;
        let author = Author {
            device: &self.device,
            name: self.author_name()?,
        };
        let (built, content) = log
            .post(
                &mut OsRng,
                &author,
                content::TEXT,
                text.as_bytes().to_vec(),
                now,
            )
            .map_err(|e| refused(&log, e))?;
        // Kept before sending: if the send fails, the entry is still in this
        // log, and members get it with a history answer once a later entry
        // names it as a parent.
        self.store_content(&log, &built.hash, &content)?;
        self.save_room(&log)?;
        self.send_entry(&mut log, &built, Some(content)).await?;
        self.save_room(&log)?;
        Ok(RoomLine {
            id: hex::encode(built.message_id),
            at: now,
            from: self.username.clone(),
            kind: "message",
            text: text.to_string(),
        })
    }

    pub(crate) fn store_content(
        &self,
        log: &RoomLog,
        entry: &EntryHash,
        c: &MessageContent,
    ) -> Result<()> {
        let Some(e) = log.entry(entry) else {
            return Ok(());
        };
        self.store.put_room_message(&RoomMessageRow {
            entry: entry.0,
            group: log.group().0,
            sender: e.sender.user.0,
            sent_at: e.timestamp,
            content_type: c.content_type,
            salt: c.salt,
            body: c.body.clone(),
        })?;
        Ok(())
    }

    /// Deletes the content of messages whose TTL passed (master clock) in
    /// one room; true if anything was purged.
    fn purge_room(&mut self, log: &mut RoomLog) -> Result<bool> {
        let now = self.room_now_offline();
        let expired = log.expire(now);
        for e in &expired {
            self.store.delete_room_message(&e.entry.0)?;
        }
        Ok(!expired.is_empty())
    }

    /// TTL purge of every room with a message due (after each sync).
    pub(crate) fn purge_rooms(&mut self) -> Result<()> {
        for g in self.store.rooms_due(self.room_now_offline())? {
            if let Some(mut log) = self.load_room(&GroupId(g))? {
                if self.purge_room(&mut log)? {
                    self.save_room(&log)?;
                }
            }
        }
        Ok(())
    }

    fn lines(&self, log: &RoomLog) -> Result<Vec<RoomLine>> {
        let names = member_names(log);
        let contents: HashMap<[u8; 32], RoomMessageRow> = self
            .store
            .room_messages(&log.group().0)?
            .into_iter()
            .map(|m| (m.entry, m))
            .collect();
        let mut out = Vec::new();
        for n in log.timeline() {
            let from = self.display_name(&names, &n.by);
            let text = match &n.event {
                Event::Message => match contents.get(&n.entry.0) {
                    Some(c) => String::from_utf8_lossy(&c.body).into_owned(),
                    None => continue,
                },
                _ => match n.render(|u| self.display_name(&names, u)) {
                    Some(t) => t,
                    None => continue,
                },
            };
            out.push(RoomLine {
                id: hex::encode(n.message_id),
                at: n.at,
                from,
                kind: if n.event == Event::Message {
                    "message"
                } else {
                    "notice"
                },
                text,
            });
        }
        Ok(out)
    }

    /// Title, description, TTL, members (admins first) and the timeline.
    pub fn room_show(&mut self, room: &str) -> Result<RoomView> {
        let mut log = self.open_room(room)?;
        if self.purge_room(&mut log)? {
            self.save_room(&log)?;
        }
        let names = member_names(&log);
        let st = log
            .state()
            .ok_or_else(|| Error::UnknownRoom(room.to_string()))?;
        let mut members: Vec<RoomMemberView> = st
            .members_admins_first()
            .iter()
            .map(|(u, m)| RoomMemberView {
                name: self.display_name(&names, u),
                admin: m.admin,
            })
            .collect();
        // Admins first, then by name.
        members.sort_by(|a, b| (!a.admin, &a.name).cmp(&(!b.admin, &b.name)));
        Ok(RoomView {
            id: hex::encode(log.group().0),
            title: st.title.clone(),
            description: st.description.clone(),
            ttl: st.ttl.to_string(),
            ttl_seconds: st.ttl.0,
            members,
            deleted: st.deleted,
            head: hex::encode(log.head().0),
            entries: log.len(),
            lines: self.lines(&log)?,
        })
    }

    /// Messages of the room's local history containing `query` (ignoring
    /// case).
    pub fn room_search(&mut self, room: &str, query: &str) -> Result<Vec<RoomLine>> {
        let view = self.room_show(room)?;
        let q = query.to_lowercase();
        Ok(view
            .lines
            .into_iter()
            .filter(|l| l.kind == "message" && l.text.to_lowercase().contains(&q))
            .collect())
    }

    /// Applies `changes` (admins only, all or nothing) and sends each
    /// entry. Returns the notices. A change that would not take effect
    /// (not an admin, not a member, nothing to change) is refused before
    /// anything is signed or sent.
    pub async fn room_set(&mut self, room: &str, changes: &RoomChanges) -> Result<Vec<String>> {
        let _guard = self.begin().await?;
        let mut log = self.open_room(room)?;
        let mut ops = Vec::new();
        if let Some(t) = &changes.title {
            ops.push(Op::SetTitle(t.clone()));
        }
        if let Some(d) = &changes.description {
            ops.push(Op::SetDescription(d.clone()));
        }
        if let Some(t) = changes.ttl {
            ops.push(Op::SetTtl(t));
        }
        let added = self.resolve_members(&changes.add).await?;
        for (user, name) in &added {
            ops.push(Op::AddMember {
                user: *user,
                name: *name,
            });
        }
        let names = member_names(&log);
        let user_of = |who: &String| -> Result<UserPublic> {
            let hash = username_hash(&who.trim().to_lowercase());
            names
                .iter()
                .find(|(_, h)| **h == hash)
                .map(|(u, _)| *u)
                .ok_or_else(|| Error::RoomRefused(format!("{who} is not a member of this room")))
        };
        for r in &changes.remove {
            ops.push(Op::RemoveMember(user_of(r)?));
        }
        for a in &changes.admin {
            ops.push(Op::GrantAdmin(user_of(a)?));
        }
        for a in &changes.unadmin {
            ops.push(Op::RevokeAdmin(user_of(a)?));
        }
        if changes.delete {
            ops.push(Op::Delete);
        }
        if ops.is_empty() {
            return Err(Error::RoomRefused(
                "nothing to change: pass --title, --description, --ttl, --add, --remove, --admin, --unadmin or --delete"
                    .into(),
            ));
        }
        self.propose_all(&mut log, ops, &changes.add).await
    }

    /// Leaves the room (a non-authoritative entry, sent to every member).
    pub async fn room_leave(&mut self, room: &str) -> Result<Vec<String>> {
        let _guard = self.begin().await?;
        let mut log = self.open_room(room)?;
        self.propose_all(&mut log, vec![Op::Leave], &[]).await
    }

    async fn propose_all(
        &mut self,
        log: &mut RoomLog,
        ops: Vec<Op>,
        added: &[String],
    ) -> Result<Vec<String>> {
        let now = self.room_now().await?;
        let author = Author {
            device: &self.device,
            name: self.author_name()?,
        };
        // Propose on the in-memory log: a refusal leaves the store as it
        // was, and nothing is sent.
        let mut built = Vec::new();
        for op in ops {
            built.push(
                log.propose(&mut OsRng, &author, op, now)
                    .map_err(|e| refused(log, e))?,
            );
        }
        let mut lines = Vec::new();
        if !added.is_empty() {
            let mut names = self.known_names(log)?;
            names.extend(added.iter().map(|a| a.trim().to_lowercase()));
            names.sort();
            names.dedup();
            let all = log.recipients();
            self.send_names(log, &all, &names).await?;
        }
        for b in &built {
            lines.extend(self.render(log, &b.update.notices));
        }
        self.save_room(log)?;
        for b in &built {
            self.send_entry(log, b, None).await?;
        }
        self.save_room(log)?;
        // A new member gets the control history right away (the answer it
        // would otherwise ask for), so the room is usable on its first sync.
        let names = member_names(log);
        for b in &built {
            let Some(entry) = log.entry(&b.hash) else {
                continue;
            };
            if let Body::Control(Op::AddMember { user, .. }) = entry.body {
                if let Some(name) = names.get(&user).copied() {
                    self.welcome(log, user, name).await?;
                }
            }
        }
        Ok(lines)
    }

    /// The usernames this device knows for the room's users (itself
    /// included).
    pub(crate) fn known_names(&self, log: &RoomLog) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for h in member_names(log).values() {
            if let Some(n) = self.store.name_for_hash(h)? {
                out.push(n);
            }
        }
        if !self.username.is_empty() {
            out.push(self.username.clone());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every entry of the room's log in resolved order; with `verify`,
    /// recomputes the stored chain (hashes, signatures, parent links,
    /// order, head) and reports the first bad link in `broken`.
    pub fn room_log(&self, room: &str, verify: bool) -> Result<RoomLogReport> {
        let group = self.find_room(room)?;
        let stored = self.store.room_records(&group.0)?;
        let head = self.store.room_head(&group.0)?.map(LogHead);
        let broken = if verify {
            let resolved: Vec<LogRecord> = stored
                .iter()
                .filter(|r| !r.pending)
                .cloned()
                .map(from_record)
                .collect();
            verify_records(&group, &resolved, head.as_ref())
                .err()
                .map(|f| {
                    let at = f.entry.map(|h| hex::encode(&h.0[..8])).unwrap_or_default();
                    format!(
                        "the room log is broken at entry {} ({at}): {}",
                        f.position + 1,
                        problem_text(&f.problem)
                    )
                })
        } else {
            None
        };
        let log = self.load_room(&group)?;
        let mut entries = Vec::new();
        if let Some(log) = &log {
            let names = member_names(log);
            for (i, n) in log.timeline().iter().enumerate() {
                let kind = log
                    .entry(&n.entry)
                    .map_or("standard", |e| kind_name(e.kind()));
                entries.push(RoomLogLine {
                    position: i + 1,
                    entry: hex::encode(n.entry.0),
                    message_id: hex::encode(n.message_id),
                    from: self.display_name(&names, &n.by),
                    at: n.at,
                    kind,
                    event: n
                        .render(|u| self.display_name(&names, u))
                        .unwrap_or_else(|| "message".into()),
                });
            }
        }
        Ok(RoomLogReport {
            id: hex::encode(group.0),
            head: head.map(|h| hex::encode(h.0)).unwrap_or_default(),
            entries,
            broken,
        })
    }
}

fn problem_text(p: &Problem) -> String {
    match p {
        Problem::HashMismatch => "its hash does not match its bytes".into(),
        Problem::Undecodable(e) => format!("it cannot be decoded ({e})"),
        Problem::Invalid(e) => format!("its signature or certificate is invalid ({e})"),
        Problem::WrongGroup => "it belongs to another room".into(),
        Problem::MissingParent(h) => format!("its parent {} is missing", hex::encode(&h.0[..8])),
        Problem::OutOfOrder => "it is out of the resolved order".into(),
        Problem::HeadMismatch => "the chain does not end at the stored head".into(),
    }
}

pub(crate) fn room_error(e: RoomError) -> Error {
    Error::RoomRefused(format!("room: {e}"))
}

/// A local change the room would not accept, as one clear line.
fn refused(log: &RoomLog, e: RoomError) -> Error {
    use sotto_proto::room::RejectReason as R;
    let title = log.state().map(|s| s.title.clone()).unwrap_or_default();
    match e {
        RoomError::Refused(R::NotAdmin) => Error::RoomRefused(format!(
            "only an admin of \"{title}\" can change it; you are not an admin (nothing was changed)"
        )),
        RoomError::Refused(R::NotMember) => Error::RoomRefused(format!(
            "you are not a member of \"{title}\" (nothing was changed)"
        )),
        RoomError::Refused(r) => {
            Error::RoomRefused(format!("\"{title}\": {r} (nothing was changed)"))
        }
        other => room_error(other),
    }
}
