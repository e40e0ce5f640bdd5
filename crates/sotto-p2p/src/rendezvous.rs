//! The rendezvous point (`sotto rendezvous --listen ADDR`): libp2p's
//! rendezvous server, so that peers that share no local network find each
//! other. It learns the peer ids (ephemeral per run) and addresses of the
//! peers that register, and nothing of their sotto identities.

use std::time::Duration;

use futures_util::StreamExt;
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identity, rendezvous, Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Registrations held at once (each a signed peer record): bounds memory.
const MAX_REGISTRATIONS: usize = 10_000;
/// Registrations one peer may hold (one per namespace).
const MAX_PER_PEER: usize = 8;
/// Connections at once.
const MAX_CONNECTIONS: u32 = 1024;

#[derive(NetworkBehaviour)]
struct Point {
    limits: connection_limits::Behaviour,
    rendezvous: rendezvous::server::Behaviour,
}

/// A running rendezvous point.
pub struct RendezvousPoint {
    /// Its address, ending in `/p2p/<peer id>`: what peers pass to
    /// `--rendezvous`.
    pub address: Multiaddr,
    pub peer_id: PeerId,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RendezvousPoint {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts a rendezvous point listening on `listen` (e.g.
/// `/ip4/127.0.0.1/tcp/7600`).
pub async fn serve(listen: Multiaddr) -> Result<RendezvousPoint> {
    let key = identity::Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let limits = ConnectionLimits::default()
        .with_max_established(Some(MAX_CONNECTIONS))
        .with_max_established_per_peer(Some(2));
    let mut swarm = crate::shell::tcp_swarm(key, Duration::from_secs(120), |_| Point {
        limits: connection_limits::Behaviour::new(limits),
        rendezvous: rendezvous::server::Behaviour::new(
            rendezvous::server::Config::default()
                .with_max_registration_per_peer(MAX_PER_PEER)
                .with_max_registration_total(MAX_REGISTRATIONS),
        ),
    })?;
    swarm
        .listen_on(listen.clone())
        .map_err(|e| Error::Address(listen.to_string(), e.to_string()))?;
    let address = loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                break address.with(libp2p::multiaddr::Protocol::P2p(peer_id))
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(Error::Address(listen.to_string(), error.to_string()))
            }
            _ => {}
        }
    };
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(PointEvent::Rendezvous(e)) = ev {
                        tracing::debug!(?e, "rendezvous");
                    }
                }
                _ = &mut stop_rx => break,
            }
        }
    });
    Ok(RendezvousPoint {
        address,
        peer_id,
        stop: Some(stop_tx),
        task,
    })
}
