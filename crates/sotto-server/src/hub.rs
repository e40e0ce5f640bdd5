//! The devices connected over WebSocket, for push. Each connection gets a
//! queue of ready-to-send JSON frames bounded in bytes
//! ([`Limits::push_queue_bytes`]); a connection that does not keep up is
//! dropped rather than buffered without limit (its device then reconnects
//! and fetches what it missed over HTTP: nothing is lost, the mailbox is the
//! source of truth). A device holds at most
//! [`Limits::websockets_per_device`] connections (a new one replaces its
//! oldest), and the server at most [`Limits::max_websockets`].
//!
//! This registry is process-local by nature; with several server nodes
//! every push also goes to the [`Relay`], which delivers it to the sockets
//! other nodes hold ([`crate::relay`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use sotto_api::Push;
use sotto_proto::DeviceId;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::limits::Limits;
use crate::relay::{Relay, Relayed};

pub(crate) struct Hub {
    next_id: AtomicU64,
    queue_bytes: usize,
    per_device: usize,
    /// One permit per upgraded socket.
    sockets: Arc<Semaphore>,
    connections: Mutex<Connections>,
    /// Set when this node shares its database with others.
    relay: OnceLock<Box<dyn Relay>>,
    /// Frames queued to sockets (metrics).
    pushes: Counter,
}

/// One connection's sending end.
struct Conn {
    id: u64,
    frames: mpsc::UnboundedSender<String>,
    /// Bytes sent to `frames` and not yet taken by the session.
    queued: Arc<AtomicUsize>,
}

/// Each connected device's connections, oldest first.
type Connections = HashMap<DeviceId, Vec<Conn>>;

/// A session's receiving end: frames for its socket, in order.
pub(crate) struct Pushes {
    frames: mpsc::UnboundedReceiver<String>,
    queued: Arc<AtomicUsize>,
}

impl Pushes {
    /// The next frame; `None` once the hub dropped the connection (too far
    /// behind, replaced by a newer one of its device) and it is drained.
    pub async fn recv(&mut self) -> Option<String> {
        let frame = self.frames.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }
}

impl Hub {
    pub fn new(limits: &Limits, pushes: Counter) -> Hub {
        Hub {
            next_id: AtomicU64::new(0),
            queue_bytes: limits.push_queue_bytes,
            per_device: limits.websockets_per_device.max(1),
            sockets: Arc::new(Semaphore::new(limits.max_websockets)),
            connections: Mutex::new(HashMap::new()),
            relay: OnceLock::new(),
            pushes,
        }
    }

    /// From now on every push and close also goes to the other nodes.
    pub fn set_relay(&self, relay: Box<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    /// Largest datagram to push inline: `configured`, or less when pushes
    /// must fit the relay ([`crate::relay::INLINE_BYTES`]).
    pub fn inline_bytes(&self, configured: usize) -> usize {
        match self.relay.get() {
            Some(_) => configured.min(crate::relay::INLINE_BYTES),
            None => configured,
        }
    }

    /// A socket slot, or `None` when the server holds
    /// [`Limits::max_websockets`] already. The session keeps it.
    pub fn socket_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.sockets.clone().try_acquire_owned().ok()
    }

    /// Registers a connection of `device`, dropping its oldest beyond the
    /// per-device limit; frames for it arrive on the returned [`Pushes`].
    pub fn connect(&self, device: DeviceId) -> (u64, Pushes) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut map = self.lock();
        let conns = map.entry(device).or_default();
        while conns.len() >= self.per_device {
            conns.remove(0);
        }
        conns.push(Conn {
            id,
            frames: tx,
            queued: queued.clone(),
        });
        (id, Pushes { frames: rx, queued })
    }

    pub fn disconnect(&self, device: &DeviceId, id: u64) {
        let mut map = self.lock();
        if let Some(conns) = map.get_mut(device) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                map.remove(device);
            }
        }
    }

    /// Closes every connection of `device` (a removed device), here and
    /// on the other nodes.
    pub fn disconnect_all(&self, device: &DeviceId) {
        self.close_local(device);
        if let Some(relay) = self.relay.get() {
            relay.publish(Relayed::Close { device: *device });
        }
    }

    /// Closes the connections of `device` this node holds.
    pub fn close_local(&self, device: &DeviceId) {
        self.lock().remove(device);
    }

    /// Closes every connection (their devices reconnect and fetch).
    pub fn close_everyone(&self) {
        self.lock().clear();
    }

    /// Sends `make()` to every connection of `device`, here and through
    /// the relay; `make` runs only if it is needed (the device is connected
    /// here, or a relay is on), and outside the lock (serialising a
    /// datagram is not free).
    pub fn push(&self, device: &DeviceId, make: impl FnOnce() -> Push) {
        let relay = self.relay.get();
        if relay.is_none() && !self.lock().contains_key(device) {
            return;
        }
        let Ok(frame) = serde_json::to_string(&make()) else {
            return;
        };
        if let Some(relay) = relay {
            relay.publish(Relayed::Push {
                device: *device,
                frame: frame.clone(),
            });
        }
        self.deliver(device, frame);
    }

    /// Sends a ready frame to the connections of `device` this node holds.
    pub fn deliver(&self, device: &DeviceId, frame: String) {
        let mut map = self.lock();
        let Some(conns) = map.get_mut(device) else {
            return;
        };
        // Over its byte budget means a stuck connection: drop it (see the
        // module doc).
        conns.retain(|c| {
            let before = c.queued.fetch_add(frame.len(), Ordering::Relaxed);
            if before + frame.len() > self.queue_bytes {
                tracing::debug!(device = %hex::encode(device.0), "push queue full: dropping the socket");
                return false;
            }
            let sent = c.frames.send(frame.clone()).is_ok();
            if sent {
                self.pushes.inc();
            }
            sent
        });
        if conns.is_empty() {
            map.remove(device);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}
