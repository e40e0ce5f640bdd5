//! The WAL checkpointer: a thread with its own connection that copies the
//! write-ahead log into the database file every [`INTERVAL`], so the
//! writer thread does not.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the
//! threshold, on the committing connection: the writer thread, with every
//! caller of that batch waiting for its answer while up to
//! [`super::WAL_BACKSTOP_PAGES`] pages are copied and fsync'd. A `PASSIVE`
//! checkpoint on another connection runs beside the writer (WAL lets one
//! checkpointer, one writer and readers work at once; it copies only frames
//! no reader still needs and never waits for a lock), so the copy moves
//! off the send path and onto the other core. Durability does not depend
//! on it: a commit is durable once its WAL frames are fsync'd
//! (`synchronous=FULL`), checkpointed or not.
//!
//! The writer keeps SQLite's automatic checkpoint as a backstop at a much
//! higher threshold, so the log stays bounded if this thread falls behind
//! or cannot open its connection.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::super::Result;
use super::schema;

/// Time between checkpoints. Short, because each checkpoint ends with an
/// fsync of the database file, and (most likely: the file system orders
/// them) a commit's fsync of the log that comes at the same time waits
/// behind it: with 1 s the send latency's tail was longer, p99 at 5,000 msgs/s
/// 5.9-9.4 ms against 4.2-6.4 ms with 100 ms (docs/PERFORMANCE.md, "The
/// checkpoint interval and the latency tail"). Long enough that a page
/// many commits rewrite (a device row, an index leaf) is still copied once
/// for many of them: saturation throughput did not change.
#[cfg(not(test))]
const INTERVAL: Duration = Duration::from_millis(100);
#[cfg(test)]
const INTERVAL: Duration = Duration::from_millis(20);

pub(super) struct Checkpointer {
    /// Dropping the sender wakes the thread and ends it.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// WAL frames copied into the database file since start (read by
    /// the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    frames: Arc<AtomicU64>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Checkpointer> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        schema::configure(&conn)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let frames = Arc::new(AtomicU64::new(0));
        let counted = frames.clone();
        let thread = std::thread::Builder::new()
            .name("sotto-store-checkpoint".into())
            .spawn(move || run(conn, stopped, &counted))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
            frames,
        })
    }

    /// WAL frames checkpointed by this thread since start.
    #[cfg(test)]
    pub(super) fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    /// Ends the thread after its current checkpoint (if one is running).
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>, frames: &AtomicU64) {
    let mut copied_before = 0i64;
    // `recv_timeout` returns `Err(Timeout)` each interval and
    // `Err(Disconnected)` once the store drops the sender.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
        // (busy, frames in the log, frames checkpointed): both counts are
        // of the log since it last restarted from its beginning.
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((log, copied)) => {
                // The log restarted (the writer began again at frame 0
                // after a complete checkpoint): count from zero.
                let new = if copied >= copied_before {
                    copied - copied_before
                } else {
                    copied
                };
                frames.fetch_add(new.max(0) as u64, Ordering::Relaxed);
                copied_before = copied;
                tracing::trace!(log, copied, "WAL checkpoint");
            }
            // Busy or I/O trouble: the writer's backstop checkpoint still
            // bounds the log; try again next interval.
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed; retrying"),
        }
    }
}
