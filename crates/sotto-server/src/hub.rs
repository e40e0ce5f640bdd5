//! The devices connected over WebSocket, for push. Each connection gets a
//! bounded queue of ready-to-send JSON frames; a connection that does not
//! keep up is dropped rather than buffered without limit (its device then
//! reconnects and fetches what it missed over HTTP: nothing is lost, the
//! mailbox is the source of truth).
//!
//! This registry is process-local by nature; with several server nodes a
//! push would be relayed to the node holding the socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use sotto_api::Push;
use sotto_proto::DeviceId;
use tokio::sync::mpsc;

/// Frames queued per connection before it is considered stuck.
const QUEUE: usize = 256;

#[derive(Default)]
pub(crate) struct Hub {
    next_id: AtomicU64,
    connections: Mutex<Connections>,
}

/// Each connected device's connections: (connection id, frame queue).
type Connections = HashMap<DeviceId, Vec<(u64, mpsc::Sender<String>)>>;

impl Hub {
    /// Registers a connection of `device`; frames for it arrive on the
    /// receiver, which ends when the hub drops the connection.
    pub fn connect(&self, device: DeviceId) -> (u64, mpsc::Receiver<String>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().entry(device).or_default().push((id, tx));
        (id, rx)
    }

    pub fn disconnect(&self, device: &DeviceId, id: u64) {
        let mut map = self.lock();
        if let Some(conns) = map.get_mut(device) {
            conns.retain(|(i, _)| *i != id);
            if conns.is_empty() {
                map.remove(device);
            }
        }
    }

    /// Sends `make()` to every connection of `device`; `make` runs only if
    /// the device is connected, and outside the lock (serialising a large
    /// datagram is not free).
    pub fn push(&self, device: &DeviceId, make: impl FnOnce() -> Push) {
        if !self.lock().contains_key(device) {
            return;
        }
        let Ok(frame) = serde_json::to_string(&make()) else {
            return;
        };
        let mut map = self.lock();
        let Some(conns) = map.get_mut(device) else {
            return;
        };
        // A full queue means a stuck connection: drop it (see module doc).
        conns.retain(|(_, tx)| tx.try_send(frame.clone()).is_ok());
        if conns.is_empty() {
            map.remove(device);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}
