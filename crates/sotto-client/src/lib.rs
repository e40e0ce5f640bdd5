//! # sotto-client
//!
//! One sotto device: its keys and sessions (driving [`sotto_proto::Device`]),
//! its encrypted local store ([`sotto_store::client`]), and its connection
//! to a server (HTTPS with a pinned certificate, WebSocket push). The `sotto`
//! command line and the terminal UI are thin layers over [`Client`].
//!
//! ## Using it
//! ```no_run
//! # async fn demo() -> sotto_client::Result<()> {
//! use sotto_client::Client;
//! use std::path::Path;
//! // First device of a new user. `None`: pin the server certificate on
//! // first use; print the returned fingerprint so the user can compare it.
//! let (mut alice, fingerprint) =
//!     Client::register(Path::new("./alice"), "pass", "alice", "https://127.0.0.1:7443", None).await?;
//! println!("server certificate: {fingerprint}");
//! alice.send("bob", "the meeting moved to 3pm").await?;
//!
//! // Later, in another process.
//! let mut bob = Client::open(Path::new("./bob"), "pass").await?;
//! let report = bob.sync().await?;            // fetch, open, store, acknowledge
//! for m in bob.history(None, None)? {
//!     println!("{} -> {}: {}", m.from, m.to, m.body);
//! }
//! # let _ = report; Ok(()) }
//! ```
//!
//! ## Operations
//! - [`Client::register`], [`Client::open`]; linking: [`Client::link_start`]
//!   on the new device, then [`LinkPending::code`] is shown to the user, who
//!   runs [`Client::approve`] with it on a device holding the user key;
//!   [`LinkPending::wait`] finishes on the new device.
//! - [`Client::send`] (and [`Client::send_with_ttl`]), [`Client::sync`],
//!   [`Client::listen`], [`Client::history`], [`Client::devices`].
//! - Contacts: [`Client::verify`] (safety number), [`Client::mark_verified`],
//!   [`Client::trust`] (accept a changed key), [`Client::block`],
//!   [`Client::unblock`], [`Client::blocked`], [`Client::contacts`].
//! - [`Client::refill_prekeys`] (also run by `sync` and on push).
//!
//! ## Linking, step by step
//! ```no_run
//! # async fn demo(existing: &mut sotto_client::Client) -> sotto_client::Result<()> {
//! use sotto_client::Client;
//! use std::{path::Path, time::Duration};
//! // On the new device:
//! let pending = Client::link_start(Path::new("./bob2"), "pass", "https://127.0.0.1:7443", None).await?;
//! println!("code: {}", pending.code());
//! // On the device that registered (holds the user key), the user types the code:
//! existing.approve(pending.code()).await?;
//! // Back on the new device: waits for approval, stores the certificate,
//! // receives the user name, contacts and block list.
//! let bob2 = pending.wait(Duration::from_secs(600)).await?;
//! # let _ = bob2; Ok(()) }
//! ```
//!
//! ## Concurrency
//! Every future is `Send` (a TUI can spawn them). Operations that change
//! the device's protocol state (send, sync and each pushed message, prekey
//! refill, approve, trust) take an exclusive lock on `<home>/sotto.lock` and
//! reload that state from the store first, so `sotto listen` and `sotto
//! send` may run on one home at the same time in two processes without
//! ever writing back a stale session ([`Error::HomeBusy`] after 60 s of
//! waiting).
//!
//! ## Files in the home directory
//! `sotto.db` (SQLCipher, plus its `-wal`/`-shm` while open), `sotto.kdf`
//! (Argon2id salt and cost, not secret), `sotto.lock` (empty). See
//! [`sotto_store::client`].
//!
//! ## Guarantees
//! - Sending seals the message once for every device of the recipient and
//!   every other device of the sender; device lists are fetched on every
//!   send, so new devices receive. Sessions are started (one prekey bundle
//!   claimed) only for devices this device has no session with.
//! - A received datagram's history row and the protocol state it changed
//!   are committed in one transaction before it is acknowledged to the
//!   server. A datagram delivered again is shown once (unique message id,
//!   and the session refuses replays). A datagram that fails to open is
//!   acknowledged and reported in [`SyncReport::rejected`]; it never stops a
//!   sync.
//! - Contacts are trusted on first use; a changed user key is refused with
//!   [`Error::KeyChanged`] until the user calls [`Client::trust`]. Receivers
//!   check that the sender's claimed username resolves to the user key that
//!   certified the sending device.
//! - The server certificate is pinned by the SHA-256 of its DER; a change is
//!   [`Error::CertificateChanged`].
//!
//! ## Rooms
//! Secure rooms (`Client::room_create`, `room_send`, `room_show`,
//! `room_search`, `room_set`, `room_leave`, `room_log`, `room_recover`,
//! `rooms`) live in `rooms.rs` and `room_sync.rs` over the sans-IO
//! `sotto_proto::room::RoomLog`; their records, contents and learned names
//! are in the same encrypted store. [`Client::sync`] and [`Client::listen`]
//! take room datagrams in, answer history requests and fetch granted
//! datagrams; see docs/protocol.md, "The client side of rooms".
//!
//! ## The user key
//! The user key stays on the device that registered: it is what certifies
//! new devices, so only that device can approve links ([`Error::NoUserKey`]
//! elsewhere). Copying it to every device would let any stolen device add
//! devices of its own.
//!
//! ## Known limits
//! - A device that lost a session (restored an old backup) cannot open what
//!   a peer still sends on it: those datagrams are reported and dropped
//!   until the peer receives anything from this device, which starts a new
//!   session that the peer then uses. There is no explicit session-reset
//!   message yet.
//! - Link sync carries the user name, contacts and block list, not the
//!   message history (room history: `sotto room recover`).
//! - TTLs are enforced when the history is read (expired rows are deleted),
//!   by the local clock corrected with the last master-clock offset.

// Where things are: `setup` (register, open, the device state every
// operation starts from), `link` (linking a new device), `send`, `sync`
// (receiving), `listen` (push), `contacts` (the directory, contacts,
// blocks, history), `prekeys`; rooms in `rooms`, `room_sync` and
// `room_testing`.
mod body;
mod contacts;
mod error;
mod link;
mod listen;
mod lock;
mod net;
mod prekeys;
mod room_sync;
mod room_testing;
mod rooms;
mod send;
mod setup;
mod sync;
mod tls;

use std::time::Duration;

use rand_core::{OsRng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sotto_api::{b64, hex32};
use sotto_proto::{Device, DeviceCert, UserKey, UserPublic};
use sotto_store::client::{normalize, ClientStore, StoredMessage};

pub use body::{LinkSyncBody, SyncContact, TextBody, BODY_VERSION, MAX_USERNAME};
pub use error::{Error, Result};
pub use link::LinkPending;
pub use rooms::{
    RoomChanges, RoomLine, RoomLogLine, RoomLogReport, RoomMemberView, RoomSummary, RoomView,
    ROOM_NAMES,
};
pub use sotto_api::PrekeyStatus;
pub use sotto_proto::room::Ttl;
pub use sotto_proto::SafetyNumber;
/// Alias of [`SafetyNumber`].
pub use sotto_proto::SafetyNumber as Safety;
pub use tls::{fingerprint, parse_fingerprint};

use lock::HomeLock;
use net::Api;

/// One-time prekeys uploaded at registration, linking and each refill.
pub const PREKEY_BATCH: u32 = 100;
/// Refill when fewer one-time prekeys than this are left on the server.
pub const PREKEY_LOW: u32 = 20;

/// A message as shown to the user (sent or received).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Hex message id (unique).
    pub id: String,
    /// Hex conversation id.
    pub conversation: String,
    pub from: String,
    pub to: String,
    /// Master-clock milliseconds when sent.
    pub sent_at: u64,
    /// Master-clock milliseconds when the server accepted it (sent messages:
    /// when sent).
    pub received_at: u64,
    pub body: String,
    /// Seconds after `sent_at` when it disappears; 0 = never.
    pub ttl: u32,
    /// Written by this user (on any of its devices).
    pub outgoing: bool,
}

impl From<StoredMessage> for Message {
    fn from(m: StoredMessage) -> Message {
        Message {
            id: hex::encode(m.id),
            conversation: hex::encode(m.conversation),
            from: m.from,
            to: m.to,
            sent_at: m.sent_at,
            received_at: m.received_at,
            body: m.body,
            ttl: m.ttl,
            outgoing: m.outgoing,
        }
    }
}

/// What one [`Client::sync`] did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// Messages new to this device, oldest first.
    pub messages: Vec<Message>,
    /// Datagrams that could not be opened or were refused (one line each);
    /// they were acknowledged and dropped.
    pub rejected: Vec<String>,
    /// Datagrams already seen (redelivered), acknowledged without showing.
    pub duplicates: usize,
    /// Datagrams from blocked users, dropped.
    pub blocked: usize,
    /// Contact lists received from the approving device (linking).
    pub link_syncs: usize,
    /// Room notices and messages that arrived, one line each.
    pub room_lines: Vec<String>,
}

/// A device of the user, as [`Client::devices`] lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Hex device id.
    pub id: String,
    /// When its certificate was made (ms).
    pub created_at: u64,
    /// True for the device this client runs on.
    pub this_device: bool,
}

/// A contact as [`Client::contacts`] lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactInfo {
    pub username: String,
    /// Hex user key.
    pub user_key: String,
    pub verified: bool,
    pub devices: usize,
}

/// What [`Client::listen`] reports.
#[derive(Clone, Debug)]
pub enum Event {
    /// Connected to the push channel (after a first fetch of what waited).
    Connected,
    /// A new message (received, or sent from another own device).
    Message(Message),
    /// A datagram that was refused (acknowledged and dropped).
    Rejected(String),
    /// A room message or notice, as one line (`[title] ...`).
    Room(String),
    /// The push channel dropped; reconnecting after the given delay.
    Disconnected { reason: String, retry_in: Duration },
}

/// One device.
pub struct Client {
    store: ClientStore,
    device: Device,
    user_key: Option<UserKey>,
    username: String,
    api: Api,
    /// Fault injection for tests: process and commit, but never acknowledge.
    skip_ack: bool,
    /// Serializes state-changing operations across processes on this home.
    lock: HomeLock,
    /// Room work queued during a sync (requests, answers, fetches).
    rooms: rooms::RoomRuntime,
}

/// The conversation id of two users: SHA-256 over a label and both user
/// keys in ascending order.
pub fn conversation_id(a: &UserPublic, b: &UserPublic) -> [u8; 32] {
    let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(b"sotto/v1/conversation\0");
    h.update(lo.0);
    h.update(hi.0);
    h.finalize().into()
}

/// Checks a username: 1-64 bytes of ASCII letters, digits, `.`, `_`, `-`.
/// Returns it lowercased.
pub fn check_username(name: &str) -> Result<String> {
    let n = normalize(name);
    let ok = !n.is_empty()
        && n.len() <= MAX_USERNAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(n)
    } else {
        Err(Error::BadUsername(name.to_string()))
    }
}

/// [`check_username`] for a name of another user: a malformed name is an
/// unknown user.
fn peer_name(username: &str) -> Result<String> {
    check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))
}

fn decode_cert(s: &str) -> Option<DeviceCert> {
    DeviceCert::decode(&b64::decode(s)?).ok()
}

fn parse_user(s: &str) -> Result<UserPublic> {
    hex32(s)
        .map(UserPublic)
        .ok_or_else(|| Error::BadResponse("user key is not hex".into()))
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}
