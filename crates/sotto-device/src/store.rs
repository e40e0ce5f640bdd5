//! The client store the core needs: one small trait ([`Store`]) with reads
//! and one write, [`Store::commit`], that applies a [`ChangeSet`]
//! atomically. Backends: SQLCipher in `sotto-store`, and the in-memory
//! `testing::MemoryStore`; `testing::suite` runs the same tests on both.
//!
//! Everything one received datagram changes (sessions, prekeys, its history
//! row, contacts, room records) is one change set, committed before the
//! datagram is acknowledged: a crash loses nothing, and a datagram
//! delivered again shows once (unique message id, session replay window).

use zeroize::Zeroizing;

use crate::error::StoreError;

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// A stored secret (a session or a prekey), `None` to delete it.
pub type SecretRow = Option<Zeroizing<Vec<u8>>>;

/// The device's account: who it is, its keys and its server.
#[derive(Clone)]
pub struct Account {
    /// The user's name; empty on a linked device until the approving device
    /// sent it (link sync).
    pub username: String,
    /// The user key secret: held by the device that registered the user.
    pub user_key: Option<Zeroizing<[u8; 32]>>,
    /// `DeviceKey::to_bytes`.
    pub device_key: Zeroizing<[u8; 64]>,
    /// `DeviceCert::encode`.
    pub device_cert: Vec<u8>,
    /// The server this device is registered with (empty for none); the
    /// core never reads it, the shell that talks to the server does.
    pub server_url: String,
    /// Lowercase hex SHA-256 of the server certificate's DER (pinned).
    pub server_fingerprint: String,
    /// Highest delivery tag committed (the server's mailbox sequence).
    pub cursor: u64,
    /// `Device::next_prekey_id`.
    pub next_prekey_id: u32,
    /// Master clock minus this machine's clock, ms, as last measured: every
    /// TTL decision uses it, also offline.
    pub clock_offset_ms: i64,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("user_key", &self.user_key.as_ref().map(|_| "<secret>"))
            .field("server_url", &self.server_url)
            .field("server_fingerprint", &self.server_fingerprint)
            .field("cursor", &self.cursor)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .finish_non_exhaustive()
    }
}

/// A contact: a user this device has talked to or learned of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub username: String,
    pub username_hash: [u8; 32],
    /// The user public key (trusted on first use, or verified).
    pub user_key: [u8; 32],
    /// True once the user compared safety numbers.
    pub verified: bool,
    /// Encoded device certificates last seen for this user.
    pub devices: Vec<Vec<u8>>,
}

/// One message of the history (sent or received), as stored and as shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Unique: a message is stored once however often it is delivered.
    pub id: [u8; 16],
    pub conversation: [u8; 32],
    pub from: String,
    pub to: String,
    /// Master-clock milliseconds.
    pub sent_at: u64,
    pub received_at: u64,
    pub body: String,
    /// Seconds after `sent_at` when the message disappears; 0 = never.
    pub ttl: u32,
    /// Written by this user (on this or another of its devices).
    pub outgoing: bool,
}

/// Which messages [`Store::history`] returns.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    /// Only this conversation.
    pub conversation: Option<[u8; 32]>,
    /// Only messages from or to this user.
    pub peer: Option<String>,
    /// Only the newest `limit` (still returned oldest first).
    pub limit: Option<usize>,
}

/// One stored room log record (`sotto_proto::room::LogRecord`, flattened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    pub message_key: Option<[u8; 32]>,
    pub datagram_id: Option<[u8; 32]>,
    pub purged: bool,
    /// Held for missing parents (after the resolved records).
    pub pending: bool,
    /// The place in the resolved order (`sotto_proto::room::SortKey`:
    /// time, height, then hash); 0 while pending.
    pub time: u64,
    pub height: u32,
}

/// A room message's content, kept beside its log entry until its TTL
/// passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessageRow {
    /// The entry hash.
    pub entry: [u8; 32],
    pub group: [u8; 32],
    /// The sender's user key.
    pub sender: [u8; 32],
    /// Master-clock ms (the entry's timestamp).
    pub sent_at: u64,
    pub content_type: u8,
    pub salt: [u8; 16],
    pub body: Vec<u8>,
}

/// What changed in a room's stored log: the records to insert or replace
/// (by hash) and to delete, never the whole log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSave {
    pub group: [u8; 32],
    /// For finding the room by title.
    pub title: String,
    pub head: [u8; 32],
    /// Inserted, or replacing the record with the same hash.
    pub records: Vec<RoomRecord>,
    /// Hashes of records to delete.
    pub removed: Vec<[u8; 32]>,
    /// When its next message expires (master-clock ms), if any.
    pub next_expiry: Option<u64>,
}

/// What one step of the device changes, written by [`Store::commit`] all
/// together or not at all. Applied in field order; within a kind, inserts
/// before deletes.
#[derive(Default, Debug)]
pub struct ChangeSet {
    /// Inserts or replaces the account.
    pub account: Option<Account>,
    pub username: Option<String>,
    pub server_fingerprint: Option<String>,
    pub clock_offset_ms: Option<i64>,
    /// Moves the cursor forward (never back).
    pub cursor: Option<u64>,
    pub next_prekey_id: Option<u32>,
    /// Session id -> stored session (`Session::to_bytes`), `None` deletes.
    pub sessions: Vec<([u8; 16], SecretRow)>,
    /// Prekey id -> stored secret (`PrekeySecret::to_bytes`), `None` deletes.
    pub prekeys: Vec<(u32, SecretRow)>,
    /// Added to the history unless a message with the same id is there.
    pub messages: Vec<Message>,
    pub messages_deleted: Vec<[u8; 16]>,
    /// Deletes the messages whose TTL ran out at this master-clock time.
    pub expire_messages_at: Option<u64>,
    /// Inserted or replaced, by username.
    pub contacts: Vec<Contact>,
    /// Username -> blocked (true) or not.
    pub blocks: Vec<(String, bool)>,
    pub rooms: Vec<RoomSave>,
    /// Stored once per entry.
    pub room_messages: Vec<RoomMessageRow>,
    pub room_messages_deleted: Vec<[u8; 32]>,
    /// Username hash -> username (the caller checked the hash).
    pub room_names: Vec<([u8; 32], String)>,
    /// Username -> display name of an organisation (from the directory).
    pub organisations: Vec<(String, String)>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.account.is_none()
            && self.username.is_none()
            && self.server_fingerprint.is_none()
            && self.clock_offset_ms.is_none()
            && self.cursor.is_none()
            && self.next_prekey_id.is_none()
            && self.sessions.is_empty()
            && self.prekeys.is_empty()
            && self.messages.is_empty()
            && self.organisations.is_empty()
            && self.messages_deleted.is_empty()
            && self.expire_messages_at.is_none()
            && self.contacts.is_empty()
            && self.blocks.is_empty()
            && self.rooms.is_empty()
            && self.room_messages.is_empty()
            && self.room_messages_deleted.is_empty()
            && self.room_names.is_empty()
    }
}

/// The device's store. Reads see everything committed; [`Store::commit`]
/// is the only write. Usernames are compared normalized
/// (`sotto_proto::normalize_username`).
pub trait Store: Send + Sync {
    fn account(&self) -> StoreResult<Option<Account>>;
    /// Stored prekey secrets.
    fn prekeys(&self) -> StoreResult<Vec<Zeroizing<Vec<u8>>>>;
    /// Stored sessions.
    fn sessions(&self) -> StoreResult<Vec<Zeroizing<Vec<u8>>>>;

    fn contact(&self, username: &str) -> StoreResult<Option<Contact>>;
    /// Contacts by username.
    fn contacts(&self) -> StoreResult<Vec<Contact>>;
    fn is_blocked(&self, username: &str) -> StoreResult<bool>;
    /// Blocked usernames, sorted.
    fn blocked(&self) -> StoreResult<Vec<String>>;

    fn has_message(&self, id: &[u8; 16]) -> StoreResult<bool>;
    /// Messages oldest first (by `sent_at`, then by when they were stored).
    fn history(&self, q: &HistoryQuery) -> StoreResult<Vec<Message>>;

    /// Group id and title of every room, by title.
    fn rooms(&self) -> StoreResult<Vec<([u8; 32], String)>>;
    /// Rooms with a message that expires at or before `now_ms`.
    fn rooms_due(&self, now_ms: u64) -> StoreResult<Vec<[u8; 32]>>;
    fn room_head(&self, group: &[u8; 32]) -> StoreResult<Option<[u8; 32]>>;
    /// A room's records in resolved order (by time, height, hash), then
    /// the pending ones (by hash).
    fn room_records(&self, group: &[u8; 32]) -> StoreResult<Vec<RoomRecord>>;
    fn room_message(&self, entry: &[u8; 32]) -> StoreResult<Option<RoomMessageRow>>;
    /// A room's stored message contents, oldest first.
    fn room_messages(&self, group: &[u8; 32]) -> StoreResult<Vec<RoomMessageRow>>;
    /// The username learned for a username hash: room names, then contacts.
    fn name_for_hash(&self, hash: &[u8; 32]) -> StoreResult<Option<String>>;

    /// Writes `changes` atomically.
    fn commit(&mut self, changes: ChangeSet) -> StoreResult<()>;
}
