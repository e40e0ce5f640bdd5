//! # sotto-client
//!
//! One sotto device talking to a server: the async shell around the device
//! core ([`sotto_device::Machine`], which holds every decision of the
//! device) that carries out the core's requests over HTTPS with a pinned
//! certificate, feeds it the mailbox and the WebSocket push, keeps its
//! state in the encrypted store ([`sotto_store::client`]), and serialises
//! operations on one home across processes. The `sotto` command line and a
//! terminal UI are thin layers over [`Client`].
//!
//! ## Using it
//! ```no_run
//! # async fn demo() -> sotto_client::Result<()> {
//! use sotto_client::Client;
//! use std::path::Path;
//! // First device of a new user. `None`: pin the server certificate on
//! // first use; print the returned fingerprint so the user can compare it.
//! let (mut alice, fingerprint) = Client::register(
//!     Path::new("./alice"), "a passphrase", "alice", "https://127.0.0.1:7443", None,
//! ).await?;
//! println!("server certificate: {fingerprint}");
//! alice.send("bob", "the meeting moved to 3pm").await?;
//!
//! // Later, in another process.
//! let mut bob = Client::open(Path::new("./bob"), "a passphrase").await?;
//! let report = bob.sync().await?;            // fetch, open, store, acknowledge
//! for m in bob.history(None, None)? {
//!     println!("{} -> {}: {}", m.from, m.to, m.body);
//! }
//! # let _ = report; Ok(()) }
//! ```
//!
//! ## Operations
//! - [`Client::register`], [`Client::open`], [`Client::init`] (a user with
//!   no server, for peer to peer; `register` later publishes it); linking: [`Client::link_start`]
//!   on the new device, then [`LinkPending::code`] is shown to the user, who
//!   runs [`Client::approve`] with it on a device holding the user key;
//!   [`LinkPending::wait_approval`] checks the approval on the new device and
//!   [`LinkApproved::finish`] joins the account.
//! - [`Client::send`] (and [`Client::send_with_ttl`]), [`Client::sync`],
//!   [`Client::listen`], [`Client::history`], [`Client::devices`].
//! - Contacts: [`Client::verify`] (safety number), [`Client::mark_verified`],
//!   [`Client::trust`] (accept a changed key), [`Client::block`],
//!   [`Client::unblock`], [`Client::blocked`], [`Client::contacts`].
//! - Rooms: [`Client::room_create`], `room_send`, `room_show`,
//!   `room_search`, `room_set`, `room_leave`, `room_log`, `room_recover`,
//!   [`Client::rooms`].
//! - [`Client::refill_prekeys`] (also run by `sync` and on push).
//!
//! Results are the core's typed values ([`Message`], [`SyncReport`] with
//! typed [`Rejection`]s, [`RoomEvent`]s, ...); rendering them for people is
//! the CLI's job.
//!
//! ## Concurrency
//! Every future is `Send` (a TUI can spawn them). Operations that change
//! the device's protocol state take an exclusive lock on `<home>/sotto.lock`
//! and reload that state from the store first, so `sotto listen` and `sotto
//! send` may run on one home at the same time in two processes without
//! ever writing back a stale session ([`Error::HomeBusy`] after 60 s of
//! waiting).
//!
//! ## Files in the home directory
//! The home is readable by its owner only (0700, its files 0600):
//! `sotto.db` (SQLCipher, plus its `-wal`/`-shm` while open), `sotto.kdf`
//! (Argon2id salt and cost, not secret), `sotto.lock` (empty). See
//! [`sotto_store::client`].
//!
//! ## Guarantees
//! The device core's (see [`sotto_device`]): sealing once to every device of
//! the recipient and this user's other devices, sessions started only where
//! missing, a received datagram committed before it is acknowledged and
//! shown once, trust on first use with a changed key refused, TTLs judged
//! by the master clock. The shell adds: the server certificate pinned by
//! the SHA-256 of its DER ([`Error::CertificateChanged`]); the offset to the
//! server's clock measured once per process and kept in the store.
//!
//! ## Known limits
//! - A device that lost a session (restored an old backup) cannot open what
//!   a peer still sends on it until the peer receives anything from it.
//! - Link sync carries the user name, contacts and block list, not the
//!   message history (room history: `room_recover`).

// Where things are: `setup` (register, open, the lock and clock every
// operation starts from), `exec` (carrying out the core's requests),
// `sync` (the mailbox), `listen` (push), `link`, `commands` and `rooms`
// (the commands), `net` and `tls` (HTTP), `testing` (hooks). The home
// lock is the store's (`sotto_store::client::HomeLock`).
mod commands;
mod error;
mod exec;
mod link;
mod listen;
mod net;
mod phone;
mod rooms;
mod setup;
mod sync;
#[cfg(any(test, feature = "testing"))]
mod testing;
mod tls;

use std::time::Duration;

use sotto_device::Machine;
use sotto_store::client::ClientStore;

pub use error::{Error, Result};
pub use link::{LinkApproved, LinkPending};
pub use phone::PhoneRegistration;
pub use sotto_device::Error as DeviceError;
pub use sotto_device::Event as DeviceEvent;
pub use sotto_device::{
    ContactInfo, DeviceInfo, GrantProblem, LineContent, LinkSyncBody, Message, PrekeyCount,
    Rejection, RoomChanges, RoomEvent, RoomLine, RoomLogLine, RoomLogReport, RoomMember,
    RoomNotice, RoomRefusal, RoomSummary, RoomView, SyncContact, SyncReport, ROOM_NAMES,
};
pub use sotto_proto::room::Ttl;
pub use sotto_proto::SafetyNumber;
/// Alias of [`SafetyNumber`].
pub use sotto_proto::SafetyNumber as Safety;
pub use tls::{fingerprint, parse_fingerprint};

use net::Api;
use sotto_store::client::HomeLock;

/// What [`Client::listen`] reports.
#[derive(Debug)]
pub enum Event {
    /// Connected to the push channel (after a first fetch of what waited).
    Connected,
    /// A new message (received, or sent from another own device).
    Message(Message),
    /// A datagram that was refused (acknowledged and dropped).
    Rejected(Rejection),
    /// A room message or notice.
    Room(RoomEvent),
    /// Work the device started itself (answering a room request, fetching
    /// granted history) failed.
    Failed(sotto_device::Error),
    /// The push channel dropped; reconnecting after the given delay.
    Disconnected { reason: String, retry_in: Duration },
}

/// One device.
pub struct Client {
    core: Machine,
    /// The store the core writes; the shell reads the server settings and
    /// (in tests) tampers with it.
    store: ClientStore,
    /// The server's API; `None` for a device made with no server.
    api: Option<Api>,
    /// Serializes state-changing operations across processes on this home.
    lock: HomeLock,
}
