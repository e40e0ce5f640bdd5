//! History: answering a [`HistoryRequest`] with what the requester is
//! entitled to, and taking a [`HistoryAnswer`] in.

use std::collections::HashSet;

use crate::keys::UserPublic;

use super::super::entry::{Body, Entry, EntryHash, EntryKind};
use super::super::state::Event;
use super::super::wire::{
    Grant, HistoryAnswer, HistoryRequest, MessageContent, ANSWER_BUDGET, MAX_ANSWER_ENTRIES,
};
use super::super::RoomError;
use super::{LocalMeta, Recovered, Requester, RoomLog, Update};

impl RoomLog {
    /// Answers a [`HistoryRequest`] (an unknown-message request, or a
    /// recovery by a new or lagging device): the resolved entries the
    /// requester is entitled to see and does not hold (all but the
    /// ancestors of its `have` heads), in resolved order; and a grant for
    /// each of those standard entries whose message it is entitled to read:
    /// accepted while it was a member (or sent by it), or all of them for a
    /// platform admin. A grant carries the message key and datagram id when
    /// this device has them, else the content `content` gives (verified by
    /// the requester against the signed digest), else nothing.
    ///
    /// Which entries: everything for a platform admin or a current member;
    /// for a user who is no longer a member (removed, left), the entries up
    /// to and including the one that last ended its membership, never a
    /// later title, description, member or message; for a user who was
    /// never a member, nothing ([`RoomError::NotEntitled`]). The resolved
    /// order is topological, so that prefix holds every parent it names.
    ///
    /// The answer is a prefix of those entries that fits one datagram
    /// ([`ANSWER_BUDGET`] bytes, [`MAX_ANSWER_ENTRIES`] entries); when more
    /// remain, `more` is set and the requester asks again with its new
    /// heads.
    pub fn answer(
        &self,
        request: &HistoryRequest,
        requester: Requester,
        content: impl FnMut(&EntryHash) -> Option<MessageContent>,
    ) -> Result<HistoryAnswer, RoomError> {
        self.answer_within(request, requester, content, ANSWER_BUDGET)
    }

    /// For each resolved position, whether `user` was a member just before
    /// it; and where its visible history ends (see [`RoomLog::answer`]).
    fn membership(&self, user: &UserPublic) -> Result<(Vec<bool>, usize), RoomError> {
        let mut member = false;
        let mut ever = false;
        let mut end = None;
        let mut before = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            before.push(member);
            let sender = || self.nodes[&s.key.hash].entry.sender.user;
            match &s.event {
                Event::Created { members, .. } if members.contains(user) => member = true,
                Event::MemberAdded(u) if u == user => member = true,
                Event::MemberRemoved(u) if u == user => member = false,
                Event::Left if sender() == *user => member = false,
                _ => {}
            }
            if before[i] && !member {
                end = Some(i + 1);
            }
            ever |= member;
        }
        if !ever {
            return Err(RoomError::NotEntitled);
        }
        let end = if member {
            self.slots.len()
        } else {
            end.unwrap_or(self.slots.len())
        };
        Ok((before, end))
    }

    /// [`RoomLog::answer`] with an encoded-size budget of `max_bytes`
    /// (at least one entry is always included).
    pub fn answer_within(
        &self,
        request: &HistoryRequest,
        requester: Requester,
        mut content: impl FnMut(&EntryHash) -> Option<MessageContent>,
        max_bytes: usize,
    ) -> Result<HistoryAnswer, RoomError> {
        if request.group != self.group {
            return Err(RoomError::WrongGroup);
        }
        let (before, end) = match requester {
            Requester::PlatformAdmin => (Vec::new(), self.slots.len()),
            Requester::Member(u) => self.membership(&u)?,
        };
        // What the requester holds: its heads' ancestors.
        let mut known: HashSet<EntryHash> = HashSet::new();
        let mut stack: Vec<EntryHash> = request
            .have
            .iter()
            .filter(|h| self.nodes.contains_key(h))
            .copied()
            .collect();
        while let Some(h) = stack.pop() {
            if known.insert(h) {
                stack.extend(self.nodes[&h].entry.parents.iter().copied());
            }
        }
        let mut entries = Vec::new();
        let mut grants = Vec::new();
        let mut used = 0usize;
        let mut more = false;
        for (i, s) in self.slots[..end].iter().enumerate() {
            if known.contains(&s.key.hash) {
                continue;
            }
            let n = &self.nodes[&s.key.hash];
            let entitled = match requester {
                Requester::PlatformAdmin => true,
                Requester::Member(u) => n.entry.sender.user == u || before[i],
            };
            // An entry goes with its grant, or not at all: the requester
            // will not ask again for an entry it holds.
            let grant = if s.event != Event::Message || !entitled || n.meta.purged {
                None
            } else {
                match (n.meta.message_key, n.meta.datagram_id) {
                    (Some(message_key), Some(datagram_id)) => Some(Grant::Key {
                        entry: s.key.hash,
                        datagram_id,
                        message_key,
                    }),
                    _ => content(&s.key.hash).map(|c| Grant::Content {
                        entry: s.key.hash,
                        content: c,
                    }),
                }
            };
            let size = 4 + n.bytes.len() + grant.as_ref().map_or(0, Grant::encoded_len);
            if !entries.is_empty()
                && (used + size > max_bytes || entries.len() >= MAX_ANSWER_ENTRIES)
            {
                more = true;
                break;
            }
            used += size;
            entries.push(n.bytes.clone());
            grants.extend(grant);
        }
        Ok(HistoryAnswer {
            group: self.group,
            more,
            entries,
            grants,
        })
    }

    /// Takes in a [`HistoryAnswer`]: its entries (as [`RoomLog::receive_many`])
    /// and its grants, each checked against an accepted standard entry (and
    /// its digest, for content). Key grants are recorded in the entry's
    /// meta; the client fetches and opens those datagrams.
    pub fn receive_answer(&mut self, answer: &HistoryAnswer) -> (Update, Vec<Recovered>) {
        if answer.group != self.group {
            let mut u = Update::default();
            u.invalid.push((0, RoomError::WrongGroup));
            return (u, Vec::new());
        }
        let mut update = self.receive_many(
            answer
                .entries
                .iter()
                .map(|b| (b.as_slice(), LocalMeta::default())),
        );
        let base = answer.entries.len();
        let mut out = Vec::new();
        for (i, g) in answer.grants.iter().enumerate() {
            let hash = match g {
                Grant::Key { entry, .. } | Grant::Content { entry, .. } => *entry,
            };
            let Some(n) = self.nodes.get_mut(&hash) else {
                update.invalid.push((base + i, RoomError::UnknownEntry));
                continue;
            };
            if n.meta.purged {
                continue;
            }
            match g {
                Grant::Key {
                    datagram_id,
                    message_key,
                    ..
                } => {
                    if n.entry.kind() != EntryKind::Standard {
                        update
                            .invalid
                            .push((base + i, RoomError::Mismatch { what: "grant kind" }));
                        continue;
                    }
                    if n.meta.merge(LocalMeta {
                        message_key: Some(*message_key),
                        datagram_id: Some(*datagram_id),
                        purged: false,
                    }) {
                        self.dirty.insert(hash);
                    }
                    out.push(Recovered::Fetch {
                        entry: hash,
                        datagram_id: *datagram_id,
                        message_key: *message_key,
                    });
                }
                Grant::Content { content, .. } => match check_content(&n.entry, Some(content)) {
                    Ok(()) => out.push(Recovered::Content {
                        entry: hash,
                        content: content.clone(),
                    }),
                    Err(e) => update.invalid.push((base + i, e)),
                },
            }
        }
        (update, out)
    }

    /// Checks message content against the digest of the standard entry
    /// `hash` (e.g. after opening a fetched datagram).
    pub fn check_content(
        &self,
        hash: &EntryHash,
        content: &MessageContent,
    ) -> Result<(), RoomError> {
        let n = self.nodes.get(hash).ok_or(RoomError::UnknownEntry)?;
        check_content(&n.entry, Some(content))
    }
}

pub(super) fn check_content(
    entry: &Entry,
    content: Option<&MessageContent>,
) -> Result<(), RoomError> {
    match (&entry.body, content) {
        (Body::Message { digest }, Some(c)) if c.digest() == *digest => Ok(()),
        (Body::Control(_), None) => Ok(()),
        _ => Err(RoomError::Mismatch {
            what: "message content",
        }),
    }
}
