//! The node: one device's peer-to-peer state as a sans-IO state machine.
//!
//! Like quinn-proto's `Connection`, it touches no socket, file or clock: the
//! shell tells it that links came up or went down, hands it the frames that
//! arrived and the time, and calls its commands; it answers with
//! [`Output`]s to pull with [`Node::poll_output`] (frames to send, peers to
//! disconnect, file reads and writes, events for the application) and the
//! next time it wants to be woken ([`Node::poll_timeout`]). Randomness comes
//! from the OS. Its tests (`tests.rs`) wire nodes together in memory.
//!
//! Nothing a peer sends can make it panic or grow without bound: frames are
//! decoded with bounded reads, every table has a limit ([`Config`]), and a
//! peer that breaks the protocol or its rate limit is disconnected
//! ([`Output::Disconnect`]) while the node carries on.

mod files;
mod groups;
mod limits;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};

use libp2p::PeerId;
use sotto_proto::{DeviceCert, DeviceId, SignedPrekey, UserPublic};

use crate::error::{Error, Result};
use crate::identity::{judge_hello, make_hello, Identity, PeerIdentity};
use crate::session::SessionKeys;
use crate::wire::{
    chunk_header, sealed_header, FileBytes, Frame, GroupAd, Id, Inner, RejectReason, CHUNK_HEAD,
    MAX_DATAGRAM, SEALED_HEADER,
};
use zeroize::Zeroizing;

pub use files::{valid_file_name, FileEvent, FileIo};
pub use groups::{GroupEvent, GroupInfo};
pub use limits::Config;
use limits::{NodeClock, PeerLimits};
pub use requests::PendingRequest;

/// What the node hands out. (Variants differ in size; a few hundred bytes
/// moved per output is nothing next to the frame each carries.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Send this frame to the peer (on its sotto stream).
    Send {
        peer: PeerId,
        frame: Vec<u8>,
    },
    /// Close every connection to the peer (it broke the protocol or a
    /// limit, or sent no hello in time).
    Disconnect {
        peer: PeerId,
        why: &'static str,
    },
    /// A file operation for the shell; some expect an answer (see
    /// [`FileIo`]).
    File(FileIo),
    Event(Event),
}

/// What the application is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A peer identified itself (or refreshed its advertisement).
    PeerFound {
        peer: PeerId,
        identity: PeerIdentity,
    },
    PeerLost {
        peer: PeerId,
    },
    /// A peer asks for a session; answer with [`Node::accept`] or
    /// [`Node::reject`]. Only peers whose trust allows it get here.
    SessionRequested {
        peer: PeerId,
        request: u64,
        from: PeerIdentity,
    },
    /// A request to this node went away (its link dropped or it expired).
    RequestWithdrawn {
        peer: PeerId,
        request: u64,
    },
    /// A session is open (either side). `prekey`: the one the other side
    /// sent, for the device core's pairwise session.
    SessionOpened {
        session: Id,
        peer: PeerId,
        name: String,
        user: UserPublic,
        device: DeviceId,
        /// The peer's device certificate (from its hello, verified).
        cert: DeviceCert,
        prekey: Option<SignedPrekey>,
        requester: bool,
    },
    /// The peer refused this node's request.
    SessionRejected {
        peer: PeerId,
        request: u64,
        reason: RejectReason,
    },
    /// This node's request got no answer: the link dropped, the answer did
    /// not verify, or it expired.
    RequestFailed {
        peer: PeerId,
        request: u64,
        why: &'static str,
    },
    /// The session ended and its keys were erased.
    SessionClosed {
        session: Id,
        by_peer: bool,
    },
    Datagram {
        session: Id,
        data: Vec<u8>,
    },
    File(files::FileEvent),
    Group(groups::GroupEvent),
}

/// A decision of the file or group part, carried out by [`Node::apply`].
#[allow(clippy::large_enum_variant)]
pub(crate) enum Act {
    Seal(Id, Inner),
    /// A file chunk, sealed around its bytes ([`Node::seal_chunk`]).
    Chunk {
        session: Id,
        file: Id,
        offset: u64,
        data: FileBytes,
    },
    File(FileIo),
    Event(Event),
    Advertise,
}

struct Peer {
    identity: Option<PeerIdentity>,
    linked_at: u64,
    limits: PeerLimits,
}

/// An open session: its keys and whom it is with.
pub(crate) struct Session {
    keys: SessionKeys,
    pub(crate) peer: PeerId,
    pub(crate) name: String,
    pub(crate) user: UserPublic,
    pub(crate) device: DeviceId,
    pub(crate) cert: DeviceCert,
    /// The prekey the peer handed over in the handshake.
    pub(crate) prekey: Option<SignedPrekey>,
}

/// One device's peer-to-peer state.
pub struct Node {
    identity: Identity,
    local: PeerId,
    config: Config,
    clock: NodeClock,
    now: u64,
    peers: HashMap<PeerId, Peer>,
    sessions: HashMap<Id, Session>,
    requests: requests::Requests,
    files: files::Files,
    groups: groups::Groups,
    next_hello: u64,
    outputs: VecDeque<Output>,
}

impl Node {
    /// `local`: this node's libp2p peer id; `now`: Unix ms.
    pub fn new(identity: Identity, local: PeerId, config: Config, now: u64) -> Node {
        let clock = NodeClock::default();
        clock.set_ms(now);
        Node {
            identity,
            local,
            config,
            clock,
            now,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            requests: Default::default(),
            files: Default::default(),
            groups: Default::default(),
            next_hello: now,
            outputs: VecDeque::new(),
        }
    }

    pub fn local_peer(&self) -> PeerId {
        self.local
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Learns (or updates) the key known for a name.
    pub fn know(&mut self, name: &str, user: UserPublic) {
        self.config.known.insert(name.to_string(), user);
    }

    fn tick(&mut self, now: u64) {
        self.now = self.now.max(now);
        self.clock.set_ms(self.now);
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    pub(crate) fn send(&mut self, peer: PeerId, frame: &Frame) {
        self.outputs.push_back(Output::Send {
            peer,
            frame: frame.encode(),
        });
    }

    fn disconnect(&mut self, peer: PeerId, why: &'static str) {
        tracing::info!(%peer, why, "disconnecting peer");
        self.outputs.push_back(Output::Disconnect { peer, why });
        self.link_down(peer, self.now);
    }

    fn hello_frame(&self) -> Frame {
        Frame::Hello(make_hello(
            &self.identity,
            &self.local,
            self.now + self.config.advert_ttl_ms,
            self.groups.advertised(),
        ))
    }

    /// A link (sotto stream) to `peer` is up: this node introduces itself.
    pub fn link_up(&mut self, peer: PeerId, now: u64) {
        self.tick(now);
        let limits = PeerLimits::new(&self.config, &self.clock);
        self.peers.insert(
            peer,
            Peer {
                identity: None,
                linked_at: self.now,
                limits,
            },
        );
        let hello = self.hello_frame();
        self.send(peer, &hello);
    }

    /// The link to `peer` is gone. Sessions survive (a file transfer
    /// resumes when the link comes back); requests in flight do not.
    pub fn link_down(&mut self, peer: PeerId, now: u64) {
        self.tick(now);
        if self.peers.remove(&peer).is_none() {
            return;
        }
        for (request, incoming) in self.requests.drop_peer(&peer) {
            self.event(if incoming {
                Event::RequestWithdrawn { peer, request }
            } else {
                Event::RequestFailed {
                    peer,
                    request,
                    why: "the connection dropped",
                }
            });
        }
        let on_peer: Vec<Id> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        self.files.pause_sessions(&on_peer, self.now);
        self.event(Event::PeerLost { peer });
    }

    /// The peers this node has a link to, with what they proved.
    pub fn peers(&self) -> impl Iterator<Item = (&PeerId, Option<&PeerIdentity>)> {
        self.peers.iter().map(|(p, s)| (p, s.identity.as_ref()))
    }

    pub fn peer_identity(&self, peer: &PeerId) -> Option<&PeerIdentity> {
        self.peers.get(peer)?.identity.as_ref()
    }

    /// Open sessions: id, peer, claimed-and-proved name.
    pub fn sessions(&self) -> impl Iterator<Item = (&Id, &PeerId, &str)> {
        self.sessions
            .iter()
            .map(|(id, s)| (id, &s.peer, s.name.as_str()))
    }

    /// A frame from `peer` (the Noise-authenticated sender). A sealed frame
    /// is opened in this buffer; a file chunk's bytes stay in it on their
    /// way to the disk.
    pub fn handle_frame(&mut self, peer: PeerId, bytes: Vec<u8>, now: u64) {
        self.tick(now);
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        if state.limits.frames.check().is_err() {
            return self.disconnect(peer, "frame rate limit");
        }
        let identified = state.identity.is_some();
        if let Some((session, counter)) = sealed_header(&bytes) {
            let r = if identified {
                self.on_sealed(peer, session, counter, bytes)
            } else {
                Err("a frame before the hello")
            };
            if let Err(why) = r {
                self.disconnect(peer, why);
            }
            return;
        }
        let frame = match Frame::decode(&bytes) {
            Ok(f) => f,
            Err(_) => return self.disconnect(peer, "malformed frame"),
        };
        if let Err(why) = match frame {
            Frame::Hello(h) => self.on_hello(peer, &h),
            _ if !identified => Err("a frame before the hello"),
            Frame::Request(q) => self.on_request(peer, q),
            Frame::Accept(a) => self.on_accept(peer, a),
            Frame::Reject { request, reason } => self.on_reject(peer, request, reason),
            // Every sealed frame that decodes has a sealed header.
            Frame::Sealed { .. } => Err("malformed frame"),
        } {
            self.disconnect(peer, why);
        }
    }

    fn on_hello(
        &mut self,
        peer: PeerId,
        hello: &crate::wire::Hello,
    ) -> std::result::Result<(), &'static str> {
        let identity = judge_hello(&peer, hello, &self.config.known);
        let state = self.peers.get_mut(&peer).expect("checked by handle_frame");
        if let Some(old) = &state.identity {
            // A refresh may renew the advertisement, not change who it is.
            if old.device != identity.device || old.name != identity.name {
                return Err("a hello that changes identity");
            }
        }
        let first = state.identity.is_none();
        state.identity = Some(identity.clone());
        if let Some(device) = identity.device {
            // The device's node restarted under a new peer id: sessions
            // with its old incarnation are useless (it lost their keys).
            let stale: Vec<Id> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.device == device && s.peer != peer)
                .map(|(id, _)| *id)
                .collect();
            for id in stale {
                self.drop_session(id, true);
            }
            if first {
                let resume: Vec<Id> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.peer == peer)
                    .map(|(id, _)| *id)
                    .collect();
                for id in resume {
                    let acts = self.files.resume_session(id, self.now);
                    self.apply(acts);
                }
            }
        }
        self.event(Event::PeerFound { peer, identity });
        Ok(())
    }

    /// The sealed frame `frame` (its ciphertext after [`SEALED_HEADER`]).
    fn on_sealed(
        &mut self,
        peer: PeerId,
        id: Id,
        counter: u64,
        mut frame: Vec<u8>,
    ) -> std::result::Result<(), &'static str> {
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or("a message for no session")?;
        if session.peer != peer {
            return Err("a message on another peer's session");
        }
        if !session
            .keys
            .open_in_place(counter, &mut frame, SEALED_HEADER)
        {
            return Err("a message that does not open");
        }
        // A file chunk: its bytes go to the disk from this buffer (file
        // bytes, not zeroized). Anything else is decoded and erased.
        if frame.get(SEALED_HEADER) == Some(&5) {
            let (file, offset) =
                chunk_header(&frame[SEALED_HEADER..]).map_err(|_| "a malformed message")?;
            let data = FileBytes::new(frame, SEALED_HEADER + CHUNK_HEAD);
            let acts = self.files.on_chunk(id, file, offset, data, self.now)?;
            self.apply(acts);
            return Ok(());
        }
        let plain = Zeroizing::new(frame);
        let inner = Inner::decode(&plain[SEALED_HEADER..]).map_err(|_| "a malformed message")?;
        drop(plain);
        match inner {
            Inner::Datagram(data) => self.event(Event::Datagram { session: id, data }),
            Inner::Close => {
                self.drop_session(id, true);
            }
            Inner::GroupInvite { .. }
            | Inner::GroupJoin { .. }
            | Inner::GroupLeave { .. }
            | Inner::GroupRoster { .. }
            | Inner::GroupPost { .. }
            | Inner::GroupDeliver { .. } => {
                let from = self.sessions.get(&id).expect("opened above");
                let me = (
                    self.identity.user(),
                    self.identity.name.as_str(),
                    self.identity.cert,
                );
                let acts = self.groups.on_message(
                    id,
                    from,
                    inner,
                    &me,
                    &self.sessions,
                    self.config.max_groups,
                )?;
                self.apply(acts);
            }
            file => {
                let peer = self.sessions.get(&id).map(|s| s.peer);
                let sessions = &self.sessions;
                let acts = self
                    .files
                    .on_message(id, file, &self.config, self.now, |s| {
                        sessions.get(s).map(|x| x.peer) == peer
                    })?;
                self.apply(acts);
            }
        }
        Ok(())
    }

    /// Seals `inner` on session `id` and queues it; the link must be up.
    pub(crate) fn seal(&mut self, id: &Id, inner: &Inner) -> Result<()> {
        let (keys, peer) = self.linked_keys(id)?;
        let capacity = match inner {
            Inner::FileChunk { data, .. }
            | Inner::Datagram(data)
            | Inner::GroupPost { data, .. }
            | Inner::GroupDeliver { data, .. } => data.len() + 160,
            _ => 256,
        };
        let frame = keys.seal_frame(inner, capacity);
        self.outputs.push_back(Output::Send { peer, frame });
        Ok(())
    }

    /// Seals a file chunk on session `id` around its bytes and queues it.
    pub(crate) fn seal_chunk(
        &mut self,
        id: &Id,
        file: &Id,
        offset: u64,
        data: FileBytes,
    ) -> Result<()> {
        let (keys, peer) = self.linked_keys(id)?;
        let frame = keys.seal_chunk_frame(file, offset, data);
        self.outputs.push_back(Output::Send { peer, frame });
        Ok(())
    }

    /// The keys of session `id` and its peer, whose link must be up.
    fn linked_keys(&mut self, id: &Id) -> Result<(&mut SessionKeys, PeerId)> {
        let session = self
            .sessions
            .get_mut(id)
            .ok_or_else(|| Error::NoSession(hex::encode(id)))?;
        if !self.peers.contains_key(&session.peer) {
            return Err(Error::UnknownPeer(session.peer.to_string()));
        }
        Ok((&mut session.keys, session.peer))
    }

    /// Sends opaque bytes (a sotto datagram) inside session `id`.
    pub fn send_datagram(&mut self, id: &Id, data: Vec<u8>) -> Result<()> {
        if data.len() > MAX_DATAGRAM {
            return Err(Error::TooLarge {
                what: "datagram",
                len: data.len(),
                max: MAX_DATAGRAM,
            });
        }
        self.seal(id, &Inner::Datagram(data))
    }

    /// Ends session `id`: tells the peer (if reachable) and erases the keys.
    pub fn close(&mut self, id: &Id) -> Result<()> {
        if !self.sessions.contains_key(id) {
            return Err(Error::NoSession(hex::encode(id)));
        }
        let _ = self.seal(id, &Inner::Close);
        self.drop_session(*id, false);
        Ok(())
    }

    /// Forgets a session: its keys are zeroized as it drops; its transfers
    /// and group memberships end.
    fn drop_session(&mut self, id: Id, by_peer: bool) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        drop(session);
        let mut acts = self.files.drop_session(id);
        let me = (
            self.identity.user(),
            self.identity.name.as_str(),
            self.identity.cert,
        );
        acts.extend(self.groups.session_closed(id, &me, &self.sessions));
        self.apply(acts);
        self.event(Event::SessionClosed {
            session: id,
            by_peer,
        });
    }

    /// Whether session `id` still holds keys (tests of erasure).
    #[cfg(any(test, feature = "testing"))]
    pub fn holds_session_keys(&self, id: &Id) -> bool {
        self.sessions.contains_key(id)
    }

    /// When [`Node::handle_timeout`] should next run (Unix ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        let hello = self
            .peers
            .values()
            .filter(|p| p.identity.is_none())
            .map(|p| p.linked_at + self.config.hello_timeout_ms)
            .min();
        let (peers, sessions) = (&self.peers, &self.sessions);
        let files = self.files.next_deadline(
            self.config.file_stall_ms,
            self.config.file_resume_ms,
            |id| {
                sessions
                    .get(id)
                    .is_some_and(|s| peers.contains_key(&s.peer))
            },
        );
        [
            Some(self.next_hello),
            hello,
            self.requests.next_deadline(),
            files,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: u64) {
        self.tick(now);
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.identity.is_none() && p.linked_at + self.config.hello_timeout_ms <= self.now
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in silent {
            self.disconnect(peer, "no hello in time");
        }
        self.expire_requests();
        let (peers, sessions) = (&self.peers, &self.sessions);
        let acts = self.files.expire(
            self.now,
            self.config.file_stall_ms,
            self.config.file_resume_ms,
            |id| {
                sessions
                    .get(id)
                    .is_some_and(|s| peers.contains_key(&s.peer))
            },
        );
        self.apply(acts);
        if self.now >= self.next_hello {
            self.next_hello = self.now + self.config.advert_ttl_ms / 2;
            self.advertise();
        }
    }

    /// Sends a fresh hello (advertisement) on every link.
    fn advertise(&mut self) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        let hello = self.hello_frame();
        for peer in peers {
            self.send(peer, &hello);
        }
    }

    /// The group sessions this node hosts, as advertised.
    pub fn advertised_groups(&self) -> Vec<GroupAd> {
        self.groups.advertised()
    }

    /// Carries out what the file and group parts decided. A message whose
    /// link is down is dropped: transfers resume from the receiver's want,
    /// group traffic is best effort like any datagram.
    pub(crate) fn apply(&mut self, acts: Vec<Act>) {
        for act in acts {
            match act {
                Act::Seal(id, inner) => {
                    if let Err(e) = self.seal(&id, &inner) {
                        tracing::debug!(error = %e, "message not sent");
                    }
                }
                Act::Chunk {
                    session,
                    file,
                    offset,
                    data,
                } => {
                    if let Err(e) = self.seal_chunk(&session, &file, offset, data) {
                        tracing::debug!(error = %e, "chunk not sent");
                    }
                }
                Act::File(io) => self.outputs.push_back(Output::File(io)),
                Act::Event(e) => self.event(e),
                Act::Advertise => self.advertise(),
            }
        }
    }

    /// The largest file this node accepts (and offers).
    pub fn max_file_size(&self) -> u64 {
        self.config.max_file_size
    }

    /// Known names (contacts), for the application.
    pub fn known(&self) -> &BTreeMap<String, UserPublic> {
        &self.config.known
    }
}
