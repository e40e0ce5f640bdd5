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

mod body;
mod error;
mod lock;
mod net;
mod room_sync;
mod room_testing;
mod rooms;
mod tls;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sotto_api::{
    b64, codes, hex32, username_hash, Ack, Block, Bundle, ClaimRequest, ClaimResponse, LinkApprove,
    LinkCreated, LinkRequest, LinkStatus, MailboxBatch, MailboxItem, PrekeyUpload, Push,
    RegisterRequest, SendResponse, UserDevices,
};
use sotto_proto::{
    check_contact_key, content, safety_number, ContactKey, Device, DeviceCert, DeviceId, DeviceKey,
    DevicePublicKeys, Payload, PrekeyBundle, PrekeyKind, PrekeySecret, Session, SignedPrekey,
    UserKey, UserPublic,
};
use sotto_store::client::{normalize, Account, ClientStore, Contact, HistoryQuery, StoredMessage};

pub use body::{LinkSyncBody, SyncContact, TextBody, BODY_VERSION, MAX_USERNAME};
pub use error::{Error, Result};
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

use lock::{Guard, HomeLock};
use net::{Api, ApiResult, Failure, NO_BODY};

/// One-time prekeys uploaded at registration, linking and each refill.
pub const PREKEY_BATCH: u32 = 100;
/// Refill when fewer one-time prekeys than this are left on the server.
pub const PREKEY_LOW: u32 = 20;
/// Mailbox items fetched per request.
const MAILBOX_PAGE: u32 = 100;

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

/// The result of processing one mailbox item.
enum Outcome {
    New(Message),
    Duplicate,
    Blocked,
    Rejected(String),
    LinkSync,
    /// Room lines (notices, messages) to show.
    Room(Vec<String>),
    Ignored,
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

/// The code shown on a new device: `<link_id>-<12 hex>`, the suffix being a
/// hash of the device's keys so the approving device can check it approves
/// this device and not one an attacker slipped in under the same link id.
fn link_code_suffix(device: &DeviceId, dh: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"sotto/v1/link-code\0");
    h.update(device.0);
    h.update(dh);
    hex::encode(&h.finalize()[..6])
}

/// Link ids go into URL paths: short, URL-safe.
fn valid_link_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn store_or_create(home: &Path, passphrase: &str) -> Result<ClientStore> {
    let store = if ClientStore::exists(home) {
        ClientStore::open(home, passphrase)?
    } else {
        ClientStore::create(home, passphrase)?
    };
    if store.account()?.is_some() {
        return Err(Error::AlreadyRegistered(home.to_path_buf()));
    }
    Ok(store)
}

fn decode_cert(s: &str) -> Option<DeviceCert> {
    DeviceCert::decode(&b64::decode(s)?).ok()
}

fn parse_user(s: &str) -> Result<UserPublic> {
    hex32(s)
        .map(UserPublic)
        .ok_or_else(|| Error::BadResponse("user key is not hex".into()))
}

fn generate_prekeys(device: &mut Device, n: u32, reserve: bool) -> (Vec<String>, Option<String>) {
    let one_time = device
        .generate_prekeys(&mut OsRng, n)
        .iter()
        .map(|p| b64::encode(&p.encode()))
        .collect();
    let reserve = reserve.then(|| b64::encode(&device.generate_reserve(&mut OsRng).encode()));
    (one_time, reserve)
}

impl Client {
    // ------------------------------------------------------------------
    // Setting up a device
    // ------------------------------------------------------------------

    /// Registers a new user `username` with its first device in `home`
    /// (created if missing) on the server at `server_url`
    /// (`https://host:port`). `fingerprint`: the server certificate's
    /// SHA-256 to require, or `None` to trust the one presented (TOFU).
    /// Returns the client and the pinned fingerprint, to show the user.
    pub async fn register(
        home: &Path,
        passphrase: &str,
        username: &str,
        server_url: &str,
        fingerprint: Option<&str>,
    ) -> Result<(Client, String)> {
        let username = check_username(username)?;
        let expected = fingerprint.map(parse_fingerprint).transpose()?;
        let api = Api::new(server_url, expected)?;
        let mut store = store_or_create(home, passphrase)?;
        let now = api.now().await?;
        let user_key = UserKey::generate(&mut OsRng);
        let key = DeviceKey::generate(&mut OsRng);
        let cert = user_key.certify(&key.public_keys(), now);
        let mut device = Device::new(key, cert)?;
        let (prekeys, reserve) = generate_prekeys(&mut device, PREKEY_BATCH, true);
        let req = RegisterRequest {
            username_hash: hex::encode(username_hash(&username)),
            cert: b64::encode(&cert.encode()),
            prekeys,
            reserve: reserve.expect("reserve"),
        };
        let r: ApiResult<serde_json::Value> = api
            .call(Method::POST, "/v1/register", Some(&req), Some(device.key()))
            .await;
        match r {
            Ok(_) => {}
            Err(Failure::Api(e))
                if e.status == StatusCode::CONFLICT || e.code == codes::USERNAME_TAKEN =>
            {
                return Err(Error::UsernameTaken(username))
            }
            Err(e) => return Err(e.into()),
        }
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        store.put_account(&Account {
            username: username.clone(),
            user_key: Some(user_key.to_bytes()),
            device_key: device.key().to_bytes(),
            device_cert: cert.encode(),
            server_url: api.base.clone(),
            server_fingerprint: fp.clone(),
            cursor: 0,
            next_prekey_id: device.next_prekey_id(),
        })?;
        store.save_device(&mut device)?;
        Ok((
            Client {
                store,
                device,
                user_key: Some(user_key),
                username,
                api,
                skip_ack: false,
                lock: HomeLock::new(home),
                rooms: Default::default(),
            },
            fp,
        ))
    }

    /// Opens the device in `home`. Does not contact the server (history
    /// works offline); the first network operation does.
    pub async fn open(home: &Path, passphrase: &str) -> Result<Client> {
        let store = ClientStore::open(home, passphrase)?;
        let account = store
            .account()?
            .ok_or_else(|| Error::NotRegistered(home.to_path_buf()))?;
        let key = DeviceKey::from_bytes(&account.device_key);
        let cert = DeviceCert::decode(&account.device_cert)?;
        let prekeys = store
            .prekeys()?
            .iter()
            .map(|b| PrekeySecret::from_bytes(b))
            .collect::<sotto_proto::Result<Vec<_>>>()?;
        let sessions = store
            .sessions()?
            .iter()
            .map(|b| Session::from_bytes(b))
            .collect::<sotto_proto::Result<Vec<_>>>()?;
        let device = Device::restore(key, cert, prekeys, sessions, account.next_prekey_id)?;
        let user_key = account.user_key.as_ref().map(|k| UserKey::from_bytes(k));
        let api = Api::new(
            &account.server_url,
            Some(account.server_fingerprint.clone()),
        )?;
        Ok(Client {
            store,
            device,
            user_key,
            username: account.username.clone(),
            api,
            skip_ack: false,
            lock: HomeLock::new(home),
            rooms: Default::default(),
        })
    }

    /// Starts linking a new device in `home` to an existing user: creates
    /// its keys and asks the server to hold the request. Show
    /// [`LinkPending::code`] to the user, who approves it on an existing
    /// device ([`Client::approve`]); then call [`LinkPending::wait`].
    pub async fn link_start(
        home: &Path,
        passphrase: &str,
        server_url: &str,
        fingerprint: Option<&str>,
    ) -> Result<LinkPending> {
        let expected = fingerprint.map(parse_fingerprint).transpose()?;
        let api = Api::new(server_url, expected)?;
        let store = store_or_create(home, passphrase)?;
        let key = DeviceKey::generate(&mut OsRng);
        let mut secrets = Vec::new();
        let mut prekeys = Vec::new();
        let mut next_id = 1u32;
        for _ in 0..PREKEY_BATCH {
            let (p, s) = key.generate_prekey(&mut OsRng, next_id, PrekeyKind::OneTime);
            prekeys.push(b64::encode(&p.encode()));
            secrets.push(s);
            next_id += 1;
        }
        let (reserve, s) = key.generate_prekey(&mut OsRng, next_id, PrekeyKind::Reserve);
        secrets.push(s);
        next_id += 1;
        let public = key.public_keys();
        let req = LinkRequest {
            device: hex::encode(public.id.0),
            dh: hex::encode(public.dh),
            prekeys,
            reserve: b64::encode(&reserve.encode()),
        };
        let created: LinkCreated = api
            .call(Method::POST, "/v1/link", Some(&req), Some(&key))
            .await?;
        if !valid_link_id(&created.link_id) {
            return Err(Error::BadResponse("bad link id".into()));
        }
        let code = format!(
            "{}-{}",
            created.link_id,
            link_code_suffix(&public.id, &public.dh)
        );
        Ok(LinkPending {
            store,
            api,
            key,
            prekeys: secrets,
            next_prekey_id: next_id,
            link_id: created.link_id,
            code,
        })
    }

    /// Approves a new device of this user from its link `code` (as printed
    /// by `sotto link`). Needs the user key (the registering device). Checks
    /// the code names the waiting device's keys, certifies them, and sends
    /// the new device this user's name, contacts and block list.
    pub async fn approve(&mut self, code: &str) -> Result<DeviceInfo> {
        let _guard = self.begin().await?;
        let user_key = self.user_key.as_ref().ok_or(Error::NoUserKey)?;
        let code = code.trim();
        let (link_id, suffix) = code
            .rsplit_once('-')
            .ok_or_else(|| Error::BadLinkCode(code.to_string()))?;
        if !valid_link_id(link_id)
            || suffix.len() != 12
            || !suffix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::BadLinkCode(code.to_string()));
        }
        let path = format!("/v1/link/{link_id}");
        let req: LinkRequest = match self
            .api
            .call(Method::GET, &path, NO_BODY, Some(self.device.key()))
            .await
        {
            Ok(r) => r,
            Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => {
                return Err(Error::LinkExpired)
            }
            Err(e) => return Err(e.into()),
        };
        let id =
            DeviceId(hex32(&req.device).ok_or_else(|| Error::BadResponse("device id".into()))?);
        let dh = hex32(&req.dh).ok_or_else(|| Error::BadResponse("device dh".into()))?;
        if link_code_suffix(&id, &dh) != suffix.to_lowercase() {
            return Err(Error::LinkCodeMismatch);
        }
        let now = self.api.now().await?;
        let cert = user_key.certify(&DevicePublicKeys { id, dh }, now);
        let approve = LinkApprove {
            cert: b64::encode(&cert.encode()),
        };
        let r: ApiResult<serde_json::Value> = self
            .api
            .call(
                Method::POST,
                &format!("/v1/link/{link_id}/approve"),
                Some(&approve),
                Some(self.device.key()),
            )
            .await;
        match r {
            Ok(_) => {}
            Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => {
                return Err(Error::LinkExpired)
            }
            Err(e) => return Err(e.into()),
        }
        // Hand the new device what it needs: who it is, contacts, blocks.
        let contacts = self
            .store
            .contacts()?
            .into_iter()
            .map(|c| SyncContact {
                username: c.username,
                user_key: UserPublic(c.user_key),
                verified: c.verified,
            })
            .collect();
        let sync = LinkSyncBody {
            username: self.username.clone(),
            contacts,
            blocked: self.store.blocked()?,
        };
        let own = self.device.cert().user;
        self.ensure_sessions(&self.username.clone(), &own, &[cert])
            .await?;
        let payload = Payload {
            message_id: random_id(),
            conversation: conversation_id(&own, &own),
            sender: own,
            sent_at: now,
            ttl: 0,
            content_type: content::LINK_SYNC,
            body: sync.encode(),
        };
        self.seal_and_post(&payload, &[id], None).await?;
        Ok(DeviceInfo {
            id: hex::encode(id.0),
            created_at: now,
            this_device: false,
        })
    }

    // ------------------------------------------------------------------
    // Accessors
    // ------------------------------------------------------------------

    /// This user's name (empty on a linked device until link sync arrived).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// This device's id (hex).
    pub fn device_id(&self) -> String {
        hex::encode(self.device.id().0)
    }

    /// This user's public key (hex).
    pub fn user_key(&self) -> String {
        hex::encode(self.device.cert().user.0)
    }

    /// True when this device holds the user key (can approve devices).
    pub fn holds_user_key(&self) -> bool {
        self.user_key.is_some()
    }

    /// The server URL.
    pub fn server_url(&self) -> &str {
        &self.api.base
    }

    /// The pinned server certificate fingerprint.
    pub fn server_fingerprint(&self) -> Result<String> {
        Ok(self.account()?.server_fingerprint)
    }

    /// Pins a new server certificate fingerprint (after the operator
    /// replaced the certificate and the user confirmed the new one). Takes
    /// effect on the next [`Client::open`].
    pub fn set_server_fingerprint(&mut self, fingerprint: &str) -> Result<()> {
        let fp = parse_fingerprint(fingerprint)?;
        self.store.set_server_fingerprint(&fp)?;
        Ok(())
    }

    fn account(&self) -> Result<Account> {
        self.store
            .account()?
            .ok_or_else(|| Error::NotRegistered(self.store.home().to_path_buf()))
    }

    fn require_username(&self) -> Result<&str> {
        if self.username.is_empty() {
            Err(Error::LinkIncomplete)
        } else {
            Ok(&self.username)
        }
    }

    // ------------------------------------------------------------------
    // Directory
    // ------------------------------------------------------------------

    /// This user's devices, as the server lists them.
    pub async fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let own = self.device.cert().user;
        let ud: UserDevices = self
            .api
            .call(Method::GET, "/v1/devices", NO_BODY, Some(self.device.key()))
            .await?;
        let me = self.device.id();
        Ok(ud
            .devices
            .iter()
            .filter_map(|d| decode_cert(d))
            .filter(|c| c.verify_for(&own).is_ok())
            .map(|c| DeviceInfo {
                id: hex::encode(c.device.0),
                created_at: c.created_at,
                this_device: c.device == me,
            })
            .collect())
    }

    /// Fetches a user's key and device certificates (verified against the
    /// key) from the server. `UnknownUser` if there is no such user.
    async fn fetch_user(&self, username: &str) -> Result<(UserPublic, Vec<DeviceCert>)> {
        let path = format!("/v1/users/{}", hex::encode(username_hash(username)));
        let ud: UserDevices = match self
            .api
            .call(Method::GET, &path, NO_BODY, Some(self.device.key()))
            .await
        {
            Ok(u) => u,
            Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => {
                return Err(Error::UnknownUser(username.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let user = parse_user(&ud.user)?;
        let certs = ud
            .devices
            .iter()
            .filter_map(|d| decode_cert(d))
            .filter(|c| c.verify_for(&user).is_ok())
            .collect();
        Ok((user, certs))
    }

    /// Resolves a contact: fetches the user's current key and devices and
    /// checks the key against the stored one (TOFU on first contact).
    async fn resolve(&mut self, username: &str) -> Result<(UserPublic, Vec<DeviceCert>)> {
        let (user, certs) = self.fetch_user(username).await?;
        if !self.username.is_empty() && username == self.username {
            // Oneself: the key is the one that certified this device.
            if user != self.device.cert().user {
                return Err(Error::KeyChanged {
                    username: username.to_string(),
                });
            }
            return Ok((user, certs));
        }
        let known = self.store.contact(username)?;
        match check_contact_key(
            known.as_ref().map(|c| UserPublic(c.user_key)).as_ref(),
            &user,
        ) {
            ContactKey::Changed { .. } => {
                return Err(Error::KeyChanged {
                    username: username.to_string(),
                })
            }
            ContactKey::FirstSeen | ContactKey::Unchanged => {}
        }
        self.store.put_contact(&Contact {
            username: username.to_string(),
            username_hash: username_hash(username),
            user_key: user.0,
            verified: known.map(|c| c.verified).unwrap_or(false),
            devices: certs.iter().map(|c| c.encode()).collect(),
        })?;
        Ok((user, certs))
    }

    /// Starts sessions with those of `certs` that have none, claiming one
    /// prekey bundle per such device.
    async fn ensure_sessions(
        &mut self,
        username: &str,
        user: &UserPublic,
        certs: &[DeviceCert],
    ) -> Result<()> {
        self.ensure_sessions_hash(&username_hash(username), username, user, certs)
            .await
    }

    /// [`Client::ensure_sessions`] by username hash (`who` names the user in
    /// errors).
    async fn ensure_sessions_hash(
        &mut self,
        name_hash: &[u8; 32],
        who: &str,
        user: &UserPublic,
        certs: &[DeviceCert],
    ) -> Result<()> {
        let missing: Vec<String> = certs
            .iter()
            .filter(|c| c.device != self.device.id() && !self.device.has_session(&c.device))
            .map(|c| hex::encode(c.device.0))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let path = format!("/v1/users/{}/bundles", hex::encode(name_hash));
        let req = ClaimRequest { devices: missing };
        let resp: ClaimResponse = match self
            .api
            .call(Method::POST, &path, Some(&req), Some(self.device.key()))
            .await
        {
            Ok(r) => r,
            Err(Failure::Api(e))
                if e.status == StatusCode::NOT_FOUND && e.code == codes::UNKNOWN_USER =>
            {
                return Err(Error::UnknownUser(who.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        for Bundle { cert, prekey } in &resp.bundles {
            let (Some(cert), Some(prekey)) = (
                decode_cert(cert),
                b64::decode(prekey).and_then(|p| SignedPrekey::decode(&p).ok()),
            ) else {
                continue;
            };
            // Verify user key -> device cert -> prekey before use.
            if let Ok(verified) = (PrekeyBundle { cert, prekey }).verify(user) {
                self.device.start_session(&mut OsRng, &verified)?;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------
    // Sending
    // ------------------------------------------------------------------

    /// Sends a text message to `username` (all its devices, and this user's
    /// other devices). Returns the message as stored in the history.
    pub async fn send(&mut self, username: &str, text: &str) -> Result<Message> {
        self.send_with_ttl(username, text, 0).await
    }

    /// [`Client::send`] with a time to live in seconds (0 = forever).
    pub async fn send_with_ttl(&mut self, username: &str, text: &str, ttl: u32) -> Result<Message> {
        let to = check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))?;
        let me = self.require_username()?.to_string();
        if self.store.is_blocked(&to)? {
            return Err(Error::YouBlocked(to));
        }
        let body = TextBody {
            sender: me.clone(),
            recipient: to.clone(),
            text: text.to_string(),
        }
        .encode();
        let stored = self
            .deliver(&to, &me, content::TEXT, body, ttl, Some(text))
            .await?;
        Ok(stored.expect("text is stored").into())
    }

    /// Test hook: sends an arbitrary client body of `content_type` to
    /// `username`'s devices and this user's other devices, as [`Client::send`]
    /// would (used to check that receivers refuse forged bodies).
    #[doc(hidden)]
    pub async fn send_raw_body(
        &mut self,
        username: &str,
        content_type: u8,
        body: Vec<u8>,
    ) -> Result<()> {
        let to = check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))?;
        let me = self.require_username()?.to_string();
        self.deliver(&to, &me, content_type, body, 0, None).await?;
        Ok(())
    }

    /// Resolves `to` and this user's devices, starts missing sessions,
    /// seals once to all, stores `text` (if any) in the history, posts.
    async fn deliver(
        &mut self,
        to: &str,
        me: &str,
        content_type: u8,
        body: Vec<u8>,
        ttl: u32,
        text: Option<&str>,
    ) -> Result<Option<StoredMessage>> {
        let _guard = self.begin().await?;
        if body.len() > sotto_proto::datagram::MAX_BODY {
            return Err(Error::TooLarge);
        }
        let own_user = self.device.cert().user;
        // Resolve both users' current devices (every send: new devices get it).
        let (their_user, their_certs) = self.resolve(to).await?;
        let own_certs = if to == me {
            Vec::new()
        } else {
            self.own_devices().await?
        };
        self.ensure_sessions(to, &their_user, &their_certs).await?;
        self.ensure_sessions(me, &own_user, &own_certs).await?;
        let me_id = self.device.id();
        let mut recipients: Vec<DeviceId> = Vec::new();
        for c in their_certs.iter().chain(own_certs.iter()) {
            if c.device != me_id
                && self.device.has_session(&c.device)
                && !recipients.contains(&c.device)
            {
                recipients.push(c.device);
            }
        }
        if recipients.is_empty() {
            return Err(Error::NoDevices(to.to_string()));
        }
        let now = self.api.now().await?;
        let payload = Payload {
            message_id: random_id(),
            conversation: conversation_id(&own_user, &their_user),
            sender: own_user,
            sent_at: now,
            ttl,
            content_type,
            body,
        };
        let stored = text.map(|text| StoredMessage {
            id: payload.message_id,
            conversation: payload.conversation,
            from: me.to_string(),
            to: to.to_string(),
            sent_at: now,
            received_at: now,
            body: text.to_string(),
            ttl,
            outgoing: true,
        });
        match self
            .seal_and_post(&payload, &recipients, stored.as_ref())
            .await
        {
            Ok(_) => Ok(stored),
            Err(Error::Server {
                status: 403, code, ..
            }) if code == codes::BLOCKED => Err(Error::Blocked(to.to_string())),
            Err(e) => Err(e),
        }
    }

    /// This user's devices other than this one, verified.
    async fn own_devices(&self) -> Result<Vec<DeviceCert>> {
        let own = self.device.cert().user;
        let ud: UserDevices = self
            .api
            .call(Method::GET, "/v1/devices", NO_BODY, Some(self.device.key()))
            .await?;
        Ok(ud
            .devices
            .iter()
            .filter_map(|d| decode_cert(d))
            .filter(|c| c.device != self.device.id() && c.verify_for(&own).is_ok())
            .collect())
    }

    /// Seals once, persists the advanced sessions (and `history`, if any)
    /// in one transaction, then posts. On failure the history row is
    /// removed again (the sessions stay advanced: counters are never reused).
    async fn seal_and_post(
        &mut self,
        payload: &Payload,
        recipients: &[DeviceId],
        history: Option<&StoredMessage>,
    ) -> Result<SendResponse> {
        let datagram = self.device.seal(&mut OsRng, payload, recipients)?;
        let changes = self.device.take_changes();
        {
            let tx = self.store.transaction()?;
            tx.apply_device_changes(&self.device, &changes)?;
            if let Some(m) = history {
                tx.insert_message(m)?;
            }
            tx.commit()?;
        }
        let r = self
            .api
            .send(
                Method::POST,
                "/v1/messages",
                Some((datagram, "application/octet-stream")),
                Some(self.device.key()),
            )
            .await;
        match r {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| Error::BadResponse(format!("send: {e}")))
            }
            Err(e) => {
                if let Some(m) = history {
                    self.store.delete_message(&m.id)?;
                }
                Err(e.into())
            }
        }
    }

    // ------------------------------------------------------------------
    // Receiving
    // ------------------------------------------------------------------

    /// Fetches everything waiting in this device's mailbox, opens and
    /// stores it, acknowledges it, then refills prekeys if the server pool
    /// is low.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let _guard = self.begin().await?;
        self.rooms.cache_on(true);
        let r = self.sync_mailbox().await;
        self.rooms.cache_on(false);
        let mut report = r?;
        self.room_flush(&mut report).await?;
        self.purge_rooms()?;
        self.refill_prekeys_if_low().await?;
        Ok(report)
    }

    /// Fetches, processes and acknowledges every waiting mailbox item.
    async fn sync_mailbox(&mut self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let mut after = 0u64;
        loop {
            let path = format!("/v1/mailbox?after={after}&limit={MAILBOX_PAGE}");
            let batch: MailboxBatch = self
                .api
                .call(Method::GET, &path, NO_BODY, Some(self.device.key()))
                .await?;
            if batch.items.is_empty() {
                break;
            }
            let mut seqs = Vec::with_capacity(batch.items.len());
            for item in &batch.items {
                let outcome = self.process(item).await?;
                report.add(outcome);
                seqs.push(item.seq);
                after = after.max(item.seq);
            }
            self.ack(seqs).await?;
            if !batch.more {
                break;
            }
        }
        Ok(report)
    }

    async fn ack(&self, seqs: Vec<u64>) -> Result<()> {
        if seqs.is_empty() || self.skip_ack {
            return Ok(());
        }
        let _: serde_json::Value = self
            .api
            .call(
                Method::POST,
                "/v1/mailbox/ack",
                Some(&Ack { seqs }),
                Some(self.device.key()),
            )
            .await?;
        Ok(())
    }

    /// Starts an operation that changes the device state: takes the home's
    /// lock and, unless this client already held it, reloads the state
    /// another process may have changed.
    async fn begin(&mut self) -> Result<Guard> {
        let guard = self.lock.acquire().await?;
        if guard.fresh {
            self.reload_device()?;
        }
        Ok(guard)
    }

    /// Reloads the protocol state from the store, dropping in-memory
    /// changes that were not committed.
    fn reload_device(&mut self) -> Result<()> {
        self.rooms.cache_on(self.rooms.caching);
        let account = self.account()?;
        self.username = account.username.clone();
        let key = DeviceKey::from_bytes(&account.device_key);
        let cert = DeviceCert::decode(&account.device_cert)?;
        let prekeys = self
            .store
            .prekeys()?
            .iter()
            .map(|b| PrekeySecret::from_bytes(b))
            .collect::<sotto_proto::Result<Vec<_>>>()?;
        let sessions = self
            .store
            .sessions()?
            .iter()
            .map(|b| Session::from_bytes(b))
            .collect::<sotto_proto::Result<Vec<_>>>()?;
        self.device = Device::restore(key, cert, prekeys, sessions, account.next_prekey_id)?;
        Ok(())
    }

    /// Opens one mailbox item and commits what it changes. An `Err` means
    /// nothing was committed (and the in-memory state was rolled back): the
    /// item must not be acknowledged.
    async fn process(&mut self, item: &MailboxItem) -> Result<Outcome> {
        let Some(bytes) = b64::decode(&item.datagram) else {
            return Ok(Outcome::Rejected(format!(
                "mailbox item {} is not base64",
                item.seq
            )));
        };
        let opened = match self.device.open(&bytes) {
            Ok(o) => o,
            Err(sotto_proto::Error::Replay) => return Ok(Outcome::Duplicate),
            Err(e) => {
                return Ok(Outcome::Rejected(format!(
                    "a message could not be opened: {e}"
                )))
            }
        };
        match self.classify(&opened, item).await {
            Ok((outcome, message, link_sync)) => {
                let changes = self.device.take_changes();
                let mut new_contacts = Vec::new();
                if let Some(sync) = &link_sync {
                    for c in &sync.contacts {
                        if check_username(&c.username).is_ok()
                            && self.store.contact(&c.username)?.is_none()
                        {
                            new_contacts.push(c.clone());
                        }
                    }
                }
                let r = (|| -> Result<Outcome> {
                    let tx = self.store.transaction()?;
                    tx.apply_device_changes(&self.device, &changes)?;
                    let mut outcome = outcome;
                    if let Some(m) = &message {
                        if !tx.insert_message(m)? {
                            outcome = Outcome::Duplicate;
                        }
                    }
                    if let Some(sync) = &link_sync {
                        if self.username.is_empty() {
                            tx.set_username(&sync.username)?;
                        }
                        for c in &new_contacts {
                            tx.put_contact(&Contact {
                                username: c.username.clone(),
                                username_hash: username_hash(&c.username),
                                user_key: c.user_key.0,
                                verified: c.verified,
                                devices: Vec::new(),
                            })?;
                        }
                    }
                    tx.set_cursor(item.seq)?;
                    tx.commit()?;
                    Ok(outcome)
                })();
                match r {
                    Ok(outcome) => {
                        if let Some(sync) = link_sync {
                            if self.username.is_empty() {
                                self.username = sync.username.clone();
                            }
                            for b in &sync.blocked {
                                self.store.block(b)?;
                            }
                        }
                        Ok(outcome)
                    }
                    Err(e) => {
                        self.reload_device()?;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                // Network trouble while checking the sender: roll back so
                // the datagram opens again next time.
                self.reload_device()?;
                Err(e)
            }
        }
    }

    /// Decides what an opened datagram is. `Err` only for failures that
    /// should stop the sync (network); refusals are `Outcome::Rejected`.
    async fn classify(
        &mut self,
        opened: &sotto_proto::Opened,
        item: &MailboxItem,
    ) -> Result<(Outcome, Option<StoredMessage>, Option<LinkSyncBody>)> {
        let own_user = self.device.cert().user;
        let sender_user = opened.sender.user;
        let p = &opened.payload;
        match p.content_type {
            content::TEXT => {
                let Some(body) = TextBody::decode(&p.body) else {
                    return Ok((
                        Outcome::Rejected("a message has an unreadable body".into()),
                        None,
                        None,
                    ));
                };
                let (from, to) = (normalize(&body.sender), normalize(&body.recipient));
                let outgoing = sender_user == own_user;
                let conversation = if outgoing {
                    if !self.username.is_empty() && from != self.username {
                        return Ok((
                            Outcome::Rejected(format!(
                                "a message from one of your devices claims to be from {from:?}"
                            )),
                            None,
                            None,
                        ));
                    }
                    match self.store.contact(&to)? {
                        Some(c) => conversation_id(&own_user, &UserPublic(c.user_key)),
                        None => p.conversation,
                    }
                } else {
                    if self.store.is_blocked(&from)? {
                        return Ok((Outcome::Blocked, None, None));
                    }
                    if !self.username.is_empty() && to != self.username {
                        return Ok((
                            Outcome::Rejected(format!(
                                "a message from {from:?} was addressed to {to:?}, not you"
                            )),
                            None,
                            None,
                        ));
                    }
                    if let Some(reason) = self.check_sender(&from, &sender_user).await? {
                        return Ok((Outcome::Rejected(reason), None, None));
                    }
                    conversation_id(&own_user, &sender_user)
                };
                let m = StoredMessage {
                    id: p.message_id,
                    conversation,
                    from,
                    to,
                    sent_at: p.sent_at,
                    received_at: item.received_at,
                    body: body.text,
                    ttl: p.ttl,
                    outgoing,
                };
                Ok((Outcome::New(m.clone().into()), Some(m), None))
            }
            content::LINK_SYNC => {
                if sender_user != own_user {
                    return Ok((
                        Outcome::Rejected("link data from another user was refused".into()),
                        None,
                        None,
                    ));
                }
                match LinkSyncBody::decode(&p.body) {
                    Some(s) if check_username(&s.username).is_ok() => {
                        Ok((Outcome::LinkSync, None, Some(s)))
                    }
                    _ => Ok((Outcome::Rejected("unreadable link data".into()), None, None)),
                }
            }
            content::ROOM_CONTROL => Ok((self.room_receive(opened, item)?, None, None)),
            ROOM_NAMES => Ok((self.room_names_receive(opened)?, None, None)),
            _ => Ok((Outcome::Ignored, None, None)),
        }
    }

    /// Checks that `claimed` is the name of the user whose key certified
    /// the sending device. `Some(reason)` refuses the message.
    async fn check_sender(&mut self, claimed: &str, user: &UserPublic) -> Result<Option<String>> {
        if let Some(c) = self.store.contact(claimed)? {
            return Ok(match check_contact_key(Some(&UserPublic(c.user_key)), user) {
                ContactKey::Unchanged => None,
                _ => Some(format!(
                    "a message claiming to be from {claimed} is signed by a key other than {claimed}'s known key; \
                     compare safety numbers with `sotto verify {claimed}`"
                )),
            });
        }
        let (server_user, certs) = match self.fetch_user(claimed).await {
            Ok(r) => r,
            Err(Error::UnknownUser(_)) => {
                return Ok(Some(format!(
                    "a message claims to be from {claimed:?}, who is not registered"
                )))
            }
            Err(e) => return Err(e),
        };
        if server_user != *user {
            return Ok(Some(format!(
                "a message claims to be from {claimed}, but is not signed by {claimed}'s key"
            )));
        }
        self.store.put_contact(&Contact {
            username: claimed.to_string(),
            username_hash: username_hash(claimed),
            user_key: user.0,
            verified: false,
            devices: certs.iter().map(|c| c.encode()).collect(),
        })?;
        Ok(None)
    }

    /// Stays connected to the server's push channel and calls `on_event`
    /// for each message as it arrives. On (re)connecting it first fetches
    /// what waited. Reconnects after drops with backoff (1 s to 30 s).
    /// Returns only on errors that retrying cannot fix (wrong certificate,
    /// local store failure); cancel it by dropping the future.
    pub async fn listen<F: FnMut(Event)>(&mut self, mut on_event: F) -> Result<()> {
        let mut backoff = Duration::from_secs(1);
        loop {
            let reason = match self.listen_once(&mut on_event).await {
                Ok(reason) => {
                    backoff = Duration::from_secs(1);
                    reason
                }
                Err(
                    e @ (Error::ServerUnreachable { .. }
                    | Error::Server { .. }
                    | Error::BadResponse(_)),
                ) => e.to_string(),
                Err(e) => return Err(e),
            };
            on_event(Event::Disconnected {
                reason,
                retry_in: backoff,
            });
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// One connection; `Ok(reason)` when it closed.
    async fn listen_once<F: FnMut(Event)>(&mut self, on_event: &mut F) -> Result<String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Message as Ws;
        let url = format!(
            "wss{}/v1/ws",
            self.api
                .base
                .strip_prefix("https")
                .unwrap_or(&self.api.base)
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::BadServerUrl(format!("{url}: {e}")))?;
        for (k, v) in self
            .api
            .auth_headers("GET", "/v1/ws", b"", self.device.key())
            .await?
        {
            request.headers_mut().insert(
                k,
                v.parse().map_err(|_| Error::BadResponse("header".into()))?,
            );
        }
        let connector = tokio_tungstenite::Connector::Rustls(self.api.tls.clone());
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(r) => Error::Server {
                        status: r.status().as_u16(),
                        code: String::new(),
                        message: "push refused".into(),
                    },
                    other => self.api.transport_error(other.to_string()),
                })?;
        // First what waited while we were away.
        let report = self.sync().await?;
        on_event(Event::Connected);
        report.emit(on_event);
        loop {
            let frame = tokio::select! {
                f = ws.next() => f,
                _ = tokio::time::sleep(Duration::from_secs(30)) => {
                    if ws.send(Ws::Ping(Vec::new())).await.is_err() {
                        return Ok("push channel lost".into());
                    }
                    continue;
                }
            };
            let Some(frame) = frame else {
                return Ok("the server closed the push channel".into());
            };
            let frame = match frame {
                Ok(f) => f,
                Err(e) => return Ok(format!("push channel error: {e}")),
            };
            match frame {
                Ws::Text(t) => match serde_json::from_str::<Push>(&t) {
                    Ok(Push::Message(item)) => {
                        let _guard = self.begin().await?;
                        let outcome = self.process(&item).await?;
                        self.ack(vec![item.seq]).await?;
                        let mut r = SyncReport::default();
                        r.add(outcome);
                        self.room_flush(&mut r).await?;
                        r.emit(on_event);
                    }
                    Ok(Push::PrekeysLow(_)) => {
                        self.refill_prekeys_if_low().await?;
                    }
                    Err(_) => {}
                },
                Ws::Close(_) => return Ok("the server closed the push channel".into()),
                _ => {}
            }
        }
    }

    /// Test hook: simulate a device that dies after committing received
    /// messages but before acknowledging them.
    #[doc(hidden)]
    pub fn set_skip_ack(&mut self, skip: bool) {
        self.skip_ack = skip;
    }

    /// Test hook: claims one prekey bundle for every device of `username`
    /// without using it (as a sender that never writes would). Returns how
    /// many bundles were served.
    #[doc(hidden)]
    pub async fn claim_bundles(&self, username: &str) -> Result<usize> {
        let path = format!("/v1/users/{}/bundles", hex::encode(username_hash(username)));
        let resp: ClaimResponse = self
            .api
            .call(
                Method::POST,
                &path,
                Some(&ClaimRequest::default()),
                Some(self.device.key()),
            )
            .await?;
        Ok(resp.bundles.len())
    }

    // ------------------------------------------------------------------
    // Prekeys
    // ------------------------------------------------------------------

    /// Refills the server's pool of this device's one-time prekeys if fewer
    /// than [`PREKEY_LOW`] are left (and replaces the reserve key if it was
    /// served). Returns how many were uploaded.
    pub async fn refill_prekeys_if_low(&mut self) -> Result<u32> {
        let status: PrekeyStatus = self
            .api
            .call(Method::GET, "/v1/prekeys", NO_BODY, Some(self.device.key()))
            .await?;
        if status.one_time >= PREKEY_LOW && status.reserve_served == 0 {
            return Ok(0);
        }
        self.upload_prekeys(status.reserve_served > 0).await
    }

    /// Uploads [`PREKEY_BATCH`] new one-time prekeys and a new reserve key.
    pub async fn refill_prekeys(&mut self) -> Result<u32> {
        self.upload_prekeys(true).await
    }

    async fn upload_prekeys(&mut self, reserve: bool) -> Result<u32> {
        let _guard = self.begin().await?;
        let (prekeys, reserve) = generate_prekeys(&mut self.device, PREKEY_BATCH, reserve);
        // Secrets are durable before the public halves leave the device.
        self.store.save_device(&mut self.device)?;
        let n = prekeys.len() as u32;
        let _: PrekeyStatus = self
            .api
            .call(
                Method::POST,
                "/v1/prekeys",
                Some(&PrekeyUpload { prekeys, reserve }),
                Some(self.device.key()),
            )
            .await?;
        Ok(n)
    }

    /// The server's count of this device's unclaimed one-time prekeys.
    pub async fn prekey_status(&self) -> Result<PrekeyStatus> {
        Ok(self
            .api
            .call(Method::GET, "/v1/prekeys", NO_BODY, Some(self.device.key()))
            .await?)
    }

    // ------------------------------------------------------------------
    // History and contacts
    // ------------------------------------------------------------------

    /// Stored messages, oldest first: all, or only those exchanged with
    /// `with`; the newest `limit` if given. Expired messages (TTL) are
    /// deleted first. Works offline.
    pub fn history(&self, with: Option<&str>, limit: Option<usize>) -> Result<Vec<Message>> {
        self.store.purge_expired(self.api.now_offline())?;
        let q = HistoryQuery {
            conversation: None,
            peer: with.map(normalize),
            limit,
        };
        Ok(self
            .store
            .history(&q)?
            .into_iter()
            .map(Message::from)
            .collect())
    }

    /// Known contacts.
    pub fn contacts(&self) -> Result<Vec<ContactInfo>> {
        Ok(self
            .store
            .contacts()?
            .into_iter()
            .map(|c| ContactInfo {
                username: c.username,
                user_key: hex::encode(c.user_key),
                verified: c.verified,
                devices: c.devices.len(),
            })
            .collect())
    }

    /// The safety number of this user and `username`, to compare out of
    /// band. Looks the user up (TOFU) if not yet a contact; fails with
    /// [`Error::KeyChanged`] if the server now shows another key.
    pub async fn verify(&mut self, username: &str) -> Result<SafetyNumber> {
        let name =
            check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))?;
        let (user, _) = self.resolve(&name).await?;
        Ok(safety_number(&self.device.cert().user, &user))
    }

    /// Records that the user compared safety numbers with `username` and
    /// they matched.
    pub fn mark_verified(&mut self, username: &str) -> Result<()> {
        let mut c = self
            .store
            .contact(username)?
            .ok_or_else(|| Error::UnknownUser(username.to_string()))?;
        c.verified = true;
        self.store.put_contact(&c)?;
        Ok(())
    }

    /// Accepts the key the server now shows for `username` (after
    /// [`Error::KeyChanged`]): replaces the stored key, clears "verified",
    /// and returns the new safety number to compare.
    pub async fn trust(&mut self, username: &str) -> Result<SafetyNumber> {
        let _guard = self.begin().await?;
        let name =
            check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))?;
        let (user, certs) = self.fetch_user(&name).await?;
        // Sessions with the devices of the old key are of no use any more.
        if let Some(old) = self.store.contact(&name)? {
            if old.user_key != user.0 {
                for d in old
                    .devices
                    .iter()
                    .filter_map(|d| DeviceCert::decode(d).ok())
                {
                    self.device.forget_peer(&d.device);
                }
                self.store.save_device(&mut self.device)?;
            }
        }
        self.store.put_contact(&Contact {
            username: name.clone(),
            username_hash: username_hash(&name),
            user_key: user.0,
            verified: false,
            devices: certs.iter().map(|c| c.encode()).collect(),
        })?;
        Ok(safety_number(&self.device.cert().user, &user))
    }

    /// Refuses messages from `username`: the server rejects their datagrams
    /// to this user, and this device drops any that still arrive.
    pub async fn block(&mut self, username: &str) -> Result<()> {
        let name =
            check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))?;
        let req = Block {
            username_hash: hex::encode(username_hash(&name)),
        };
        let _: serde_json::Value = self
            .api
            .call(
                Method::POST,
                "/v1/blocks",
                Some(&req),
                Some(self.device.key()),
            )
            .await?;
        self.store.block(&name)?;
        Ok(())
    }

    /// Accepts messages from `username` again.
    pub async fn unblock(&mut self, username: &str) -> Result<()> {
        let name =
            check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))?;
        let path = format!("/v1/blocks/{}", hex::encode(username_hash(&name)));
        let _: serde_json::Value = self
            .api
            .call(Method::DELETE, &path, NO_BODY, Some(self.device.key()))
            .await?;
        self.store.unblock(&name)?;
        Ok(())
    }

    /// Users this device refuses messages from.
    pub fn blocked(&self) -> Result<Vec<String>> {
        Ok(self.store.blocked()?)
    }
}

impl SyncReport {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::New(m) => self.messages.push(m),
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::Blocked => self.blocked += 1,
            Outcome::Rejected(r) => self.rejected.push(r),
            Outcome::LinkSync => self.link_syncs += 1,
            Outcome::Room(lines) => self.room_lines.extend(lines),
            Outcome::Ignored => {}
        }
    }

    fn emit<F: FnMut(Event)>(self, on_event: &mut F) {
        for r in self.rejected {
            on_event(Event::Rejected(r));
        }
        for m in self.messages {
            on_event(Event::Message(m));
        }
        for line in self.room_lines {
            on_event(Event::Room(line));
        }
    }
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}

/// A new device waiting for approval (see [`Client::link_start`]).
pub struct LinkPending {
    store: ClientStore,
    api: Api,
    key: DeviceKey,
    prekeys: Vec<PrekeySecret>,
    next_prekey_id: u32,
    link_id: String,
    code: String,
}

impl LinkPending {
    /// The code to show the user; they type it into `sotto approve` on an
    /// existing device. It names the request and a hash of this device's
    /// keys.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The pinned server certificate fingerprint (to show the user).
    pub fn fingerprint(&self) -> Option<String> {
        self.api.fingerprint()
    }

    /// Waits (polling every second, up to `timeout`) until an existing
    /// device approved the request, stores the certificate, then syncs
    /// until the approving device's link data (username, contacts) arrived
    /// (up to 30 s more; [`Error::LinkIncomplete`] if it did not).
    pub async fn wait(self, timeout: Duration) -> Result<Client> {
        let LinkPending {
            mut store,
            api,
            key,
            prekeys,
            next_prekey_id,
            link_id,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + timeout;
        let path = format!("/v1/link/{link_id}/status");
        let status = loop {
            let st: LinkStatus = match api.call(Method::GET, &path, NO_BODY, None).await {
                Ok(s) => s,
                Err(Failure::Api(e)) if e.status == StatusCode::NOT_FOUND => {
                    return Err(Error::LinkExpired)
                }
                Err(e) => return Err(e.into()),
            };
            if st.approved {
                break st;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::LinkExpired);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let cert = status
            .cert
            .as_deref()
            .and_then(decode_cert)
            .ok_or_else(|| Error::BadResponse("approved link without a certificate".into()))?;
        let public = key.public_keys();
        if cert.device != public.id || cert.dh != public.dh {
            return Err(Error::LinkCodeMismatch);
        }
        cert.verify()?;
        let mut device = Device::restore(key, cert, prekeys, Vec::new(), next_prekey_id)?;
        // All prekeys are new to the store: report them as added.
        let ids: HashSet<u32> = (1..next_prekey_id).collect();
        let fp = api
            .fingerprint()
            .ok_or_else(|| Error::BadResponse("no certificate seen".into()))?;
        store.put_account(&Account {
            username: String::new(),
            user_key: None,
            device_key: device.key().to_bytes(),
            device_cert: cert.encode(),
            server_url: api.base.clone(),
            server_fingerprint: fp,
            cursor: 0,
            next_prekey_id,
        })?;
        {
            let changes = sotto_proto::Changes {
                prekeys_added: ids.into_iter().collect(),
                ..sotto_proto::Changes::default()
            };
            let _ = device.take_changes();
            let tx = store.transaction()?;
            tx.apply_device_changes(&device, &changes)?;
            tx.commit()?;
        }
        let home = store.home().to_path_buf();
        let mut client = Client {
            store,
            device,
            user_key: None,
            username: String::new(),
            api,
            skip_ack: false,
            lock: HomeLock::new(&home),
            rooms: Default::default(),
        };
        let sync_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            client.sync().await?;
            if !client.username.is_empty() {
                return Ok(client);
            }
            if tokio::time::Instant::now() >= sync_deadline {
                return Err(Error::LinkIncomplete);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}
