//! What the user sees of rooms: the list, a room's state and timeline,
//! search, and the log entry by entry (with its verification). No network;
//! TTLs are applied by the master clock first. Views read the logs from the
//! store (not from the machine's cache): they may run while another process
//! holds the home and changes it.

use std::collections::HashMap;

use sotto_proto::room::{
    verify_records, EntryHash, EntryKind, GroupId, LogHead, RoomLog, Ttl, VerifyFailure,
};

use super::{from_record, LineContent, RoomLine, RoomNotice};
use crate::machine::Machine;
use crate::store::ChangeSet;
use crate::{Error, Result};

/// A room in the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    pub group: GroupId,
    pub title: String,
    pub ttl: Ttl,
    pub members: usize,
    /// This user is a member (false after leaving or removal).
    pub member: bool,
    pub deleted: bool,
}

/// A member as a room shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMember {
    pub name: String,
    pub admin: bool,
}

/// A room's state and timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomView {
    pub group: GroupId,
    pub title: String,
    pub description: String,
    pub ttl: Ttl,
    /// Admins first, then by name.
    pub members: Vec<RoomMember>,
    pub deleted: bool,
    /// The same on every device holding the same entries.
    pub head: LogHead,
    pub entries: usize,
    pub lines: Vec<RoomLine>,
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomLogLine {
    /// 1-based.
    pub position: usize,
    pub entry: EntryHash,
    pub message_id: [u8; 16],
    pub from: String,
    pub at: u64,
    pub kind: EntryKind,
    /// What it did; `None` for a message.
    pub event: Option<RoomNotice>,
}

/// A room's log, entry by entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomLogReport {
    pub group: GroupId,
    /// The stored head.
    pub head: Option<LogHead>,
    pub entries: Vec<RoomLogLine>,
    /// With verification: the first bad link, if any.
    pub broken: Option<VerifyFailure>,
}

impl Machine {
    pub(crate) fn summary(&self, log: &RoomLog) -> RoomSummary {
        let me = self.device.cert().user;
        let st = log.state();
        RoomSummary {
            group: log.group(),
            title: st.map(|s| s.title.clone()).unwrap_or_default(),
            ttl: st.map(|s| s.ttl).unwrap_or_default(),
            members: st.map(|s| s.members.len()).unwrap_or(0),
            member: st.is_some_and(|s| s.is_member(&me)),
            deleted: st.is_some_and(|s| s.deleted),
        }
    }

    /// The rooms on this device (with a known state), by title.
    pub fn rooms(&mut self) -> Result<Vec<RoomSummary>> {
        self.rooms.clear_cache();
        let mut out = Vec::new();
        for (g, _) in self.store.rooms()? {
            if let Some(log) = self.load_room(&GroupId(g))? {
                if log.state().is_some() {
                    out.push(self.summary(&log));
                }
                self.keep_room(log);
            }
        }
        Ok(out)
    }

    /// Deletes the content of messages whose TTL passed (room clock);
    /// `changes` gets what to write.
    pub(crate) fn purge_room(&mut self, log: &mut RoomLog, changes: &mut ChangeSet) -> bool {
        let expired = log.expire(self.room_now());
        for e in &expired {
            changes.room_messages_deleted.push(e.entry.0);
        }
        // Expiring also drops held entries whose parents never came.
        !expired.is_empty() || log.has_changes()
    }

    /// TTL purge of every room with a message due.
    pub(crate) fn purge_rooms(&mut self) -> Result<()> {
        for g in self.store.rooms_due(self.room_now())? {
            if let Some(mut log) = self.load_room(&GroupId(g))? {
                let mut changes = ChangeSet::default();
                if self.purge_room(&mut log, &mut changes) {
                    self.save_room(&mut log, changes)?;
                }
                self.keep_room(log);
            }
        }
        Ok(())
    }

    /// Title, description, TTL, members (admins first) and the timeline,
    /// after purging what expired by `now`.
    pub fn room_show(&mut self, now: u64, room: &str) -> Result<RoomView> {
        self.now = now;
        self.rooms.clear_cache();
        let mut log = self.open_room(room)?;
        let mut changes = ChangeSet::default();
        if self.purge_room(&mut log, &mut changes) {
            self.save_room(&mut log, changes)?;
        }
        let view = self.view(&log, room);
        self.keep_room(log);
        view
    }

    fn view(&self, log: &RoomLog, room: &str) -> Result<RoomView> {
        let names = log.names();
        let st = log
            .state()
            .ok_or_else(|| Error::UnknownRoom(room.to_string()))?;
        let mut members: Vec<RoomMember> = st
            .members_admins_first()
            .iter()
            .map(|(u, m)| RoomMember {
                name: self.display_name(&names, u),
                admin: m.admin,
            })
            .collect();
        members.sort_by(|a, b| (!a.admin, &a.name).cmp(&(!b.admin, &b.name)));
        let contents: HashMap<[u8; 32], Vec<u8>> = self
            .store
            .room_messages(&log.group().0)?
            .into_iter()
            .map(|m| (m.entry, m.body))
            .collect();
        let lines = log
            .timeline()
            .iter()
            .filter_map(|n| self.room_line(&names, n, |e| contents.get(&e.0).cloned()))
            .collect();
        Ok(RoomView {
            group: log.group(),
            title: st.title.clone(),
            description: st.description.clone(),
            ttl: st.ttl,
            members,
            deleted: st.deleted,
            head: log.head(),
            entries: log.len(),
            lines,
        })
    }

    /// Messages of the room's local history containing `query` (ignoring
    /// case).
    pub fn room_search(&mut self, now: u64, room: &str, query: &str) -> Result<Vec<RoomLine>> {
        let view = self.room_show(now, room)?;
        let q = query.to_lowercase();
        Ok(view
            .lines
            .into_iter()
            .filter(
                |l| matches!(&l.content, LineContent::Message(t) if t.to_lowercase().contains(&q)),
            )
            .collect())
    }

    /// Every entry of the room's log in resolved order; with `verify`,
    /// recomputes the stored chain (hashes, signatures, parent links,
    /// order, head) and reports the first bad link.
    pub fn room_log(&mut self, room: &str, verify: bool) -> Result<RoomLogReport> {
        self.rooms.clear_cache();
        let group = self.find_room(room)?;
        let stored = self.store.room_records(&group.0)?;
        let head = self.store.room_head(&group.0)?.map(LogHead);
        let broken = if verify {
            let resolved: Vec<_> = stored
                .iter()
                .filter(|r| !r.pending)
                .cloned()
                .map(from_record)
                .collect();
            verify_records(&group, &resolved, head.as_ref()).err()
        } else {
            None
        };
        let mut entries = Vec::new();
        if let Some(log) = self.load_room(&group)? {
            let names = log.names();
            for (i, n) in log.timeline().iter().enumerate() {
                entries.push(RoomLogLine {
                    position: i + 1,
                    entry: n.entry,
                    message_id: n.message_id,
                    from: self.display_name(&names, &n.by),
                    at: n.at,
                    kind: log
                        .entry(&n.entry)
                        .map_or(EntryKind::Standard, |e| e.kind()),
                    event: RoomNotice::of(&n.event, |u| self.display_name(&names, u)),
                });
            }
            self.keep_room(log);
        }
        Ok(RoomLogReport {
            group,
            head,
            entries,
            broken,
        })
    }
}
