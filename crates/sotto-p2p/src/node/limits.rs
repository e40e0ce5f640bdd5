//! The bounds of a node, each with the reason for its value, and the rate
//! limiters (governor) that run on the node's own clock so that the state
//! machine stays deterministic.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use sotto_proto::UserPublic;

/// Limits and timers of a [`crate::Node`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Users known by name (contacts): a peer that proves another key for
    /// one of these names is [`crate::Trust::KeyMismatch`].
    pub known: BTreeMap<String, UserPublic>,
    /// How long an advertisement (hello) is valid; it is resent at half.
    pub advert_ttl_ms: u64,
    /// A link whose peer sent no hello by then is dropped: a connection
    /// that does not identify itself holds nothing for long.
    pub hello_timeout_ms: u64,
    /// A request not answered by then is refused (`Expired`) on both sides.
    pub request_timeout_ms: u64,
    /// Session requests waiting for the user, all peers together.
    pub max_pending: usize,
    /// Requests one peer may have waiting at once.
    pub max_pending_per_peer: usize,
    /// Open sessions (each holds two keys and its file transfers).
    pub max_sessions: usize,
    /// Largest file accepted (the receiver's disk is the peer's to fill).
    pub max_file_size: u64,
    /// Incoming transfers at once, over all sessions.
    pub max_incoming_files: usize,
    /// Incoming transfers one peer may have at once (over its sessions),
    /// so that one peer cannot hold every slot of `max_incoming_files`.
    pub max_incoming_files_per_peer: usize,
    /// An incoming transfer whose link stays down this long is discarded
    /// (its slot and partial copy freed); a resume before then goes on.
    pub file_resume_ms: u64,
    /// Bytes a sender has in flight before the receiver acknowledges them
    /// (flow control: bounds the memory a transfer takes on both sides;
    /// at most [`crate::wire::MAX_FILE_WINDOW`], which receivers enforce).
    pub file_window: u64,
    /// The receiver acknowledges (and reports progress) at least this often.
    pub ack_every: u64,
    /// A transfer whose peer, while linked, neither sends (receiver's
    /// view) nor acknowledges (sender's view) for this long is cancelled.
    pub file_stall_ms: u64,
    /// Group sessions hosted or joined.
    pub max_groups: usize,
    /// Frames per second a peer may send (burst: twice as many). Above it
    /// the peer is disconnected. Sized for a file at full speed (a few
    /// hundred chunks a second) and chat bursts.
    pub frames_per_second: NonZeroU32,
    /// Session requests per minute a peer may send (burst: `request_burst`).
    pub requests_per_minute: NonZeroU32,
    pub request_burst: NonZeroU32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            known: BTreeMap::new(),
            advert_ttl_ms: 10 * 60_000,
            hello_timeout_ms: 10_000,
            request_timeout_ms: 5 * 60_000,
            max_pending: 32,
            max_pending_per_peer: 2,
            max_sessions: 128,
            max_file_size: 4 << 30,
            max_incoming_files: 8,
            max_incoming_files_per_peer: 2,
            file_resume_ms: 10 * 60_000,
            file_window: 32 << 20,
            ack_every: 1 << 20,
            file_stall_ms: 60_000,
            max_groups: 32,
            frames_per_second: NonZeroU32::new(20_000).unwrap(),
            requests_per_minute: NonZeroU32::new(30).unwrap(),
            request_burst: NonZeroU32::new(5).unwrap(),
        }
    }
}

/// The node's clock as governor sees it: the time of the last input.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeClock(Arc<AtomicU64>);

impl NodeClock {
    pub(crate) fn set_ms(&self, now_ms: u64) {
        self.0
            .fetch_max(now_ms.saturating_mul(1_000_000), Ordering::Relaxed);
    }
}

impl Clock for NodeClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        self.0.load(Ordering::Relaxed).into()
    }
}

pub(crate) type Limiter = RateLimiter<NotKeyed, InMemoryState, NodeClock, NoOpMiddleware<Nanos>>;

/// The two limiters each peer gets.
pub(crate) struct PeerLimits {
    pub frames: Limiter,
    pub requests: Limiter,
}

impl PeerLimits {
    pub(crate) fn new(config: &Config, clock: &NodeClock) -> Self {
        let fps = config.frames_per_second;
        let burst = fps.saturating_mul(NonZeroU32::new(2).unwrap());
        PeerLimits {
            frames: RateLimiter::direct_with_clock(
                Quota::per_second(fps).allow_burst(burst),
                clock.clone(),
            ),
            requests: RateLimiter::direct_with_clock(
                Quota::per_minute(config.requests_per_minute).allow_burst(config.request_burst),
                clock.clone(),
            ),
        }
    }
}
