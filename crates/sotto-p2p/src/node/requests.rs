//! Session requests: asking, answering explicitly (accept or reject), and
//! the bounds on what waits for an answer.

use std::collections::HashMap;

use libp2p::PeerId;
use rand_core::OsRng;
use sotto_proto::SignedPrekey;

use super::{Event, Node, Session};
use crate::error::{Error, Result};
use crate::identity::{PeerIdentity, Trust};
use crate::session::{self, Outgoing};
use crate::wire::{Accept, Frame, RejectReason, Request};

struct Incoming {
    request: Request,
    from: PeerIdentity,
    deadline: u64,
}

struct Pending {
    outgoing: Outgoing,
    deadline: u64,
}

/// Requests waiting for an answer, both ways.
#[derive(Default)]
pub(crate) struct Requests {
    incoming: HashMap<(PeerId, u64), Incoming>,
    outgoing: HashMap<(PeerId, u64), Pending>,
    next_id: u64,
}

impl Requests {
    /// Forgets the requests of a peer whose link dropped: `(id, incoming)`.
    pub(crate) fn drop_peer(&mut self, peer: &PeerId) -> Vec<(u64, bool)> {
        let mut gone = Vec::new();
        self.incoming.retain(|(p, id), _| {
            let keep = p != peer;
            if !keep {
                gone.push((*id, true));
            }
            keep
        });
        self.outgoing.retain(|(p, id), _| {
            let keep = p != peer;
            if !keep {
                gone.push((*id, false));
            }
            keep
        });
        gone
    }

    pub(crate) fn next_deadline(&self) -> Option<u64> {
        let a = self.incoming.values().map(|i| i.deadline);
        let b = self.outgoing.values().map(|o| o.deadline);
        a.chain(b).min()
    }
}

/// A request waiting for this user's answer, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    pub peer: PeerId,
    pub request: u64,
    pub from: PeerIdentity,
    /// Unix ms when it expires.
    pub deadline: u64,
}

impl Node {
    /// Asks `peer` for a session. `prekey`: one of this device's prekeys
    /// for the device core's pairwise session, if it wants one. The answer
    /// comes as [`Event::SessionOpened`], [`Event::SessionRejected`] or
    /// [`Event::RequestFailed`].
    pub fn request(&mut self, peer: &PeerId, prekey: Option<SignedPrekey>) -> Result<u64> {
        let identity = self
            .peer_identity(peer)
            .ok_or_else(|| Error::UnknownPeer(peer.to_string()))?;
        if !identity.trust.may_request() {
            return Err(Error::Unverified(peer.to_string()));
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Err(Error::Busy("sessions"));
        }
        self.requests.next_id += 1;
        let id = self.requests.next_id;
        let outgoing = session::request(&mut OsRng, &self.identity, &self.local, peer, id, prekey);
        let frame = Frame::Request(outgoing.request.clone());
        self.requests.outgoing.insert(
            (*peer, id),
            Pending {
                outgoing,
                deadline: self.now + self.config.request_timeout_ms,
            },
        );
        self.send(*peer, &frame);
        Ok(id)
    }

    /// Requests waiting for this user's answer.
    pub fn pending_requests(&self) -> Vec<PendingRequest> {
        let mut v: Vec<PendingRequest> = self
            .requests
            .incoming
            .iter()
            .map(|((peer, id), i)| PendingRequest {
                peer: *peer,
                request: *id,
                from: i.from.clone(),
                deadline: i.deadline,
            })
            .collect();
        v.sort_by_key(|r| r.deadline);
        v
    }

    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        q: Request,
    ) -> std::result::Result<(), &'static str> {
        let state = self.peers.get(&peer).expect("checked by handle_frame");
        if state.limits.requests.check().is_err() {
            return Err("request rate limit");
        }
        let from = state.identity.clone().expect("checked by handle_frame");
        if self.requests.incoming.contains_key(&(peer, q.id)) {
            return Err("a request id used twice");
        }
        let proved = from.cert == Some(q.cert) && session::verify_request(&peer, &self.local, &q);
        let refusal = match from.trust {
            _ if !proved => Some(RejectReason::Unverified),
            Trust::Unverified => Some(RejectReason::Unverified),
            Trust::KeyMismatch => Some(RejectReason::IdentityMismatch),
            Trust::Verified | Trust::FirstSeen => None,
        };
        let per_peer = self
            .requests
            .incoming
            .keys()
            .filter(|(p, _)| *p == peer)
            .count();
        let refusal = refusal.or_else(|| {
            (self.requests.incoming.len() >= self.config.max_pending
                || per_peer >= self.config.max_pending_per_peer)
                .then_some(RejectReason::TooManyPending)
        });
        if let Some(reason) = refusal {
            tracing::info!(%peer, ?reason, "session request refused");
            self.send(
                peer,
                &Frame::Reject {
                    request: q.id,
                    reason,
                },
            );
            return Ok(());
        }
        let request = q.id;
        self.requests.incoming.insert(
            (peer, request),
            Incoming {
                request: q,
                from: from.clone(),
                deadline: self.now + self.config.request_timeout_ms,
            },
        );
        self.event(Event::SessionRequested {
            peer,
            request,
            from,
        });
        Ok(())
    }

    /// Accepts a pending request: the session opens on both sides.
    pub fn accept(
        &mut self,
        peer: &PeerId,
        request: u64,
        prekey: Option<SignedPrekey>,
    ) -> Result<crate::wire::Id> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(Error::Busy("sessions"));
        }
        let incoming = self
            .requests
            .incoming
            .remove(&(*peer, request))
            .ok_or(Error::NoRequest(request))?;
        let q = incoming.request;
        let (accept, keys) =
            session::accept(&mut OsRng, &self.identity, peer, &self.local, &q, prekey)
                .ok_or_else(|| Error::Unverified(peer.to_string()))?;
        let id = keys.id;
        self.send(*peer, &Frame::Accept(accept));
        self.open_session(*peer, &incoming.from, keys, q.prekey, false);
        Ok(id)
    }

    /// Refuses a pending request; the requester is told it was declined.
    pub fn reject(&mut self, peer: &PeerId, request: u64) -> Result<()> {
        self.requests
            .incoming
            .remove(&(*peer, request))
            .ok_or(Error::NoRequest(request))?;
        self.send(
            *peer,
            &Frame::Reject {
                request,
                reason: RejectReason::Declined,
            },
        );
        Ok(())
    }

    pub(super) fn on_accept(
        &mut self,
        peer: PeerId,
        a: Accept,
    ) -> std::result::Result<(), &'static str> {
        // An answer to a request that already expired here is dropped.
        let Some(pending) = self.requests.outgoing.remove(&(peer, a.request)) else {
            return Ok(());
        };
        let from = self
            .peer_identity(&peer)
            .cloned()
            .expect("checked by handle_frame");
        let cert = from.cert.ok_or("an accept from an unproved peer")?;
        let Some(keys) = pending.outgoing.finish(&self.local, &peer, &cert, &a) else {
            self.event(Event::RequestFailed {
                peer,
                request: a.request,
                why: "the answer did not verify",
            });
            return Err("an accept that does not verify");
        };
        if self.sessions.len() >= self.config.max_sessions {
            return Err("too many sessions");
        }
        self.open_session(peer, &from, keys, a.prekey, true);
        Ok(())
    }

    pub(super) fn on_reject(
        &mut self,
        peer: PeerId,
        request: u64,
        reason: RejectReason,
    ) -> std::result::Result<(), &'static str> {
        if self.requests.outgoing.remove(&(peer, request)).is_none() {
            return Ok(());
        }
        self.event(Event::SessionRejected {
            peer,
            request,
            reason,
        });
        Ok(())
    }

    fn open_session(
        &mut self,
        peer: PeerId,
        from: &PeerIdentity,
        keys: crate::session::SessionKeys,
        prekey: Option<SignedPrekey>,
        requester: bool,
    ) {
        let (user, device, cert) = (
            from.user.expect("proved before a session opens"),
            from.device.expect("proved before a session opens"),
            from.cert.expect("proved before a session opens"),
        );
        let session = keys.id;
        // Trust on first use: the name is bound to this key from now on.
        self.config.known.entry(from.name.clone()).or_insert(user);
        self.sessions.insert(
            session,
            Session {
                keys,
                peer,
                name: from.name.clone(),
                user,
                device,
                cert,
                prekey,
            },
        );
        self.event(Event::SessionOpened {
            session,
            peer,
            name: from.name.clone(),
            user,
            device,
            cert,
            prekey,
            requester,
        });
    }

    pub(super) fn expire_requests(&mut self) {
        let now = self.now;
        let expired_in: Vec<(PeerId, u64)> = self
            .requests
            .incoming
            .iter()
            .filter(|(_, i)| i.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for (peer, request) in expired_in {
            self.requests.incoming.remove(&(peer, request));
            self.send(
                peer,
                &Frame::Reject {
                    request,
                    reason: RejectReason::Expired,
                },
            );
            self.event(Event::RequestWithdrawn { peer, request });
        }
        let expired_out: Vec<(PeerId, u64)> = self
            .requests
            .outgoing
            .iter()
            .filter(|(_, o)| o.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for (peer, request) in expired_out {
            self.requests.outgoing.remove(&(peer, request));
            self.event(Event::RequestFailed {
                peer,
                request,
                why: "no answer in time",
            });
        }
    }
}
