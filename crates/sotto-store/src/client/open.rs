//! Creating and opening the encrypted database: the Argon2id key
//! derivation (salt and cost in [`KDF_FILE`]), the SQLCipher key, and the
//! schema.

use std::fs;
use std::io::Write;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use rusqlite::Connection;
use zeroize::{Zeroize, Zeroizing};

use super::{rooms, ClientStore, Result, StoreError};

/// The encrypted database in the home directory.
pub const DB_FILE: &str = "sotto.db";
/// Salt and Argon2id parameters (not secret) beside the database.
pub const KDF_FILE: &str = "sotto.kdf";

/// Shortest passphrase a new store accepts, in characters. The store key is
/// derived from it alone (Argon2id slows each guess, it does not make a
/// short passphrase long): anyone with a copy of the home directory can try
/// passphrases offline, so a very short one would be found.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// Argon2id cost used for new stores: 64 MiB, 3 passes, 1 lane.
const KDF_M_COST: u32 = 64 * 1024;
const KDF_T_COST: u32 = 3;
const KDF_P_COST: u32 = 1;

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
    next_prekey_id INTEGER NOT NULL DEFAULT 1,
    clock_offset_ms INTEGER NOT NULL DEFAULT 0
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
CREATE TABLE IF NOT EXISTS p2p_peers (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    seen_at INTEGER NOT NULL
);
-- Organisations (sender accounts) by username, with the display name the
-- directory vouched for.
CREATE TABLE IF NOT EXISTS organisations (username TEXT PRIMARY KEY, name TEXT NOT NULL);
-- A phone registration waiting for its code (register-phone, verify-phone).
CREATE TABLE IF NOT EXISTS pending_phone (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    number TEXT NOT NULL,
    server_url TEXT NOT NULL,
    server_fingerprint TEXT NOT NULL,
    otp TEXT
);
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

/// Makes `dir` readable by its owner only (0700): the home holds the
/// encrypted store and its KDF salt, nothing another local user needs.
fn private_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens (creating if missing, emptying it with `truncate`) `path` for
/// writing with mode 0600, and tightens an existing file to 0600.
fn private_file(path: &Path, truncate: bool) -> Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.create(true).truncate(truncate).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let f = options.open(path)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    Ok(options.open(path)?)
}

/// Brings a store made by an older build up to this schema.
fn migrate(conn: &Connection) -> Result<()> {
    // The clock offset column came with the device core.
    let has_offset: bool = conn.query_row(
        "SELECT count(*) FROM pragma_table_info('account') WHERE name = 'clock_offset_ms'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !has_offset {
        conn.execute_batch(
            "ALTER TABLE account ADD COLUMN clock_offset_ms INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(())
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
}

impl ClientStore {
    /// True when `home` holds a store (whatever its passphrase).
    pub fn exists(home: &Path) -> bool {
        home.join(DB_FILE).exists()
    }

    /// Creates a new, empty store in `home` (made if missing) under
    /// `passphrase`. Refuses if one is already there.
    pub fn create(home: &Path, passphrase: &str) -> Result<ClientStore> {
        if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(StoreError::WeakPassphrase {
                min: MIN_PASSPHRASE_CHARS,
            });
        }
        fs::create_dir_all(home)?;
        if Self::exists(home) {
            return Err(StoreError::AlreadyExists(home.to_path_buf()));
        }
        private_dir(home)?;
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
            let mut f = private_file(&tmp, true)?;
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
        private_dir(home)?;
        let db_path = home.join(DB_FILE);
        // SQLite gives the -wal and -shm files the database file's mode:
        // owner only from the start.
        private_file(&db_path, false)?;
        let conn = Connection::open(&db_path)?;
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
        migrate(&conn)?;
        Ok(ClientStore::new(conn, home.to_path_buf()))
    }
}
