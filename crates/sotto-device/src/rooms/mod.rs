//! Secure rooms on this device: the glue between the sans-IO
//! `sotto_proto::room::RoomLog` and this device's store, transport and
//! user. All of it is here: loading and saving logs (`mod.rs`), what the
//! user sees (`views.rs`), the commands (`commands.rs`) and room traffic
//! (`traffic.rs`: entries, history requests and answers, granted fetches).
//!
//! A room's log is stored as its records (signed entries in resolved order,
//! each with the message key and datagram id it travelled with) and its
//! head; message contents are stored beside them until their TTL passes
//! (then deleted, not hidden). Member usernames travel only as hashes in
//! the log: a device learns the names behind them from its contacts and
//! from a names hint (content type [`crate::body::ROOM_NAMES`]) sent with
//! each create and add, which checks itself (a name is kept only under its
//! own hash).

mod commands;
mod job;
mod traffic;
mod views;

use std::collections::HashMap;

use sotto_proto::room::{
    Body, Entry, EntryHash, EntryKind, Event, GroupId, LocalMeta, LogRecord, MessageContent,
    Notice, RejectReason, RoomLog, Ttl,
};
use sotto_proto::UserPublic;

use crate::machine::Machine;
use crate::store::{ChangeSet, RoomMessageRow, RoomRecord, RoomSave};
use crate::{Error, Result};

pub use commands::RoomChanges;
pub(crate) use job::RoomJob;
#[cfg(any(test, feature = "testing"))]
pub(crate) use job::{named, room_targets};
pub(crate) use traffic::{FetchGranted, RoomOutcome, RoomWork};
pub use views::{RoomLogLine, RoomLogReport, RoomMember, RoomSummary, RoomView};

/// Logs cached while the machine runs; at most this many rooms.
const CACHED_ROOMS: usize = 32;

/// Room state that is not in the store.
#[derive(Default)]
pub(crate) struct RoomRuntime {
    /// Logs as stored, so that a batch of datagrams for a room verifies its
    /// log once. The machine is the only writer while its shell holds the
    /// home; a reload from the store, and every view, drops them.
    cache: HashMap<[u8; 32], RoomLog>,
    /// Work that received datagrams called for, started by
    /// [`Machine::flush`].
    pub(crate) work: Vec<RoomWork>,
}

impl RoomRuntime {
    pub(crate) fn clear_cache(&mut self) {
        self.cache.clear();
    }
}

/// A room message or notice, with the room it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomEvent {
    pub group: GroupId,
    pub title: String,
    pub line: RoomLine,
}

/// One line of a room's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomLine {
    pub message_id: [u8; 16],
    /// Master-clock ms.
    pub at: u64,
    /// Who sent it (display name).
    pub from: String,
    pub content: LineContent,
}

/// A message's text, or what a control entry did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineContent {
    Message(String),
    Notice(RoomNotice),
}

/// What a control entry did (the line's `from` did it), with users by
/// display name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomNotice {
    Created {
        title: String,
        ttl: Ttl,
    },
    TitleChanged {
        from: String,
        to: String,
    },
    DescriptionChanged,
    TtlChanged {
        from: Ttl,
        to: Ttl,
    },
    MemberAdded(String),
    MemberRemoved(String),
    AdminGranted(String),
    AdminRevoked(String),
    Deleted,
    Left,
    /// The entry was discarded.
    Discarded {
        kind: EntryKind,
        reason: RejectReason,
    },
}

impl RoomNotice {
    /// The notice of a log event; `None` for a message.
    pub(crate) fn of(event: &Event, name: impl Fn(&UserPublic) -> String) -> Option<RoomNotice> {
        Some(match event {
            Event::Created { title, ttl, .. } => RoomNotice::Created {
                title: title.clone(),
                ttl: *ttl,
            },
            Event::TitleChanged { from, to } => RoomNotice::TitleChanged {
                from: from.clone(),
                to: to.clone(),
            },
            Event::DescriptionChanged { .. } => RoomNotice::DescriptionChanged,
            Event::TtlChanged { from, to } => RoomNotice::TtlChanged {
                from: *from,
                to: *to,
            },
            Event::MemberAdded(u) => RoomNotice::MemberAdded(name(u)),
            Event::MemberRemoved(u) => RoomNotice::MemberRemoved(name(u)),
            Event::AdminGranted(u) => RoomNotice::AdminGranted(name(u)),
            Event::AdminRevoked(u) => RoomNotice::AdminRevoked(name(u)),
            Event::Deleted => RoomNotice::Deleted,
            Event::Left => RoomNotice::Left,
            Event::Message => return None,
            Event::Rejected { kind, reason } => RoomNotice::Discarded {
                kind: *kind,
                reason: *reason,
            },
        })
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
            Body::Control(sotto_proto::room::Op::Create { config, .. }) => {
                for m in &config.members {
                    out.insert(m.user, m.name);
                }
            }
            Body::Control(sotto_proto::room::Op::AddMember { user, name }) => {
                out.insert(*user, *name);
            }
            _ => {}
        }
    }
    out
}

/// What the store keeps of a log.
pub(crate) fn room_save(log: &RoomLog) -> RoomSave {
    let resolved = log.len();
    let records = log
        .records()
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
        .collect();
    RoomSave {
        group: log.group().0,
        title: log.state().map(|s| s.title.clone()).unwrap_or_default(),
        head: log.head().0,
        records,
        // Every message not yet purged, with when it expires.
        next_expiry: log.expired(u64::MAX).iter().map(|e| e.expired_at).min(),
    }
}

pub(crate) fn from_record(r: RoomRecord) -> LogRecord {
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

/// The stored row of a message's content.
pub(crate) fn content_row(
    group: &GroupId,
    entry: &EntryHash,
    e: &Entry,
    c: &MessageContent,
) -> RoomMessageRow {
    RoomMessageRow {
        entry: entry.0,
        group: group.0,
        sender: e.sender.user.0,
        sent_at: e.timestamp,
        content_type: c.content_type,
        salt: c.salt,
        body: c.body.clone(),
    }
}

impl Machine {
    /// The room's log as stored (`None` for an unknown room). Taken out of
    /// the cache: put it back with [`Machine::keep_room`] once saved.
    pub(crate) fn load_room(&mut self, group: &GroupId) -> Result<Option<RoomLog>> {
        if let Some(log) = self.rooms.cache.remove(&group.0) {
            return Ok(Some(log));
        }
        let records = self.store.room_records(&group.0)?;
        if records.is_empty() {
            return Ok(None);
        }
        let (log, _) =
            RoomLog::from_records(*group, records.into_iter().map(from_record).collect());
        Ok(Some(log))
    }

    /// Keeps a log that equals the stored one for the next use.
    pub(crate) fn keep_room(&mut self, log: RoomLog) {
        if self.rooms.cache.len() >= CACHED_ROOMS {
            self.rooms.cache.clear();
        }
        self.rooms.cache.insert(log.group().0, log);
    }

    /// Commits `changes` with `log` saved.
    pub(crate) fn save_room(&mut self, log: &RoomLog, mut changes: ChangeSet) -> Result<()> {
        changes.rooms.push(room_save(log));
        self.commit(changes)
    }

    /// The room a user means: a hex group id, or a title (exact, then
    /// ignoring case). A title shared by several rooms is an error listing
    /// their ids.
    pub(crate) fn find_room(&self, name: &str) -> Result<GroupId> {
        let rooms = self.store.rooms()?;
        let mut id = [0u8; 32];
        if hex::decode_to_slice(name.trim(), &mut id).is_ok() && rooms.iter().any(|(g, _)| *g == id)
        {
            return Ok(GroupId(id));
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
                ids: many.iter().map(|g| GroupId(**g)).collect(),
            }),
        }
    }

    pub(crate) fn open_room(&mut self, name: &str) -> Result<RoomLog> {
        let group = self.find_room(name)?;
        self.load_room(&group)?
            .ok_or_else(|| Error::UnknownRoom(name.to_string()))
    }

    /// A display name for a user of the room: this user's name, a learned
    /// name, or `user-` and the start of the key.
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

    /// The line of a notice: a message with its stored content (`None`
    /// when it is not here), or what a control entry did.
    pub(crate) fn room_line(
        &self,
        names: &HashMap<UserPublic, [u8; 32]>,
        n: &Notice,
        content: impl Fn(&EntryHash) -> Option<Vec<u8>>,
    ) -> Option<RoomLine> {
        let name = |u: &UserPublic| self.display_name(names, u);
        let content = match RoomNotice::of(&n.event, name) {
            Some(notice) => LineContent::Notice(notice),
            None => LineContent::Message(String::from_utf8_lossy(&content(&n.entry)?).into_owned()),
        };
        Some(RoomLine {
            message_id: n.message_id,
            at: n.at,
            from: self.display_name(names, &n.by),
            content,
        })
    }

    /// The events of `notices` (rendered after their change set committed,
    /// so message contents and names are in the store).
    pub(crate) fn room_events(&self, log: &RoomLog, notices: &[Notice]) -> Vec<RoomEvent> {
        let names = member_names(log);
        let title = log.state().map(|s| s.title.clone()).unwrap_or_default();
        notices
            .iter()
            .filter_map(|n| {
                let line = self.room_line(&names, n, |e| {
                    self.store.room_message(&e.0).ok().flatten().map(|r| r.body)
                })?;
                Some(RoomEvent {
                    group: log.group(),
                    title: title.clone(),
                    line,
                })
            })
            .collect()
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

    /// The content of a stored message (only this device's own rows).
    pub(crate) fn content_of(&self, entry: &EntryHash) -> Option<MessageContent> {
        let row = self.store.room_message(&entry.0).ok()??;
        Some(MessageContent {
            salt: row.salt,
            content_type: row.content_type,
            body: row.body,
        })
    }
}
