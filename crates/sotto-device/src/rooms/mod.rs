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
//! own hash). Which hash belongs to which member comes only from accepted
//! create and add entries ([`RoomLog::names`]), and a name is shown only
//! when the directory knowledge of this device agrees.
//!
//! A save writes only the records that changed ([`RoomLog::take_changes`]);
//! a load places the stored records without verifying every signature
//! again ([`RoomLog::from_stored`]).

mod commands;
mod job;
mod traffic;
mod views;

use std::collections::HashMap;

use sotto_proto::room::{
    Entry, EntryHash, EntryKind, Event, GroupId, LocalMeta, LogRecord, MessageContent, Notice,
    RejectReason, RoomLog, Ttl,
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

/// What the store writes of a log: the records that changed since the
/// last save ([`RoomLog::take_changes`]), not the whole log.
pub(crate) fn room_save(log: &mut RoomLog) -> RoomSave {
    let changes = log.take_changes();
    let records = changes
        .upserts
        .into_iter()
        .map(|r| RoomRecord {
            hash: r.record.hash.0,
            bytes: r.record.bytes,
            message_key: r.record.meta.message_key,
            datagram_id: r.record.meta.datagram_id,
            purged: r.record.meta.purged,
            pending: r.key.is_none(),
            time: r.key.map_or(0, |k| k.time),
            height: r.key.map_or(0, |k| k.height),
        })
        .collect();
    RoomSave {
        group: log.group().0,
        title: log.state().map(|s| s.title.clone()).unwrap_or_default(),
        head: log.head().0,
        records,
        removed: changes.removed.iter().map(|h| h.0).collect(),
        next_expiry: log.next_expiry(),
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
        // Records this device wrote to its encrypted store: placed without
        // checking every signature again (`room log --verify` does).
        let (log, _) = RoomLog::from_stored(*group, records.into_iter().map(from_record).collect());
        Ok(Some(log))
    }

    /// Keeps a log that equals the stored one for the next use.
    pub(crate) fn keep_room(&mut self, log: RoomLog) {
        if self.rooms.cache.len() >= CACHED_ROOMS {
            self.rooms.cache.clear();
        }
        self.rooms.cache.insert(log.group().0, log);
    }

    /// Commits `changes` with what changed in `log`.
    pub(crate) fn save_room(&mut self, log: &mut RoomLog, mut changes: ChangeSet) -> Result<()> {
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

    /// A display name for a user of the room: this user's name; the name
    /// learned for the username hash that the accepted log entries
    /// ([`RoomLog::names`]) give the user, when what this device knows from
    /// the directory agrees (the name is not this user's own, nor a contact
    /// with another key); else `user-` and the start of the key.
    pub(crate) fn display_name(
        &self,
        names: &HashMap<UserPublic, [u8; 32]>,
        user: &UserPublic,
    ) -> String {
        let own = self.device.cert().user;
        if *user == own && !self.username.is_empty() {
            return self.username.clone();
        }
        if let Some(hash) = names.get(user) {
            if let Ok(Some(n)) = self.store.name_for_hash(hash) {
                let theirs = if !self.username.is_empty() && n == self.username {
                    false
                } else {
                    match self.store.contact(&n) {
                        Ok(Some(c)) => c.user_key == user.0,
                        Ok(None) => true,
                        Err(_) => false,
                    }
                };
                if theirs {
                    return n;
                }
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
        let names = log.names();
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
        for h in log.names().values() {
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
