//! The devices connected over WebSocket, for push. Each connection gets a
//! queue of ready-to-send JSON frames bounded in bytes
//! ([`Limits::push_queue_bytes`]) that allocates nothing until a frame is
//! queued (most sockets are idle most of the time; a tokio channel would
//! preallocate a block of 32 slots, about 1 kB, per socket); a connection
//! that does not keep up is
//! dropped rather than buffered without limit (its device then reconnects
//! and fetches what it missed over HTTP: nothing is lost, the mailbox is the
//! source of truth). A device holds at most
//! [`Limits::websockets_per_device`] connections (a new one replaces its
//! oldest), and the server at most [`Limits::max_websockets`].
//!
//! The hub also keeps the one timer every session shares ([`Beat`]):
//! ping rounds, staggered over [`PING_GROUPS`] groups of sockets, and the
//! close at shutdown, instead of a timer and a shutdown watch per socket
//! (memory per idle socket).
//!
//! This registry is process-local by nature; with several server nodes
//! every push also goes to the [`Relay`], which delivers it to the sockets
//! other nodes hold ([`crate::relay`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sotto_api::Push;
use sotto_proto::DeviceId;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::limits::Limits;
use crate::relay::{Relay, Relayed};

pub(crate) struct Hub {
    next_id: AtomicU64,
    queue_bytes: usize,
    per_device: usize,
    /// One permit per upgraded socket (held by its session, then by the
    /// sends it left running); [`Hub::sockets_closed`] waits for all.
    sockets: Arc<Semaphore>,
    /// How many permits `sockets` has in all.
    max_sockets: u32,
    connections: Mutex<Connections>,
    /// Set when this node shares its database with others.
    relay: OnceLock<Box<dyn Relay>>,
    /// Frames queued to sockets (metrics).
    pushes: Counter,
    /// What the sessions are told ([`beat`]): one channel per ping group,
    /// a session listens to the one of its group only.
    beat: [watch::Sender<Beat>; PING_GROUPS as usize],
}

/// Pings keep idle connections (and NAT mappings) alive and detect dead
/// peers: a write that cannot go out fails after the write timeout, and a
/// peer that sends nothing, not even a pong, for two pings is closed
/// (the session counts them: [`Limits::ping_every`]).
///
/// The sessions ping in this many groups (by connection id), one group
/// per tick of the [`beat`] (`ping_every / PING_GROUPS` apart), so that
/// 10,000 sockets do not wake, ping and get 10,000 pongs in the same
/// instant.
pub(crate) const PING_GROUPS: u64 = 8;

/// What the hub tells the sessions of a ping group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Round `n`: the sessions of the group ping their peer (and give back
    /// what an idle socket does not need).
    Ping(u64),
    /// The server is shutting down: close.
    Close,
}

/// Sends a ping round to one group of sessions every `ping_every /
/// PING_GROUPS` (each group once per `ping_every`) and `Close` to all once
/// `shutdown` turns true or its sender is dropped (then returns, so that it
/// holds the state no longer than the server runs).
/// One timer for all sockets: a socket connected just before its group's
/// tick is pinged early, which costs nothing.
pub(crate) async fn beat(state: crate::state::AppState, shutdown: watch::Receiver<bool>) {
    beat_of(&state.hub, state.limits.ping_every, shutdown).await;
}

async fn beat_of(hub: &Hub, ping_every: Duration, mut shutdown: watch::Receiver<bool>) {
    let tick = (ping_every / PING_GROUPS as u32).max(Duration::from_millis(1));
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is at once
    let mut round = 0;
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = every.tick() => {
                round += 1;
                hub.beat[(round % PING_GROUPS) as usize].send_replace(Beat::Ping(round));
            }
            // A dropped sender is a shutdown too (`changed` would then
            // return at once forever: leave).
            changed = shutdown.changed() => if changed.is_err() {
                break;
            }
        }
    }
    for group in &hub.beat {
        group.send_replace(Beat::Close);
    }
}

/// One connection's frames, shared by the hub (which appends) and the
/// session (which takes them).
#[derive(Default)]
struct Queue {
    frames: Mutex<VecDeque<String>>,
    /// Bytes queued and not yet taken by the session.
    queued: AtomicUsize,
    /// Set once the hub dropped the connection.
    closed: AtomicBool,
    /// Wakes the session (a permit is kept if it is not waiting).
    ready: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queues no longer than this keep their memory once drained.
const KEPT_CAPACITY: usize = 16;

/// One connection's sending end; dropping it (the hub forgets the
/// connection) closes the queue.
struct Conn {
    id: u64,
    queue: Arc<Queue>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
    }
}

/// Each connected device's connections, oldest first.
type Connections = HashMap<DeviceId, Vec<Conn>>;

/// A session's receiving end: frames for its socket, in order.
pub(crate) struct Pushes {
    queue: Arc<Queue>,
}

impl Pushes {
    /// The next frame; `None` once the hub dropped the connection (too far
    /// behind, replaced by a newer one of its device) and it is drained.
    /// Cancel-safe (a frame is taken only when this returns it).
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            if let Some(frame) = self.try_recv() {
                return Some(frame);
            }
            if self.queue.closed.load(Ordering::Acquire) {
                return None;
            }
            self.queue.ready.notified().await;
        }
    }

    /// The next frame if one is queued now (the session takes every
    /// queued frame before it flushes, so a burst is one write).
    pub fn try_recv(&mut self) -> Option<String> {
        let mut frames = self.queue.lock();
        let frame = frames.pop_front()?;
        if frames.is_empty() && frames.capacity() > KEPT_CAPACITY {
            *frames = VecDeque::new(); // after a burst
        }
        drop(frames);
        self.queue.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }
}

impl Hub {
    pub fn new(limits: &Limits, pushes: Counter) -> Hub {
        let max_sockets = limits
            .max_websockets
            .min(Semaphore::MAX_PERMITS)
            .min(u32::MAX as usize) as u32;
        Hub {
            next_id: AtomicU64::new(0),
            queue_bytes: limits.push_queue_bytes,
            per_device: limits.websockets_per_device.max(1),
            sockets: Arc::new(Semaphore::new(max_sockets as usize)),
            max_sockets,
            connections: Mutex::new(HashMap::new()),
            relay: OnceLock::new(),
            pushes,
            beat: std::array::from_fn(|_| watch::Sender::new(Beat::Ping(0))),
        }
    }

    /// The beats of connection `id`'s ping group from now on ([`beat`]);
    /// `Close` already if the server shut down before.
    pub fn beats(&self, id: u64) -> watch::Receiver<Beat> {
        self.beat[(id % PING_GROUPS) as usize].subscribe()
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

    /// Waits until every session has ended (its close frame written) and
    /// the sends they left running have finished: all slots are back. For
    /// the shutdown, once the sessions were told to close.
    pub async fn sockets_closed(&self) {
        let _ = self.sockets.acquire_many(self.max_sockets).await;
    }

    /// Registers a connection of `device`, dropping its oldest beyond the
    /// per-device limit; frames for it arrive on the returned [`Pushes`].
    pub fn connect(&self, device: DeviceId) -> (u64, Pushes) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::default());
        let mut map = self.lock();
        let conns = map.entry(device).or_default();
        while conns.len() >= self.per_device {
            conns.remove(0);
        }
        conns.push(Conn {
            id,
            queue: queue.clone(),
        });
        (id, Pushes { queue })
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
        self.push_frame(device, || serde_json::to_string(&make()).ok());
    }

    /// [`Hub::push`] of a frame already encoded (JSON of a [`Push`]).
    pub fn push_frame(&self, device: &DeviceId, make: impl FnOnce() -> Option<String>) {
        let relay = self.relay.get();
        if relay.is_none() && !self.lock().contains_key(device) {
            return;
        }
        let Some(frame) = make() else {
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
        // module doc). The last connection takes the frame itself (most
        // devices hold one): no copy.
        let len = frame.len();
        let mut frame = Some(frame);
        let mut left = conns.len();
        conns.retain(|c| {
            left -= 1;
            // The session is gone (it forgets itself right after).
            if Arc::strong_count(&c.queue) == 1 {
                return false;
            }
            let before = c.queue.queued.fetch_add(len, Ordering::Relaxed);
            if before + len > self.queue_bytes {
                tracing::debug!(device = %hex::encode(device.0), "push queue full: dropping the socket");
                return false;
            }
            let frame = match left {
                0 => frame.take(),
                _ => frame.clone(),
            };
            c.queue.lock().extend(frame);
            c.queue.ready.notify_one();
            self.pushes.inc();
            true
        });
        if conns.is_empty() {
            map.remove(device);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connections> {
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(queue_bytes: usize, per_device: usize) -> Hub {
        let limits = Limits {
            push_queue_bytes: queue_bytes,
            websockets_per_device: per_device,
            ..Limits::default()
        };
        Hub::new(&limits, Counter::default())
    }

    const DEV: DeviceId = DeviceId([7; 32]);

    #[tokio::test]
    async fn ping_rounds_go_to_one_group_at_a_time_and_a_dropped_shutdown_closes() {
        let hub = hub(1 << 20, 2);
        let mut groups: Vec<_> = (0..PING_GROUPS).map(|id| hub.beats(id)).collect();
        let (stop, shutdown) = watch::channel(false);
        let beat = beat_of(&hub, Duration::from_millis(400), shutdown);
        tokio::pin!(beat);
        // One ping period: each group hears its own round and only that.
        for round in 1..=PING_GROUPS {
            let group = &mut groups[(round % PING_GROUPS) as usize];
            tokio::select! {
                _ = &mut beat => panic!("beat ended"),
                changed = group.changed() => changed.unwrap(),
            }
            assert_eq!(*group.borrow_and_update(), Beat::Ping(round));
        }
        // And no other: group g only ever holds a round of its own.
        for (g, rx) in groups.iter().enumerate() {
            match *rx.borrow() {
                Beat::Ping(n) => assert_eq!(n % PING_GROUPS, g as u64, "group {g} heard {n}"),
                Beat::Close => panic!("closed early"),
            }
        }
        // The sender goes without saying true: every group is closed and
        // the beat ends (it used to spin on `changed`).
        drop(stop);
        tokio::time::timeout(Duration::from_secs(1), &mut beat)
            .await
            .expect("beat ends");
        for g in &groups {
            assert_eq!(*g.borrow(), Beat::Close);
        }
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_wake_a_waiting_session() {
        let hub = Arc::new(hub(1 << 20, 2));
        let (_, mut pushes) = hub.connect(DEV);
        let waiting = tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(pushes.recv().await.unwrap());
            }
            got
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        for f in ["a", "b", "c"] {
            hub.deliver(&DEV, f.to_string());
        }
        assert_eq!(waiting.await.unwrap(), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_connection_over_its_byte_budget_gets_what_was_queued_then_closes() {
        let hub = hub(10, 2);
        let (_, mut pushes) = hub.connect(DEV);
        hub.deliver(&DEV, "12345".into());
        hub.deliver(&DEV, "67890".into());
        hub.deliver(&DEV, "x".into()); // 11 bytes: dropped
        assert_eq!(pushes.recv().await.as_deref(), Some("12345"));
        assert_eq!(pushes.recv().await.as_deref(), Some("67890"));
        assert_eq!(pushes.recv().await, None);
        assert!(!hub.lock().contains_key(&DEV));
    }

    #[tokio::test]
    async fn a_newer_connection_replaces_the_oldest_beyond_the_per_device_limit() {
        let hub = hub(1 << 20, 1);
        let (_, mut old) = hub.connect(DEV);
        let (_, mut new) = hub.connect(DEV);
        assert_eq!(old.recv().await, None);
        hub.deliver(&DEV, "f".into());
        assert_eq!(new.recv().await.as_deref(), Some("f"));
    }

    #[tokio::test]
    async fn queued_frames_can_be_taken_without_waiting_in_order() {
        let hub = hub(10, 1);
        let (_, mut pushes) = hub.connect(DEV);
        assert_eq!(pushes.try_recv(), None);
        for f in ["12345", "678"] {
            hub.deliver(&DEV, f.into());
        }
        assert_eq!(pushes.try_recv().as_deref(), Some("12345"));
        assert_eq!(pushes.try_recv().as_deref(), Some("678"));
        assert_eq!(pushes.try_recv(), None);
        // What was taken left the budget: 10 more bytes fit.
        hub.deliver(&DEV, "1234567890".into());
        assert_eq!(pushes.recv().await.as_deref(), Some("1234567890"));
        assert!(hub.lock().contains_key(&DEV));
    }

    #[tokio::test]
    async fn a_taken_frame_frees_its_bytes_of_the_budget() {
        let hub = hub(10, 1);
        let (_, mut pushes) = hub.connect(DEV);
        for _ in 0..5 {
            hub.deliver(&DEV, "123456".into());
            assert_eq!(pushes.recv().await.as_deref(), Some("123456"));
        }
        assert!(hub.lock().contains_key(&DEV));
    }
}
