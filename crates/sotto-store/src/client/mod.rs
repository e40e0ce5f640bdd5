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
//! The store implements the device core's [`sotto_device::Store`]: what one
//! received message changes (its history row, the protocol sessions and
//! prekeys, contacts, room records, the mailbox cursor) comes as one
//! [`ChangeSet`] and is written in one SQLite transaction, committed before
//! the server is told the message was received: a crash either loses
//! nothing or leaves the message to be fetched again, and the unique
//! message id makes it show once.
//!
//! # Layout
//! `open` (creating and opening the encrypted database, the schema),
//! `account` (the account and the device's protocol state), `tx` (writing
//! a change set in one transaction), `contacts` (contacts and blocked
//! users), `messages` (the history), `rooms`, `device_store` (the core's
//! store trait over all of it), `peers` (peer-to-peer peers to dial
//! again), `lock` (one operation at a time per home,
//! across processes).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

mod account;
mod contacts;
mod device_store;
mod lock;
mod messages;
mod open;
mod peers;
mod phone;
mod rooms;
mod tx;

pub use lock::{Guard, HomeLock, LOCK_FILE};
pub use open::{DB_FILE, KDF_FILE, MIN_PASSPHRASE_CHARS};
pub use peers::{RememberedPeer, MAX_REMEMBERED_PEERS};
pub use phone::PendingPhone;
/// The records are the device core's ([`sotto_device::store`]).
pub use sotto_device::store::{
    Account, ChangeSet, Contact, HistoryQuery, Message, RoomMessageRow, RoomRecord, RoomSave,
};

/// Everything the store can refuse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong passphrase for this sotto home (the local store could not be decrypted)")]
    WrongPassphrase,
    #[error("no sotto account in {0}: register or link this device first")]
    NotInitialized(PathBuf),
    #[error("{0} already holds a sotto account")]
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

/// The open store of one device. Clones share one connection (the shell
/// keeps one for what only it touches, the device core another).
#[derive(Clone)]
pub struct ClientStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    home: PathBuf,
}

impl ClientStore {
    fn new(conn: Connection, home: PathBuf) -> ClientStore {
        ClientStore {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                home,
            }),
        }
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.inner.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The home directory this store lives in.
    pub fn home(&self) -> &Path {
        &self.inner.home
    }
}

/// Usernames are case-insensitive and trimmed, as their hash is.
pub use sotto_proto::normalize_username as normalize;

fn arr<const N: usize>(v: Vec<u8>, what: &str) -> Result<[u8; N]> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} has the wrong length")))
}

#[cfg(test)]
mod tests;
