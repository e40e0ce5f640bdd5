//! Receiving: opening each datagram, deciding what it is (a message, link
//! data, a room entry, request or answer, a names hint), committing what it
//! changes, then acknowledging it.
//!
//! A message from a user this device does not know yet is checked against
//! the directory: the datagram is parked (its opening rolled back, so it
//! opens again) until the answer comes, while later datagrams go on. A
//! datagram is acknowledged only after its change set is committed.

use std::collections::HashSet;

use sotto_proto::{check_contact_key, content, normalize_username, ContactKey, Opened, UserPublic};

use crate::body::{GroupTextBody, LinkSyncBody, NamesBody, TextBody, GROUP_TEXT, ROOM_NAMES};
use crate::directory::{contact_record, directory, verified_certs};
use crate::events::{Event, Rejection};
use crate::ids::{check_username, conversation_id};
use crate::machine::Machine;
use crate::ops::Reply;
use crate::p2p::{group_address, group_conversation, GroupScope};
use crate::request::{DeliveryTag, Directory, Lookup, Owner, Request};
use crate::rooms::RoomOutcome;
use crate::store::{ChangeSet, Message};
use crate::Result;

/// A datagram as the transport delivered it.
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    /// How to acknowledge it.
    pub tag: DeliveryTag,
    pub datagram: &'a [u8],
    /// When the transport accepted it (master-clock ms).
    pub received_at: u64,
}

/// A datagram waiting for the directory to answer who its sender is.
struct Parked {
    tag: DeliveryTag,
    datagram: Vec<u8>,
    received_at: u64,
    sender: String,
    /// The group session it was delivered in, if any.
    scope: Option<GroupScope>,
}

/// Received datagrams waiting for a sender check.
#[derive(Default)]
pub(crate) struct Inbox {
    parked: Vec<Parked>,
    /// Claimed usernames being looked up.
    asking: HashSet<String>,
}

impl Inbox {
    /// Datagrams parked.
    pub(crate) fn len(&self) -> usize {
        self.parked.len()
    }
}

/// What a datagram turned out to be.
enum Verdict {
    Message(Message),
    Duplicate,
    Blocked,
    Rejected(Rejection),
    LinkSync(Option<String>),
    Room(Box<RoomOutcome>),
    Ignored,
    /// The claimed sender must be checked against the directory first.
    NeedsSender(String),
}

/// The directory's answer about one claimed sender, while parked datagrams
/// are processed again.
type Answer<'a> = Option<(&'a str, &'a Option<Directory>)>;

/// Whether a message's claimed sender checks out.
enum SenderCheck {
    Ok,
    Refused(Rejection),
    Unknown,
}

impl Machine {
    /// Takes one received datagram in: opens it, commits what it changes,
    /// queues its acknowledgement and reports events. `Err` only when the
    /// store failed: then nothing was committed or acknowledged.
    pub fn receive(&mut self, now: u64, incoming: Incoming<'_>) -> Result<()> {
        self.now = now;
        self.process(incoming, None, None)
    }

    /// [`Machine::receive`] for a datagram the transport delivered inside
    /// group session `scope` (relayed by its host). Only here is a group
    /// message taken in, and only from a current member of that group.
    pub fn receive_in_group(
        &mut self,
        now: u64,
        incoming: Incoming<'_>,
        scope: &GroupScope,
    ) -> Result<()> {
        self.now = now;
        self.process(incoming, None, Some(scope))
    }

    /// Datagrams waiting for the directory.
    pub fn parked(&self) -> usize {
        self.inbox.len()
    }

    fn ack(&mut self, tag: DeliveryTag) {
        if !self.hooks.skip_ack {
            self.queue.ack(tag);
        }
    }

    fn process(
        &mut self,
        incoming: Incoming<'_>,
        answer: Answer<'_>,
        scope: Option<&GroupScope>,
    ) -> Result<()> {
        let Incoming {
            tag,
            datagram: bytes,
            received_at,
        } = incoming;
        let opened = match self.device.open(bytes) {
            Ok(o) => o,
            Err(sotto_proto::Error::Replay) => {
                self.events.push_back(Event::Duplicate);
                self.ack(tag);
                return Ok(());
            }
            Err(e) => {
                self.events
                    .push_back(Event::Rejected(Rejection::Unopenable(e)));
                self.ack(tag);
                return Ok(());
            }
        };
        let mut changes = ChangeSet::default();
        let verdict = match self.classify(&opened, bytes, received_at, answer, scope, &mut changes)
        {
            Ok(Verdict::NeedsSender(name)) => {
                self.rollback()?;
                self.park(incoming, name, scope.cloned());
                return Ok(());
            }
            Ok(v) => v,
            Err(e) => {
                self.rollback()?;
                return Err(e);
            }
        };
        changes.cursor = Some(tag.0);
        self.commit(changes)?;
        match verdict {
            Verdict::Message(m) => self.events.push_back(Event::Message(m)),
            Verdict::Duplicate => self.events.push_back(Event::Duplicate),
            Verdict::Blocked => self.events.push_back(Event::Blocked),
            Verdict::Rejected(r) => self.events.push_back(Event::Rejected(r)),
            Verdict::LinkSync(name) => {
                if let Some(name) = name {
                    self.username = name;
                }
                self.events.push_back(Event::LinkSync);
            }
            Verdict::Room(outcome) => self.room_committed(*outcome),
            Verdict::Ignored | Verdict::NeedsSender(_) => {}
        }
        self.ack(tag);
        Ok(())
    }

    /// Decides what an opened datagram is and adds what it changes to
    /// `changes`. `Err` only for store failures.
    fn classify(
        &mut self,
        opened: &Opened,
        bytes: &[u8],
        received_at: u64,
        answer: Answer<'_>,
        scope: Option<&GroupScope>,
        changes: &mut ChangeSet,
    ) -> Result<Verdict> {
        let own = self.device.cert().user;
        let p = &opened.payload;
        Ok(match p.content_type {
            content::TEXT => {
                let Some(body) = TextBody::decode(&p.body) else {
                    return Ok(Verdict::Rejected(Rejection::UnreadableBody {
                        content_type: content::TEXT,
                    }));
                };
                let (from, to) = (
                    normalize_username(&body.sender),
                    normalize_username(&body.recipient),
                );
                let sender = opened.sender.user;
                let outgoing = sender == own;
                let conversation = if outgoing {
                    if !self.username.is_empty() && from != self.username {
                        return Ok(Verdict::Rejected(Rejection::OwnDeviceClaims {
                            claimed: from,
                        }));
                    }
                    match self.store.contact(&to)? {
                        Some(c) => conversation_id(&own, &UserPublic(c.user_key)),
                        None => p.conversation,
                    }
                } else {
                    if self.store.is_blocked(&from)? {
                        return Ok(Verdict::Blocked);
                    }
                    if !self.username.is_empty() && to != self.username {
                        return Ok(Verdict::Rejected(Rejection::NotForYou { from, to }));
                    }
                    match self.check_sender(&from, &sender, answer, changes)? {
                        SenderCheck::Ok => {}
                        SenderCheck::Refused(r) => return Ok(Verdict::Rejected(r)),
                        SenderCheck::Unknown => return Ok(Verdict::NeedsSender(from)),
                    }
                    conversation_id(&own, &sender)
                };
                if self.store.has_message(&p.message_id)? {
                    return Ok(Verdict::Duplicate);
                }
                let m = Message {
                    id: p.message_id,
                    conversation,
                    from,
                    to,
                    sent_at: p.sent_at,
                    received_at,
                    body: body.text,
                    ttl: p.ttl,
                    outgoing,
                };
                changes.messages.push(m.clone());
                Verdict::Message(m)
            }
            GROUP_TEXT => {
                let Some(body) = GroupTextBody::decode(&p.body) else {
                    return Ok(Verdict::Rejected(Rejection::UnreadableBody {
                        content_type: GROUP_TEXT,
                    }));
                };
                let from = normalize_username(&body.sender);
                let Some(scope) = scope.filter(|s| s.id == body.group) else {
                    return Ok(Verdict::Rejected(Rejection::OutsideGroup));
                };
                let sender = opened.sender.user;
                if !scope.members.contains(&sender) {
                    return Ok(Verdict::Rejected(Rejection::NotGroupMember {
                        claimed: from,
                    }));
                }
                let outgoing = sender == own;
                if !outgoing {
                    if self.store.is_blocked(&from)? {
                        return Ok(Verdict::Blocked);
                    }
                    match self.check_sender(&from, &sender, answer, changes)? {
                        SenderCheck::Ok => {}
                        SenderCheck::Refused(r) => return Ok(Verdict::Rejected(r)),
                        SenderCheck::Unknown => return Ok(Verdict::NeedsSender(from)),
                    }
                }
                if self.store.has_message(&p.message_id)? {
                    return Ok(Verdict::Duplicate);
                }
                let m = Message {
                    id: p.message_id,
                    conversation: group_conversation(&scope.id),
                    from,
                    to: group_address(&scope.title),
                    sent_at: p.sent_at,
                    received_at,
                    body: body.text,
                    ttl: p.ttl,
                    outgoing,
                };
                changes.messages.push(m.clone());
                Verdict::Message(m)
            }
            content::LINK_SYNC => {
                if opened.sender.user != own {
                    return Ok(Verdict::Rejected(Rejection::ForeignLinkSync));
                }
                let Some((s, name)) = LinkSyncBody::decode(&p.body)
                    .and_then(|s| check_username(&s.username).ok().map(|n| (s, n)))
                else {
                    return Ok(Verdict::Rejected(Rejection::UnreadableBody {
                        content_type: content::LINK_SYNC,
                    }));
                };
                // The name is taken only from the directory's word: it must
                // be registered to this device's user key.
                if self.username.is_empty() {
                    match answer.filter(|(n, _)| *n == name) {
                        None => return Ok(Verdict::NeedsSender(name)),
                        Some((_, Some(d))) if d.user == own => {}
                        Some(_) => {
                            return Ok(Verdict::Rejected(Rejection::LinkSyncName { claimed: name }))
                        }
                    }
                } else if name != self.username {
                    return Ok(Verdict::Rejected(Rejection::LinkSyncName { claimed: name }));
                }
                self.link_sync(s, name, changes)?
            }
            content::ROOM_CONTROL => match self.room_receive(opened, bytes, changes)? {
                Ok(outcome) => Verdict::Room(Box::new(outcome)),
                Err(r) => Verdict::Rejected(r),
            },
            ROOM_NAMES => match NamesBody::decode(&p.body) {
                Some(names) => {
                    // Each name is kept under its own hash only.
                    for n in names.0 {
                        if let Ok(n) = check_username(&n) {
                            changes.room_names.push((sotto_proto::username_hash(&n), n));
                        }
                    }
                    Verdict::Ignored
                }
                None => Verdict::Rejected(Rejection::UnreadableBody {
                    content_type: ROOM_NAMES,
                }),
            },
            _ => Verdict::Ignored,
        })
    }

    /// Link sync sent as a datagram by another device of this user: the
    /// user name `name` (checked against the directory by the caller) if
    /// this device has none yet, the contacts it does not know, the block
    /// list. Such a sync is signed by a device key, not by the user key, so
    /// its contacts come in unverified: only the approval a new device
    /// opens with its link code carries verified contacts.
    fn link_sync(
        &mut self,
        s: LinkSyncBody,
        name: String,
        changes: &mut ChangeSet,
    ) -> Result<Verdict> {
        for c in &s.contacts {
            if let Ok(n) = check_username(&c.username) {
                if n != name && self.store.contact(&n)?.is_none() {
                    changes
                        .contacts
                        .push(contact_record(&n, &c.user_key, false, &[]));
                }
            }
        }
        for b in s.blocked {
            if let Ok(b) = check_username(&b) {
                changes.blocks.push((b, true));
            }
        }
        let name = self.username.is_empty().then_some(name);
        changes.username.clone_from(&name);
        Ok(Verdict::LinkSync(name))
    }

    /// Checks that `claimed` is the name of the user whose key certified the
    /// sending device: against the contact, else against the directory's
    /// `answer` (recording the contact), else [`SenderCheck::Unknown`].
    fn check_sender(
        &self,
        claimed: &str,
        user: &UserPublic,
        answer: Answer<'_>,
        changes: &mut ChangeSet,
    ) -> Result<SenderCheck> {
        if let Some(c) = self.store.contact(claimed)? {
            return Ok(
                match check_contact_key(Some(&UserPublic(c.user_key)), user) {
                    ContactKey::Unchanged => SenderCheck::Ok,
                    _ => SenderCheck::Refused(Rejection::SenderKeyMismatch {
                        claimed: claimed.to_string(),
                    }),
                },
            );
        }
        let Some((name, dir)) = answer.filter(|(n, _)| *n == claimed) else {
            return Ok(SenderCheck::Unknown);
        };
        Ok(match dir {
            None => SenderCheck::Refused(Rejection::SenderUnknown {
                claimed: name.to_string(),
            }),
            Some(d) if d.user != *user => SenderCheck::Refused(Rejection::SenderNotOwner {
                claimed: name.to_string(),
            }),
            Some(d) => {
                let certs = verified_certs(&d.devices, &d.user);
                changes
                    .contacts
                    .push(contact_record(claimed, user, false, &certs));
                if let Some(name) = &d.organisation {
                    changes
                        .organisations
                        .push((claimed.to_string(), name.clone()));
                }
                SenderCheck::Ok
            }
        })
    }

    fn park(&mut self, incoming: Incoming<'_>, sender: String, scope: Option<GroupScope>) {
        if self.inbox.asking.insert(sender.clone()) {
            let hash = sotto_proto::username_hash(&sender);
            self.queue.push(
                Owner::Sender(sender.clone()),
                Request::Lookup(Lookup::User(hash)),
            );
        }
        self.inbox.parked.push(Parked {
            tag: incoming.tag,
            datagram: incoming.datagram.to_vec(),
            received_at: incoming.received_at,
            sender,
            scope,
        });
    }

    /// The directory answered about `name`: the datagrams parked for it go
    /// through again, in the order they came. If the lookup failed they
    /// are dropped unacknowledged (the transport delivers them again).
    pub(crate) fn sender_answered(&mut self, name: &str, reply: Reply) {
        self.inbox.asking.remove(name);
        let (mine, rest): (Vec<Parked>, Vec<Parked>) = std::mem::take(&mut self.inbox.parked)
            .into_iter()
            .partition(|p| p.sender == name);
        self.inbox.parked = rest;
        let dir = match directory(reply) {
            Ok(d) => d,
            Err(crate::Error::Aborted { .. }) => return,
            Err(e) => {
                self.events.push_back(Event::Failed(e));
                return;
            }
        };
        for p in mine {
            let incoming = Incoming {
                tag: p.tag,
                datagram: &p.datagram,
                received_at: p.received_at,
            };
            if let Err(e) = self.process(incoming, Some((name, &dir)), p.scope.as_ref()) {
                self.events.push_back(Event::Failed(e));
            }
        }
    }
}
