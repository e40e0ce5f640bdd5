//! The SQLite backend: one database file in the data directory, WAL mode,
//! `synchronous=FULL`. Writes go through the group-commit writer thread
//! ([`super::writer`]); reads use a small pool of their own connections,
//! which WAL lets run beside the writer.

mod checkpoint;
mod directory;
mod mailbox;
mod phone;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::secret::ServerSecret;
use super::writer::{Durability, Writer};
use super::*;
use checkpoint::Checkpointer;

/// The database file in the data directory.
pub const DB_FILE: &str = "server.db";
/// The server secret file in the data directory (mode 0600), unless the
/// secret lives elsewhere ([`SqliteStore::open_with`]).
pub const SECRET_FILE: &str = "server_secret";

/// Read connections kept open between calls.
const READ_POOL: usize = 8;

/// The embedded server store. Dropping it lets queued writes finish and
/// closes the database.
pub struct SqliteStore {
    path: PathBuf,
    secret: Arc<ServerSecret>,
    writer: Writer,
    /// Held for its thread (stopped when dropped); declared after
    /// `writer`, so it stops once the writer has finished its queue.
    #[cfg_attr(not(test), allow(dead_code))]
    checkpointer: Checkpointer,
    readers: Mutex<Vec<Connection>>,
}

/// WAL pages (4 KiB) after which the writer checkpoints the log itself,
/// inside a commit: 80 MiB, a backstop only. The log is copied into the
/// database file by [`checkpoint::Checkpointer`] on its own thread, every
/// 100 ms, off the send path (a checkpoint in the writer holds every caller
/// of its batch while it copies and fsyncs: at 5,000 msgs/s the log passed
/// the former 10,000-page threshold within 20,000 messages, see
/// docs/PERFORMANCE.md); the writer reaches this many pages only if that
/// thread falls behind. The log file grows to about the size one interval
/// writes and stays so (SQLite reuses it from the start after a complete
/// checkpoint).
const WAL_BACKSTOP_PAGES: i64 = 20_000;

/// Turns off SQLite's memory statistics (`SQLITE_CONFIG_MEMSTATUS`) for
/// the process, once, before SQLite initialises: with them on, every
/// allocation SQLite makes takes a process-wide mutex (about 5 % of the
/// writer thread's time at saturation in the profile of docs/PERFORMANCE.md
/// "Server CPU per message"). Nothing in sotto reads them. Once SQLite is
/// initialised (another connection was opened first in this process),
/// SQLite refuses the change (`SQLITE_MISUSE`) and everything works as
/// before.
fn no_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a documented sqlite3_config option taking one int; SQLite
        // checks that it is not initialised yet and refuses otherwise.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::os::raw::c_int,
            )
        };
        tracing::debug!(rc, "SQLite memory statistics off (0 = done)");
    });
}

impl SqliteStore {
    /// Opens the store in `data_dir`, creating the directory (mode 0700),
    /// the secret and the database on first use.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(data_dir, None)
    }

    /// As [`SqliteStore::open`], with the server secret in `secret_file`
    /// (default: [`SECRET_FILE`] in `data_dir`). A missing secret is made
    /// only while the database holds no user: losing it would orphan every
    /// user, so a wrong path is an error ([`StoreError::NoSecret`]), and so
    /// is another secret than the one the database was made with
    /// ([`StoreError::WrongSecret`]).
    pub fn open_with(data_dir: &Path, secret_file: Option<&Path>) -> Result<SqliteStore> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        no_memory_statistics();
        let conn = Connection::open(&path)?;
        schema::configure(&conn)?;
        let version = schema::open_version(&conn)?;
        let secret_path = secret_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join(SECRET_FILE));
        let has_users = version > 0
            && conn.query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| r.get(0))?;
        let secret = match ServerSecret::load(&secret_path, !has_users) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoSecret(secret_path))
            }
            other => Arc::new(other?),
        };
        if version == 0 {
            schema::create_v1(&conn)?;
        }
        if version < 2 {
            migrate_v2(&conn, &secret)?;
        }
        if version < 3 {
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = 3; COMMIT;",
                schema::SCHEMA_V3
            ))?;
        }
        if version < 4 {
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = 4; COMMIT;",
                schema::SCHEMA_V4
            ))?;
        }
        if version < 5 {
            conn.execute_batch(&format!(
                "BEGIN; {} PRAGMA user_version = 5; COMMIT;",
                schema::SCHEMA_V5
            ))?;
        }
        let check: Option<[u8; 32]> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'secret_check'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if check != Some(secret.check_value()) {
            return Err(StoreError::WrongSecret(secret_path));
        }
        // The checkpointer thread copies the log; the writer only past
        // the backstop (see the constant).
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        let checkpointer = Checkpointer::start(&path)?;
        Ok(SqliteStore {
            path,
            secret,
            writer: Writer::start(conn)?,
            checkpointer,
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Group commit at work: (writes committed, transactions committed)
    /// since the store was opened.
    pub fn write_stats(&self) -> (u64, u64) {
        self.writer.stats()
    }

    /// Runs `f` on a pooled read connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let c = Connection::open_with_flags(&self.path, flags)?;
                schema::configure(&c)?;
                c.execute_batch("PRAGMA query_only = ON")?;
                c
            }
        };
        let result = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        result
    }

    fn name_key(&self, username_hash: &UsernameHash) -> [u8; 32] {
        self.secret.name_key(username_hash)
    }
}

/// Schema 1 -> 2 in one transaction (see [`schema::SCHEMA_V2`]): what SQL
/// alone cannot do needs the secret (re-keying the block list) or the
/// prekey decoder (the reserve's id for the high-water mark).
fn migrate_v2(c: &Connection, secret: &ServerSecret) -> Result<()> {
    c.execute_batch("BEGIN")?;
    let migrated = (|| -> Result<()> {
        c.execute_batch(schema::SCHEMA_V2)?;
        // (blocker key, blocked key, blocked name key, blocked sealed name)
        type OldBlock = ([u8; 32], [u8; 32], [u8; 32], [u8; 32]);
        let blocks: Vec<OldBlock> = c
            .prepare(
                "SELECT r.user_key, d.user_key, d.name_key, d.sealed_name FROM blocks b
                 JOIN users r ON r.id = b.blocker JOIN users d ON d.id = b.blocked",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        for (blocker, blocked, name_key, sealed) in blocks {
            let (blocker, blocked) = (UserPublic(blocker), UserPublic(blocked));
            let pair = secret.block_pair(&blocker, &blocked);
            let hash = secret.seal_name(&name_key, &sealed);
            c.execute(
                "INSERT OR IGNORE INTO block_list (pair, owner, sealed) VALUES (?1, ?2, ?3)",
                params![
                    &pair[..],
                    &secret.block_owner(&blocker)[..],
                    &secret.seal_blocked(&pair, &hash)[..]
                ],
            )?;
        }
        c.execute_batch("DROP TABLE blocks")?;
        let reserves: Vec<(i64, Vec<u8>)> = c
            .prepare("SELECT id, reserve FROM devices")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, reserve) in reserves {
            if let Ok(prekey) = sotto_proto::SignedPrekey::decode(&reserve) {
                c.execute(
                    "UPDATE devices SET max_prekey_id = MAX(max_prekey_id, ?2) WHERE id = ?1",
                    params![id, prekey.id as i64],
                )?;
            }
        }
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('secret_check', ?1)",
            [&secret.check_value()[..]],
        )?;
        c.execute_batch("PRAGMA user_version = 2")?;
        Ok(())
    })();
    match migrated {
        Ok(()) => Ok(c.execute_batch("COMMIT")?),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// The connection settings of the store, for the writer's unit tests.
#[cfg(test)]
pub(super) fn configure_for_tests(conn: &Connection) {
    schema::configure(conn).unwrap();
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

impl ServerStore for SqliteStore {
    fn register(&self, user: NewUser, now_ms: u64) -> Result<()> {
        let name_key = self.name_key(&user.username_hash);
        let sealed = self.secret.seal_name(&name_key, &user.username_hash);
        self.writer.write(move |c| {
            directory::register(c, &name_key, &sealed, &user.user, &user.device, now_ms)
        })
    }

    fn user(&self, username_hash: &UsernameHash) -> Result<Option<UserRecord>> {
        let name_key = self.name_key(username_hash);
        self.read(|c| directory::user_where(c, "name_key", &name_key))
    }

    fn user_by_key(&self, user: &UserPublic) -> Result<Option<UserRecord>> {
        self.read(|c| directory::user_where(c, "user_key", &user.0))
    }

    fn device(&self, device: &DeviceId) -> Result<Option<DeviceRecord>> {
        self.read(|c| directory::device(c, device))
    }

    fn claim_prekeys(
        &self,
        username_hash: &UsernameHash,
        devices: &[DeviceId],
        claimant: &UserPublic,
    ) -> Result<(UserPublic, Vec<ClaimedPrekey>)> {
        let name_key = self.name_key(username_hash);
        let (devices, claimant, secret) = (devices.to_vec(), *claimant, self.secret.clone());
        self.writer
            .write(move |c| directory::claim(c, &secret, &name_key, &devices, &claimant))
    }

    fn add_prekeys(
        &self,
        device: &DeviceId,
        prekeys: Vec<(u32, Vec<u8>)>,
        reserve: Option<(u32, Vec<u8>)>,
    ) -> Result<PrekeyCount> {
        let device = *device;
        self.writer
            .write(move |c| directory::add_prekeys(c, &device, &prekeys, reserve.as_ref()))
    }

    fn prekey_count(&self, device: &DeviceId) -> Result<PrekeyCount> {
        self.read(|c| directory::prekey_count(c, device))
    }

    fn enqueue_with(
        &self,
        sender: &DeviceId,
        recipients: &[DeviceId],
        datagram: Vec<u8>,
        now_ms: u64,
        quota: &MailboxQuota,
        request: Option<RequestId>,
        reply: Reply<Enqueued>,
    ) {
        let (sender, quota, secret) = (*sender, *quota, self.secret.clone());
        let recipients = recipients.to_vec();
        // Hash outside the writer thread: it is the one serialised resource.
        let digest = mailbox::digest(&datagram);
        self.writer.write_with(
            move |c| {
                let (dg, to, r) = (&datagram, &recipients, request.as_ref());
                mailbox::enqueue(c, &secret, &sender, to, dg, digest, now_ms, &quota, r)
            },
            Durability::Durable,
            reply,
        )
    }

    fn fetch(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<MailboxEntry>, bool)> {
        self.read(|c| mailbox::fetch(c, device, after, limit, max_bytes))
    }

    fn ack(&self, device: &DeviceId, seqs: &[u64], now_ms: u64, retention_ms: u64) -> Result<u32> {
        let device = *device;
        let seqs = seqs.to_vec();
        self.writer
            .write(move |c| mailbox::ack(c, &device, &seqs, now_ms, retention_ms))
    }

    fn ack_with(
        &self,
        device: &DeviceId,
        seqs: &[u64],
        now_ms: u64,
        retention_ms: u64,
        reply: Reply<u32>,
    ) {
        let device = *device;
        let seqs = seqs.to_vec();
        self.writer.write_with(
            move |c| mailbox::ack(c, &device, &seqs, now_ms, retention_ms),
            // A lost ack is a redelivery: no fsync of its own.
            Durability::Relaxed,
            reply,
        )
    }

    fn datagram_for(&self, device: &DeviceId, datagram_id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        self.read(|c| mailbox::datagram_for(c, device, datagram_id))
    }

    fn purge(&self, now_ms: u64, retention_ms: u64, unacked_ttl_ms: u64) -> Result<Purged> {
        self.writer
            .write(move |c| mailbox::purge(c, now_ms, retention_ms, unacked_ttl_ms))
    }

    fn single_use(&self, request_id: &[u8; 32], expires_at: u64, reply: Reply<()>) {
        let id = *request_id;
        self.writer.write_with(
            move |c| mailbox::single_use(c, &id, expires_at),
            // Carried to disk by the durable commit of what the request
            // writes (see the trait).
            Durability::Relaxed,
            reply,
        )
    }

    fn remove_device(&self, owner: &UserPublic, device: &DeviceId) -> Result<()> {
        let (owner, device) = (*owner, *device);
        self.writer
            .write(move |c| directory::remove_device(c, &owner, &device))
    }

    fn block(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()> {
        let (blocker, blocked, secret) = (*blocker, self.name_key(blocked), self.secret.clone());
        self.writer
            .write(move |c| directory::block(c, &secret, &blocker, &blocked))
    }

    fn unblock(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()> {
        let (blocker, blocked, secret) = (*blocker, self.name_key(blocked), self.secret.clone());
        self.writer
            .write(move |c| directory::unblock(c, &secret, &blocker, &blocked))
    }

    fn is_blocked(&self, blocker: &UsernameHash, blocked: &UserPublic) -> Result<bool> {
        let blocker = self.name_key(blocker);
        self.read(|c| directory::is_blocked(c, &self.secret, &blocker, blocked))
    }

    fn blocks(&self, blocker: &UserPublic) -> Result<Vec<UsernameHash>> {
        self.read(|c| directory::blocks(c, &self.secret, blocker))
    }

    fn create_link(
        &self,
        link_id: &str,
        device: &DeviceId,
        request: Vec<u8>,
        now_ms: u64,
    ) -> Result<()> {
        let (link_id, device) = (link_id.to_owned(), *device);
        self.writer
            .write(move |c| directory::create_link(c, &link_id, &device, &request, now_ms))
    }

    fn link(&self, link_id: &str, now_ms: u64) -> Result<Option<PendingLink>> {
        let link = self.read(|c| directory::link(c, link_id, now_ms))?;
        Ok(link.map(|(mut link, sealed)| {
            if let (Some(approved), Some((key, sealed))) = (link.approved.as_mut(), sealed) {
                approved.username_hash = self.secret.seal_name(&key, &sealed);
            }
            link
        }))
    }

    fn approve_link(
        &self,
        link_id: &str,
        approver: &UserPublic,
        device: NewDevice,
        approval: Vec<u8>,
        now_ms: u64,
    ) -> Result<()> {
        let (link_id, approver) = (link_id.to_owned(), *approver);
        self.writer.write(move |c| {
            directory::approve_link(c, &link_id, &approver, &device, &approval, now_ms)
        })
    }

    fn pending_items(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c.query_row(
                "SELECT COUNT(*) FROM mailbox WHERE acked_at IS NULL",
                [],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_checkpointed_off_the_writer_which_keeps_only_a_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path()).unwrap();
        let pages = s
            .writer
            .write(|c| Ok(c.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get::<_, i64>(0))?))
            .unwrap();
        assert_eq!(pages, WAL_BACKSTOP_PAGES);
        // Writes far below the backstop: only the checkpointer copies them.
        for i in 0..50i64 {
            s.writer
                .write(move |c| {
                    c.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, x'00')",
                        [format!("k{i}")],
                    )?;
                    Ok(())
                })
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while s.checkpointer.frames() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Dropping the store stops the thread (the test would hang if not).
        drop(s);
    }

    #[test]
    fn a_version_1_database_is_upgraded_with_its_block_list_rekeyed_and_its_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let secret = ServerSecret::load(&dir.path().join(SECRET_FILE), true).unwrap();
        let (alice, carol) = ([1u8; 32], [3u8; 32]);
        {
            let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
            schema::configure(&c).unwrap();
            schema::open_version(&c).unwrap();
            schema::create_v1(&c).unwrap();
            for (n, hash) in [(1u8, alice), (3, carol)] {
                let key = secret.name_key(&hash);
                c.execute(
                    "INSERT INTO users (id, name_key, sealed_name, user_key, created_at)
                     VALUES (?1, ?2, ?3, ?4, 0)",
                    params![
                        n,
                        &key[..],
                        &secret.seal_name(&key, &hash)[..],
                        &[n; 32][..]
                    ],
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO devices (device, user_id, cert, reserve, created_at)
                 VALUES (?1, 1, x'00', x'00', 0)",
                [&[9u8; 32][..]],
            )
            .unwrap();
            c.execute(
                "INSERT INTO prekeys (device_id, prekey_id, prekey) VALUES (1, 41, x'00')",
                [],
            )
            .unwrap();
            c.execute("INSERT INTO blocks (blocker, blocked) VALUES (3, 1)", [])
                .unwrap();
            // A pending and an acknowledged (retained) mailbox row.
            c.execute(
                "INSERT INTO datagrams (id, digest, body, received_at)
                     VALUES (1, zeroblob(32), x'aaaa', 5), (2, ?1, x'bbbbbb', 6)",
                [&[2u8; 32][..]],
            )
            .unwrap();
            c.execute_batch(
                "INSERT INTO mailbox (device_id, seq, datagram, received_at, acked_at)
                     VALUES (1, 1, 2, 6, 7), (1, 2, 1, 5, NULL);
                 UPDATE devices SET last_seq = 2 WHERE id = 1;",
            )
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.blocks(&UserPublic([3; 32])).unwrap(), vec![alice]);
        assert!(s.is_blocked(&carol, &UserPublic([1; 32])).unwrap());
        // The served-key rule starts above what the device had published.
        assert!(matches!(
            s.add_prekeys(&DeviceId([9; 32]), vec![(41, vec![])], None),
            Err(StoreError::PrekeyIdReused { prekey_id: 41, .. })
        ));
        // The mailbox kept its rows through the rebuild of version 5.
        let d9 = DeviceId([9; 32]);
        let (items, more) = s.fetch(&d9, 0, 10, 1 << 20).unwrap();
        assert_eq!(
            (items.len(), items[0].seq, &items[0].datagram[..], more),
            (1, 2, &[0xaa, 0xaa][..], false)
        );
        assert_eq!(
            s.datagram_for(&d9, &[2; 32]).unwrap(),
            Some(vec![0xbb; 3]),
            "retained"
        );
        let sent = s
            .enqueue(&d9, &[d9], vec![7; 3], 10, &MailboxQuota::UNLIMITED)
            .unwrap();
        assert_eq!(sent.deliveries[0].seq, 3);
        assert_eq!(s.ack(&d9, &[2, 3], 11, 0).unwrap(), 2);
        assert_eq!(s.pending_items().unwrap(), 0);
        let c = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let (version, mailbox): (i64, String) = c
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), sql
                 FROM sqlite_master WHERE name = 'mailbox'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(version, schema::VERSION);
        assert!(mailbox.contains("WITHOUT ROWID"), "{mailbox}");
        let retained: i64 = c
            .query_row("SELECT COUNT(*) FROM mailbox WHERE acked_at = 7", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(retained, 1, "the retained row is kept");
        let old: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'blocks'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the block list in clear is gone");
        // Opening again is a no-op.
        drop(s);
        SqliteStore::open(dir.path()).unwrap();
    }
}
