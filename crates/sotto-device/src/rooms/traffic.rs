//! Room traffic: taking room datagrams in (entries, history requests,
//! answers), and the work they call for (history requests to senders of
//! entries with missing parents, answers, fetches of granted datagrams).
//!
//! Receiving never waits for the transport: the work is queued and started
//! by [`Machine::flush`] once the transport has handed over what it had, so
//! a request that a later answer in the same batch made needless is not
//! sent.

use std::collections::VecDeque;

use sotto_proto::room::{
    datagram_id, open_with_message_key, Entry, EntryHash, EntryKind, Event, Grant, GroupId,
    HistoryAnswer, HistoryRequest, LocalMeta, Notice, Recovered, Requester, RoomLog, RoomWire,
    Update, MAX_HAVE,
};
use sotto_proto::{DeviceId, Opened, UserPublic};

use super::content_row;
use super::job::{RoomJob, RoomStep};
use crate::events::{Event as DeviceEvent, GrantProblem, Rejection};
use crate::machine::Machine;
use crate::ops::{expect, unexpected, Job, OpId, Output, Reply, Step};
use crate::request::{Request, Response};
use crate::store::ChangeSet;
use crate::Result;

/// Room work queued while datagrams are taken in.
pub(crate) enum RoomWork {
    /// A history request ([`RoomStep::Request`]).
    Request(RoomStep),
    /// A names hint (when there are names) and a history answer.
    Answer(VecDeque<RoomStep>),
    /// Fetch a granted datagram by id and take its message in.
    Fetch {
        group: GroupId,
        datagram_id: [u8; 32],
        message_key: [u8; 32],
    },
}

/// What a room datagram did, to report once its change set committed.
pub(crate) struct RoomOutcome {
    log: Option<RoomLog>,
    notices: Vec<Notice>,
}

/// The heads to send in a request (bounded).
pub(crate) fn heads(log: &RoomLog) -> Vec<EntryHash> {
    let mut h = log.heads();
    h.truncate(MAX_HAVE);
    h
}

impl Machine {
    /// Takes in a `ROOM_CONTROL` datagram: an entry, a history request or
    /// an answer. What it changes goes into `changes`; the work it calls
    /// for is queued.
    pub(crate) fn room_receive(
        &mut self,
        opened: &Opened,
        datagram: &[u8],
        changes: &mut ChangeSet,
    ) -> Result<std::result::Result<RoomOutcome, Rejection>> {
        let p = &opened.payload;
        let wire = match RoomWire::decode(&p.body) {
            Ok(w) => w,
            Err(e) => return Ok(Err(Rejection::UnreadableRoomMessage(e))),
        };
        let group = GroupId(p.conversation);
        let mut log = match self.load_room(&group)? {
            Some(l) => l,
            None if matches!(wire, RoomWire::Request(_)) => {
                return Ok(Ok(RoomOutcome {
                    log: None,
                    notices: Vec::new(),
                }))
            }
            None => RoomLog::new(group),
        };
        match wire {
            RoomWire::Entry { entry, content } => {
                let meta = LocalMeta {
                    message_key: Some(*opened.message_key),
                    datagram_id: Some(datagram_id(datagram)),
                    purged: false,
                };
                let delivery = match log.receive_delivery(&opened.sender, p, &entry, content, meta)
                {
                    Ok(d) => d,
                    Err(e) => return Ok(Err(Rejection::RoomEntryRefused(e))),
                };
                self.request_missing(&log, &delivery.update, opened.sender.device);
                if let (Some(c), Ok(e)) = (&delivery.content, Entry::decode(&entry)) {
                    // Kept even while the entry waits for its parents.
                    changes
                        .room_messages
                        .push(content_row(&group, &EntryHash::of(&entry), &e, c));
                }
                drop_rejected(&delivery.update, changes);
                changes.rooms.push(super::room_save(&mut log));
                Ok(Ok(RoomOutcome {
                    log: Some(log),
                    notices: delivery.update.notices,
                }))
            }
            RoomWire::Request(request) => {
                let requester = opened.sender.user;
                let answer = match log.answer(&request, Requester::Member(requester), |h| {
                    self.content_of(h)
                }) {
                    Ok(a) => self.content_for_own(&log, &requester, a),
                    Err(e) => return Ok(Err(Rejection::RoomRequestRefused(e))),
                };
                if let Some(name) = log.names().get(&requester).copied() {
                    let names = self.known_names(&log)?;
                    let (to, device) = (vec![(requester, name)], opened.sender.device);
                    let mut steps = VecDeque::new();
                    if !names.is_empty() {
                        steps.push_back(RoomStep::Names {
                            group,
                            to: to.clone(),
                            only: Some(device),
                            names,
                        });
                    }
                    steps.push_back(RoomStep::Answer {
                        to: requester,
                        name,
                        device,
                        answer,
                    });
                    self.rooms.work.push(RoomWork::Answer(steps));
                }
                Ok(Ok(RoomOutcome {
                    log: Some(log),
                    notices: Vec::new(),
                }))
            }
            RoomWire::Answer(answer) => {
                let (update, recovered) = log.receive_answer(&answer);
                self.request_missing(&log, &update, opened.sender.device);
                for r in recovered {
                    match r {
                        Recovered::Content { entry, content } => {
                            if let Some(e) = log.entry(&entry) {
                                changes
                                    .room_messages
                                    .push(content_row(&group, &entry, e, &content));
                            }
                        }
                        Recovered::Fetch {
                            datagram_id,
                            message_key,
                            ..
                        } => self.rooms.work.push(RoomWork::Fetch {
                            group,
                            datagram_id,
                            message_key,
                        }),
                    }
                }
                drop_rejected(&update, changes);
                if answer.more {
                    if let Some(name) = log.names().get(&opened.sender.user).copied() {
                        self.rooms.work.push(RoomWork::Request(RoomStep::Request {
                            to: opened.sender.user,
                            name,
                            device: Some(opened.sender.device),
                            request: HistoryRequest {
                                group,
                                message_id: None,
                                have: heads(&log),
                            },
                        }));
                    }
                }
                if log.state().is_none() {
                    return Ok(Ok(RoomOutcome {
                        log: None,
                        notices: Vec::new(),
                    }));
                }
                changes.rooms.push(super::room_save(&mut log));
                Ok(Ok(RoomOutcome {
                    log: Some(log),
                    notices: update.notices,
                }))
            }
        }
    }

    /// The room datagram's change set committed: report its notices.
    pub(crate) fn room_committed(&mut self, outcome: RoomOutcome) {
        let Some(log) = outcome.log else {
            return;
        };
        for e in self.room_events(&log, &outcome.notices) {
            self.events.push_back(DeviceEvent::Room(e));
        }
        self.keep_room(log);
    }

    /// Queues a history request to the sender of each entry now waiting
    /// for parents (unknown room, unknown sender, missing history).
    fn request_missing(&mut self, log: &RoomLog, update: &Update, via: DeviceId) {
        for p in &update.pending {
            // The name the entry claims only addresses the request: its
            // delivery goes only if the directory maps it to the sender.
            let name = p.sender_name;
            let device = (p.device == via).then_some(p.device);
            let dup = self.rooms.work.iter().any(|w| {
                matches!(w, RoomWork::Request(RoomStep::Request { request, device: d, .. })
                    if request.group == log.group() && *d == device)
            });
            if !dup {
                self.rooms.work.push(RoomWork::Request(RoomStep::Request {
                    to: p.sender,
                    name,
                    device,
                    request: HistoryRequest {
                        group: log.group(),
                        message_id: Some(p.message_id),
                        have: heads(log),
                    },
                }));
            }
        }
    }

    /// A message the requester's own user sent went to the other members'
    /// devices (and to its sender's other devices only if it had any then):
    /// the transport may not serve that datagram to the requester, so such
    /// grants carry the content (checked against the signed digest) instead
    /// of the key.
    pub(crate) fn content_for_own(
        &self,
        log: &RoomLog,
        requester: &UserPublic,
        mut answer: HistoryAnswer,
    ) -> HistoryAnswer {
        for g in answer.grants.iter_mut() {
            let Grant::Key { entry, .. } = g else {
                continue;
            };
            let entry = *entry;
            let own = log
                .entry(&entry)
                .is_some_and(|e| e.sender.user == *requester);
            if let (true, Some(content)) = (own, self.content_of(&entry)) {
                *g = Grant::Content { entry, content };
            }
        }
        answer
    }

    /// The transport handed over what it had: starts the room work the
    /// received datagrams called for (requests, answers, fetches), and
    /// deletes room messages whose TTL passed.
    pub fn flush(&mut self, now: u64) -> Result<()> {
        self.now = now;
        for w in std::mem::take(&mut self.rooms.work) {
            let job = match w {
                RoomWork::Fetch {
                    group,
                    datagram_id,
                    message_key,
                } => Job::Fetch(FetchGranted {
                    group,
                    id: datagram_id,
                    key: message_key,
                }),
                RoomWork::Request(step) => {
                    if let RoomStep::Request { request, .. } = &step {
                        if self.request_settled(request)? {
                            continue;
                        }
                    }
                    RoomJob::background(step)
                }
                RoomWork::Answer(steps) => Job::Room(Box::new(RoomJob::new(steps, Output::Unit))),
            };
            self.start_background(job);
        }
        self.purge_rooms()
    }

    /// A request for a message that no longer waits for parents (an answer
    /// later in the same batch brought them) need not go out.
    fn request_settled(&mut self, request: &HistoryRequest) -> Result<bool> {
        let Some(id) = request.message_id else {
            return Ok(false);
        };
        let Some(log) = self.load_room(&request.group)? else {
            return Ok(false);
        };
        let settled = log.state().is_some() && !log.pending().iter().any(|p| p.message_id == id);
        self.keep_room(log);
        Ok(settled)
    }
}

/// Messages the log discarded (e.g. from a non-member) are not kept.
fn drop_rejected(update: &Update, changes: &mut ChangeSet) {
    for n in &update.notices {
        if let Event::Rejected {
            kind: EntryKind::Standard,
            ..
        } = n.event
        {
            changes.room_messages_deleted.push(n.entry.0);
        }
    }
}

/// Fetches a granted datagram, opens it with the granted key and takes its
/// entry and content in.
pub(crate) struct FetchGranted {
    group: GroupId,
    id: [u8; 32],
    key: [u8; 32],
}

impl FetchGranted {
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        m.request(
            op,
            Request::Fetch {
                datagram_id: self.id,
            },
        );
        Ok(Step::Wait)
    }

    pub(crate) fn on_reply(&mut self, m: &mut Machine, reply: Reply) -> Result<Step> {
        let bytes = match expect(reply)? {
            Response::Datagram(Some(b)) => b,
            Response::Datagram(None) => return Ok(self.failed(m, GrantProblem::Missing)),
            other => return Err(unexpected("fetch", &other)),
        };
        if datagram_id(&bytes) != self.id {
            return Ok(self.failed(m, GrantProblem::IdMismatch));
        }
        let (sender, payload) = match open_with_message_key(&bytes, &self.key) {
            Ok(x) => x,
            Err(e) => return Ok(self.failed(m, GrantProblem::Unopenable(e))),
        };
        let Ok(RoomWire::Entry { entry, content }) = RoomWire::decode(&payload.body) else {
            return Ok(self.failed(m, GrantProblem::NotAnEntry));
        };
        let mut log = m
            .load_room(&self.group)?
            .unwrap_or_else(|| RoomLog::new(self.group));
        let meta = LocalMeta {
            message_key: Some(self.key),
            datagram_id: Some(self.id),
            purged: false,
        };
        let d = match log.receive_delivery(&sender, &payload, &entry, content, meta) {
            Ok(d) => d,
            Err(e) => return Ok(self.failed(m, GrantProblem::Refused(e))),
        };
        let mut changes = ChangeSet::default();
        if let (Some(c), Some(e)) = (&d.content, log.entry(&d.entry)) {
            changes
                .room_messages
                .push(content_row(&self.group, &d.entry, e, c));
        }
        m.save_room(&mut log, changes)?;
        m.room_committed(RoomOutcome {
            log: Some(log),
            notices: d.update.notices,
        });
        Ok(Step::Done(Ok(Output::Unit)))
    }

    fn failed(&self, m: &mut Machine, problem: GrantProblem) -> Step {
        m.events
            .push_back(DeviceEvent::Rejected(Rejection::GrantFailed {
                datagram_id: self.id,
                problem,
            }));
        Step::Done(Ok(Output::Unit))
    }
}
