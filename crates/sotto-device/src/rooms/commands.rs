//! Room commands: create, send, set (title, description, TTL, members,
//! admins, delete), leave and recover. Each is checked against the log
//! before anything is signed or sent; a refusal changes nothing.

use std::collections::VecDeque;

use sotto_proto::room::{
    Author, Body, Built, GroupId, HistoryRequest, Member, Op as RoomOp, RejectReason, RoomConfig,
    RoomError, RoomLog, Ttl,
};
use sotto_proto::{content, username_hash, UserPublic};

use super::job::{named, RoomJob, RoomStep};
use super::traffic::heads;
use super::{content_row, LineContent, RoomEvent, RoomLine, RoomSummary};
use crate::error::RoomRefusal;
use crate::ids::check_username;
use crate::machine::Machine;
use crate::ops::{Job, Op, Output};
use crate::store::ChangeSet;
use crate::{Error, Result};

/// What a room change does (applied in this order, all or nothing).
#[derive(Clone, Debug, Default)]
pub struct RoomChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub ttl: Option<Ttl>,
    /// Usernames to add.
    pub add: Vec<String>,
    pub remove: Vec<String>,
    pub admin: Vec<String>,
    pub unadmin: Vec<String>,
    pub delete: bool,
}

/// What a room job does once the usernames it needed are resolved.
pub(crate) enum Then {
    Create {
        title: String,
        description: String,
        ttl: Ttl,
        /// Members other than this user, sorted.
        members: Vec<String>,
        admins: Vec<String>,
    },
    Change {
        group: GroupId,
        changes: RoomChanges,
    },
    Leave {
        group: GroupId,
    },
    Recover {
        group: GroupId,
    },
}

/// A local change the room would not accept.
fn refused(log: &RoomLog, e: RoomError) -> Error {
    let title = log.state().map(|s| s.title.clone()).unwrap_or_default();
    Error::Room(match e {
        RoomError::Refused(RejectReason::NotAdmin) => RoomRefusal::NotAdmin { title },
        RoomError::Refused(RejectReason::NotMember) => RoomRefusal::NotMember { title },
        RoomError::Refused(reason) => RoomRefusal::Rejected { title, reason },
        other => RoomRefusal::Log(other),
    })
}

impl Then {
    /// The steps and the result, given the resolved users (with their
    /// username hashes, in the order asked).
    pub(crate) fn run(
        self,
        m: &mut Machine,
        users: &[(UserPublic, [u8; 32])],
    ) -> Result<(VecDeque<RoomStep>, Output)> {
        match self {
            Then::Create {
                title,
                description,
                ttl,
                members,
                admins,
            } => m.create_room(title, description, ttl, &members, &admins, users),
            Then::Change { group, changes } => m.change_room(group, &changes, users, false),
            Then::Leave { group } => m.change_room(group, &RoomChanges::default(), &[], true),
            Then::Recover { group } => {
                let Some((user, name)) = users.first().copied() else {
                    return Err(Error::BadAnswer("no user to ask".into()));
                };
                Ok((m.recover_steps(group, user, name)?, Output::Unit))
            }
        }
    }
}

impl Machine {
    fn author_name(&self) -> Result<[u8; 32]> {
        Ok(username_hash(&self.require_username()?))
    }

    /// Creates a room with this user as admin, `members` (usernames) as
    /// members and `admins` (usernames, made members too) as further
    /// admins, and sends the create entry to every member device.
    pub fn room_create(
        &mut self,
        now: u64,
        title: &str,
        description: &str,
        ttl: Ttl,
        members: &[String],
        admins: &[String],
    ) -> Result<Op<RoomSummary>> {
        self.now = now;
        let me = self.require_username()?;
        let mut all: Vec<String> = members
            .iter()
            .chain(admins)
            .map(|m| m.trim().to_lowercase())
            .collect();
        all.retain(|m| !m.is_empty() && *m != me);
        all.sort();
        all.dedup();
        for u in &all {
            check_username(u).map_err(|_| Error::UnknownUser(u.clone()))?;
        }
        let admins = admins.iter().map(|a| a.trim().to_lowercase()).collect();
        let then = Then::Create {
            title: title.to_string(),
            description: description.to_string(),
            ttl,
            members: all.clone(),
            admins,
        };
        Ok(self.start(Job::Room(Box::new(RoomJob::resolving(all, then)))))
    }

    fn create_room(
        &mut self,
        title: String,
        description: String,
        ttl: Ttl,
        members: &[String],
        admins: &[String],
        users: &[(UserPublic, [u8; 32])],
    ) -> Result<(VecDeque<RoomStep>, Output)> {
        let config = RoomConfig {
            title,
            description,
            ttl,
            members: users
                .iter()
                .zip(members)
                .map(|((user, name), username)| Member {
                    user: *user,
                    name: *name,
                    admin: admins.contains(username),
                })
                .collect(),
        };
        let author = Author {
            device: &self.device,
            name: self.author_name()?,
        };
        let now = self.room_now();
        let mut rng = &mut *self.rng;
        let (mut log, built) = RoomLog::create(&mut rng, &author, config, now)
            .map_err(|e| Error::Room(RoomRefusal::Log(e)))?;
        let mut names: Vec<String> = members.to_vec();
        names.push(self.username.clone());
        let to = named(self, &built.recipients, &log.names());
        let group = log.group();
        let summary = self.summary(&log);
        self.save_room(&mut log, ChangeSet::default())?;
        self.keep_room(log);
        let steps = VecDeque::from([
            RoomStep::Names {
                group,
                to,
                only: None,
                names,
            },
            entry_step(group, built, None),
        ]);
        Ok((steps, Output::Room(summary)))
    }

    /// Sends a text message to the room: one datagram to every device of
    /// every current member (and this user's other devices).
    pub fn room_send(&mut self, now: u64, room: &str, text: &str) -> Result<Op<RoomLine>> {
        self.now = now;
        let mut log = self.open_room(room)?;
        let author = Author {
            device: &self.device,
            name: self.author_name()?,
        };
        let now = self.room_now();
        let mut rng = &mut *self.rng;
        let (built, content) = log
            .post(
                &mut rng,
                &author,
                content::TEXT,
                text.as_bytes().to_vec(),
                now,
            )
            .map_err(|e| refused(&log, e))?;
        // Kept before sending: if the send fails, the entry is still in this
        // log, and members get it with a history answer once a later entry
        // names it as a parent.
        let mut changes = ChangeSet::default();
        if let Some(e) = log.entry(&built.hash) {
            changes
                .room_messages
                .push(content_row(&log.group(), &built.hash, e, &content));
        }
        self.save_room(&mut log, changes)?;
        let group = log.group();
        self.keep_room(log);
        let line = RoomLine {
            message_id: built.message_id,
            at: now,
            from: self.username.clone(),
            content: LineContent::Message(text.to_string()),
        };
        let steps = VecDeque::from([entry_step(group, built, Some(content))]);
        Ok(self.start(Job::Room(Box::new(RoomJob::new(steps, Output::Line(line))))))
    }

    /// Applies `changes` (admins only, all or nothing) and sends each
    /// entry. The result is the notices. A change that would not take
    /// effect (not an admin, not a member, nothing to change) is refused
    /// before anything is signed or sent.
    pub fn room_set(
        &mut self,
        now: u64,
        room: &str,
        changes: &RoomChanges,
    ) -> Result<Op<Vec<RoomEvent>>> {
        self.now = now;
        let group = self.find_room(room)?;
        let empty = changes.title.is_none()
            && changes.description.is_none()
            && changes.ttl.is_none()
            && changes.add.is_empty()
            && changes.remove.is_empty()
            && changes.admin.is_empty()
            && changes.unadmin.is_empty()
            && !changes.delete;
        if empty {
            return Err(Error::Room(RoomRefusal::NothingToChange));
        }
        let mut add = Vec::new();
        for u in &changes.add {
            add.push(check_username(u).map_err(|_| Error::UnknownUser(u.clone()))?);
        }
        let then = Then::Change {
            group,
            changes: changes.clone(),
        };
        Ok(self.start(Job::Room(Box::new(RoomJob::resolving(add, then)))))
    }

    /// Leaves the room (a non-authoritative entry, sent to every member).
    pub fn room_leave(&mut self, now: u64, room: &str) -> Result<Op<Vec<RoomEvent>>> {
        self.now = now;
        let group = self.find_room(room)?;
        let then = Then::Leave { group };
        Ok(self.start(Job::Room(Box::new(RoomJob::resolving(Vec::new(), then)))))
    }

    /// Proposes the ops of `changes` (or a leave) and makes the steps that
    /// send them.
    fn change_room(
        &mut self,
        group: GroupId,
        changes: &RoomChanges,
        added: &[(UserPublic, [u8; 32])],
        leave: bool,
    ) -> Result<(VecDeque<RoomStep>, Output)> {
        let mut log = self
            .load_room(&group)?
            .ok_or_else(|| Error::UnknownRoom(hex::encode(group.0)))?;
        let names = log.names();
        let user_of = |who: &String| -> Result<UserPublic> {
            let hash = username_hash(&who.trim().to_lowercase());
            names
                .iter()
                .find(|(_, h)| **h == hash)
                .map(|(u, _)| *u)
                .ok_or_else(|| Error::Room(RoomRefusal::NotAMember(who.clone())))
        };
        let mut ops = Vec::new();
        if let Some(t) = &changes.title {
            ops.push(RoomOp::SetTitle(t.clone()));
        }
        if let Some(d) = &changes.description {
            ops.push(RoomOp::SetDescription(d.clone()));
        }
        if let Some(t) = changes.ttl {
            ops.push(RoomOp::SetTtl(t));
        }
        for (user, name) in added {
            ops.push(RoomOp::AddMember {
                user: *user,
                name: *name,
            });
        }
        for r in &changes.remove {
            ops.push(RoomOp::RemoveMember(user_of(r)?));
        }
        for a in &changes.admin {
            ops.push(RoomOp::GrantAdmin(user_of(a)?));
        }
        for a in &changes.unadmin {
            ops.push(RoomOp::RevokeAdmin(user_of(a)?));
        }
        if changes.delete {
            ops.push(RoomOp::Delete);
        }
        if leave {
            ops.push(RoomOp::Leave);
        }
        let author = Author {
            device: &self.device,
            name: self.author_name()?,
        };
        let now = self.room_now();
        // Propose on the in-memory log: a refusal leaves the store as it
        // was, and nothing is sent.
        let mut built = Vec::new();
        let mut rng = &mut *self.rng;
        for op in ops {
            built.push(
                log.propose(&mut rng, &author, op, now)
                    .map_err(|e| refused(&log, e))?,
            );
        }
        let notices: Vec<_> = built
            .iter()
            .flat_map(|b| b.update.notices.clone())
            .collect();
        let events = self.room_events(&log, &notices);
        let mut steps = VecDeque::new();
        if !changes.add.is_empty() {
            let mut all = self.known_names(&log)?;
            all.extend(changes.add.iter().map(|a| a.trim().to_lowercase()));
            all.sort();
            all.dedup();
            let to = named(self, &log.recipients(), &log.names());
            steps.push_back(RoomStep::Names {
                group,
                to,
                only: None,
                names: all,
            });
        }
        let mut welcome = Vec::new();
        for b in &built {
            if let Some(Body::Control(RoomOp::AddMember { user, .. })) =
                log.entry(&b.hash).map(|e| &e.body)
            {
                welcome.push(RoomStep::Welcome { group, user: *user });
            }
        }
        for b in built {
            steps.push_back(entry_step(group, b, None));
        }
        steps.extend(welcome);
        self.save_room(&mut log, ChangeSet::default())?;
        self.keep_room(log);
        Ok((steps, Output::Events(events)))
    }

    /// Asks `from` (a member's username; this user's other devices when
    /// `None`) for the history of the room `room` (title or hex id) that
    /// this user is entitled to. The answer arrives with later datagrams.
    pub fn room_recover(&mut self, now: u64, room: &str, from: Option<&str>) -> Result<Op<()>> {
        self.now = now;
        let group = match self.find_room(room) {
            Ok(g) => g,
            Err(e) => {
                let mut id = [0u8; 32];
                hex::decode_to_slice(room.trim(), &mut id).map_err(|_| e)?;
                GroupId(id)
            }
        };
        let me = self.require_username()?;
        let from = match from {
            Some(f) => check_username(f)?,
            None => me.clone(),
        };
        let mut job = if from == me {
            let own = self.device.cert().user;
            let steps = self.recover_steps(group, own, username_hash(&me))?;
            RoomJob::new(steps, Output::Unit)
        } else {
            RoomJob::resolving(vec![from.clone()], Then::Recover { group })
        };
        job.none_is_error = Some(from);
        Ok(self.start(Job::Room(Box::new(job))))
    }

    fn recover_steps(
        &mut self,
        group: GroupId,
        user: UserPublic,
        name: [u8; 32],
    ) -> Result<VecDeque<RoomStep>> {
        let have = match self.load_room(&group)? {
            Some(log) => {
                let h = heads(&log);
                self.keep_room(log);
                h
            }
            None => Vec::new(),
        };
        Ok(VecDeque::from([RoomStep::Request {
            to: user,
            name,
            device: None,
            request: HistoryRequest {
                group,
                message_id: None,
                have,
            },
        }]))
    }
}

fn entry_step(
    group: GroupId,
    built: Built,
    content: Option<sotto_proto::room::MessageContent>,
) -> RoomStep {
    RoomStep::Entry {
        group,
        hash: built.hash,
        bytes: built.bytes,
        recipients: built.recipients,
        content,
    }
}
