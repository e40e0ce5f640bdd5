//! The SQLite backend: one database file in the data directory, WAL mode,
//! `synchronous=FULL`. Writes go through the group-commit writer thread
//! ([`super::writer`]); reads use a small pool of their own connections,
//! which WAL lets run beside the writer.

mod directory;
mod mailbox;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use super::secret::ServerSecret;
use super::writer::{Durability, Writer};
use super::*;

/// The database file in the data directory.
pub const DB_FILE: &str = "server.db";
/// The server secret file in the data directory (mode 0600).
pub const SECRET_FILE: &str = "server_secret";

/// Read connections kept open between calls.
const READ_POOL: usize = 8;

/// The embedded server store. Dropping it lets queued writes finish and
/// closes the database.
pub struct SqliteStore {
    path: PathBuf,
    secret: Arc<ServerSecret>,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteStore {
    /// Opens the store in `data_dir`, creating the directory (mode 0700),
    /// the secret and the database on first use.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        create_private_dir(data_dir)?;
        let secret = Arc::new(ServerSecret::load_or_create(&data_dir.join(SECRET_FILE))?);
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        schema::configure(&conn)?;
        schema::migrate(&conn)?;
        Ok(SqliteStore {
            path,
            secret,
            writer: Writer::start(conn)?,
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
    ) -> Result<(UserPublic, Vec<ClaimedPrekey>)> {
        let name_key = self.name_key(username_hash);
        let devices = devices.to_vec();
        self.writer
            .write(move |c| directory::claim(c, &name_key, &devices))
    }

    fn add_prekeys(
        &self,
        device: &DeviceId,
        prekeys: Vec<(u32, Vec<u8>)>,
        reserve: Option<Vec<u8>>,
    ) -> Result<PrekeyCount> {
        let device = *device;
        self.writer
            .write(move |c| directory::add_prekeys(c, &device, &prekeys, reserve.as_deref()))
    }

    fn prekey_count(&self, device: &DeviceId) -> Result<PrekeyCount> {
        self.read(|c| directory::prekey_count(c, device))
    }

    fn enqueue(
        &self,
        sender: &DeviceId,
        recipients: &[DeviceId],
        datagram: Vec<u8>,
        now_ms: u64,
    ) -> Result<Enqueued> {
        let sender = *sender;
        let recipients = recipients.to_vec();
        // Hash outside the writer thread: it is the one serialised resource.
        let digest = mailbox::digest(&datagram);
        self.writer
            .write(move |c| mailbox::enqueue(c, &sender, &recipients, &datagram, digest, now_ms))
    }

    fn enqueue_with(
        &self,
        sender: &DeviceId,
        recipients: &[DeviceId],
        datagram: Vec<u8>,
        now_ms: u64,
        reply: Reply<Enqueued>,
    ) {
        let sender = *sender;
        let recipients = recipients.to_vec();
        let digest = mailbox::digest(&datagram);
        self.writer.write_with(
            move |c| mailbox::enqueue(c, &sender, &recipients, &datagram, digest, now_ms),
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

    fn purge(&self, now_ms: u64, retention_ms: u64) -> Result<Purged> {
        self.writer
            .write(move |c| mailbox::purge(c, now_ms, retention_ms))
    }

    fn block(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()> {
        let (blocker, blocked) = (*blocker, self.name_key(blocked));
        self.writer
            .write(move |c| directory::block(c, &blocker, &blocked))
    }

    fn unblock(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()> {
        let (blocker, blocked) = (*blocker, self.name_key(blocked));
        self.writer
            .write(move |c| directory::unblock(c, &blocker, &blocked))
    }

    fn is_blocked(&self, blocker: &UsernameHash, blocked: &UserPublic) -> Result<bool> {
        let blocker = self.name_key(blocker);
        self.read(|c| directory::is_blocked(c, &blocker, blocked))
    }

    fn blocks(&self, blocker: &UserPublic) -> Result<Vec<UsernameHash>> {
        let sealed = self.read(|c| directory::blocks(c, blocker))?;
        Ok(sealed
            .into_iter()
            .map(|(key, sealed)| self.secret.seal_name(&key, &sealed))
            .collect())
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
        now_ms: u64,
    ) -> Result<()> {
        let (link_id, approver) = (link_id.to_owned(), *approver);
        self.writer
            .write(move |c| directory::approve_link(c, &link_id, &approver, &device, now_ms))
    }
}
