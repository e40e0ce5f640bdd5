//! Group commit: one thread owns the only writing connection. Callers hand
//! it jobs; it runs every job waiting in its queue inside one transaction,
//! commits once (one fsync with `synchronous=FULL`), and only then answers
//! each caller. Under load many sends share one fsync; alone, a send waits
//! for exactly one.
//!
//! One failing job must not undo the others. A savepoint per job would
//! give that, but costs two statements and a copy of every page the job
//! touches into the statement journal, for every job, while failures are
//! rare. So a batch first runs its jobs without savepoints; a job that
//! fails without having changed a row (most refusals: an unknown device, a
//! full mailbox, a replayed request) is answered with its error and the
//! batch goes on. Only when a job fails after changing rows (or panics) is
//! the whole transaction rolled back and the batch run again, each job in
//! its own savepoint; the first run's answers are dropped unsent, so no
//! caller hears anything before the commit that carries its job.
//!
//! If the batch cannot be kept whole (the rerun cannot begin, a job ends
//! the transaction, a savepoint cannot be undone), it is rolled back and
//! every caller in it gets an error: a half batch is never committed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::{Result, StoreError};

/// Runs one caller's work (in a savepoint of its own when asked) and
/// returns whether it left part of itself in the transaction (see
/// [`Outcome`]), and how to answer it once the batch's commit is known. A
/// job may be run twice: only the last run's answer is sent; a job dropped
/// unanswered answers its caller with an error (see [`Answer`]).
type Job = Box<dyn FnMut(&Connection, Savepoint) -> (Outcome, Reply) + Send>;

/// Whether a job runs in a savepoint of its own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Savepoint {
    Own,
    None,
}

/// How a job ended, as far as the batch is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Succeeded, or failed and left the transaction as it found it.
    Clean,
    /// Failed (or panicked) possibly after changing rows, outside a
    /// savepoint, or its savepoint could not be rolled back or released:
    /// the transaction may hold part of it.
    Dirty,
}

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
    /// (or `f` failed, and what it wrote was undone).
    pub(crate) fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
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
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        // `submit` hands `reply` back only when the job never got queued.
        if let Err(reply) = self.submit_or_return(f, sync, reply) {
            reply(Err(closed()));
        }
    }

    fn submit<T, F>(&self, f: F, sync: Durability, reply: Callback<T>) -> Result<()>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
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
        F: FnMut(&Connection) -> Result<T> + Send + 'static,
    {
        // The reply is shared with the job so it can be taken back if the
        // job cannot be queued.
        let slot = Arc::new(Answer(Mutex::new(Some(reply))));
        let job_slot = slot.clone();
        let mut f = f;
        let job: Job = Box::new(move |conn: &Connection, savepoint: Savepoint| {
            let (result, outcome) = match savepoint {
                Savepoint::Own => in_savepoint(conn, &mut f),
                Savepoint::None => bare(conn, &mut f),
            };
            let job_slot = job_slot.clone();
            let reply: Reply = Box::new(move |commit: Result<(), String>| {
                let answer = match (result, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                    (Ok(v), Ok(())) => Ok(v),
                };
                if let Some(reply) = job_slot.take() {
                    reply(answer);
                }
            });
            (outcome, reply)
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
        match slot.take() {
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

/// A caller's answer, sent at most once. Whatever drops a job unanswered
/// (a batch rolled back as a whole, a transaction that could not begin,
/// the writer stopping) drops this with it, and the caller then hears an
/// error rather than nothing: a `write_with` reply need not be a channel
/// whose closing the caller would notice.
struct Answer<T>(Mutex<Option<Callback<T>>>);

impl<T> Answer<T> {
    fn take(&self) -> Option<Callback<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        let reply = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(reply) = reply {
            reply(Err(StoreError::Backend(
                "not committed: the write's batch failed and was rolled back, or the store closed"
                    .into(),
            )));
        }
    }
}

/// Ends the connection's transaction, if it is in one. A failed ROLLBACK
/// is tried once more; `false` if the transaction is still open, in which
/// case nothing may be begun (or committed) on it: the caller fails its
/// batch and the next batch tries again.
fn leave_transaction(conn: &Connection) -> bool {
    for _ in 0..2 {
        if conn.is_autocommit() {
            return true;
        }
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "store writer: ROLLBACK failed");
        }
    }
    conn.is_autocommit()
}

/// Runs one fixed statement through the connection's statement cache (the
/// writer runs these several times per job).
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Runs `f` catching a panic (as an error).
fn guarded<T>(conn: &Connection, f: &mut impl FnMut(&Connection) -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(_) => Err(StoreError::Backend("a store operation panicked".into())),
    }
}

/// Runs `f` in the batch's transaction as it is. A failure that changed no
/// row (SQLite's count of rows changed by the connection is unchanged:
/// every INSERT, UPDATE and DELETE counts, those of triggers and foreign
/// key actions included, and a statement that fails midway undoes its own
/// rows) leaves the transaction as `f` found it.
fn bare<T>(
    conn: &Connection,
    f: &mut impl FnMut(&Connection) -> Result<T>,
) -> (Result<T>, Outcome) {
    let before = conn.total_changes();
    let mut panicked = false;
    let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(_) => {
            panicked = true;
            Err(StoreError::Backend("a store operation panicked".into()))
        }
    };
    let outcome = if result.is_ok() || (!panicked && conn.total_changes() == before) {
        Outcome::Clean
    } else {
        Outcome::Dirty
    };
    (result, outcome)
}

/// Runs `f` in a savepoint of its own, undone if `f` fails. `Dirty` if the
/// savepoint could not be rolled back or released: the transaction may
/// then hold part of a job whose caller would hear it failed (or a
/// savepoint left open), so the batch must not be committed.
fn in_savepoint<T>(
    conn: &Connection,
    f: &mut impl FnMut(&Connection) -> Result<T>,
) -> (Result<T>, Outcome) {
    if let Err(e) = exec(conn, "SAVEPOINT job") {
        // Nothing ran.
        return (Err(e.into()), Outcome::Clean);
    }
    let result = guarded(conn, f);
    let closed = if result.is_ok() {
        exec(conn, "RELEASE job")
    } else {
        exec(conn, "ROLLBACK TO job").and_then(|()| exec(conn, "RELEASE job"))
    };
    match closed {
        Ok(()) => (result, Outcome::Clean),
        Err(e) => (result.and(Err(e.into())), Outcome::Dirty),
    }
}

/// Runs the batch's jobs in one transaction (begun by the caller): first
/// without savepoints; if one leaves the transaction dirty, rolls it back
/// and runs them all again in savepoints. `None` if the batch cannot be
/// kept whole: the transaction could not be begun again, or in the rerun a
/// job ended it or its savepoint could not be undone. The transaction is
/// then rolled back (or left for the next batch to roll back) and the jobs
/// go unanswered, which fails their callers (see [`Answer`]).
fn run_batch(conn: &Connection, jobs: &mut [Job]) -> Option<Vec<Reply>> {
    let mut replies = Vec::with_capacity(jobs.len());
    let mut dirty = false;
    for job in jobs.iter_mut() {
        let (outcome, reply) = job(conn, Savepoint::None);
        replies.push(reply);
        // A failed statement may have ended the transaction (SQLite rolls
        // back on some I/O and memory errors): the jobs after it must not
        // run in autocommit mode.
        if outcome == Outcome::Dirty || conn.is_autocommit() {
            dirty = true;
            break;
        }
    }
    if !dirty {
        return Some(replies);
    }
    // Dropped unsent: these answers described writes now undone.
    drop(replies);
    if !leave_transaction(conn) {
        return None;
    }
    tracing::debug!(
        jobs = jobs.len(),
        "a job failed after writing: batch rerun in savepoints"
    );
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::warn!(error = %e, "store writer: could not begin a batch's rerun");
        return None;
    }
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let (outcome, reply) = job(conn, Savepoint::Own);
        replies.push(reply);
        // The transaction is gone (see above; the jobs before this one
        // went with it), or holds part of a failed job.
        if outcome == Outcome::Dirty || conn.is_autocommit() {
            tracing::warn!("store writer: a batch could not be kept whole; rolled back");
            leave_transaction(conn);
            return None;
        }
    }
    Some(replies)
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
        // A transaction left open by a failed ROLLBACK is ended before
        // anything else runs; while it cannot be, batches fail (never run
        // in, or commit, what is left of an earlier one).
        if !leave_transaction(&conn) {
            tracing::error!("store writer: stuck in a transaction; batch refused");
            drop(batch);
            continue;
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
            // `Answer`); nothing of it ran.
            drop(batch);
            continue;
        }
        let mut jobs: Vec<Job> = batch.into_iter().map(|(job, _)| job).collect();
        let Some(replies) = run_batch(&conn, &mut jobs) else {
            continue;
        };
        drop(jobs);
        let commit = exec(&conn, "COMMIT").map_err(|e| e.to_string());
        if commit.is_err() {
            // If this fails too, the next batch tries again.
            leave_transaction(&conn);
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

    /// Queues `jobs` behind a job that holds the writer, so that they run
    /// as one batch; returns their answers in order.
    #[allow(clippy::type_complexity)]
    fn one_batch(
        w: &Writer,
        jobs: Vec<Box<dyn FnMut(&Connection) -> Result<i64> + Send>>,
    ) -> Vec<Result<i64>> {
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(Some(go_rx));
        w.write_with(
            move |_c| {
                // Waits only on its first run (a rerun must not block).
                if let Some(rx) = go_rx.lock().unwrap().take() {
                    started_tx.send(()).unwrap();
                    rx.recv().unwrap();
                }
                Ok(())
            },
            Durability::Durable,
            Box::new(|_| {}),
        );
        started.recv().unwrap();
        let (tx, rx) = mpsc::channel();
        let n = jobs.len();
        for (i, job) in jobs.into_iter().enumerate() {
            let tx = tx.clone();
            w.write_with(
                job,
                Durability::Durable,
                Box::new(move |r| tx.send((i, r)).unwrap()),
            );
        }
        go.send(()).unwrap();
        // Every caller must hear, even when its job is dropped unanswered.
        let answer = || rx.recv_timeout(std::time::Duration::from_secs(30));
        let mut answers: Vec<(usize, Result<i64>)> =
            (0..n).map(|_| answer().expect("an answer")).collect();
        answers.sort_by_key(|a| a.0);
        answers.into_iter().map(|a| a.1).collect()
    }

    fn insert(n: i64) -> impl FnMut(&Connection) -> Result<i64> {
        move |c| {
            c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            Ok(n)
        }
    }

    #[test]
    fn a_failing_job_undoes_only_itself_and_clean_failures_cost_no_rerun() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        super::super::sqlite::configure_for_tests(&conn);
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let w = Writer::start(conn).unwrap();
        let runs = Arc::new(AtomicU64::new(0));
        let counted = |n: i64| {
            let runs = runs.clone();
            let mut insert = insert(n);
            move |c: &Connection| {
                runs.fetch_add(1, Ordering::SeqCst);
                insert(c)
            }
        };
        // Writes row `n`, then fails on row 1 (taken).
        let write_then_fail = |n: i64| {
            move |c: &Connection| {
                c.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
                c.execute("INSERT INTO t (n) VALUES (1)", [])?;
                Ok(0)
            }
        };
        let rows = |w: &Writer| {
            w.write(|c| {
                Ok(c.query_row(
                    "SELECT group_concat(n) FROM (SELECT n FROM t ORDER BY n)",
                    [],
                    |r| r.get::<_, String>(0),
                )?)
            })
            .unwrap()
        };

        // Fails before writing: the batch goes on, nothing is run twice.
        let answers = one_batch(
            &w,
            vec![
                Box::new(counted(1)),
                Box::new(|_c: &Connection| Err(StoreError::Replayed)),
                Box::new(counted(2)),
            ],
        );
        assert!(matches!(answers[1], Err(StoreError::Replayed)));
        assert_eq!(
            (answers[0].as_ref().ok(), answers[2].as_ref().ok()),
            (Some(&1), Some(&2))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "no rerun");
        assert_eq!(rows(&w), "1,2");

        // Fails after writing (a row, then a constraint error), and a
        // panic: their rows are undone, the others' kept (the batch ran
        // again in savepoints).
        runs.store(0, Ordering::SeqCst);
        let answers = one_batch(
            &w,
            vec![
                Box::new(counted(3)),
                Box::new(write_then_fail(10)),
                Box::new(counted(4)),
                Box::new(|c: &Connection| {
                    c.execute("INSERT INTO t (n) VALUES (11)", []).unwrap();
                    panic!("a bug");
                }),
                Box::new(counted(5)),
            ],
        );
        assert!(matches!(answers[1], Err(StoreError::Db(_))));
        assert!(matches!(answers[3], Err(StoreError::Backend(_))));
        for (i, n) in [(0, 3), (2, 4), (4, 5)] {
            assert_eq!(answers[i].as_ref().ok(), Some(&n));
        }
        assert!(runs.load(Ordering::SeqCst) > 3, "rerun in savepoints");
        assert_eq!(rows(&w), "1,2,3,4,5");

        // Fails after writing, alone (no panic in the batch to force the
        // rerun): only the failure count tells it apart from a refusal.
        runs.store(0, Ordering::SeqCst);
        let answers = one_batch(
            &w,
            vec![
                Box::new(counted(6)),
                Box::new(write_then_fail(12)),
                Box::new(counted(7)),
            ],
        );
        assert!(matches!(answers[1], Err(StoreError::Db(_))));
        assert_eq!(
            (answers[0].as_ref().ok(), answers[2].as_ref().ok()),
            (Some(&6), Some(&7))
        );
        // 6 twice (first run, rerun), 7 once (the first run stops at the
        // dirty job); without a rerun it would be 2.
        assert_eq!(runs.load(Ordering::SeqCst), 3, "rerun in savepoints");
        assert_eq!(rows(&w), "1,2,3,4,5,6,7", "12 undone");
    }

    /// Batches that cannot be kept whole fail every caller in them, commit
    /// nothing of them, and leave the writer working.
    #[test]
    fn a_batch_that_cannot_be_kept_whole_fails_all_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        super::super::sqlite::configure_for_tests(&conn);
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        let w = Writer::start(conn).unwrap();
        let rows = |w: &Writer| {
            w.write(|c| {
                Ok(c.query_row(
                    "SELECT ifnull(group_concat(n), '') FROM (SELECT n FROM t ORDER BY n)",
                    [],
                    |r| r.get::<_, String>(0),
                )?)
            })
            .unwrap()
        };
        let all_failed = |answers: &[Result<i64>]| answers.iter().all(|a| a.is_err());

        // A job ends the transaction itself (as SQLite does on some I/O
        // errors): in the first run and again in the rerun. The jobs after
        // it must not run in autocommit mode (each committed alone).
        let answers = one_batch(
            &w,
            vec![
                Box::new(insert(1)),
                Box::new(|c: &Connection| {
                    c.execute_batch("ROLLBACK")?;
                    Ok(0)
                }),
                Box::new(insert(2)),
            ],
        );
        assert!(all_failed(&answers), "{answers:?}");
        assert_eq!(rows(&w), "", "nothing of the batch committed");

        // A job that ends its own savepoint (so `ROLLBACK TO` fails) and
        // then fails: its row must not be committed under an error.
        let answers = one_batch(
            &w,
            vec![
                Box::new(insert(3)),
                Box::new(|c: &Connection| {
                    c.execute("INSERT INTO t (n) VALUES (10)", [])?;
                    c.execute_batch("RELEASE job")?; // fails outside a savepoint
                    Err(StoreError::Replayed)
                }),
                Box::new(insert(4)),
            ],
        );
        assert!(all_failed(&answers), "{answers:?}");
        assert_eq!(rows(&w), "", "10 not committed under an error");

        // The rerun cannot begin (another connection took the write lock
        // once the first run had been rolled back): its callers hear an
        // error, not silence.
        let other = Arc::new(Mutex::new(None::<Connection>));
        let held = other.clone();
        let answers = one_batch(
            &w,
            vec![
                Box::new(insert(5)),
                Box::new(move |c: &Connection| {
                    c.execute("INSERT INTO t (n) VALUES (11)", [])?;
                    c.execute_batch("ROLLBACK")?;
                    let o = Connection::open(&path)?;
                    o.execute_batch("BEGIN IMMEDIATE")?;
                    *held.lock().unwrap() = Some(o);
                    c.busy_timeout(std::time::Duration::from_millis(50))?;
                    Ok(0)
                }),
                Box::new(insert(6)),
            ],
        );
        assert!(all_failed(&answers), "{answers:?}");
        drop(other.lock().unwrap().take());
        w.write(|c| Ok(c.busy_timeout(std::time::Duration::from_secs(10))?))
            .unwrap();
        assert_eq!(rows(&w), "", "nothing of the batch committed");

        // And the writer goes on.
        assert_eq!(w.write(insert(7)).unwrap(), 7);
        assert_eq!(rows(&w), "7");
    }
}
