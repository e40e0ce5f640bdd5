//! The server store: the [`ServerStore`] trait and its backends, SQLite
//! ([`SqliteStore`], embedded, the default) and PostgreSQL
//! ([`PostgresStore`], shared by several server nodes).
//!
//! # Shape
//! The trait is synchronous and small; the server calls it from blocking
//! threads, except for the hot writes (`enqueue_with`, `ack_with`), which
//! hand the work to the writer and answer through a callback once it is
//! committed, so no thread waits for the commit. Nothing in it relies on state kept in the serving process:
//! mailbox sequence numbers, pending device links and prekey pools all live
//! in the database, so the PostgreSQL backend shared by several server nodes
//! implements the same trait (pushing to devices connected to another node
//! is the server's job: `sotto-server`'s relay).
//!
//! # Privacy at rest
//! Users are keyed by `HMAC-SHA-256(server_secret, username_hash)`; the
//! secret lives in the data directory (mode 0600) or in a file of its own
//! (`--secret-file`), never in the database, so a copy of the database
//! alone does not allow guessing usernames offline. (Several nodes sharing
//! one database must share this secret too.) Block lists are keyed the same
//! way: a block is an HMAC of the two user keys, so the database alone does
//! not say who blocks whom. Where the server must give a username hash back
//! (a block list, the user a linked device joined), it keeps it XOR-ed with
//! a pad derived from the same secret (see [`secret`]). Datagrams are stored
//! exactly as received: ciphertext the server cannot open.
//!
//! # Quotas and replays
//! Each device row counts the bytes waiting unacknowledged in its mailbox;
//! [`ServerStore::enqueue`] refuses a datagram that would take a device or
//! its user over a [`MailboxQuota`], in the transaction that would store it,
//! so the bound holds with several nodes writing. Request ids that must not
//! be used twice ([`ServerStore::single_use`]) are rows too, for the same
//! reason.
//!
//! # Datagrams and mailboxes
//! A datagram is stored once, however many devices it addresses (a room
//! datagram may address thousands); each recipient device gets a mailbox
//! row pointing at it. Acknowledged rows are deleted at once when retention
//! is zero, or kept until `acked_at + retention` (history recovery); a
//! datagram goes when no row points at it any more.

pub mod phone;
mod postgres;
mod secret;
mod sqlite;
mod writer;

pub use postgres::{migrate_postgres, PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION};
pub use sotto_proto::{DeviceId, UserPublic};
pub use sqlite::{SqliteStore, DB_FILE, SECRET_FILE};

/// A request that may be used once: its id is remembered until
/// `expires_at` (ms). See [`ServerStore::single_use`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId {
    pub id: [u8; 32],
    pub expires_at: u64,
}

/// How much may wait unacknowledged (see [`ServerStore::enqueue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MailboxQuota {
    /// Bytes of datagrams waiting for one device.
    pub device_bytes: u64,
    /// Bytes waiting for all devices of one user together.
    pub user_bytes: u64,
}

impl MailboxQuota {
    /// No limit (tests and tools).
    pub const UNLIMITED: MailboxQuota = MailboxQuota {
        device_bytes: u64::MAX,
        user_bytes: u64::MAX,
    };
}

/// The client's `username_hash` (SHA-256 over the lowercased name).
pub type UsernameHash = [u8; 32];

/// How long a pending device link waits for approval.
pub const LINK_TTL_MS: u64 = 10 * 60 * 1000;

/// Result of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Answers a non-blocking store call (`enqueue_with`, `ack_with`).
/// Calls `start` with a [`Reply`] and blocks until it is answered (the
/// blocking form of a `*_with` call).
pub fn wait_for<T: Send + 'static>(start: impl FnOnce(Reply<T>)) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    start(Box::new(move |answer| {
        let _ = tx.send(answer);
    }));
    rx.recv()
        .unwrap_or_else(|_| Err(StoreError::Backend("the store is closed".into())))
}

pub type Reply<T> = Box<dyn FnOnce(Result<T>) + Send>;

/// Everything the store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("username is taken")]
    UsernameTaken,
    #[error("this user key or device is already registered")]
    AlreadyRegistered,
    #[error("unknown user")]
    UnknownUser,
    #[error("unknown device {0:?}")]
    UnknownDevice(DeviceId),
    #[error("the mailbox of device {0:?} (or of its user) is full")]
    MailboxFull(DeviceId),
    #[error("this request was already used")]
    Replayed,
    #[error("prekey id {prekey_id} was already published for device {device:?}")]
    PrekeyIdReused { device: DeviceId, prekey_id: u32 },
    #[error(
        "the server secret in {0} does not match this database (it was made with another secret)"
    )]
    WrongSecret(std::path::PathBuf),
    #[error(
        "no server secret at {0}, and the database already holds users: restore the secret file"
    )]
    NoSecret(std::path::PathBuf),
    #[error("unknown or expired link")]
    UnknownLink,
    #[error("the link was already approved")]
    LinkApproved,
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A PostgreSQL error (the server's message when there is one).
    #[error("database: {}", postgres::reason(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A failure reported to every request of a batch (e.g. the commit
    /// failed), or the writer thread is gone.
    #[error("database: {0}")]
    Backend(String),
    /// The database is too busy right now (every connection in use, a
    /// lock held elsewhere for too long): try again later.
    #[error("database busy: {0}")]
    Busy(String),
}

/// A device to add: its certificate (as `DeviceCert::encode`) and its
/// prekeys (as `SignedPrekey::encode`), already verified by the caller.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub device: DeviceId,
    pub cert: Vec<u8>,
    /// One-time prekeys: (prekey id, encoded signed prekey).
    pub prekeys: Vec<(u32, Vec<u8>)>,
    pub reserve: Vec<u8>,
    /// The reserve prekey's id (ids only ever increase, see
    /// [`ServerStore::add_prekeys`]).
    pub reserve_id: u32,
}

/// A new user with its first device.
#[derive(Clone, Debug)]
pub struct NewUser {
    pub username_hash: UsernameHash,
    pub user: UserPublic,
    pub device: NewDevice,
}

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub user: UserPublic,
    pub cert: Vec<u8>,
}

/// A user and its devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub user: UserPublic,
    pub devices: Vec<DeviceRecord>,
}

/// The state of one device's prekey pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrekeyCount {
    /// Unclaimed one-time prekeys.
    pub one_time: u32,
    /// Times the reserve key was served since the last refill.
    pub reserve_served: u32,
}

/// One prekey handed out by [`ServerStore::claim_prekeys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedPrekey {
    pub device: DeviceId,
    pub cert: Vec<u8>,
    pub prekey: Vec<u8>,
    /// True when the pool was empty and this is the reserve key.
    pub reserve: bool,
    /// The pool after this claim.
    pub pool: PrekeyCount,
}

/// A new mailbox row made by [`ServerStore::enqueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub device: DeviceId,
    pub seq: u64,
}

/// What [`ServerStore::enqueue`] committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    /// SHA-256 of the datagram.
    pub datagram_id: [u8; 32],
    pub received_at: u64,
    /// Rows created now. A datagram sent again (a retry) creates rows only
    /// for devices that have none for it.
    pub deliveries: Vec<Delivery>,
}

/// One pending mailbox item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailboxEntry {
    pub seq: u64,
    pub datagram: Vec<u8>,
    pub received_at: u64,
}

/// A device waiting to be linked to a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLink {
    pub link_id: String,
    /// The new device.
    pub device: DeviceId,
    /// The request as the new device sent it (opaque to the store).
    pub request: Vec<u8>,
    pub created_at: u64,
    pub approved: Option<ApprovedLink>,
}

/// What the new device learns once its link is approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedLink {
    /// The certificate registered (empty if the device was removed since).
    pub cert: Vec<u8>,
    /// The approval as the approving device sent it, sealed for the new
    /// device (opaque to the store).
    pub approval: Vec<u8>,
    pub username_hash: UsernameHash,
}

/// What [`ServerStore::purge`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Acknowledged rows past the retention.
    pub mailbox_rows: u64,
    /// Unacknowledged rows past their time to live.
    pub expired: u64,
    pub datagrams: u64,
    pub links: u64,
    /// Remembered request ids past their window.
    pub requests: u64,
}

/// The security platform's storage. Every call is one transaction; calls
/// that write are durable when they return `Ok`.
pub trait ServerStore: Send + Sync {
    /// Adds a user with its first device. [`StoreError::UsernameTaken`] if
    /// the name is in use, [`StoreError::AlreadyRegistered`] if the user key
    /// or the device is.
    fn register(&self, user: NewUser, now_ms: u64) -> Result<()>;

    /// A user by username hash, with its devices.
    fn user(&self, username_hash: &UsernameHash) -> Result<Option<UserRecord>>;

    /// A user by public key, with its devices.
    fn user_by_key(&self, user: &UserPublic) -> Result<Option<UserRecord>>;

    /// A registered device.
    fn device(&self, device: &DeviceId) -> Result<Option<DeviceRecord>>;

    /// Claims one prekey for each of `devices` of the user (all its devices
    /// when empty): the oldest one-time prekey, deleted in the same
    /// transaction, or the reserve key when the pool is empty. When the
    /// user blocks `claimant`, every device's reserve key is served and
    /// nothing is counted: the claimant is not told, and cannot drain the
    /// pool.
    fn claim_prekeys(
        &self,
        username_hash: &UsernameHash,
        devices: &[DeviceId],
        claimant: &UserPublic,
    ) -> Result<(UserPublic, Vec<ClaimedPrekey>)>;

    /// Adds one-time prekeys and optionally replaces the reserve (id,
    /// encoded); resets the reserve counter. Every id must be above every
    /// id the device ever published ([`StoreError::PrekeyIdReused`]
    /// otherwise, and nothing changes): a served prekey can never be
    /// published again, not even by a replayed upload.
    fn add_prekeys(
        &self,
        device: &DeviceId,
        prekeys: Vec<(u32, Vec<u8>)>,
        reserve: Option<(u32, Vec<u8>)>,
    ) -> Result<PrekeyCount>;

    fn prekey_count(&self, device: &DeviceId) -> Result<PrekeyCount>;

    /// Stores `datagram` once and adds a row to the mailbox of every device
    /// in `recipients`. Refused as a whole with [`StoreError::UnknownDevice`]
    /// if a device is not registered, or [`StoreError::MailboxFull`] if a
    /// new row would take a device or its user over `quota` (what is stored
    /// already is never touched). Devices whose user blocks the user of
    /// `sender` get no row, and nothing says so.
    fn enqueue(
        &self,
        sender: &DeviceId,
        recipients: &[DeviceId],
        datagram: Vec<u8>,
        now_ms: u64,
        quota: &MailboxQuota,
    ) -> Result<Enqueued> {
        wait_for(|reply| {
            self.enqueue_with(sender, recipients, datagram, now_ms, quota, None, reply)
        })
    }

    /// [`ServerStore::enqueue`] without blocking the caller: `reply` gets
    /// the answer once the datagram is durable (or refused). With
    /// `request`, the request id is remembered in the same transaction
    /// ([`StoreError::Replayed`] if it was seen; the send path's
    /// [`ServerStore::single_use`] at no extra commit). A backend may call
    /// `reply` on another thread; it must be quick.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_with(
        &self,
        sender: &DeviceId,
        recipients: &[DeviceId],
        datagram: Vec<u8>,
        now_ms: u64,
        quota: &MailboxQuota,
        request: Option<RequestId>,
        reply: Reply<Enqueued>,
    );

    /// Unacknowledged items with `seq > after`, in order: at most `limit`,
    /// and stopping after `max_bytes` of datagrams (always at least one).
    /// The flag says whether more wait.
    fn fetch(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<MailboxEntry>, bool)>;

    /// Acknowledges items of `device`: deleted when `retention_ms` is 0,
    /// else kept until `acked_at + retention_ms`. Returns how many of `seqs`
    /// were pending.
    fn ack(&self, device: &DeviceId, seqs: &[u64], now_ms: u64, retention_ms: u64) -> Result<u32>;

    /// [`ServerStore::ack`] without blocking the caller (as
    /// [`ServerStore::enqueue_with`]). Unlike every other write, the ack
    /// need not be fsync'd when `reply` is called: it survives the server
    /// process being killed, but a power loss may undo it, which only
    /// means a redelivery (clients drop repeats by message id). The SQLite
    /// backend commits batches of nothing but acks with
    /// `synchronous=NORMAL`; the next durable commit's fsync carries them.
    fn ack_with(
        &self,
        device: &DeviceId,
        seqs: &[u64],
        now_ms: u64,
        retention_ms: u64,
        reply: Reply<u32>,
    ) {
        reply(self.ack(device, seqs, now_ms, retention_ms))
    }

    /// A datagram addressed to `device` that is still stored (pending or
    /// within retention).
    fn datagram_for(&self, device: &DeviceId, datagram_id: &[u8; 32]) -> Result<Option<Vec<u8>>>;

    /// Deletes acknowledged rows older than the retention, unacknowledged
    /// rows older than `unacked_ttl_ms`, datagrams no row points at,
    /// expired links and request ids past their window.
    fn purge(&self, now_ms: u64, retention_ms: u64, unacked_ttl_ms: u64) -> Result<Purged>;

    /// Remembers `request_id` until `expires_at` (ms), answering
    /// [`StoreError::Replayed`] if it is remembered already. Like an ack it
    /// need not be fsync'd before `reply` (a backend may let the next
    /// durable commit carry it: whatever the request then writes is such a
    /// commit).
    fn single_use(&self, request_id: &[u8; 32], expires_at: u64, reply: Reply<()>);

    /// Removes `device` of the user `owner`: its directory entry, prekeys
    /// and mailbox. [`StoreError::UnknownDevice`] if it is not a device of
    /// that user.
    fn remove_device(&self, owner: &UserPublic, device: &DeviceId) -> Result<()>;

    /// `blocker` silently drops datagrams from the user named by `blocked`.
    /// [`StoreError::UnknownUser`] if there is no such user.
    fn block(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()>;

    fn unblock(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()>;

    /// Whether the user named `blocker` blocks the user `blocked`.
    fn is_blocked(&self, blocker: &UsernameHash, blocked: &UserPublic) -> Result<bool>;

    /// The username hashes `blocker` blocks.
    fn blocks(&self, blocker: &UserPublic) -> Result<Vec<UsernameHash>>;

    /// A new device waits for approval under `link_id` for [`LINK_TTL_MS`].
    fn create_link(
        &self,
        link_id: &str,
        device: &DeviceId,
        request: Vec<u8>,
        now_ms: u64,
    ) -> Result<()>;

    /// A link that has not expired.
    fn link(&self, link_id: &str, now_ms: u64) -> Result<Option<PendingLink>>;

    /// Registers `device` (verified by the caller) as a device of
    /// `approver` and marks the link approved with `approval` (kept for
    /// the new device), in one transaction.
    fn approve_link(
        &self,
        link_id: &str,
        approver: &UserPublic,
        device: NewDevice,
        approval: Vec<u8>,
        now_ms: u64,
    ) -> Result<()>;

    /// Unacknowledged mailbox items of all devices (the mailbox depth of
    /// `/metrics`).
    fn pending_items(&self) -> Result<u64>;
}
