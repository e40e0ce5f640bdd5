//! One operation at a time per home directory, across processes.
//!
//! `sotto listen` may run while the user sends from the same home in another
//! process. Each process holds the device's protocol state in memory, so an
//! operation that changes it (send, receive, refill, approve) takes an
//! exclusive lock on `<home>/sotto.lock`, reloads the state from the store,
//! and commits before releasing. Without this a stale process could write
//! back an older session and reuse message counters.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// The lock file in the home directory (empty).
pub const LOCK_FILE: &str = "sotto.lock";
/// How long an operation waits for another process's operation to end.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    file: Option<File>,
    depth: usize,
}

/// Shared by a client and its guards; re-entrant within one client.
#[derive(Clone)]
pub(crate) struct HomeLock {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

/// Held while an operation runs; the lock is released when the outermost
/// guard drops.
pub(crate) struct Guard {
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

    /// Takes the lock (waiting for other processes), or deepens it if this
    /// client already holds it.
    pub async fn acquire(&self) -> Result<Guard> {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if st.depth > 0 {
                st.depth += 1;
                return Ok(Guard {
                    state: self.state.clone(),
                    fresh: false,
                });
            }
        }
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&self.path)?;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !try_lock(&file)? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::HomeBusy(
                    self.path.parent().unwrap_or(&self.path).to_path_buf(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.file = Some(file);
        st.depth = 1;
        Ok(Guard {
            state: self.state.clone(),
            fresh: true,
        })
    }
}
