//! Every way a peer-to-peer operation fails. Variants carry the ids that
//! explain them (peer, session, request, file, group).

use std::path::PathBuf;

use crate::wire::RejectReason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame from a peer does not decode (the peer is disconnected).
    #[error("malformed {0} from a peer")]
    Malformed(&'static str),
    /// A peer broke the protocol (the peer is disconnected).
    #[error("peer {peer} broke the protocol: {what}")]
    Protocol { peer: String, what: &'static str },
    #[error("no connected peer {0}")]
    UnknownPeer(String),
    #[error("peer {0} has not proved a user identity")]
    Unverified(String),
    #[error("no open session {0}")]
    NoSession(String),
    #[error("no pending request {0}")]
    NoRequest(u64),
    #[error("no pending request from {0}")]
    NoRequestFrom(String),
    #[error("rejected by {by} ({})", crate::control::reason_text(*reason))]
    Rejected {
        request: u64,
        by: String,
        reason: RejectReason,
    },
    #[error("no file transfer {0}")]
    NoFile(String),
    #[error("file {path} is too large ({size} bytes; at most {max})")]
    FileTooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("bad file name {0:?}")]
    BadFileName(String),
    #[error("no group {0}")]
    NoGroup(String),
    #[error("only the host of group {0} can do that")]
    NotGroupHost(String),
    #[error("{what} is too large ({len} bytes; at most {max})")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} is too long or not a valid name")]
    BadName(String),
    #[error("too many {0}; try again later")]
    Busy(&'static str),
    #[error("address {0}: {1}")]
    Address(String, String),
    #[error("the peer node stopped")]
    Stopped,
    #[error("no peer daemon is running for the home {0}")]
    NoDaemon(PathBuf),
    #[error("control: {0}")]
    Control(String),
    #[error("{0} is in use by another sotto process that did not finish in time")]
    HomeBusy(PathBuf),
    /// What the device core refused or could not do.
    #[error(transparent)]
    Device(#[from] sotto_device::Error),
    #[error("local store: {0}")]
    Store(#[from] sotto_store::client::StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Proto(#[from] sotto_proto::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
