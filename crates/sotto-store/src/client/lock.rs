//! One operation at a time per home directory, across processes.
//!
//! `sotto listen` and `sotto p2p up` may run while the user sends from the
//! same home in another process. Each process holds the device's protocol
//! state in memory, so an operation that changes it (send, receive, refill,
//! approve) takes an exclusive lock on `<home>/sotto.lock`, reloads the
//! state from the store, and commits before releasing. Without this a
//! stale process could write back an older session and reuse message
//! counters. The lock is runtime-agnostic: the caller hands in its sleep.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lock file in the home directory (empty).
pub const LOCK_FILE: &str = "sotto.lock";

#[derive(Default)]
struct State {
    file: Option<File>,
    depth: usize,
}

/// Shared by one process's users of a home and their guards; re-entrant
/// within them.
#[derive(Clone)]
pub struct HomeLock {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

/// Held while an operation runs; the lock is released when the outermost
/// guard drops.
pub struct Guard {
    state: Arc<Mutex<State>>,
    /// True for the outermost guard (the caller must reload its state).
    pub fresh: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.depth -= 1;
        if st.depth == 0 {
            // Closing the file releases the lock.
            st.file = None;
        }
    }
}

#[cfg(unix)]
fn try_lock(f: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_f: &File) -> std::io::Result<bool> {
    Ok(true)
}

impl HomeLock {
    pub fn new(home: &Path) -> HomeLock {
        HomeLock {
            path: home.join(LOCK_FILE),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    /// The home directory the lock guards.
    pub fn home(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }

    /// Takes the lock (waiting up to `wait` for other processes, polling
    /// every 20 ms with `sleep`), or deepens it if this process already
    /// holds it through this `HomeLock`. `Ok(None)`: still busy after
    /// `wait`.
    pub async fn acquire<F: Future<Output = ()>>(
        &self,
        wait: Duration,
        sleep: impl Fn(Duration) -> F,
    ) -> std::io::Result<Option<Guard>> {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.depth > 0 {
                st.depth += 1;
                return Ok(Some(Guard {
                    state: self.state.clone(),
                    fresh: false,
                }));
            }
        }
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&self.path)?;
        let deadline = Instant::now() + wait;
        while !try_lock(&file)? {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            sleep(Duration::from_millis(20)).await;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.file = Some(file);
        st.depth = 1;
        Ok(Some(Guard {
            state: self.state.clone(),
            fresh: true,
        }))
    }
}
