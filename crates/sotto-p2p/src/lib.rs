//! # sotto-p2p
//!
//! Peer to peer for sotto: two devices that can reach each other talk, send
//! files and run group sessions with no server, over rust-libp2p (TCP,
//! Noise, Yamux; mDNS; rendezvous; explicit dialing), with the same user
//! keys and device certificates as through the server.
//!
//! Layers, as in the rest of sotto:
//! - [`wire`]: the frames of `/sotto/p2p/2` and their bounded codec;
//! - [`identity`]: the hello that binds a libp2p peer id to a device
//!   certificate, and the trust a node derives from it;
//! - [`session`]: request / accept key agreement and the session AEAD;
//! - [`node`]: the sans-IO state machine ([`Node`]): links, requests,
//!   sessions, file transfers and group sessions; events out, commands in;
//! - `shell` ([`spawn`]): the libp2p swarm that runs a [`Node`], and
//!   [`rendezvous`], the rendezvous point;
//! - [`peer_device`]: the device core (`sotto_device::Machine`) over peer
//!   sessions: chat and group messages are its sealed datagrams, stored in
//!   the home's history like server-delivered ones;
//! - [`control`]: the daemon behind `sotto p2p up` and the local socket the
//!   other `sotto p2p` commands of the same home talk to.

pub mod control;
pub mod error;
pub mod identity;
pub mod node;
pub mod peer_device;
pub mod rendezvous;
pub mod session;
pub mod shell;
pub mod wire;

pub use error::{Error, Result};
pub use identity::{Identity, PeerIdentity, Trust};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{
    Config, Event, FileEvent, FileIo, GroupEvent, GroupInfo, Node, Output, PendingRequest,
};
pub use peer_device::PeerDevice;
pub use shell::{spawn, Handle, PeerInfo, SessionInfo, ShellConfig, ShellEvent, Status};
pub use wire::{GroupAd, Id, RejectReason, RosterMember};
