//! The client's encrypted store: one device's account, keys, sessions,
//! contacts, message history and block list, in one SQLCipher database.
//!
//! # At rest
//! The whole database (pages, journal and WAL) is encrypted by SQLCipher
//! with a 256-bit key derived from the user's passphrase by Argon2id over a
//! random 16-byte salt. The salt and the Argon2 parameters are kept in
//! [`KDF_FILE`] beside the database ([`DB_FILE`]) in the device's home
//! directory; they are not secret. The derived key is handed to SQLCipher as
//! a raw key (`PRAGMA key = "x'…'"`, so SQLCipher runs no second KDF) and
//! every copy this code makes of it is zeroized. A wrong passphrase is
//! reported as [`StoreError::WrongPassphrase`].
//!
//! # Atomicity
//! What one received message changes (its history row, the protocol
//! sessions and prekeys reported by `Device::take_changes`, and the mailbox
//! cursor) is written in one [`Tx`], committed before the server is told the
//! message was received: a crash either loses nothing or leaves the message
//! to be fetched again, and the unique message id makes it show once.

//!
//! # Layout
//! `open` (creating and opening the encrypted database, the schema),
//! `account` (the account and the device's protocol state), `tx` (the
//! write transaction), `contacts` (contacts and blocked users),
//! `messages` (the history), `rooms`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use zeroize::Zeroizing;

mod account;
mod contacts;
mod messages;
mod open;
mod rooms;
mod tx;

pub use open::{DB_FILE, KDF_FILE, MIN_PASSPHRASE_CHARS};
pub use rooms::{RoomMessageRow, RoomRecord};
pub use tx::Tx;

/// Everything the store can refuse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong passphrase for this sotto home (the local store could not be decrypted)")]
    WrongPassphrase,
    #[error("no sotto account in {0}: register or link this device first")]
    NotInitialized(PathBuf),
    #[error("{0} already holds a sotto account; use another --home")]
    AlreadyExists(PathBuf),
    #[error(
        "the passphrase is too short: use at least {min} characters (anyone holding a copy of the store \
         can try passphrases offline, and a short one is soon found)"
    )]
    WeakPassphrase { min: usize },
    #[error("the local store is damaged: {0}")]
    Corrupt(String),
    #[error("local store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("local store file error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The device's account: who it is, its keys and its server.
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
    pub server_url: String,
    /// Lowercase hex SHA-256 of the server certificate's DER (pinned).
    pub server_fingerprint: String,
    /// Last mailbox sequence number acknowledged to the server.
    pub cursor: u64,
    /// `Device::next_prekey_id`.
    pub next_prekey_id: u32,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("user_key", &self.user_key.as_ref().map(|_| "<secret>"))
            .field("server_url", &self.server_url)
            .field("server_fingerprint", &self.server_fingerprint)
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// A contact: a user this device has talked to or learned of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub username: String,
    pub username_hash: [u8; 32],
    /// The user public key (TOFU or verified).
    pub user_key: [u8; 32],
    /// True once the user compared safety numbers.
    pub verified: bool,
    /// Encoded device certificates last seen for this user.
    pub devices: Vec<Vec<u8>>,
}

/// One message in the history (sent or received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
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

/// Which messages [`ClientStore::history`] returns.
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    /// Only this conversation.
    pub conversation: Option<[u8; 32]>,
    /// Only messages from or to this user.
    pub peer: Option<String>,
    /// Only the newest `limit` (still returned oldest first).
    pub limit: Option<usize>,
}

/// The open store of one device.
pub struct ClientStore {
    conn: Mutex<Connection>,
    home: PathBuf,
}

impl ClientStore {
    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The home directory this store lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }
}

/// Usernames are case-insensitive and trimmed, as their hash is.
pub fn normalize(username: &str) -> String {
    username.trim().to_lowercase()
}

fn arr<const N: usize>(v: Vec<u8>, what: &str) -> Result<[u8; N]> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} has the wrong length")))
}

#[cfg(test)]
mod tests;
