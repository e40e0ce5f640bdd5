//! Delivery to phone numbers (S1-S10): sender accounts and their API keys,
//! messages held for numbers that have not registered yet, the numbers
//! bound to users, one-time passwords and the durable outbox (webhook
//! posts, SMS). The [`PhoneStore`] trait sits beside
//! [`super::ServerStore`]; both backends implement both.
//!
//! # Several nodes (PostgreSQL)
//! What must happen once happens in one statement that the database
//! serialises: an OTP's attempts are counted under a row lock
//! ([`PhoneStore::check_otp`]); a held message is claimed by one node
//! ([`PhoneStore::claim_held`]) before it is sealed; an outbox post is
//! leased to one node ([`PhoneStore::due`]); status changes
//! (`expired`, `delivered`) are `UPDATE ... RETURNING` of the rows still
//! in the old status, so one node reports each. A sender device's state
//! (its sessions) is changed by one task at a time across nodes
//! ([`PhoneStore::lock_sender`]).
//!
//! # What is stored how
//! - A phone number is never stored in clear: rows are keyed by
//!   `HMAC-SHA-256(server_secret, number)` (as usernames are). Where the
//!   server needs the number back (an SMS still to send, a held message),
//!   it is inside a `sealed` blob the caller encrypted under the hold key,
//!   which is not in the database either.
//! - Bodies, sender key material, queued webhook and SMS payloads: opaque
//!   `sealed` blobs (the server's `phone::vault` encrypts them).
//! - API keys: SHA-256 of the key (keys are 256 random bits, so a plain
//!   hash resists guessing); OTPs: HMAC with the server secret over the
//!   number and the code (6 digits are guessed offline in no time from a
//!   plain hash), compared in constant time.

use super::{DeviceId, Enqueued, NewUser, Result, UserPublic};

/// A sender (organisation) account to add.
#[derive(Clone, Debug)]
pub struct NewSender {
    /// The handle users reply to; registered in the directory as a
    /// username (so no user can take it).
    pub handle: String,
    pub name: String,
    pub webhook: String,
    /// The directory entry of the sender's server-held identity.
    pub user: NewUser,
    /// The sender's device secrets, sealed by the caller.
    pub sealed_secrets: Vec<u8>,
    /// SHA-256 of its first API key.
    pub api_key_hash: [u8; 32],
}

/// A sender account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SenderRecord {
    pub id: i64,
    pub handle: String,
    pub name: String,
    pub webhook: String,
    pub user: UserPublic,
    pub device: DeviceId,
    /// The device certificate (`DeviceCert::encode`).
    pub cert: Vec<u8>,
    pub sealed_secrets: Vec<u8>,
    pub created_at: u64,
}

/// Where a sender's message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageStatus {
    /// Waiting, encrypted under the hold key, for the number to register.
    Held,
    /// Sealed to the number's devices and in their mailboxes.
    Sent,
    /// A device acknowledged it.
    Delivered,
    /// Its time to live ran out while held; erased.
    Expired,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Held => "held",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<MessageStatus> {
        Some(match s {
            // "sending": claimed by a delivery that has not finished; to
            // the sender it is still held.
            "held" | "sending" => MessageStatus::Held,
            "sent" => MessageStatus::Sent,
            "delivered" => MessageStatus::Delivered,
            "expired" => MessageStatus::Expired,
            _ => return None,
        })
    }
}

/// A sender message's public state: what the sender API and `held --json`
/// show (never the body or the number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRecord {
    pub id: String,
    pub sender_id: i64,
    /// The sender's handle.
    pub sender: String,
    pub status: MessageStatus,
    pub created_at: u64,
    /// When a held message is erased unless its number registers.
    pub expires_at: u64,
    pub updated_at: u64,
}

/// A message to hold for a number.
#[derive(Clone, Debug)]
pub struct NewHeld {
    pub id: String,
    pub sender_id: i64,
    pub number: String,
    /// Number and body, sealed by the caller under a per-message key.
    pub sealed: Vec<u8>,
    pub expires_at: u64,
}

/// A held message being delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldMessage {
    pub id: String,
    pub sender_id: i64,
    pub sealed: Vec<u8>,
}

/// The delivery of a claimed held message ([`PhoneStore::send_held`]).
#[derive(Clone, Debug)]
pub struct HeldSend {
    pub id: String,
    /// The claim's owner ([`PhoneStore::claim_held`]).
    pub claim: [u8; 16],
    /// The sender's device.
    pub from: DeviceId,
    /// One datagram per user reached: (its devices, the datagram). The
    /// message's status follows the first. Not empty.
    pub datagrams: Vec<(Vec<DeviceId>, Vec<u8>)>,
    pub quota: super::MailboxQuota,
    pub now_ms: u64,
}

/// A user registered for a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneUser {
    pub user: UserPublic,
    /// Its username (chosen at random by the app: not personal data).
    pub username: String,
}

/// Who made a one-time password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpKind {
    /// The server made it and texted it to the number.
    Server,
    /// The app made it, sent it over HTTPS, and texts it from the handset.
    App,
}

impl OtpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OtpKind::Server => "server",
            OtpKind::App => "app",
        }
    }
}

/// How many OTPs one number may ask for ([`PhoneStore::put_otp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtpLimit {
    pub per_window: u32,
    pub window_ms: u64,
}

/// What checking a one-time password found. Only `Accepted` uses it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtpCheck {
    Accepted,
    /// Wrong code; the attempts left for this OTP.
    Wrong {
        attempts_left: u32,
    },
    Expired,
    /// Used already.
    Used,
    /// Its attempts are used up: ask for a new one.
    TooManyAttempts,
    /// None was asked for this number.
    Missing,
    /// An app-made OTP whose SMS has not arrived yet.
    AwaitingSms,
}

/// What the outbox carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    Webhook,
    Sms,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Webhook => "webhook",
            OutboxKind::Sms => "sms",
        }
    }
}

/// One queued post (webhook event or SMS), sealed by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    /// The sender a webhook post goes to (0 for an SMS).
    pub sender_id: i64,
    pub sealed: Vec<u8>,
    pub attempts: u32,
}

/// Held while a sender device's state (its sessions) is loaded, changed
/// and saved; dropping it releases the lock. On PostgreSQL it is a
/// transaction-scoped advisory lock on a connection of a pool kept for
/// these locks only (the holder's own calls use the other pool, so locks
/// never starve it), one holder at a time across every node; on SQLite (one process) the
/// server's in-process lock is enough and this holds nothing.
pub struct SenderLock(#[allow(dead_code)] Option<Box<dyn Send>>);

impl SenderLock {
    /// Nothing to hold beyond the caller's in-process lock.
    pub fn local() -> SenderLock {
        SenderLock(None)
    }

    /// Holds `guard` until dropped.
    pub fn holding(guard: Box<dyn Send>) -> SenderLock {
        SenderLock(Some(guard))
    }
}

/// How long a node owns a held message it claimed ([`PhoneStore::claim_held`])
/// or an outbox post it took ([`PhoneStore::due`]) before another node may
/// take it (the first one crashed).
pub const CLAIM_LEASE_MS: u64 = 5 * 60 * 1000;

/// What checking the hold key against the store found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldKeyCheck {
    /// The store had no hold key bound yet: this one is, from now on.
    Bound,
    /// The same key as the one bound.
    Same,
    /// Another key: this node could not open what others held.
    Different,
}

/// Delivery to phone numbers. Every call is one transaction.
pub trait PhoneStore: Send + Sync {
    /// Binds the hold key's check value (a hash of the key, not the key)
    /// to the store, or compares it with the one bound: every node
    /// sharing a database must hold the same key.
    fn bind_hold_key(&self, check: &[u8; 32]) -> Result<HoldKeyCheck>;
    /// Takes the lock of one sender's device state (see [`SenderLock`]).
    /// Waits for another holder, for a bounded time.
    fn lock_sender(&self, sender_id: i64) -> Result<SenderLock>;

    /// Adds a sender: its directory user, its account and first API key.
    /// [`super::StoreError::UsernameTaken`] if the handle is a username or
    /// sender already.
    fn add_sender(&self, sender: NewSender, now_ms: u64) -> Result<SenderRecord>;
    fn sender(&self, handle: &str) -> Result<Option<SenderRecord>>;
    fn sender_by_id(&self, id: i64) -> Result<Option<SenderRecord>>;
    /// The sender whose directory user is `user`.
    fn sender_by_user(&self, user: &UserPublic) -> Result<Option<SenderRecord>>;
    /// The sender of an API key that is not revoked.
    fn sender_by_key(&self, key_hash: &[u8; 32]) -> Result<Option<SenderRecord>>;
    fn senders(&self) -> Result<Vec<SenderRecord>>;
    /// [`super::StoreError::UnknownUser`] if there is no such sender.
    fn add_api_key(&self, handle: &str, key_hash: &[u8; 32], now_ms: u64) -> Result<()>;
    /// Revokes a key of `handle`; false if it has no such live key.
    fn revoke_api_key(&self, handle: &str, key_hash: &[u8; 32], now_ms: u64) -> Result<bool>;

    /// The sender device's sessions with `peers` (sealed).
    fn sender_sessions(&self, sender_id: i64, peers: &[DeviceId]) -> Result<Vec<Vec<u8>>>;
    /// One session of the sender device, by id (sealed).
    fn sender_session(&self, sender_id: i64, session: &[u8; 16]) -> Result<Option<Vec<u8>>>;
    /// Saves changed sessions (id, peer, sealed) and drops removed ones.
    fn save_sender_sessions(
        &self,
        sender_id: i64,
        upserted: Vec<([u8; 16], DeviceId, Vec<u8>)>,
        removed: Vec<[u8; 16]>,
    ) -> Result<()>;

    /// Remembers that `message_id` is the last message of the sender to
    /// each of `users` (what their replies answer).
    fn note_thread(&self, sender_id: i64, users: &[UserPublic], message_id: &str) -> Result<()>;
    /// The last message of the sender to `user`.
    fn thread(&self, sender_id: i64, user: &UserPublic) -> Result<Option<String>>;

    /// Users registered for `number`.
    fn phone_users(&self, number: &str) -> Result<Vec<PhoneUser>>;
    /// Registers `user` and binds it to `number`, in one transaction.
    fn register_phone(
        &self,
        number: &str,
        username: &str,
        user: NewUser,
        now_ms: u64,
    ) -> Result<()>;
    /// Claims a prekey of every device of `user` for the sender `claimant`
    /// (as [`super::ServerStore::claim_prekeys`]).
    fn claim_for_user(
        &self,
        user: &UserPublic,
        claimant: &UserPublic,
    ) -> Result<Vec<super::ClaimedPrekey>>;

    /// Holds a message. Returns true when this is the first message of
    /// this sender for this number (the number gets one SMS per sender).
    fn hold(&self, message: NewHeld, now_ms: u64) -> Result<bool>;
    /// Records a message sent at once (the number is registered).
    fn record_sent(
        &self,
        id: &str,
        sender_id: i64,
        digest: &[u8; 32],
        recipients: u32,
        now_ms: u64,
    ) -> Result<()>;
    /// Claims the messages held for `number`, oldest first, for one
    /// delivery by `owner` (a random token of the caller): a message
    /// claimed by another call less than `lease_ms` ago is left out, so
    /// racing deliveries (two devices verifying at once, on one node or
    /// two) each get other messages, never the same. A claim older than the
    /// lease (its node died) may be taken again.
    fn claim_held(
        &self,
        number: &str,
        owner: &[u8; 16],
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<HeldMessage>>;
    /// What a background job delivers, claimed for `owner` (at most
    /// `limit`, oldest first): messages still held for a number that has
    /// registered, untouched for `retry_ms` (a delivery that failed and
    /// released them; one held while the number registered), and claims
    /// older than `lease_ms` (their node died).
    fn claim_registered(
        &self,
        owner: &[u8; 16],
        now_ms: u64,
        lease_ms: u64,
        retry_ms: u64,
        limit: u32,
    ) -> Result<Vec<HeldMessage>>;
    /// Delivers a claimed message, in one transaction: if `owner` still
    /// holds its claim, its datagrams are enqueued, its sealed copy erased
    /// and it becomes `sent`; otherwise nothing is written and the answer
    /// is `None` (another delivery took it: it is sealed once, never
    /// twice).
    fn send_held(&self, send: HeldSend) -> Result<Option<Vec<Enqueued>>>;
    /// A delivery by `owner` failed: its claimed messages `ids` are held
    /// again (a later verify or the background job delivers them).
    fn release_held(&self, ids: &[String], owner: &[u8; 16], now_ms: u64) -> Result<u32>;
    /// A message of `sender_id`.
    fn message(&self, sender_id: i64, id: &str) -> Result<Option<MessageRecord>>;
    /// Every held message (claimed ones included).
    fn held(&self) -> Result<Vec<MessageRecord>>;
    /// Erases held messages past their expiry (status `expired`); returns
    /// them. A message claimed by a delivery is not expired (it may be in
    /// a mailbox already): it expires once released, if not delivered.
    fn expire_held(&self, now_ms: u64) -> Result<Vec<MessageRecord>>;
    /// Marks `sent` messages a device acknowledged as `delivered`; returns
    /// them.
    fn mark_delivered(&self, now_ms: u64) -> Result<Vec<MessageRecord>>;

    /// Stores a new OTP for `number`, replacing an earlier one of `kind`,
    /// unless `limit` OTPs (of either kind) were asked for the number in
    /// the window: then nothing is stored and the answer is false. The
    /// count is in the store, so every node shares it: a new OTP brings
    /// new attempts, and N nodes must not give N times the guesses.
    fn put_otp(
        &self,
        number: &str,
        kind: OtpKind,
        otp: &str,
        now_ms: u64,
        expires_at: u64,
        limit: OtpLimit,
    ) -> Result<bool>;
    /// Checks `otp` for `number` (counting the attempt). An app-made OTP
    /// is accepted only once its SMS confirmed it ([`PhoneStore::confirm_sms_otp`]).
    fn check_otp(
        &self,
        number: &str,
        kind: OtpKind,
        otp: &str,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<OtpCheck>;
    /// An SMS from `number` carried `otp`: confirms the app-made OTP it
    /// matches (counting the attempt).
    fn confirm_sms_otp(
        &self,
        number: &str,
        otp: &str,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<OtpCheck>;

    /// Queues a post (durable).
    fn queue(&self, kind: OutboxKind, sender_id: i64, sealed: Vec<u8>, now_ms: u64) -> Result<()>;
    /// Takes up to `limit` posts due at `now_ms`, oldest first: each is
    /// leased to `owner` (a random token of the caller) for `lease_ms`
    /// (not due for anyone else meanwhile) until [`PhoneStore::posted`] or
    /// [`PhoneStore::retry_at`].
    fn due(
        &self,
        kind: OutboxKind,
        owner: &[u8; 16],
        now_ms: u64,
        limit: u32,
        lease_ms: u64,
    ) -> Result<Vec<OutboxItem>>;
    /// Renews `owner`'s lease of post `id` for `lease_ms` from `now_ms`,
    /// just before it is posted: false if another caller took it over
    /// (this one's lease ran out while it posted others), and then this one
    /// must not post it.
    fn renew_lease(&self, id: i64, owner: &[u8; 16], now_ms: u64, lease_ms: u64) -> Result<bool>;
    /// Post `id` was posted: removed, if `owner` still leases it.
    fn posted(&self, id: i64, owner: &[u8; 16]) -> Result<bool>;
    /// Post `id` failed: due again at `next_at`, if `owner` still leases it.
    fn retry_at(&self, id: i64, owner: &[u8; 16], next_at: u64) -> Result<bool>;
}
