//! Group commit: one thread owns the only writing connection. Callers hand
//! it jobs; it runs every job waiting in its queue inside one transaction
//! (each job in its own savepoint, so one failing job does not undo the
//! others), commits once (one fsync with `synchronous=FULL`), and only then
//! answers each caller. Under load many sends share one fsync; alone, a send
//! waits for exactly one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::{Result, StoreError};

/// Runs one caller's work and returns how to answer it once the batch's
/// commit is known.
type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;

/// How a job's commit must reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Fsync'd before the caller is answered (`synchronous=FULL`).
    Durable,
    /// In the database file and WAL (so it survives the process being
    /// killed) but fsync'd only with the next durable commit: a batch of
    /// nothing but such jobs commits with `synchronous=NORMAL`. For writes
    /// whose loss on power failure is harmless (acks: a lost ack is a
    /// redelivery, which clients drop by message id). A batch with one
    /// durable job is durable as a whole.
    Relaxed,
}
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Answers one caller of [`Writer::write_with`].
pub(crate) type Callback<T> = super::Reply<T>;

/// Most jobs in one transaction: bounds how long one commit holds callers.
const MAX_BATCH: usize = 512;
/// Prepared statements the writer keeps.
const STATEMENT_CACHE: usize = 128;

pub(crate) struct Writer {
    jobs: Mutex<Option<mpsc::Sender<(Job, Durability)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    stats: Arc<Stats>,
}

/// How well group commit is doing: writes per commit.
#[derive(Default)]
pub(crate) struct Stats {
    pub writes: AtomicU64,
    pub commits: AtomicU64,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> std::io::Result<Writer> {
        // Every statement the writer runs stays prepared (the default
        // cache of 16 is smaller than the set a mixed load uses).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (tx, rx) = mpsc::channel::<(Job, Durability)>();
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("sotto-store-writer".into())
            .spawn(move || run(conn, rx, &thread_stats))?;
        Ok(Writer {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            stats,
        })
    }

    /// (writes committed, commits) since start.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.stats.writes.load(Ordering::Relaxed),
            self.stats.commits.load(Ordering::Relaxed),
        )
    }

    /// Runs `f` in the next batch; returns once that batch is committed
    /// (or `f` failed and its savepoint was rolled back).
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel::<Result<T>>(1);
        self.submit(
            f,
            Durability::Durable,
            Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
        )?;
        rx.recv().map_err(|_| closed())?
    }

    /// Like [`Writer::write`] without blocking the caller: `reply` gets the
    /// answer on the writer thread once the batch is committed (or `f`
    /// failed). If the writer is gone, `reply` is called at once with the
    /// error. `reply` must be quick (it delays the batch's other answers).
    pub(crate) fn write_with<T, F>(&self, f: F, sync: Durability, reply: Callback<T>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // `submit` hands `reply` back only when the job never got queued.
        if let Err(reply) = self.submit_or_return(f, sync, reply) {
            reply(Err(closed()));
        }
    }

    fn submit<T, F>(&self, f: F, sync: Durability, reply: Callback<T>) -> Result<()>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.submit_or_return(f, sync, reply).map_err(|_| closed())
    }

    fn submit_or_return<T, F>(
        &self,
        f: F,
        sync: Durability,
        reply: Callback<T>,
    ) -> std::result::Result<(), Callback<T>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        // The reply is shared with the job so it can be taken back if the
        // job cannot be queued.
        let slot = Arc::new(Mutex::new(Some(reply)));
        let job_slot = slot.clone();
        let job: Job = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit: Result<(), String>| {
                let answer = match (result, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                    (Ok(v), Ok(())) => Ok(v),
                };
                let reply = job_slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(reply) = reply {
                    reply(answer);
                }
            })
        });
        let queued = {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            match jobs.as_ref() {
                Some(sender) => sender.send((job, sync)).is_ok(),
                None => false,
            }
        };
        if queued {
            return Ok(());
        }
        let reply = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match reply {
            Some(reply) => Err(reply),
            None => Ok(()),
        }
    }

    /// Lets queued jobs finish, then stops the thread.
    pub(crate) fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn closed() -> StoreError {
    StoreError::Backend("the store is closed or could not start a transaction".into())
}

/// Runs one fixed statement through the connection's statement cache (the
/// writer runs these several times per job).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    exec(conn, "SAVEPOINT job")?;
    let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(_) => Err(StoreError::Backend("a store operation panicked".into())),
    };
    if result.is_ok() {
        exec(conn, "RELEASE job")?;
    } else {
        exec(conn, "ROLLBACK TO job")?;
        exec(conn, "RELEASE job")?;
    }
    result
}

fn run(conn: Connection, rx: mpsc::Receiver<(Job, Durability)>, stats: &Stats) {
    // The connection starts with `synchronous=FULL` (see `schema::configure`).
    let mut level = Durability::Durable;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let wanted = if batch.iter().all(|(_, d)| *d == Durability::Relaxed) {
            Durability::Relaxed
        } else {
            Durability::Durable
        };
        if wanted != level {
            let pragma = match wanted {
                Durability::Durable => "PRAGMA synchronous = FULL",
                Durability::Relaxed => "PRAGMA synchronous = NORMAL",
            };
            if exec(&conn, pragma).is_err() {
                // Unknown level: never commit a durable job under it.
                // Dropping the jobs unanswered fails their callers.
                level = Durability::Relaxed;
                drop(batch);
                continue;
            }
            level = wanted;
        }
        if exec(&conn, "BEGIN IMMEDIATE").is_err() {
            // Dropping a job unanswered makes its caller fail (see
            // `closed`); nothing of it ran.
            drop(batch);
            continue;
        }
        let replies: Vec<Reply> = batch.into_iter().map(|(job, _)| job(&conn)).collect();
        let commit = exec(&conn, "COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        } else {
            stats
                .writes
                .fetch_add(replies.len() as u64, Ordering::Relaxed);
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(c: &Connection) -> Result<i64> {
        Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }

    fn ask(w: &Writer, d: Durability) -> i64 {
        let (tx, rx) = mpsc::channel();
        w.write_with(level, d, Box::new(move |r| tx.send(r.unwrap()).unwrap()));
        rx.recv().unwrap()
    }

    #[test]
    fn only_batches_of_nothing_but_relaxed_jobs_commit_without_fsync() {
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        super::super::sqlite::configure_for_tests(&conn);
        let w = Writer::start(conn).unwrap();
        assert_eq!(ask(&w, Durability::Durable), FULL);
        assert_eq!(ask(&w, Durability::Relaxed), NORMAL);
        assert_eq!(
            ask(&w, Durability::Durable),
            FULL,
            "restored after a relaxed batch"
        );
        assert_eq!(w.write(level).unwrap(), FULL, "write() is durable");

        // A batch mixing both is durable: hold the writer in one job while
        // a relaxed and a durable job queue up behind it (one batch).
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let (held_tx, held) = mpsc::channel();
        w.write_with(
            move |_c| {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                Ok(())
            },
            Durability::Relaxed,
            Box::new(move |r| held_tx.send(r.is_ok()).unwrap()),
        );
        started.recv().unwrap();
        let (tx, rx) = mpsc::channel();
        for d in [Durability::Relaxed, Durability::Durable] {
            let tx = tx.clone();
            w.write_with(level, d, Box::new(move |r| tx.send(r.unwrap()).unwrap()));
        }
        go.send(()).unwrap();
        assert!(held.recv().unwrap());
        assert_eq!((rx.recv().unwrap(), rx.recv().unwrap()), (FULL, FULL));
    }
}
