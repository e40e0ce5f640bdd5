//! The libp2p shell around a [`Node`]: TCP + Noise + Yamux, mDNS, a
//! rendezvous client, explicit dialing, one `/sotto/p2p/2` stream per
//! peer, and the files of transfers. The node decides; the shell moves
//! bytes, and runs the application's commands ([`Handle`]) on the node
//! inside its loop.

mod disk;
mod link;
mod run;

use std::path::PathBuf;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use sotto_proto::SignedPrekey;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::node::{Config, Event, GroupInfo, PendingRequest};
use crate::wire::Id;

pub use run::Shell;

/// The libp2p protocol name of the sotto stream.
pub const PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/sotto/p2p/2");
/// The rendezvous namespace sotto peers register under.
pub const NAMESPACE: &str = "sotto";

/// How a node runs.
#[derive(Clone, Debug)]
pub struct ShellConfig {
    /// Addresses to listen on, e.g. `/ip4/127.0.0.1/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Local discovery (multicast DNS) on or off.
    pub mdns: bool,
    /// Rendezvous points (`.../p2p/<peer id>`) to register at and discover
    /// from.
    pub rendezvous: Vec<Multiaddr>,
    /// How often to ask the rendezvous points for peers.
    pub discover_every: Duration,
    /// Where received files land (partial copies in `.partial/`).
    pub files: PathBuf,
    pub node: Config,
}

impl ShellConfig {
    pub fn new(files: PathBuf) -> ShellConfig {
        ShellConfig {
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr")],
            mdns: true,
            rendezvous: Vec::new(),
            discover_every: Duration::from_secs(30),
            files,
            node: Config::default(),
        }
    }
}

/// What the application hears from a running node.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ShellEvent {
    Node(Event),
    /// A received file arrived whole and is now at `path`.
    FileSaved {
        file: Id,
        path: PathBuf,
    },
    /// A received file was refused before any byte came (e.g. not enough
    /// free space); the sender sees the transfer fail.
    FileRefused {
        file: Id,
        reason: String,
    },
    /// Could not dial an address (explicit or discovered).
    DialFailed {
        address: String,
        error: String,
    },
}

/// A peer as listed.
#[derive(Clone, Debug, Serialize)]
pub struct PeerInfo {
    pub peer: String,
    pub name: String,
    pub trust: Option<crate::identity::Trust>,
    /// Hex user key and device id, when proved.
    pub user: Option<String>,
    pub device: Option<String>,
    /// How it was found: mdns, rendezvous, explicit or inbound (several
    /// joined by `+`).
    pub via: String,
    pub address: Option<String>,
    /// Group sessions it advertises: (hex id, title).
    pub groups: Vec<(String, String)>,
    /// Unix ms when its advertisement expires.
    pub expires_at: u64,
}

/// A session as listed.
#[derive(Clone, Debug, Serialize)]
pub struct SessionInfo {
    pub session: String,
    pub peer: String,
    pub name: String,
}

/// Everything a status query shows.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub addresses: Vec<Multiaddr>,
    pub peers: Vec<PeerInfo>,
    pub requests: Vec<PendingRequest>,
    pub sessions: Vec<SessionInfo>,
    pub groups: Vec<GroupInfo>,
}

type Call = Box<dyn FnOnce(&mut Shell) + Send>;

/// Commands to a running node. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Call>,
    local: PeerId,
    addresses: Vec<Multiaddr>,
}

impl Handle {
    /// This node's (ephemeral) peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// The addresses it listens on, each ending in `/p2p/<peer id>`.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// Runs `f` on the shell, inside its loop.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Shell) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.tx.send(call).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    pub async fn dial(&self, address: Multiaddr) -> Result<()> {
        self.call(move |s| s.dial(address, "explicit")).await?
    }

    /// Closes every connection to `peer` (sessions survive; a transfer
    /// resumes once a link is back).
    pub async fn disconnect(&self, peer: PeerId) -> Result<()> {
        self.call(move |s| s.disconnect(peer)).await
    }

    pub async fn request(&self, peer: PeerId, prekey: Option<SignedPrekey>) -> Result<u64> {
        self.call(move |s| s.node.request(&peer, prekey)).await?
    }

    pub async fn accept(
        &self,
        peer: PeerId,
        request: u64,
        prekey: Option<SignedPrekey>,
    ) -> Result<Id> {
        self.call(move |s| s.node.accept(&peer, request, prekey))
            .await?
    }

    pub async fn reject(&self, peer: PeerId, request: u64) -> Result<()> {
        self.call(move |s| s.node.reject(&peer, request)).await?
    }

    pub async fn send_datagram(&self, session: Id, data: Vec<u8>) -> Result<()> {
        self.call(move |s| s.node.send_datagram(&session, data))
            .await?
    }

    /// Offers the file at `path` on `session`; the node sends it chunk by
    /// chunk, each sealed in the session.
    pub async fn send_file(&self, session: Id, path: PathBuf) -> Result<Id> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| Error::BadFileName(path.display().to_string()))?;
        let file = std::fs::File::open(&path)?;
        let size = file.metadata()?.len();
        let max = self.call(|s| s.node.max_file_size()).await?;
        if size > max {
            return Err(Error::FileTooLarge { path, size, max });
        }
        self.call(move |s| s.offer_file(session, &name, size, file))
            .await?
    }

    pub async fn close(&self, session: Id) -> Result<()> {
        self.call(move |s| s.node.close(&session)).await?
    }

    pub async fn group_create(&self, title: String, sessions: Vec<Id>) -> Result<Id> {
        self.call(move |s| s.node.group_create(&title, &sessions))
            .await?
    }

    pub async fn group_invite(&self, group: Id, session: Id) -> Result<()> {
        self.call(move |s| s.node.group_invite(&group, &session))
            .await?
    }

    pub async fn group_join(&self, group: Id) -> Result<()> {
        self.call(move |s| s.node.group_join(&group)).await?
    }

    pub async fn group_leave(&self, group: Id) -> Result<()> {
        self.call(move |s| s.node.group_leave(&group)).await?
    }

    pub async fn group_send(&self, group: Id, data: Vec<u8>) -> Result<()> {
        self.call(move |s| s.node.group_send(&group, data)).await?
    }

    /// Group `group`'s title and members (with their devices'
    /// certificates and prekeys), if this node hosts or joined it.
    pub async fn group_roster(
        &self,
        group: Id,
    ) -> Result<Option<(String, Vec<crate::wire::RosterMember>)>> {
        self.call(move |s| s.node.group_roster(&group)).await
    }

    /// Peers, pending requests, sessions and groups.
    pub async fn status(&self) -> Result<Status> {
        self.call(|s| s.status()).await
    }

    /// Whether session `id` still holds keys (tests of erasure).
    #[cfg(feature = "testing")]
    pub async fn holds_session_keys(&self, id: Id) -> Result<bool> {
        self.call(move |s| s.node.holds_session_keys(&id)).await
    }

    /// Stops the node: connections close, session keys are erased.
    pub async fn shutdown(&self) {
        let _ = self.call(|s| s.stop = true).await;
    }
}

/// Starts a node for `identity`: binds its listeners, then runs it on the
/// tokio runtime until [`Handle::shutdown`] or until every handle is gone.
/// The application must keep reading the events.
pub async fn spawn(
    identity: Identity,
    config: ShellConfig,
) -> Result<(Handle, mpsc::Receiver<ShellEvent>)> {
    let (events_tx, events_rx) = mpsc::channel(4096);
    let (tx, rx) = mpsc::channel::<Call>(64);
    let (shell, addresses) = Shell::start(identity, config, events_tx).await?;
    let local = shell.node.local_peer();
    tokio::spawn(shell.run(rx));
    Ok((
        Handle {
            tx,
            local,
            addresses,
        },
        events_rx,
    ))
}

/// A swarm on TCP + Noise + Yamux (the only transport sotto uses) with
/// `behaviour`; connections with no stream open close after `idle`.
pub(crate) fn tcp_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    idle: Duration,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Result<libp2p::Swarm<B>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .map_err(|e| Error::Address("transport".into(), e.to_string()))?
        .with_behaviour(behaviour)
        .map_err(|e| Error::Address("behaviour".into(), e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
}

/// The peer id an address names (`.../p2p/<id>`).
pub fn peer_of(address: &Multiaddr) -> Option<PeerId> {
    address.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}
