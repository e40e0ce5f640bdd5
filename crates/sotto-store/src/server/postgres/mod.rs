//! The PostgreSQL backend: one database shared by any number of server
//! nodes. Every trait call is one transaction on a pooled connection
//! (READ COMMITTED, with row locks where a call reads what it then
//! changes); a transaction that loses a race the database detects
//! (serialization failure, deadlock, a row deleted under it) is run again,
//! a few times. `COMMIT` returning is the durability point (PostgreSQL's
//! `synchronous_commit`, on by default: the WAL is flushed).
//!
//! The calls are synchronous, as the trait is: the store runs its
//! connections on a small tokio runtime of its own, so sync calls block on
//! it and the non-blocking ones (`enqueue_with`, `ack_with`, `single_use`)
//! are tasks on it that answer through their callback. It must therefore be
//! called from plain threads (the server's blocking pool), not from inside
//! an async task, except for those three calls.
//!
//! The server secret is a file, never in the database (as with SQLite);
//! every node sharing the database must be given the same one
//! (`--secret-file`): the check value stored in `meta` makes a node with
//! another secret refuse to start.

mod directory;
mod group;
mod mailbox;
mod phone;
mod pool;
mod schema;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;

use super::secret::ServerSecret;
use super::*;
use pool::{Conn, Pool};

pub use schema::VERSION as SCHEMA_VERSION;

/// Connections one node keeps to the database at most for its calls, unless
/// `SOTTO_PG_POOL_SIZE` names another number (1 to 256). Sends and relaxed
/// acks go in groups (`group.rs`), at most two groups of sends and four
/// of acks at once, plus four of a declined group's members at a time;
/// the rest serve the other calls. Every
/// node's pool counts against the server's `max_connections` (README.md,
/// "Several nodes on PostgreSQL", gives the sum): at 16, two nodes fit
/// PostgreSQL's default 100 with room to spare. (Before the groups, when
/// each send was a commit of its own, 32 or 64 measured no faster: 665 /
/// 632-692 / 710 msgs/s for 16 / 32 / 64 at saturation.)
const POOL_SIZE: usize = 16;

fn pool_size() -> usize {
    std::env::var("SOTTO_PG_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or(POOL_SIZE)
}
/// Connections one node keeps at most to hold sender locks
/// (`PhoneStore::lock_sender`): apart from [`POOL_SIZE`], so a lock
/// holder, which makes calls while it holds its lock, never waits for a
/// connection that another lock holder keeps (the pool cannot be drained
/// by locks, however many senders seal at once).
const LOCK_POOL_SIZE: usize = 16;
/// Tries of a transaction that lost a race the database detected.
const TRIES: u32 = 5;

/// The shared server store. Dropping it closes its connections.
pub struct PostgresStore {
    /// `None` only while dropping.
    rt: Option<Runtime>,
    inner: Arc<Inner>,
    /// Where sends and relaxed acks wait for their group (`group.rs`).
    queues: group::Queues,
}

struct Inner {
    pool: Pool,
    /// Connections that hold sender locks, and nothing else.
    lock_pool: Pool,
    secret: ServerSecret,
    /// The users of the devices this node has sent from or to.
    devices: Arc<mailbox::Devices>,
    /// Non-blocking writes not yet answered: dropping the store waits for
    /// them (as the SQLite writer finishes its queue).
    in_flight: Mutex<usize>,
    idle: Condvar,
    /// Sends and relaxed acks stored, and the calls that stored them
    /// (`write_stats`).
    writes: AtomicU64,
    calls: AtomicU64,
    /// Group calls that stored nothing (`groups_declined`).
    declined: AtomicU64,
}

/// Most time a drop waits for writes in flight.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Counts one non-blocking write until it is answered.
struct Flight(Arc<Inner>);

impl Flight {
    fn new(inner: &Arc<Inner>) -> Flight {
        *inner.in_flight.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        Flight(inner.clone())
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// A transaction body: borrows the connection for one attempt.
type Body<'c, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'c>>;

/// Applies the schema migrations to the database at `url` (creating the
/// database if it does not exist), as `sotto admin migrate` does and every
/// server start does. Idempotent; several nodes may run it at once.
/// Returns (version before, version after).
pub fn migrate_postgres(url: &str) -> Result<(i64, i64)> {
    let config = parse(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut conn = pool::connect_creating(&config).await?;
        schema::migrate(&mut conn).await
    })
}

fn parse(url: &str) -> Result<tokio_postgres::Config> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Backend(format!("not a PostgreSQL URL ({e})")))?;
    if config.get_application_name().is_none() {
        config.application_name("sotto-server");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    Ok(config)
}

/// The server's message of a PostgreSQL error (what `Display` of the
/// client's error leaves out).
pub(crate) fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (creating it if it does not
    /// exist), applies the migrations and loads the server secret from
    /// `secret_file`, made there if missing while the database holds no
    /// user ([`StoreError::NoSecret`] otherwise; [`StoreError::WrongSecret`]
    /// if the database was made with another secret).
    pub fn open(url: &str, secret_file: &Path) -> Result<PostgresStore> {
        let config = parse(url)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sotto-store-pg")
            .enable_all()
            .build()?;
        let secret = rt.block_on(async {
            let mut conn = pool::connect_creating(&config).await?;
            schema::migrate(&mut conn).await?;
            let has_users = conn
                .one("SELECT EXISTS (SELECT 1 FROM users)", &[])
                .await?
                .get::<_, bool>(0);
            let secret = match ServerSecret::load(secret_file, !has_users) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::NoSecret(secret_file.to_path_buf()))
                }
                other => other?,
            };
            // The first node to start stores its check value; every other
            // node must hold the same secret.
            let check = secret.check_value();
            conn.exec(
                "INSERT INTO meta (key, value) VALUES ('secret_check', $1) ON CONFLICT DO NOTHING",
                &[&&check[..]],
            )
            .await?;
            let stored: Vec<u8> = conn
                .one("SELECT value FROM meta WHERE key = 'secret_check'", &[])
                .await?
                .get(0);
            if stored != check {
                return Err(StoreError::WrongSecret(secret_file.to_path_buf()));
            }
            Ok(secret)
        })?;
        let inner = Arc::new(Inner {
            lock_pool: Pool::new(config.clone(), LOCK_POOL_SIZE, "sender-lock"),
            pool: Pool::new(config, pool_size(), "database"),
            secret,
            devices: Arc::default(),
            in_flight: Mutex::new(0),
            idle: Condvar::new(),
            writes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            declined: AtomicU64::new(0),
        });
        let queues = group::Queues::start(&rt, &inner);
        Ok(PostgresStore {
            rt: Some(rt),
            inner,
            queues,
        })
    }

    /// Grouping at work: (sends and relaxed acks stored, database calls
    /// that stored them) since the store was opened (as
    /// `SqliteStore::write_stats`).
    pub fn write_stats(&self) -> (u64, u64) {
        (
            self.inner.writes.load(Ordering::Relaxed),
            self.inner.calls.load(Ordering::Relaxed),
        )
    }

    /// Group calls that stored nothing since the store was opened: a send
    /// in them needed `sotto_send` alone (a refusal, a resend...), or the
    /// call failed (`group.rs`).
    pub fn groups_declined(&self) -> u64 {
        self.inner.declined.load(Ordering::Relaxed)
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    /// Runs `body` as one transaction and waits for it.
    fn tx<T: Send + 'static>(
        &self,
        body: impl for<'c> Fn(&'c mut Conn, &'c ServerSecret) -> Body<'c, T> + Send + Sync + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        self.rt()
            .block_on(async move { inner.run(Commit::Together, body).await })
    }

    /// Runs `body` outside a transaction (reads whose statements need no
    /// common snapshot): two round trips fewer.
    fn read<T: Send + 'static>(
        &self,
        body: impl for<'c> Fn(&'c mut Conn, &'c ServerSecret) -> Body<'c, T> + Send + Sync + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        self.rt().block_on(async move {
            let mut conn = inner.pool.get().await?;
            body(&mut conn, &inner.secret).await
        })
    }

    /// Runs `body` (committed as `commit` says) on the store's runtime;
    /// `reply` gets the answer once it is committed (or refused).
    fn run_with<T: Send + 'static>(
        &self,
        commit: Commit,
        body: impl for<'c> Fn(&'c mut Conn, &'c ServerSecret) -> Body<'c, T> + Send + Sync + 'static,
        reply: Reply<T>,
    ) {
        let flight = Flight::new(&self.inner);
        self.rt().spawn(async move {
            reply(flight.0.run(commit, body).await);
            drop(flight);
        });
    }

    fn name_key(&self, username_hash: &UsernameHash) -> [u8; 32] {
        self.inner.secret.name_key(username_hash)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Writes handed over are committed and answered first (for a
        // bounded time; they run on the store's own threads).
        let n = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = self.inner.idle.wait_timeout_while(n, DRAIN, |n| *n > 0);
        // Allowed anywhere (dropping a runtime inside another is not):
        // tasks still running past the wait are abandoned, their callers
        // unanswered. A `Commit::Together` body not yet committed is
        // rolled back when its connection closes; but a
        // `Commit::EachStatement` body or a group (sends, acks) that
        // reached the database may still commit, all or nothing, after its
        // callers got no answer. Nothing half-done
        // remains either way, and a retry is safe: a send again with the
        // same datagram adds no row for a device that has it, and a request
        // id used by a committed send is answered `Replayed`.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// How the statements of a body commit.
#[derive(Clone, Copy)]
enum Commit {
    /// As one transaction: `BEGIN` before the body, `COMMIT` after it.
    Together,
    /// In autocommit, each statement its own transaction: a body of one
    /// statement is one round trip.
    EachStatement,
}

impl Inner {
    /// Runs `body` on a pooled connection, again (a few times) if it lost
    /// a race the database detected.
    async fn run<T>(
        &self,
        commit: Commit,
        body: impl for<'c> Fn(&'c mut Conn, &'c ServerSecret) -> Body<'c, T>,
    ) -> Result<T> {
        let mut conn = self.pool.get().await?;
        let mut tries = 0;
        loop {
            tries += 1;
            // A connection dropped mid-body (its task abandoned, or an
            // early return below) is closed, never lent again with a
            // transaction open or an answer still owed on it.
            conn.in_tx = true;
            let result = match commit {
                Commit::Together => {
                    conn.batch("BEGIN").await?;
                    match body(&mut conn, &self.secret).await {
                        Ok(v) => conn
                            .batch("COMMIT")
                            .await
                            .map(|()| v)
                            .map_err(StoreError::from),
                        Err(e) => {
                            // A failed statement leaves the transaction aborted.
                            conn.batch("ROLLBACK").await?;
                            Err(e)
                        }
                    }
                }
                Commit::EachStatement => body(&mut conn, &self.secret).await,
            };
            // (A COMMIT that failed ends the transaction too.)
            conn.in_tx = false;
            match result {
                Err(e) if tries < TRIES && retryable(&e) => {
                    tracing::debug!(error = %e, tries, "lost a race; running it again");
                    tokio::time::sleep(std::time::Duration::from_millis(2 << tries)).await;
                }
                other => return other.map_err(gave_up),
            }
        }
    }
}

/// Races the database detects and that running again resolves.
fn retryable(e: &StoreError) -> bool {
    let StoreError::Postgres(e) = e else {
        return false;
    };
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            // A datagram deleted (its last row acknowledged) while a resend
            // pointed a new row at it.
            || *c == SqlState::FOREIGN_KEY_VIOLATION
            // The node's idea of a device's user was stale (it has
            // forgotten it, and looks it up again).
            || c.code() == mailbox::STALE
    )
}

/// The error of a body that ran out of tries: the send function's
/// refusal of stale device users (the node's own signal to look up again)
/// becomes a plain store error; the rest stay as they are.
fn gave_up(e: StoreError) -> StoreError {
    match &e {
        StoreError::Postgres(p) if p.code().map(|c| c.code()) == Some(mailbox::STALE) => {
            StoreError::Backend(format!(
                "the devices' users kept changing under this send ({TRIES} tries); send it again"
            ))
        }
        _ => e,
    }
}

/// 32 bytes from a `bytea` column.
fn key32(v: Vec<u8>) -> Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| StoreError::Backend("a key column does not hold 32 bytes".into()))
}

/// `u64` values go into `bigint` columns; times and sizes fit.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl ServerStore for PostgresStore {
    fn register(&self, user: NewUser, now_ms: u64) -> Result<()> {
        let name_key = self.name_key(&user.username_hash);
        let sealed = self.inner.secret.seal_name(&name_key, &user.username_hash);
        let user = Arc::new(user);
        self.tx(move |c, _| {
            let user = user.clone();
            Box::pin(async move {
                directory::register(c, &name_key, &sealed, &user.user, &user.device, now_ms).await
            })
        })
    }

    fn user(&self, username_hash: &UsernameHash) -> Result<Option<UserRecord>> {
        let name_key = self.name_key(username_hash);
        self.read(move |c, _| Box::pin(directory::user_where(c, true, name_key)))
    }

    fn user_by_key(&self, user: &UserPublic) -> Result<Option<UserRecord>> {
        let key = user.0;
        self.read(move |c, _| Box::pin(directory::user_where(c, false, key)))
    }

    fn device(&self, device: &DeviceId) -> Result<Option<DeviceRecord>> {
        let device = *device;
        self.read(move |c, _| Box::pin(directory::device(c, device)))
    }

    fn claim_prekeys(
        &self,
        username_hash: &UsernameHash,
        devices: &[DeviceId],
        claimant: &UserPublic,
    ) -> Result<(UserPublic, Vec<ClaimedPrekey>)> {
        let name_key = self.name_key(username_hash);
        let (devices, claimant) = (Arc::new(devices.to_vec()), *claimant);
        self.tx(move |c, secret| {
            let devices = devices.clone();
            Box::pin(
                async move { directory::claim(c, secret, &name_key, &devices, &claimant).await },
            )
        })
    }

    fn add_prekeys(
        &self,
        device: &DeviceId,
        prekeys: Vec<(u32, Vec<u8>)>,
        reserve: Option<(u32, Vec<u8>)>,
    ) -> Result<PrekeyCount> {
        let device = *device;
        let upload = Arc::new((prekeys, reserve));
        self.tx(move |c, _| {
            let upload = upload.clone();
            Box::pin(async move {
                directory::add_prekeys(c, &device, &upload.0, upload.1.as_ref()).await
            })
        })
    }

    fn prekey_count(&self, device: &DeviceId) -> Result<PrekeyCount> {
        let device = *device;
        self.read(move |c, _| Box::pin(directory::prekey_count(c, device)))
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
        let send = Arc::new(mailbox::Outgoing {
            digest: mailbox::digest(&datagram),
            sender: *sender,
            recipients: recipients.to_vec(),
            datagram,
            now: now_ms,
            quota: *quota,
        });
        // In a group with the sends that arrive meanwhile (`group.rs`).
        let job = group::SendJob {
            send: group::Sending {
                outgoing: send,
                request,
            },
            caller: group::Caller {
                reply,
                flight: Flight::new(&self.inner),
            },
        };
        if let Err(refused) = self.queues.sends.send(job) {
            (refused.0.caller.reply)(Err(StoreError::Backend("the store is closed".into())));
        }
    }

    fn fetch(
        &self,
        device: &DeviceId,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<(Vec<MailboxEntry>, bool)> {
        let device = *device;
        self.read(move |c, _| Box::pin(mailbox::fetch(c, device, after, limit, max_bytes)))
    }

    fn ack(&self, device: &DeviceId, seqs: &[u64], now_ms: u64, retention_ms: u64) -> Result<u32> {
        let device = *device;
        let seqs: Arc<Vec<i64>> = Arc::new(seqs.iter().map(|s| int(*s)).collect());
        wait_for(|reply| {
            self.run_with(
                Commit::EachStatement,
                move |c, _| {
                    let seqs = seqs.clone();
                    Box::pin(async move {
                        mailbox::ack(c, device, &seqs, now_ms, retention_ms, false).await
                    })
                },
                reply,
            )
        })
    }

    fn ack_with(
        &self,
        device: &DeviceId,
        seqs: &[u64],
        now_ms: u64,
        retention_ms: u64,
        reply: Reply<u32>,
    ) {
        // A lost ack is a redelivery: its commit does not wait for the
        // WAL flush (as the SQLite writer's relaxed acks). In a group with
        // the acks of other devices (`group.rs`).
        let job = group::AckJob {
            ack: group::Ack {
                device: *device,
                seqs: Arc::new(seqs.iter().map(|s| int(*s)).collect()),
                now: now_ms,
                retain: retention_ms != 0,
            },
            caller: group::Caller {
                reply,
                flight: Flight::new(&self.inner),
            },
        };
        if let Err(refused) = self.queues.acks.send(job) {
            (refused.0.caller.reply)(Err(StoreError::Backend("the store is closed".into())));
        }
    }

    fn datagram_for(&self, device: &DeviceId, datagram_id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let (device, id) = (*device, *datagram_id);
        self.read(move |c, _| Box::pin(mailbox::datagram_for(c, device, id)))
    }

    fn purge(&self, now_ms: u64, retention_ms: u64, unacked_ttl_ms: u64) -> Result<Purged> {
        self.tx(move |c, _| Box::pin(mailbox::purge(c, now_ms, retention_ms, unacked_ttl_ms)))
    }

    fn single_use(&self, request_id: &[u8; 32], expires_at: u64, reply: Reply<()>) {
        let id = *request_id;
        self.run_with(
            Commit::Together,
            move |c, _| Box::pin(async move { mailbox::single_use(c, &id, expires_at).await }),
            reply,
        )
    }

    fn remove_device(&self, owner: &UserPublic, device: &DeviceId) -> Result<()> {
        let (owner, device) = (*owner, *device);
        self.tx(move |c, _| Box::pin(directory::remove_device(c, owner, device)))?;
        self.inner.devices.forget(&device);
        Ok(())
    }

    fn block(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()> {
        let (blocker, blocked) = (*blocker, self.name_key(blocked));
        self.tx(move |c, secret| Box::pin(directory::block(c, secret, blocker, blocked, true)))
    }

    fn unblock(&self, blocker: &UserPublic, blocked: &UsernameHash) -> Result<()> {
        let (blocker, blocked) = (*blocker, self.name_key(blocked));
        self.tx(move |c, secret| Box::pin(directory::block(c, secret, blocker, blocked, false)))
    }

    fn is_blocked(&self, blocker: &UsernameHash, blocked: &UserPublic) -> Result<bool> {
        let (blocker, blocked) = (self.name_key(blocker), *blocked);
        self.read(move |c, secret| Box::pin(directory::is_blocked(c, secret, blocker, blocked)))
    }

    fn blocks(&self, blocker: &UserPublic) -> Result<Vec<UsernameHash>> {
        let blocker = *blocker;
        self.read(move |c, secret| Box::pin(directory::blocks(c, secret, blocker)))
    }

    fn create_link(
        &self,
        link_id: &str,
        device: &DeviceId,
        request: Vec<u8>,
        now_ms: u64,
    ) -> Result<()> {
        let (link_id, device) = (Arc::new(link_id.to_owned()), *device);
        let request = Arc::new(request);
        self.tx(move |c, _| {
            let (link_id, request) = (link_id.clone(), request.clone());
            Box::pin(
                async move { directory::create_link(c, &link_id, &device, &request, now_ms).await },
            )
        })
    }

    fn link(&self, link_id: &str, now_ms: u64) -> Result<Option<PendingLink>> {
        let link_id = Arc::new(link_id.to_owned());
        let link = self.read(move |c, _| {
            let link_id = link_id.clone();
            Box::pin(async move { directory::link(c, &link_id, now_ms).await })
        })?;
        Ok(link.map(|(mut link, sealed)| {
            if let (Some(approved), Some((key, sealed))) = (link.approved.as_mut(), sealed) {
                approved.username_hash = self.inner.secret.seal_name(&key, &sealed);
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
        let (link_id, approver) = (Arc::new(link_id.to_owned()), *approver);
        let (device, approval) = (Arc::new(device), Arc::new(approval));
        self.tx(move |c, _| {
            let (link_id, device, approval) = (link_id.clone(), device.clone(), approval.clone());
            Box::pin(async move {
                directory::approve_link(c, &link_id, &approver, &device, &approval, now_ms).await
            })
        })
    }

    fn pending_items(&self) -> Result<u64> {
        self.read(|c, _| {
            Box::pin(async move {
                let row = c
                    .one("SELECT COUNT(*) FROM mailbox WHERE acked_at IS NULL", &[])
                    .await?;
                Ok(row.get::<_, i64>(0) as u64)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A relaxed ack (`ack_with`) turns `synchronous_commit` off for its
    /// own transaction only: the connection it ran on, lent again, commits
    /// sends with the WAL flush (the durability rule).
    #[test]
    fn a_relaxed_ack_leaves_its_connection_synchronous() {
        let Some(base) = std::env::var("SOTTO_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("skipped: SOTTO_TEST_POSTGRES_URL unset");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let schema = format!("sotto_unit_ack_{}", std::process::id());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let admin = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                ))
                .await
                .unwrap();
            client
        });
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let result = std::panic::catch_unwind(|| {
            let s = PostgresStore::open(&url, &dir.path().join("secret")).unwrap();
            let device = |n: u8| DeviceId([n; 32]);
            for n in 1..=2u8 {
                s.register(
                    NewUser {
                        username_hash: [n; 32],
                        user: UserPublic([n; 32]),
                        device: NewDevice {
                            device: device(n),
                            cert: vec![n],
                            prekeys: vec![],
                            reserve: vec![n],
                            reserve_id: 1,
                        },
                    },
                    1,
                )
                .unwrap();
            }
            let sent = s
                .enqueue(
                    &device(1),
                    &[device(2)],
                    vec![7; 10],
                    1,
                    &MailboxQuota::UNLIMITED,
                )
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            s.ack_with(
                &device(2),
                &[sent.deliveries[0].seq],
                2,
                0,
                Box::new(move |r| tx.send(r).unwrap()),
            );
            assert_eq!(rx.recv().unwrap().unwrap(), 1);
            // The pool lends its most recently returned connection first:
            // the ack's, nothing else having run since.
            let setting = s
                .read(|c, _| {
                    Box::pin(async move {
                        Ok(c.one("SHOW synchronous_commit", &[])
                            .await?
                            .get::<_, String>(0))
                    })
                })
                .unwrap();
            assert_eq!(setting, "on");
        });
        let _ = rt.block_on(admin.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")));
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}
