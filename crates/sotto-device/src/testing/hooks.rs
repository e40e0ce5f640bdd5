//! Test hooks on the machine: lost deliveries, a shifted room clock, no
//! acknowledgements, a forged room entry, and looks into what the store
//! holds for a room. None of this exists without the `testing` feature.

use sotto_proto::room::{
    Body, Draft as EntryDraft, EntryHash, GroupId, MessageContent, Op as RoomOp, RoomWire,
};
use sotto_proto::{content, username_hash};

use crate::deliver::{Conversation, Deliver, Draft};
use crate::ids::random_id;
use crate::machine::Machine;
use crate::ops::{Job, Op};
use crate::rooms::RoomJob;
use crate::{Error, Result};

impl Machine {
    /// Process and commit received datagrams, but never acknowledge them
    /// (a device that dies between its commit and its acknowledgement).
    pub fn set_skip_ack(&mut self, skip: bool) {
        self.hooks.skip_ack = skip;
    }

    /// Room datagrams from this device skip `usernames` until cleared
    /// (lost deliveries).
    pub fn drop_room_deliveries_to(&mut self, usernames: &[&str]) {
        self.hooks.drop_to = usernames.iter().map(|u| username_hash(u)).collect();
    }

    /// Moves this device's room clock forward by `ms` (past a room TTL).
    pub fn shift_room_clock(&mut self, ms: i64) {
        self.hooks.clock_shift_ms += ms;
    }

    /// The group id of a room, by title or hex id.
    pub fn room_id(&self, room: &str) -> Result<GroupId> {
        self.find_room(room)
    }

    /// The stored log records of a room (hash, encoded entry).
    pub fn room_records(&self, room: &str) -> Result<Vec<(EntryHash, Vec<u8>)>> {
        let group = self.find_room(room)?;
        Ok(self
            .store
            .room_records(&group.0)?
            .into_iter()
            .map(|r| (EntryHash(r.hash), r.bytes))
            .collect())
    }

    /// The bodies of the room messages held in the store.
    pub fn room_stored_bodies(&self, room: &str) -> Result<Vec<String>> {
        let group = self.find_room(room)?;
        Ok(self
            .store
            .room_messages(&group.0)?
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect())
    }

    /// The datagram ids recorded beside a room's entries, in log order.
    pub fn room_datagram_ids(&self, room: &str) -> Result<Vec<[u8; 32]>> {
        let group = self.find_room(room)?;
        Ok(self
            .store
            .room_records(&group.0)?
            .iter()
            .filter_map(|r| r.datagram_id)
            .collect())
    }

    /// Whether this device can open a datagram (nothing is kept).
    pub fn can_open(&mut self, datagram: &[u8]) -> Result<bool> {
        let opened = self.device.open(datagram).is_ok();
        self.rollback()?;
        Ok(opened)
    }

    /// Signs a control entry with this device's key as the proto API
    /// allows any member to, skipping the local checks (`RoomLog::propose`
    /// would refuse a non-admin's change), and sends it to every member
    /// device without applying it here: what a misbehaving member's client
    /// would do.
    pub fn room_forge(&mut self, now: u64, room: &str, op: RoomOp) -> Result<Op<()>> {
        self.room_forge_entry(
            now,
            room,
            ForgedEntry {
                body: Body::Control(op),
                ..ForgedEntry::default()
            },
        )
    }

    /// Signs any entry with this device's key (chosen parents, a claimed
    /// username, any body) and sends it, with `content` beside it, to every
    /// member device without applying it here.
    pub fn room_forge_entry(&mut self, now: u64, room: &str, f: ForgedEntry) -> Result<Op<()>> {
        self.now = now;
        let group = self.find_room(room)?;
        let log = self
            .load_room(&group)?
            .ok_or_else(|| Error::UnknownRoom(room.to_string()))?;
        let name = match &f.claimed_name {
            Some(n) => username_hash(n),
            None => username_hash(&self.require_username()?),
        };
        let draft = EntryDraft {
            group,
            message_id: random_id(&mut *self.rng),
            parents: f.parents.unwrap_or_else(|| log.parents_for_next()),
            sender_name: name,
            timestamp: self.room_now(),
            body: f.body,
        };
        let message_id = draft.message_id;
        let entry = draft.sign(self.device.key(), self.device.cert())?;
        let body = RoomWire::Entry {
            entry: entry.encode(),
            content: f.content,
        }
        .encode()?;
        let to = crate::rooms::named(self, &log.recipients(), &log.names());
        self.keep_room(log);
        let targets = crate::rooms::room_targets(self, &to, None);
        let deliver = Deliver::new(
            targets,
            Draft {
                message_id,
                conversation: Conversation::Fixed(group.0),
                content_type: content::ROOM_CONTROL,
                body,
                ttl: 0,
                room: true,
            },
        );
        Ok(self.start(Job::Room(Box::new(RoomJob::delivering(deliver)))))
    }
}

/// An entry for [`Machine::room_forge_entry`].
#[derive(Clone, Debug)]
pub struct ForgedEntry {
    /// `None`: the log's heads.
    pub parents: Option<Vec<EntryHash>>,
    /// `None`: this user's own username.
    pub claimed_name: Option<String>,
    pub body: Body,
    pub content: Option<MessageContent>,
}

impl Default for ForgedEntry {
    fn default() -> Self {
        ForgedEntry {
            parents: None,
            claimed_name: None,
            body: Body::Control(RoomOp::Leave),
            content: None,
        }
    }
}
