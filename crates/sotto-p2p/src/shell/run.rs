//! The shell's loop: swarm events, links, the node's outputs and timers,
//! and the application's calls, all on one task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, mdns, rendezvous, Multiaddr, PeerId, Stream, Swarm};
use tokio::sync::mpsc;

use super::disk::{Disk, DiskMsg};
use super::link::{self, Link, LinkMsg};
use super::{
    peer_of, Call, PeerInfo, SessionInfo, ShellConfig, ShellEvent, Status, NAMESPACE, PROTOCOL,
};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::node::{Event, FileIo, Node, Output};
use crate::wire::Id;

/// Connections at once, and per peer: a peer cannot exhaust sockets.
const MAX_CONNECTIONS: u32 = 256;
const MAX_PER_PEER: u32 = 2;
const MAX_PENDING: u32 = 64;
/// A connection with no stream open closes after this.
const IDLE: Duration = Duration::from_secs(60);
/// Re-register at a rendezvous point this often (its registrations live 2 h).
const REREGISTER: Duration = Duration::from_secs(3600);
/// Attempts to open the sotto stream on a connection before giving up.
const OPEN_ATTEMPTS: u32 = 3;
/// Events held for an application that is slow to read them, beyond its
/// channel; past this the loop stops reading links (backpressure to the
/// peers) but keeps answering calls.
const HELD_EVENTS: usize = 1024;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    limits: connection_limits::Behaviour,
    stream: libp2p_stream::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    rendezvous: rendezvous::client::Behaviour,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The running shell: the swarm, the node and what ties them.
pub struct Shell {
    pub(crate) node: Node,
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    incoming: Option<libp2p_stream::IncomingStreams>,
    links: HashMap<PeerId, Link>,
    /// Peers whose stream this node is opening: one attempt at a time, or
    /// two connections (simultaneous dials) would open two streams and
    /// each side would keep the one the other dropped.
    opening: HashSet<PeerId>,
    /// Failed attempts to open a stream per peer (a libp2p node that does
    /// not speak sotto is given up on after [`OPEN_ATTEMPTS`]).
    open_failures: HashMap<PeerId, u32>,
    next_link: u64,
    link_tx: mpsc::Sender<LinkMsg>,
    link_rx: mpsc::Receiver<LinkMsg>,
    open_tx: mpsc::Sender<(PeerId, Option<Stream>)>,
    open_rx: mpsc::Receiver<(PeerId, Option<Stream>)>,
    events: mpsc::Sender<ShellEvent>,
    /// Events not yet taken by the application. The loop never waits for
    /// the application: an application that calls the node while it
    /// handles an event (the daemon does) would wait for the loop that
    /// waits for it.
    held: VecDeque<ShellEvent>,
    disk: Disk,
    disk_rx: mpsc::UnboundedReceiver<DiskMsg>,
    rendezvous: HashSet<PeerId>,
    rendezvous_addrs: Vec<Multiaddr>,
    last_register: HashMap<PeerId, tokio::time::Instant>,
    /// Every way each peer was found (a peer found by mDNS may also be
    /// listed at a rendezvous point).
    via: HashMap<PeerId, Vec<&'static str>>,
    address: HashMap<PeerId, Multiaddr>,
    listening: Vec<Multiaddr>,
    discover_every: Duration,
    pub(crate) stop: bool,
}

fn build_swarm(key: identity::Keypair, mdns_on: bool) -> Result<Swarm<Behaviour>> {
    let limits = ConnectionLimits::default()
        .with_max_established(Some(MAX_CONNECTIONS))
        .with_max_established_per_peer(Some(MAX_PER_PEER))
        .with_max_pending_incoming(Some(MAX_PENDING))
        .with_max_pending_outgoing(Some(MAX_PENDING));
    super::tcp_swarm(key, IDLE, |key| {
        let local = key.public().to_peer_id();
        let mdns = if mdns_on {
            match mdns::tokio::Behaviour::new(mdns::Config::default(), local) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "mDNS unavailable; local discovery is off");
                    None
                }
            }
        } else {
            None
        };
        Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            stream: libp2p_stream::Behaviour::new(),
            mdns: Toggle::from(mdns),
            rendezvous: rendezvous::client::Behaviour::new(key.clone()),
        }
    })
}

impl Shell {
    /// Builds the swarm with a fresh libp2p key, binds the listeners and
    /// waits for their addresses.
    pub(crate) async fn start(
        identity: Identity,
        config: ShellConfig,
        events: mpsc::Sender<ShellEvent>,
    ) -> Result<(Shell, Vec<Multiaddr>)> {
        let key = identity::Keypair::generate_ed25519();
        let local = key.public().to_peer_id();
        let mut swarm = build_swarm(key, config.mdns)?;
        let mut control = swarm.behaviour().stream.new_control();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Address(addr.to_string(), e.to_string()))?;
        }
        let mut listening = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while listening.len() < config.listen.len() {
            tokio::select! {
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { address, .. } => {
                        swarm.add_external_address(address.clone());
                        listening.push(address.with(libp2p::multiaddr::Protocol::P2p(local)));
                    }
                    SwarmEvent::ListenerError { error, .. } | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                        return Err(Error::Address("listen".into(), error.to_string()));
                    }
                    _ => {}
                },
                _ = &mut deadline => break,
            }
        }
        if listening.is_empty() {
            return Err(Error::Address("listen".into(), "no address bound".into()));
        }
        let incoming = control
            .accept(PROTOCOL)
            .map_err(|_| Error::Address("stream".into(), "protocol registered twice".into()))?;
        let (link_tx, link_rx) = mpsc::channel(1024);
        let (open_tx, open_rx) = mpsc::channel(64);
        let node = Node::new(identity, local, config.node.clone(), now_ms());
        let (disk_tx, disk_rx) = mpsc::unbounded_channel();
        let mut shell = Shell {
            node,
            swarm,
            control,
            incoming: Some(incoming),
            links: HashMap::new(),
            opening: HashSet::new(),
            open_failures: HashMap::new(),
            next_link: 0,
            link_tx,
            link_rx,
            open_tx,
            open_rx,
            events,
            held: VecDeque::new(),
            disk: Disk::new(config.files.clone(), disk_tx),
            disk_rx,
            rendezvous: HashSet::new(),
            rendezvous_addrs: config.rendezvous.clone(),
            last_register: HashMap::new(),
            via: HashMap::new(),
            address: HashMap::new(),
            listening: listening.clone(),
            discover_every: config.discover_every,
            stop: false,
        };
        for addr in config.rendezvous {
            let peer = peer_of(&addr).ok_or_else(|| {
                Error::Address(
                    addr.to_string(),
                    "no /p2p/<peer id> in the rendezvous address".into(),
                )
            })?;
            shell.rendezvous.insert(peer);
            shell.dial(addr, "rendezvous")?;
        }
        Ok((shell, listening))
    }

    pub(crate) async fn run(mut self, mut calls: mpsc::Receiver<Call>) {
        let Some(mut incoming) = self.incoming.take() else {
            return;
        };
        let mut discover = tokio::time::interval(self.discover_every);
        loop {
            self.drain();
            if self.stop {
                break;
            }
            let wake = self
                .node
                .poll_timeout()
                .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_secs(3600));
            // A clone: the permit it gives must not borrow the shell.
            let events = self.events.clone();
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm(ev),
                Some((peer, stream)) = incoming.next() => self.install(peer, stream, true),
                Some((peer, stream)) = self.open_rx.recv() => {
                    self.opening.remove(&peer);
                    match stream {
                        Some(stream) if !self.links.contains_key(&peer) => self.install(peer, stream, false),
                        Some(_) => {}
                        // The connection it tried may have closed; another may remain.
                        None => {
                            *self.open_failures.entry(peer).or_default() += 1;
                            self.ensure_link(peer);
                        }
                    }
                }
                Some(msg) = self.link_rx.recv(), if self.held.len() < HELD_EVENTS => self.on_link(msg),
                Some(msg) = self.disk_rx.recv() => self.on_disk(msg),
                permit = events.reserve(), if !self.held.is_empty() => match permit {
                    Ok(permit) => permit.send(self.held.pop_front().expect("not empty")),
                    // The application is gone: nobody reads events.
                    Err(_) => self.held.clear(),
                },
                call = calls.recv() => match call {
                    Some(call) => call(&mut self),
                    None => break,
                },
                _ = tokio::time::sleep(wake) => self.node.handle_timeout(now_ms()),
                _ = discover.tick() => self.discover(),
            }
        }
        // Dropping the node erases every session key.
    }

    /// Hands every output of the node to the network, the disk or the
    /// application.
    fn drain(&mut self) {
        while let Some(out) = self.node.poll_output() {
            match out {
                Output::Send { peer, frame } => {
                    let Some(link) = self.links.get(&peer) else {
                        continue;
                    };
                    if let Err(mpsc::error::TrySendError::Full(_)) = link.tx.try_send(frame) {
                        tracing::info!(%peer, "peer does not read its link; disconnecting");
                        self.disconnect(peer);
                    }
                }
                Output::Disconnect { peer, .. } => {
                    self.links.remove(&peer);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Output::File(io) => self.file_io(io),
                Output::Event(e) => self.emit(ShellEvent::Node(e)),
            }
        }
    }

    fn file_io(&mut self, io: FileIo) {
        match io {
            FileIo::Open { file, size, .. } => match self.disk.open(&file, size) {
                Ok(()) => self.node.file_opened(&file),
                Err(e) => {
                    tracing::warn!(file = %hex::encode(file), error = %e, "cannot create a received file");
                    self.emit(ShellEvent::FileRefused {
                        file,
                        reason: e.to_string(),
                    });
                    // Refused before any want: the sender sends nothing.
                    self.node.file_failed(&file);
                }
            },
            FileIo::Write { file, offset, data } => self.disk.write(&file, offset, data),
            FileIo::Check { file, name } => self.disk.finish(&file, name),
            FileIo::Discard { file } => self.disk.discard(&file),
            FileIo::Read { file, offset, len } => self.disk.read(&file, offset, len),
            FileIo::Release { file } => self.disk.release(&file),
        }
    }

    /// Queues an event for the application (sent by the loop as the
    /// application takes them).
    fn emit(&mut self, e: ShellEvent) {
        if !self.events.is_closed() {
            self.held.push_back(e);
        }
    }

    /// What a file worker reports.
    fn on_disk(&mut self, msg: DiskMsg) {
        match msg {
            DiskMsg::Written { file, upto } => self.node.file_written(&file, upto),
            DiskMsg::Checked { file, saved } => {
                self.disk.checked(&file);
                self.emit(ShellEvent::FileSaved { file, path: saved });
                self.node.file_checked(&file, true);
            }
            DiskMsg::Data { file, offset, data } => self.node.file_data(&file, offset, data),
            DiskMsg::Failed { file } => self.node.file_failed(&file),
        }
    }

    pub(crate) fn offer_file(
        &mut self,
        session: Id,
        name: &str,
        size: u64,
        f: std::fs::File,
    ) -> Result<Id> {
        let id = self.node.send_file(&session, name, size)?;
        if let Err(e) = self.disk.add_source(id, f, size) {
            self.node.file_failed(&id);
            return Err(e.into());
        }
        Ok(id)
    }

    fn install(&mut self, peer: PeerId, stream: Stream, inbound: bool) {
        if self.links.remove(&peer).is_some() {
            self.node.link_down(peer, now_ms());
        }
        self.next_link += 1;
        let link = link::start(peer, self.next_link, stream, self.link_tx.clone());
        self.links.insert(peer, link);
        if inbound && !self.via.contains_key(&peer) {
            self.found(peer, "inbound");
        }
        self.node.link_up(peer, now_ms());
    }

    fn on_link(&mut self, msg: LinkMsg) {
        match msg {
            LinkMsg::Frame { peer, link, bytes } => {
                if self.links.get(&peer).is_some_and(|l| l.id == link) {
                    self.node.handle_frame(peer, bytes, now_ms());
                }
            }
            LinkMsg::Closed { peer, link } => {
                if self.links.get(&peer).is_some_and(|l| l.id == link) {
                    self.links.remove(&peer);
                    self.node.link_down(peer, now_ms());
                    // Its connection closed; if another is up, use it.
                    self.ensure_link(peer);
                }
            }
        }
    }

    fn found(&mut self, peer: PeerId, how: &'static str) {
        let v = self.via.entry(peer).or_default();
        if !v.contains(&how) {
            v.push(how);
        }
    }

    pub(crate) fn dial(&mut self, address: Multiaddr, via: &'static str) -> Result<()> {
        let opts = match peer_of(&address) {
            Some(peer) if self.swarm.is_connected(&peer) => {
                self.ensure_link(peer);
                return Ok(());
            }
            Some(peer) => {
                self.found(peer, via);
                self.address.insert(peer, address.clone());
                DialOpts::peer_id(peer)
                    .addresses(vec![address.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    // A fresh source port: dialing from the listening port
                    // (libp2p's default) turns two peers dialing each other
                    // at once into one TCP simultaneous open on which both
                    // sides start Noise as initiator, and both dials fail.
                    .allocate_new_port()
                    .build()
            }
            None => DialOpts::unknown_peer_id()
                .address(address.clone())
                .allocate_new_port()
                .build(),
        };
        self.swarm
            .dial(opts)
            .map_err(|e| Error::Address(address.to_string(), e.to_string()))
    }

    pub(crate) fn disconnect(&mut self, peer: PeerId) {
        if self.links.remove(&peer).is_some() {
            self.node.link_down(peer, now_ms());
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Opens the sotto stream to a connected peer unless one is up or being
    /// opened. One stream per pair: the smaller peer id opens it.
    fn ensure_link(&mut self, peer: PeerId) {
        if self.node.local_peer() < peer
            && self.swarm.is_connected(&peer)
            && !self.links.contains_key(&peer)
            && !self.opening.contains(&peer)
            && !self.rendezvous.contains(&peer)
            && self.open_failures.get(&peer).copied().unwrap_or(0) < OPEN_ATTEMPTS
        {
            self.open_stream(peer);
        }
    }

    fn open_stream(&mut self, peer: PeerId) {
        self.opening.insert(peer);
        let mut control = self.control.clone();
        let tx = self.open_tx.clone();
        tokio::spawn(async move {
            let stream = control.open_stream(peer, PROTOCOL).await.ok();
            let _ = tx.send((peer, stream)).await;
        });
    }

    fn on_swarm(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.swarm.add_external_address(address.clone());
                let local = self.node.local_peer();
                self.listening
                    .push(address.with(libp2p::multiaddr::Protocol::P2p(local)));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if endpoint.is_dialer() {
                    self.address
                        .insert(peer_id, endpoint.get_remote_address().clone());
                    // An address dialled with no peer id in it (explicit,
                    // or remembered from an earlier run).
                    if !self.via.contains_key(&peer_id) {
                        self.found(peer_id, "explicit");
                    }
                }
                if self.rendezvous.contains(&peer_id) {
                    self.register(peer_id);
                } else {
                    self.ensure_link(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if self.links.remove(&peer_id).is_some() {
                    self.node.link_down(peer_id, now_ms());
                }
                self.last_register.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                let address = peer_id
                    .and_then(|p| self.address.get(&p))
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                self.emit(ShellEvent::DialFailed {
                    address,
                    error: error.to_string(),
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if peer == self.node.local_peer() {
                        continue;
                    }
                    self.found(peer, "mdns");
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.dial(addr.with_p2p(peer).unwrap_or_else(|a| a), "mdns");
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rendezvous(ev)) => self.on_rendezvous(ev),
            _ => {}
        }
    }

    fn register(&mut self, point: PeerId) {
        let ns = rendezvous::Namespace::from_static(NAMESPACE);
        match self
            .swarm
            .behaviour_mut()
            .rendezvous
            .register(ns.clone(), point, None)
        {
            Ok(()) => {
                self.last_register
                    .insert(point, tokio::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "cannot register at the rendezvous point"),
        }
        self.swarm
            .behaviour_mut()
            .rendezvous
            .discover(Some(ns), None, None, point);
    }

    fn discover(&mut self) {
        let points: Vec<PeerId> = self.rendezvous.iter().copied().collect();
        for point in points {
            if !self.swarm.is_connected(&point) {
                if let Some(addr) = self
                    .rendezvous_addrs
                    .iter()
                    .find(|a| peer_of(a) == Some(point))
                    .cloned()
                {
                    let _ = self.dial(addr, "rendezvous");
                }
                continue;
            }
            let stale = self
                .last_register
                .get(&point)
                .is_none_or(|t| t.elapsed() >= REREGISTER);
            if stale {
                self.register(point);
            } else {
                let ns = rendezvous::Namespace::from_static(NAMESPACE);
                self.swarm
                    .behaviour_mut()
                    .rendezvous
                    .discover(Some(ns), None, None, point);
            }
        }
    }

    fn on_rendezvous(&mut self, ev: rendezvous::client::Event) {
        match ev {
            rendezvous::client::Event::Discovered { registrations, .. } => {
                for r in registrations {
                    let peer = r.record.peer_id();
                    if peer == self.node.local_peer() {
                        continue;
                    }
                    self.found(peer, "rendezvous");
                    if self.swarm.is_connected(&peer) {
                        continue;
                    }
                    let opts = DialOpts::peer_id(peer)
                        .addresses(r.record.addresses().to_vec())
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .allocate_new_port()
                        .build();
                    let _ = self.swarm.dial(opts);
                }
            }
            rendezvous::client::Event::RegisterFailed { error, .. } => {
                tracing::warn!(?error, "rendezvous registration refused");
            }
            rendezvous::client::Event::DiscoverFailed { error, .. } => {
                tracing::warn!(?error, "rendezvous discovery refused");
            }
            _ => {}
        }
    }

    pub(crate) fn status(&self) -> Status {
        let peers = self
            .node
            .peers()
            .map(|(peer, identity)| PeerInfo {
                peer: peer.to_string(),
                name: identity.map(|i| i.name.clone()).unwrap_or_default(),
                trust: identity.map(|i| i.trust),
                user: identity.and_then(|i| i.user).map(|u| hex::encode(u.0)),
                device: identity.and_then(|i| i.device).map(|d| hex::encode(d.0)),
                via: self
                    .via
                    .get(peer)
                    .map(|v| v.join("+"))
                    .unwrap_or_else(|| "inbound".into()),
                address: self.address.get(peer).map(|a| a.to_string()),
                // An advertisement past its expiry lists no groups.
                groups: identity
                    .filter(|i| i.expires_at > now_ms())
                    .map(|i| {
                        i.groups
                            .iter()
                            .map(|g| (hex::encode(g.id), g.title.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                expires_at: identity.map(|i| i.expires_at).unwrap_or(0),
            })
            .collect();
        let sessions = self
            .node
            .sessions()
            .map(|(id, peer, name)| SessionInfo {
                session: hex::encode(id),
                peer: peer.to_string(),
                name: name.to_string(),
            })
            .collect();
        Status {
            addresses: self.listening.clone(),
            peers,
            requests: self.node.pending_requests(),
            sessions,
            groups: self.node.groups(),
        }
    }
}

impl From<Event> for ShellEvent {
    fn from(e: Event) -> Self {
        ShellEvent::Node(e)
    }
}
