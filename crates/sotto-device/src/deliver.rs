//! Sending one payload to some users' devices: look their devices up (or
//! take them as given), check each user's key, claim one prekey bundle for
//! each device this device has no session with, start those sessions, seal
//! once to every device, commit, and hand the datagram to the transport.
//! Every send goes through [`Deliver`]: text messages, link sync, room
//! entries, names hints, history requests and answers.

use std::collections::HashMap;

use sotto_proto::room::datagram_id;
use sotto_proto::{
    content, username_hash, DeviceCert, DeviceId, Payload, PrekeyBundle, SignedPrekey, UserPublic,
    VerifiedBundle,
};

use crate::body::TextBody;
use crate::directory::{directory, verified_certs};
use crate::ids::{conversation_id, peer_name, random_id};
use crate::machine::Machine;
use crate::ops::{expect, unexpected, Job, Op, OpId, Output, Reply, Step};
use crate::request::{Lookup, Recipients, Request, RequestId, Response};
use crate::store::{ChangeSet, Message};
use crate::{Error, Result};

/// How a target user's key is checked against the directory.
#[derive(Clone, Debug)]
pub(crate) enum Check {
    /// This device's own user.
    Own,
    /// The user must still have this key; otherwise skip it silently (a
    /// room member the directory no longer maps to its key).
    Exact(UserPublic),
    /// A contact by name: trusted on first use, a changed key refused.
    Tofu(String),
}

/// One user to deliver to.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub name_hash: [u8; 32],
    /// Names the user in errors.
    pub who: String,
    pub check: Check,
    /// Devices already known (no lookup).
    pub certs: Option<Vec<DeviceCert>>,
    /// Only this device of the user.
    pub only: Option<DeviceId>,
}

impl Target {
    pub(crate) fn own(m: &Machine) -> Target {
        Target {
            name_hash: username_hash(&m.username),
            who: m.username.clone(),
            check: Check::Own,
            certs: None,
            only: None,
        }
    }

    pub(crate) fn contact(username: &str) -> Target {
        Target {
            name_hash: username_hash(username),
            who: username.to_string(),
            check: Check::Tofu(username.to_string()),
            certs: None,
            only: None,
        }
    }

    /// A user known by key and username hash (a room member).
    pub(crate) fn member(user: UserPublic, name_hash: [u8; 32]) -> Target {
        Target {
            name_hash,
            who: hex::encode(&name_hash[..8]),
            check: Check::Exact(user),
            certs: None,
            only: None,
        }
    }
}

/// The conversation a payload belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Conversation {
    Fixed([u8; 32]),
    /// The 1:1 conversation with the first target's user.
    WithFirst,
}

/// What to seal.
#[derive(Clone, Debug)]
pub(crate) struct Draft {
    pub message_id: [u8; 16],
    pub conversation: Conversation,
    pub content_type: u8,
    pub body: Vec<u8>,
    pub ttl: u32,
    /// Room traffic: room clock and the lost-delivery test hook apply.
    pub room: bool,
}

/// How a delivery ended.
#[derive(Debug)]
pub(crate) enum Delivered {
    Posted {
        message_key: [u8; 32],
        datagram_id: [u8; 32],
        /// Another device of this user is among the recipients.
        to_own: bool,
        history: Option<Box<Message>>,
    },
    /// No device could be addressed.
    Nobody,
}

struct Resolved {
    user: UserPublic,
    certs: Vec<DeviceCert>,
}

enum Phase {
    Looking,
    Claiming,
    Posting,
}

/// One payload on its way to its targets' devices.
pub(crate) struct Deliver {
    targets: Vec<Target>,
    resolved: Vec<Option<Resolved>>,
    waiting: HashMap<RequestId, usize>,
    bundles: Vec<VerifiedBundle>,
    draft: Draft,
    /// The history row of a text message (times set when sealed).
    history: Option<Message>,
    phase: Phase,
    posted: Option<([u8; 32], [u8; 32], bool)>,
}

impl Deliver {
    pub(crate) fn new(targets: Vec<Target>, draft: Draft) -> Deliver {
        Deliver {
            resolved: targets.iter().map(|_| None).collect(),
            targets,
            waiting: HashMap::new(),
            bundles: Vec::new(),
            draft,
            history: None,
            phase: Phase::Looking,
            posted: None,
        }
    }

    pub(crate) fn with_history(mut self, row: Message) -> Deliver {
        self.history = Some(row);
        self
    }

    /// Starts looking up; `Some` when it ended at once.
    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Option<Delivered>> {
        let own = m.device.cert().user;
        for (i, t) in self.targets.iter().enumerate() {
            if self.draft.room && m.hooks.drop_to.contains(&t.name_hash) {
                continue; // test hook: a lost delivery
            }
            if let Some(certs) = &t.certs {
                let user = match &t.check {
                    Check::Exact(u) => *u,
                    _ => own,
                };
                self.resolved[i] = Some(Resolved {
                    user,
                    certs: keep(m, t, certs.clone()),
                });
                continue;
            }
            let lookup = match t.check {
                Check::Own => Lookup::Own,
                _ => Lookup::User(t.name_hash),
            };
            let id = m.request(op, Request::Lookup(lookup));
            self.waiting.insert(id, i);
        }
        self.next(m, op)
    }

    /// Takes the answer to one of its requests; `Some` when it ended.
    pub(crate) fn on_reply(
        &mut self,
        m: &mut Machine,
        op: OpId,
        id: RequestId,
        reply: Reply,
    ) -> Result<Option<Delivered>> {
        match self.phase {
            Phase::Looking => {
                let Some(i) = self.waiting.remove(&id) else {
                    return Ok(None);
                };
                self.resolved[i] = self.resolve(m, i, directory(reply)?)?;
                self.next(m, op)
            }
            Phase::Claiming => {
                let Some(i) = self.waiting.remove(&id) else {
                    return Ok(None);
                };
                self.take_bundles(i, reply)?;
                self.next(m, op)
            }
            Phase::Posting => self.posted(m, reply).map(Some),
        }
    }

    /// The target's user and devices from a directory answer.
    fn resolve(
        &self,
        m: &mut Machine,
        i: usize,
        dir: Option<crate::request::Directory>,
    ) -> Result<Option<Resolved>> {
        let t = &self.targets[i];
        let (user, certs) = match (&t.check, dir) {
            (Check::Own, Some(d)) => {
                let own = m.device.cert().user;
                (own, verified_certs(&d.devices, &own))
            }
            (Check::Own, None) => {
                return Err(Error::BadAnswer("this user is not in the directory".into()))
            }
            // The directory must still map the name to the member's key.
            (Check::Exact(u), Some(d)) if d.user == *u => (*u, verified_certs(&d.devices, u)),
            (Check::Exact(_), _) => return Ok(None),
            (Check::Tofu(name), Some(d)) => (d.user, m.accept_directory(name, &d)?),
            (Check::Tofu(_), None) => return Err(Error::UnknownUser(t.who.clone())),
        };
        Ok(Some(Resolved {
            user,
            certs: keep(m, t, certs),
        }))
    }

    fn take_bundles(&mut self, i: usize, reply: Reply) -> Result<()> {
        let bundles = match expect(reply)? {
            Response::Bundles(Some(b)) => b,
            Response::Bundles(None) => return Err(Error::UnknownUser(self.targets[i].who.clone())),
            other => return Err(unexpected("claim", &other)),
        };
        let Some(r) = &self.resolved[i] else {
            return Ok(());
        };
        for b in bundles {
            let (Ok(cert), Ok(prekey)) =
                (DeviceCert::decode(&b.cert), SignedPrekey::decode(&b.prekey))
            else {
                continue;
            };
            // Verify user key -> device cert -> prekey before use.
            if let Ok(v) = (PrekeyBundle { cert, prekey }).verify(&r.user) {
                self.bundles.push(v);
            }
        }
        Ok(())
    }

    /// Moves to the next phase once nothing is awaited.
    fn next(&mut self, m: &mut Machine, op: OpId) -> Result<Option<Delivered>> {
        if !self.waiting.is_empty() {
            return Ok(None);
        }
        if let Phase::Looking = self.phase {
            self.phase = Phase::Claiming;
            for (i, r) in self.resolved.iter().enumerate() {
                let Some(r) = r else { continue };
                let missing: Vec<DeviceId> = r
                    .certs
                    .iter()
                    .filter(|c| !m.device.has_session(&c.device))
                    .map(|c| c.device)
                    .collect();
                if !missing.is_empty() {
                    let user = self.targets[i].name_hash;
                    let id = m.request(
                        op,
                        Request::Claim {
                            user,
                            devices: missing,
                        },
                    );
                    self.waiting.insert(id, i);
                }
            }
            if !self.waiting.is_empty() {
                return Ok(None);
            }
        }
        self.seal(m, op)
    }

    /// Starts the new sessions, seals, commits, posts. Sessions are
    /// started only here, in the step that commits them.
    fn seal(&mut self, m: &mut Machine, op: OpId) -> Result<Option<Delivered>> {
        let r = self.seal_inner(m, op);
        if r.is_err() {
            m.rollback()?;
        }
        r
    }

    fn seal_inner(&mut self, m: &mut Machine, op: OpId) -> Result<Option<Delivered>> {
        let mut rng = &mut *m.rng;
        for b in &self.bundles {
            m.device.start_session(&mut rng, b)?;
        }
        let own = m.device.cert().user;
        let mut devices: Vec<DeviceId> = Vec::new();
        let mut recipients: Vec<Recipients> = Vec::new();
        let mut to_own = false;
        for r in self.resolved.iter().flatten() {
            let mut mine = Vec::new();
            for c in &r.certs {
                if m.device.has_session(&c.device) && !devices.contains(&c.device) {
                    devices.push(c.device);
                    mine.push(c.device);
                    to_own |= r.user == own;
                }
            }
            if !mine.is_empty() {
                recipients.push(Recipients {
                    user: r.user,
                    devices: mine,
                });
            }
        }
        if devices.is_empty() {
            return Ok(Some(Delivered::Nobody));
        }
        let sent_at = if self.draft.room {
            m.room_now()
        } else {
            m.master_now()
        };
        let conversation = match self.draft.conversation {
            Conversation::Fixed(c) => c,
            Conversation::WithFirst => {
                let them = self.resolved[0].as_ref().map_or(own, |r| r.user);
                conversation_id(&own, &them)
            }
        };
        let payload = Payload {
            message_id: self.draft.message_id,
            conversation,
            sender: own,
            sent_at,
            ttl: self.draft.ttl,
            content_type: self.draft.content_type,
            body: std::mem::take(&mut self.draft.body),
        };
        let mut rng = &mut *m.rng;
        let (datagram, key) = m.device.seal_with_key(&mut rng, &payload, &devices)?;
        if let Some(h) = &mut self.history {
            h.conversation = conversation;
            h.sent_at = sent_at;
            h.received_at = sent_at;
        }
        m.commit(ChangeSet {
            messages: self.history.iter().cloned().collect(),
            ..ChangeSet::default()
        })?;
        self.posted = Some((*key, datagram_id(&datagram), to_own));
        self.phase = Phase::Posting;
        m.request(
            op,
            Request::Post {
                message_id: payload.message_id,
                datagram,
                recipients,
            },
        );
        Ok(None)
    }

    /// The transport's answer to the post. On refusal or failure the
    /// history row goes again (the sessions stay advanced: counters are
    /// never reused).
    fn posted(&mut self, m: &mut Machine, reply: Reply) -> Result<Delivered> {
        let outcome = match &reply {
            Ok(Response::Posted) => Ok(()),
            Ok(Response::Blocked) => Err(Error::Blocked(self.targets[0].who.clone())),
            Ok(other) => Err(unexpected("post", other)),
            Err(what) => Err(Error::Aborted { what }),
        };
        if let Err(e) = outcome {
            if let Some(h) = &self.history {
                m.commit(ChangeSet {
                    messages_deleted: vec![h.id],
                    ..ChangeSet::default()
                })?;
            }
            return Err(e);
        }
        let (message_key, datagram_id, to_own) = self.posted.expect("sealed before posting");
        Ok(Delivered::Posted {
            message_key,
            datagram_id,
            to_own,
            history: self.history.take().map(Box::new),
        })
    }
}

/// The devices of `t` to send to: not this one, and only `t.only` if set.
fn keep(m: &Machine, t: &Target, mut certs: Vec<DeviceCert>) -> Vec<DeviceCert> {
    let me = m.device.id();
    certs.retain(|c| c.device != me && (t.only.is_none() || t.only == Some(c.device)));
    certs
}

/// `send` and `send_raw_body`: a client body to a user and this user's
/// other devices.
pub(crate) struct SendText {
    deliver: Deliver,
    to: String,
}

impl SendText {
    pub(crate) fn new(deliver: Deliver, to: String) -> SendText {
        SendText { deliver, to }
    }

    fn done(&self, d: Option<Delivered>) -> Result<Step> {
        Ok(match d {
            None => Step::Wait,
            Some(Delivered::Nobody) => Step::fail(Error::NoDevices(self.to.clone())),
            Some(Delivered::Posted {
                history: Some(h), ..
            }) => Step::Done(Ok(Output::Message(*h))),
            Some(Delivered::Posted { history: None, .. }) => Step::Done(Ok(Output::Unit)),
        })
    }

    pub(crate) fn start(&mut self, m: &mut Machine, op: OpId) -> Result<Step> {
        let d = self.deliver.start(m, op)?;
        self.done(d)
    }

    pub(crate) fn on_reply(
        &mut self,
        m: &mut Machine,
        op: OpId,
        id: RequestId,
        r: Reply,
    ) -> Result<Step> {
        let d = self.deliver.on_reply(m, op, id, r)?;
        self.done(d)
    }
}

impl Machine {
    /// Sends a text message to `username` (all its devices, and this user's
    /// other devices); `ttl` in seconds (0 = forever). The result is the
    /// message as stored in the history.
    pub fn send_text(
        &mut self,
        now: u64,
        username: &str,
        text: &str,
        ttl: u32,
    ) -> Result<Op<Message>> {
        self.now = now;
        let to = peer_name(username)?;
        let me = self.require_username()?;
        let body = TextBody {
            sender: me.clone(),
            recipient: to.clone(),
            text: text.to_string(),
        }
        .encode();
        let deliver = self.text_delivery(&to, &me, content::TEXT, body, ttl)?;
        let row = Message {
            id: deliver.draft.message_id,
            conversation: [0; 32],
            from: me,
            to: to.clone(),
            sent_at: 0,
            received_at: 0,
            body: text.to_string(),
            ttl,
            outgoing: true,
        };
        let deliver = deliver.with_history(row);
        Ok(self.start(Job::Text(Box::new(SendText { deliver, to }))))
    }

    /// The delivery of a client body to `to` and this user's other devices.
    fn text_delivery(
        &mut self,
        to: &str,
        me: &str,
        content_type: u8,
        body: Vec<u8>,
        ttl: u32,
    ) -> Result<Deliver> {
        if self.store.is_blocked(to)? {
            return Err(Error::YouBlocked(to.to_string()));
        }
        if body.len() > sotto_proto::datagram::MAX_BODY {
            return Err(Error::TooLarge);
        }
        let mut targets = vec![Target::contact(to)];
        if to != me {
            targets.push(Target::own(self));
        }
        let draft = Draft {
            message_id: random_id(&mut *self.rng),
            conversation: Conversation::WithFirst,
            content_type,
            body,
            ttl,
            room: false,
        };
        Ok(Deliver::new(targets, draft))
    }

    /// Test hook: sends an arbitrary client body of `content_type` to
    /// `username`'s devices and this user's other devices, as
    /// [`Machine::send_text`] would (to check that receivers refuse forged
    /// bodies).
    #[cfg(any(test, feature = "testing"))]
    pub fn send_raw_body(
        &mut self,
        now: u64,
        username: &str,
        content_type: u8,
        body: Vec<u8>,
    ) -> Result<Op<()>> {
        self.now = now;
        let to = peer_name(username)?;
        let me = self.require_username()?;
        let deliver = self.text_delivery(&to, &me, content_type, body, 0)?;
        Ok(self.start(Job::Text(Box::new(SendText { deliver, to }))))
    }
}
