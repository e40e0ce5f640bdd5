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

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use sotto_proto::{Changes, Device};
use zeroize::{Zeroize, Zeroizing};

/// The encrypted database in the home directory.
pub const DB_FILE: &str = "sotto.db";
/// Salt and Argon2id parameters (not secret) beside the database.
pub const KDF_FILE: &str = "sotto.kdf";

/// Argon2id cost used for new stores: 64 MiB, 3 passes, 1 lane.
const KDF_M_COST: u32 = 64 * 1024;
const KDF_T_COST: u32 = 3;
const KDF_P_COST: u32 = 1;

/// Everything the store can refuse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong passphrase for this sotto home (the local store could not be decrypted)")]
    WrongPassphrase,
    #[error("no sotto account in {0}: register or link this device first")]
    NotInitialized(PathBuf),
    #[error("{0} already holds a sotto account; use another --home")]
    AlreadyExists(PathBuf),
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    username TEXT NOT NULL,
    user_key BLOB,
    device_key BLOB NOT NULL,
    device_cert BLOB NOT NULL,
    server_url TEXT NOT NULL,
    server_fingerprint TEXT NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,
    next_prekey_id INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS prekeys (id INTEGER PRIMARY KEY, secret BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (id BLOB PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    username TEXT PRIMARY KEY,
    username_hash BLOB NOT NULL UNIQUE,
    user_key BLOB NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    devices BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id BLOB NOT NULL UNIQUE,
    conversation BLOB NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    outgoing INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conv ON messages (conversation, sent_at);
CREATE TABLE IF NOT EXISTS blocked (username TEXT PRIMARY KEY);
";

fn kdf_params(m: u32, t: u32, p: u32) -> Result<Params> {
    Params::new(m, t, p, Some(32))
        .map_err(|e| StoreError::Corrupt(format!("bad KDF parameters: {e}")))
}

/// Derives the 32-byte database key from the passphrase.
fn derive_key(passphrase: &str, salt: &[u8], params: Params) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key[..])
        .map_err(|e| StoreError::Corrupt(format!("key derivation failed: {e}")))?;
    Ok(key)
}

struct KdfFile {
    salt: [u8; 16],
    m: u32,
    t: u32,
    p: u32,
}

impl KdfFile {
    fn encode(&self) -> String {
        format!(
            "sotto-kdf 1 argon2id m={} t={} p={} salt={}\n",
            self.m,
            self.t,
            self.p,
            hex::encode(self.salt)
        )
    }

    fn decode(text: &str) -> Result<Self> {
        let bad = || StoreError::Corrupt(format!("{KDF_FILE} is not readable"));
        let mut parts = text.split_whitespace();
        if parts.next() != Some("sotto-kdf")
            || parts.next() != Some("1")
            || parts.next() != Some("argon2id")
        {
            return Err(bad());
        }
        let (mut m, mut t, mut p, mut salt) = (None, None, None, None);
        for part in parts {
            let (k, v) = part.split_once('=').ok_or_else(bad)?;
            match k {
                "m" => m = v.parse().ok(),
                "t" => t = v.parse().ok(),
                "p" => p = v.parse().ok(),
                "salt" => {
                    let mut s = [0u8; 16];
                    hex::decode_to_slice(v, &mut s).map_err(|_| bad())?;
                    salt = Some(s);
                }
                _ => {}
            }
        }
        Ok(KdfFile {
            salt: salt.ok_or_else(bad)?,
            m: m.ok_or_else(bad)?,
            t: t.ok_or_else(bad)?,
            p: p.ok_or_else(bad)?,
        })
    }
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
}

fn arr<const N: usize>(v: Vec<u8>, what: &str) -> Result<[u8; N]> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} has the wrong length")))
}

impl ClientStore {
    /// True when `home` holds a store (whatever its passphrase).
    pub fn exists(home: &Path) -> bool {
        home.join(DB_FILE).exists()
    }

    /// Creates a new, empty store in `home` (made if missing) under
    /// `passphrase`. Refuses if one is already there.
    pub fn create(home: &Path, passphrase: &str) -> Result<ClientStore> {
        fs::create_dir_all(home)?;
        if Self::exists(home) {
            return Err(StoreError::AlreadyExists(home.to_path_buf()));
        }
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let kdf = KdfFile {
            salt,
            m: KDF_M_COST,
            t: KDF_T_COST,
            p: KDF_P_COST,
        };
        let tmp = home.join(format!("{KDF_FILE}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(kdf.encode().as_bytes())?;
            f.sync_all()?;
        }
        fs::rename(&tmp, home.join(KDF_FILE))?;
        Self::open_with(home, passphrase, &kdf)
    }

    /// Opens the store in `home`. [`StoreError::WrongPassphrase`] when the
    /// passphrase does not decrypt it; [`StoreError::NotInitialized`] when
    /// there is none.
    pub fn open(home: &Path, passphrase: &str) -> Result<ClientStore> {
        if !Self::exists(home) {
            return Err(StoreError::NotInitialized(home.to_path_buf()));
        }
        let text = fs::read_to_string(home.join(KDF_FILE)).map_err(|_| {
            StoreError::Corrupt(format!("{KDF_FILE} is missing from {}", home.display()))
        })?;
        let kdf = KdfFile::decode(&text)?;
        Self::open_with(home, passphrase, &kdf)
    }

    fn open_with(home: &Path, passphrase: &str, kdf: &KdfFile) -> Result<ClientStore> {
        let key = derive_key(passphrase, &kdf.salt, kdf_params(kdf.m, kdf.t, kdf.p)?)?;
        let conn = Connection::open(home.join(DB_FILE))?;
        {
            let mut pragma = Zeroizing::new(String::with_capacity(96));
            pragma.push_str("PRAGMA key = \"x'");
            let mut hexkey = hex::encode(&key[..]);
            pragma.push_str(&hexkey);
            hexkey.zeroize();
            pragma.push_str("'\";");
            conn.execute_batch(&pragma)?;
        }
        drop(key);
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(e) if is_not_a_database(&e) => return Err(StoreError::WrongPassphrase),
            Err(e) => return Err(e.into()),
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(rooms::ROOM_SCHEMA)?;
        Ok(ClientStore {
            conn: Mutex::new(conn),
            home: home.to_path_buf(),
        })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The home directory this store lives in.
    pub fn home(&self) -> &Path {
        &self.home
    }

    // ---- account ----

    /// The account, if this device was registered or linked.
    pub fn account(&self) -> Result<Option<Account>> {
        let db = self.db();
        db
            .query_row(
                "SELECT username, user_key, device_key, device_cert, server_url, server_fingerprint, cursor, \
                 next_prekey_id FROM account WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()?
            .map(|(username, user_key, device_key, device_cert, server_url, server_fingerprint, cursor, next)| {
                let user_key = match user_key {
                    Some(v) => {
                        let v = Zeroizing::new(v);
                        if v.len() != 32 {
                            return Err(StoreError::Corrupt("user key has the wrong length".into()));
                        }
                        let mut k = Zeroizing::new([0u8; 32]);
                        k.copy_from_slice(&v);
                        Some(k)
                    }
                    None => None,
                };
                let dk = Zeroizing::new(device_key);
                let mut device_key = Zeroizing::new([0u8; 64]);
                if dk.len() != 64 {
                    return Err(StoreError::Corrupt("device key has the wrong length".into()));
                }
                device_key.copy_from_slice(&dk);
                Ok(Account {
                    username,
                    user_key,
                    device_key,
                    device_cert,
                    server_url,
                    server_fingerprint,
                    cursor: cursor as u64,
                    next_prekey_id: next as u32,
                })
            })
            .transpose()
    }

    /// Writes the account (insert or replace).
    pub fn put_account(&self, a: &Account) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR REPLACE INTO account (id, username, user_key, device_key, device_cert, server_url, \
             server_fingerprint, cursor, next_prekey_id) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                a.username,
                a.user_key.as_ref().map(|k| &k[..]),
                &a.device_key[..],
                a.device_cert,
                a.server_url,
                a.server_fingerprint,
                a.cursor as i64,
                a.next_prekey_id as i64
            ],
        )?;
        Ok(())
    }

    /// Sets the account's username (a linked device learns it by link sync).
    pub fn set_username(&self, username: &str) -> Result<()> {
        let db = self.db();
        db.execute("UPDATE account SET username = ?1 WHERE id = 1", [username])?;
        Ok(())
    }

    /// Records a new pinned server certificate fingerprint.
    pub fn set_server_fingerprint(&self, fingerprint: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "UPDATE account SET server_fingerprint = ?1 WHERE id = 1",
            [fingerprint],
        )?;
        Ok(())
    }

    // ---- protocol state ----

    /// Stored prekey secrets (`PrekeySecret::to_bytes`).
    pub fn prekeys(&self) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT secret FROM prekeys ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| r.map(Zeroizing::new).map_err(Into::into))
            .collect()
    }

    /// Stored sessions (`Session::to_bytes`).
    pub fn sessions(&self) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT state FROM sessions")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| r.map(Zeroizing::new).map_err(Into::into))
            .collect()
    }

    /// Starts a transaction; nothing is written until [`Tx::commit`].
    pub fn transaction(&mut self) -> Result<Tx<'_>> {
        Ok(Tx {
            tx: self
                .conn
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
        })
    }

    /// Persists a device's pending changes in their own transaction.
    pub fn save_device(&mut self, device: &mut Device) -> Result<()> {
        let changes = device.take_changes();
        let tx = self.transaction()?;
        tx.apply_device_changes(device, &changes)?;
        tx.commit()
    }

    // ---- contacts ----

    pub fn contact(&self, username: &str) -> Result<Option<Contact>> {
        let db = self.db();
        db
            .query_row(
                "SELECT username, username_hash, user_key, verified, devices FROM contacts WHERE username = ?1",
                [normalize(username)],
                contact_row,
            )
            .optional()?
            .transpose()
    }

    pub fn contact_by_hash(&self, username_hash: &[u8; 32]) -> Result<Option<Contact>> {
        let db = self.db();
        db
            .query_row(
                "SELECT username, username_hash, user_key, verified, devices FROM contacts WHERE username_hash = ?1",
                [&username_hash[..]],
                contact_row,
            )
            .optional()?
            .transpose()
    }

    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT username, username_hash, user_key, verified, devices FROM contacts ORDER BY username")?;
        let rows = stmt.query_map([], contact_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Inserts or replaces a contact (by username).
    pub fn put_contact(&self, c: &Contact) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR REPLACE INTO contacts (username, username_hash, user_key, verified, devices) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![normalize(&c.username), &c.username_hash[..], &c.user_key[..], c.verified, encode_list(&c.devices)],
        )?;
        Ok(())
    }

    // ---- history ----

    /// Stores a message outside any other change; false if its id is known.
    pub fn insert_message(&mut self, m: &StoredMessage) -> Result<bool> {
        let tx = self.transaction()?;
        let added = tx.insert_message(m)?;
        tx.commit()?;
        Ok(added)
    }

    /// Removes a message from the history (e.g. one whose send failed).
    pub fn delete_message(&self, id: &[u8; 16]) -> Result<()> {
        let db = self.db();
        db.execute("DELETE FROM messages WHERE id = ?1", [&id[..]])?;
        Ok(())
    }

    pub fn has_message(&self, id: &[u8; 16]) -> Result<bool> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT 1 FROM messages WHERE id = ?1",
                [&id[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Messages oldest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<StoredMessage>> {
        let db = self.db();
        let limit = q.limit.map(|l| l as i64).unwrap_or(-1);
        let sql = "SELECT id, conversation, sender, recipient, sent_at, received_at, body, ttl, outgoing FROM \
                   (SELECT * FROM messages WHERE (?1 IS NULL OR conversation = ?1) AND (?3 IS NULL OR sender = ?3 OR recipient = ?3) ORDER BY sent_at DESC, seq DESC \
                   LIMIT ?2) ORDER BY sent_at, seq";
        let mut stmt = db.prepare(sql)?;
        let conv = q.conversation.map(|c| c.to_vec());
        let peer = q.peer.as_deref().map(normalize);
        let rows = stmt.query_map(params![conv, limit, peer], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, bool>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, conv, from, to, sent_at, received_at, body, ttl, outgoing) = r?;
            out.push(StoredMessage {
                id: arr(id, "message id")?,
                conversation: arr(conv, "conversation id")?,
                from,
                to,
                sent_at: sent_at as u64,
                received_at: received_at as u64,
                body,
                ttl: ttl as u32,
                outgoing,
            });
        }
        Ok(out)
    }

    /// Deletes messages whose TTL has run out at `now_ms`; returns how many.
    pub fn purge_expired(&self, now_ms: u64) -> Result<usize> {
        let db = self.db();
        Ok(db.execute(
            "DELETE FROM messages WHERE ttl > 0 AND sent_at + ttl * 1000 <= ?1",
            [now_ms as i64],
        )?)
    }

    // ---- blocked users ----

    pub fn block(&self, username: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR IGNORE INTO blocked (username) VALUES (?1)",
            [normalize(username)],
        )?;
        Ok(())
    }

    pub fn unblock(&self, username: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "DELETE FROM blocked WHERE username = ?1",
            [normalize(username)],
        )?;
        Ok(())
    }

    pub fn is_blocked(&self, username: &str) -> Result<bool> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT 1 FROM blocked WHERE username = ?1",
                [normalize(username)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn blocked(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT username FROM blocked ORDER BY username")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }
}

/// Usernames are case-insensitive and trimmed, as their hash is.
pub fn normalize(username: &str) -> String {
    username.trim().to_lowercase()
}

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Contact>> {
    let username: String = r.get(0)?;
    let hash: Vec<u8> = r.get(1)?;
    let key: Vec<u8> = r.get(2)?;
    let verified: bool = r.get(3)?;
    let devices: Vec<u8> = r.get(4)?;
    Ok((|| {
        Ok(Contact {
            username,
            username_hash: arr(hash, "username hash")?,
            user_key: arr(key, "user key")?,
            verified,
            devices: decode_list(&devices)?,
        })
    })())
}

/// u16 count, then u16 length + bytes per item.
fn encode_list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u16).to_be_bytes());
        out.extend_from_slice(i);
    }
    out
}

fn decode_list(mut b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = || StoreError::Corrupt("device list".into());
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        if b.len() < n {
            return Err(bad());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    let n = u16::from_be_bytes(arr(take(&mut b, 2)?, "count")?) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u16::from_be_bytes(arr(take(&mut b, 2)?, "length")?) as usize;
        out.push(take(&mut b, len)?);
    }
    Ok(out)
}

/// One write transaction.
pub struct Tx<'a> {
    tx: Transaction<'a>,
}

impl Tx<'_> {
    /// Writes what [`Device::take_changes`] reported, and the device's next
    /// prekey id.
    pub fn apply_device_changes(&self, device: &Device, changes: &Changes) -> Result<()> {
        for id in &changes.sessions_upserted {
            match device.session_bytes(id) {
                Some(bytes) => {
                    self.tx.execute(
                        "INSERT OR REPLACE INTO sessions (id, state) VALUES (?1, ?2)",
                        params![&id.0[..], &bytes[..]],
                    )?;
                }
                None => {
                    self.tx
                        .execute("DELETE FROM sessions WHERE id = ?1", [&id.0[..]])?;
                }
            }
        }
        for id in &changes.sessions_removed {
            self.tx
                .execute("DELETE FROM sessions WHERE id = ?1", [&id.0[..]])?;
        }
        for id in &changes.prekeys_added {
            if let Some(bytes) = device.prekey_bytes(*id) {
                self.tx.execute(
                    "INSERT OR REPLACE INTO prekeys (id, secret) VALUES (?1, ?2)",
                    params![*id as i64, &bytes[..]],
                )?;
            }
        }
        for id in &changes.prekeys_removed {
            self.tx
                .execute("DELETE FROM prekeys WHERE id = ?1", [*id as i64])?;
        }
        self.tx.execute(
            "UPDATE account SET next_prekey_id = ?1 WHERE id = 1",
            [device.next_prekey_id() as i64],
        )?;
        Ok(())
    }

    /// Adds a message to the history; false (and nothing written) when a
    /// message with the same id is already there.
    pub fn insert_message(&self, m: &StoredMessage) -> Result<bool> {
        let n = self.tx.execute(
            "INSERT OR IGNORE INTO messages (id, conversation, sender, recipient, sent_at, received_at, body, ttl, \
             outgoing) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                &m.id[..],
                &m.conversation[..],
                m.from,
                m.to,
                m.sent_at as i64,
                m.received_at as i64,
                m.body,
                m.ttl as i64,
                m.outgoing
            ],
        )?;
        Ok(n == 1)
    }

    /// Moves the mailbox cursor forward (never back).
    pub fn set_cursor(&self, cursor: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE account SET cursor = max(cursor, ?1) WHERE id = 1",
            [cursor as i64],
        )?;
        Ok(())
    }

    /// Inserts or replaces a contact inside this transaction.
    pub fn put_contact(&self, c: &Contact) -> Result<()> {
        self.tx.execute(
            "INSERT OR REPLACE INTO contacts (username, username_hash, user_key, verified, devices) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![normalize(&c.username), &c.username_hash[..], &c.user_key[..], c.verified, encode_list(&c.devices)],
        )?;
        Ok(())
    }

    /// Sets the account's username inside this transaction.
    pub fn set_username(&self, username: &str) -> Result<()> {
        self.tx
            .execute("UPDATE account SET username = ?1 WHERE id = 1", [username])?;
        Ok(())
    }

    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}

mod rooms;

pub use rooms::{RoomMessageRow, RoomRecord};

#[cfg(test)]
mod tests;
