//! The sends of room commands and of received room traffic: a [`RoomJob`]
//! looks up the usernames it needs first (if any), then runs its
//! deliveries one after another (a names hint before the entry that needs
//! it, the entries, a welcome for a new member), each built from the room's
//! log as it is when its turn comes.

use std::collections::{HashMap, VecDeque};

use sotto_proto::room::{
    EntryHash, GroupId, HistoryAnswer, HistoryRequest, LocalMeta, MessageContent, Requester,
    RoomWire,
};
use sotto_proto::{content, username_hash, DeviceId, UserPublic};

use super::commands::Then;
use crate::body::{NamesBody, ROOM_NAMES};
use crate::deliver::{Conversation, Deliver, Delivered, Draft, Target};
use crate::directory::directory;
use crate::error::RoomRefusal;
use crate::ids::random_id;
use crate::machine::Machine;
use crate::ops::{Job, OpId, Output, Reply, Step};
use crate::request::{Lookup, Request, RequestId};
use crate::store::ChangeSet;
use crate::{Error, Result};

/// One send of a room job.
pub(crate) enum RoomStep {
    /// The usernames behind member hashes, to these users' devices (or
    /// only `only`).
    Names {
        group: GroupId,
        to: Vec<(UserPublic, [u8; 32])>,
        only: Option<DeviceId>,
        names: Vec<String>,
    },
    /// An entry this device made, to the entry's recipients; its message
    /// key and datagram id are recorded beside it (for later grants).
    Entry {
        group: GroupId,
        hash: EntryHash,
        bytes: Vec<u8>,
        recipients: Vec<UserPublic>,
        content: Option<MessageContent>,
    },
    /// A new member gets the control history right away (the answer it
    /// would otherwise ask for), so the room is usable on its first sync.
    Welcome { group: GroupId, user: UserPublic },
    /// A history request to `to` (one device, or all of the user's).
    Request {
        to: UserPublic,
        name: [u8; 32],
        device: Option<DeviceId>,
        request: HistoryRequest,
    },
    /// A history answer to one device.
    Answer {
        to: UserPublic,
        name: [u8; 32],
        device: DeviceId,
        answer: HistoryAnswer,
    },
    /// A delivery made elsewhere (test hooks).
    #[cfg(any(test, feature = "testing"))]
    Prepared(Box<Deliver>),
}

/// Usernames being looked up (trusting first keys, refusing changed ones).
#[derive(Default)]
struct Resolve {
    names: Vec<String>,
    waiting: HashMap<RequestId, usize>,
    found: Vec<Option<UserPublic>>,
}

/// A room command or room work in flight.
pub(crate) struct RoomJob {
    resolve: Resolve,
    /// Runs once the names are resolved, making the steps.
    then: Option<Then>,
    steps: VecDeque<RoomStep>,
    current: Option<(Deliver, Option<(GroupId, EntryHash)>)>,
    output: Option<Output>,
    /// A send that finds no device fails with [`Error::NoDevices`] naming
    /// this user.
    pub(crate) none_is_error: Option<String>,
}

impl RoomJob {
    pub(crate) fn new(steps: VecDeque<RoomStep>, output: Output) -> RoomJob {
        RoomJob {
            resolve: Resolve::default(),
            then: None,
            steps,
            current: None,
            output: Some(output),
            none_is_error: None,
        }
    }

    /// A job that first looks `names` up, then runs `then`.
    pub(crate) fn resolving(names: Vec<String>, then: Then) -> RoomJob {
        let mut job = RoomJob::new(VecDeque::new(), Output::Unit);
        job.resolve.found = vec![None; names.len()];
        job.resolve.names = names;
        job.then = Some(then);
        job
    }

    /// A job that runs one delivery made elsewhere (test hooks).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn delivering(d: Deliver) -> RoomJob {
        RoomJob::new(
            VecDeque::from([RoomStep::Prepared(Box::new(d))]),
            Output::Unit,
        )
    }

    pub(crate) fn background(step: RoomStep) -> Job {
        Job::Room(Box::new(RoomJob::new(VecDeque::from([step]), Output::Unit)))
    }

    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        for (i, n) in self.resolve.names.iter().enumerate() {
            let id = m.request(op, Request::Lookup(Lookup::User(username_hash(n))));
            self.resolve.waiting.insert(id, i);
        }
        self.resolved(m, op)
    }

    pub(crate) fn on_reply(
        &mut self,
        m: &mut Machine,
        op: OpId,
        id: RequestId,
        reply: Reply,
    ) -> Result<Step> {
        if let Some(i) = self.resolve.waiting.remove(&id) {
            let name = self.resolve.names[i].clone();
            let dir = directory(reply)?.ok_or_else(|| Error::UnknownUser(name.clone()))?;
            m.accept_directory(&name, &dir)?;
            m.commit(ChangeSet {
                room_names: vec![(username_hash(&name), name)],
                ..ChangeSet::default()
            })?;
            self.resolve.found[i] = Some(dir.user);
            return self.resolved(m, op);
        }
        let Some((deliver, _)) = &mut self.current else {
            return Ok(Step::Wait);
        };
        let d = deliver.on_reply(m, op, id, reply)?;
        self.advance(m, op, d)
    }

    /// Once every name is resolved: runs `then`, then the steps.
    fn resolved(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        if !self.resolve.waiting.is_empty() {
            return Ok(Step::Wait);
        }
        if let Some(then) = self.then.take() {
            let users: Vec<(UserPublic, [u8; 32])> = self
                .resolve
                .names
                .iter()
                .zip(&self.resolve.found)
                .filter_map(|(n, u)| Some(((*u)?, username_hash(n))))
                .collect();
            let (steps, output) = then.run(m, &users)?;
            self.steps = steps;
            self.output = Some(output);
        }
        self.advance(m, op, None)
    }

    /// Finishes the current delivery if `done`, then starts the next ones
    /// until one waits (while the current one waits, nothing happens).
    fn advance(&mut self, m: &mut Machine, op: OpId, mut done: Option<Delivered>) -> Result<Step> {
        loop {
            match done.take() {
                Some(d) => {
                    let (_, entry) = self.current.take().expect("a delivery ran");
                    self.delivered(m, entry, d)?;
                }
                None if self.current.is_some() => return Ok(Step::Wait),
                None => {}
            }
            let Some(step) = self.steps.pop_front() else {
                let out = self.output.take().unwrap_or(Output::Unit);
                return Ok(Step::Done(Ok(out)));
            };
            let Some((mut deliver, entry)) = m.room_delivery(step)? else {
                continue;
            };
            done = deliver.start(m, op)?;
            self.current = Some((deliver, entry));
        }
    }

    /// What a finished delivery leaves behind.
    fn delivered(
        &mut self,
        m: &mut Machine,
        entry: Option<(GroupId, EntryHash)>,
        d: Delivered,
    ) -> Result<()> {
        match d {
            // The key and datagram id are kept (and later granted) only
            // when every device of this user may fetch the datagram: the
            // transport serves it to users owning a recipient device.
            // Otherwise answers carry the content.
            Delivered::Posted {
                message_key,
                datagram_id,
                to_own: true,
                ..
            } => {
                if let Some((group, hash)) = entry {
                    m.record_sent(&group, &hash, message_key, datagram_id)?;
                }
            }
            Delivered::Posted { .. } => {}
            Delivered::Nobody => {
                if let Some(who) = self.none_is_error.take() {
                    return Err(Error::NoDevices(who));
                }
            }
        }
        Ok(())
    }
}

/// The targets of a room send: each user by key and username hash (this
/// user by its own name and devices).
pub(crate) fn room_targets(
    m: &Machine,
    to: &[(UserPublic, [u8; 32])],
    only: Option<DeviceId>,
) -> Vec<Target> {
    let own = m.device.cert().user;
    to.iter()
        .filter_map(|(user, name)| {
            let mut t = if *user == own {
                if m.username.is_empty() {
                    return None;
                }
                Target::own(m)
            } else {
                Target::member(*user, *name)
            };
            t.only = only;
            Some(t)
        })
        .collect()
}

/// `users` with their username hashes from `names` (this user by its own).
pub(crate) fn named(
    m: &Machine,
    users: &[UserPublic],
    names: &HashMap<UserPublic, [u8; 32]>,
) -> Vec<(UserPublic, [u8; 32])> {
    let own = m.device.cert().user;
    users
        .iter()
        .filter_map(|u| {
            let name = if *u == own {
                username_hash(&m.username)
            } else {
                *names.get(u)?
            };
            Some((*u, name))
        })
        .collect()
}

/// A delivery, and the entry whose key and datagram id to record once it
/// is posted.
type Planned = Option<(Deliver, Option<(GroupId, EntryHash)>)>;

impl Machine {
    /// A room datagram of `content_type` (a fresh message id, no TTL).
    fn room_draft(&mut self, group: GroupId, content_type: u8, body: Vec<u8>) -> Draft {
        Draft {
            message_id: random_id(&mut *self.rng),
            conversation: Conversation::Fixed(group.0),
            content_type,
            body,
            ttl: 0,
            room: true,
        }
    }

    fn room_send_to(
        &self,
        to: &[(UserPublic, [u8; 32])],
        only: Option<DeviceId>,
        draft: Draft,
    ) -> Deliver {
        Deliver::new(room_targets(self, to, only), draft)
    }

    /// The delivery of one room step, from the log as it is now; `None`
    /// when there is nothing to send.
    fn room_delivery(&mut self, step: RoomStep) -> Result<Planned> {
        Ok(Some(match step {
            #[cfg(any(test, feature = "testing"))]
            RoomStep::Prepared(d) => (*d, None),
            RoomStep::Names {
                group,
                to,
                only,
                names,
            } => {
                let draft = self.room_draft(group, ROOM_NAMES, NamesBody(names).encode());
                (self.room_send_to(&to, only, draft), None)
            }
            RoomStep::Entry {
                group,
                hash,
                bytes,
                recipients,
                content,
            } => {
                let Some(log) = self.load_room(&group)? else {
                    return Ok(None);
                };
                // Only messages expire; control entries are kept.
                let ttl = match &content {
                    Some(_) => log.state().map_or(0, |s| s.ttl.0),
                    None => 0,
                };
                let to = named(self, &recipients, &log.names());
                let message_id = log.entry(&hash).map(|e| e.message_id);
                self.keep_room(log);
                let body = RoomWire::Entry {
                    entry: bytes,
                    content,
                }
                .encode()?;
                let mut draft = self.room_draft(group, content::ROOM_CONTROL, body);
                draft.ttl = ttl;
                if let Some(id) = message_id {
                    draft.message_id = id;
                }
                (self.room_send_to(&to, None, draft), Some((group, hash)))
            }
            RoomStep::Welcome { group, user } => {
                let Some(log) = self.load_room(&group)? else {
                    return Ok(None);
                };
                let name = log.names().get(&user).copied();
                let request = HistoryRequest {
                    group,
                    message_id: None,
                    have: Vec::new(),
                };
                let answer = log
                    .answer(&request, Requester::Member(user), |h| self.content_of(h))
                    .map(|a| self.content_for_own(&log, &user, a));
                self.keep_room(log);
                let answer = answer.map_err(|e| Error::Room(RoomRefusal::Log(e)))?;
                let Some(name) = name else {
                    return Ok(None);
                };
                let body = RoomWire::Answer(answer).encode()?;
                let draft = self.room_draft(group, content::ROOM_CONTROL, body);
                (self.room_send_to(&[(user, name)], None, draft), None)
            }
            RoomStep::Request {
                to,
                name,
                device,
                request,
            } => {
                let group = request.group;
                let body = RoomWire::Request(request).encode()?;
                let draft = self.room_draft(group, content::ROOM_CONTROL, body);
                (self.room_send_to(&[(to, name)], device, draft), None)
            }
            RoomStep::Answer {
                to,
                name,
                device,
                answer,
            } => {
                let group = answer.group;
                let body = RoomWire::Answer(answer).encode()?;
                let draft = self.room_draft(group, content::ROOM_CONTROL, body);
                (self.room_send_to(&[(to, name)], Some(device), draft), None)
            }
        }))
    }

    /// Records the message key and datagram id an entry travelled with.
    fn record_sent(
        &mut self,
        group: &GroupId,
        hash: &EntryHash,
        message_key: [u8; 32],
        datagram_id: [u8; 32],
    ) -> Result<()> {
        let Some(mut log) = self.load_room(group)? else {
            return Ok(());
        };
        let meta = LocalMeta {
            message_key: Some(message_key),
            datagram_id: Some(datagram_id),
            purged: false,
        };
        if log.set_meta(hash, meta).is_ok() {
            self.save_room(&mut log, ChangeSet::default())?;
        }
        self.keep_room(log);
        Ok(())
    }
}
