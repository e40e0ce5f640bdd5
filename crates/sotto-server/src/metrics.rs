//! `GET /metrics`: this node's counters in the Prometheus (OpenMetrics)
//! text format, with `prometheus-client`. Every value is an aggregate of
//! the node (no label names a user, device or address), except the mailbox
//! depth, which is the whole database's and is read at most every
//! [`DEPTH_EVERY`] however often the endpoint is scraped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// How stale the mailbox depth may be.
const DEPTH_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct Metrics {
    registry: Registry,
    /// TLS connections open.
    pub connections: Gauge,
    /// Push sockets (WebSockets) open.
    pub sockets: Gauge,
    /// Datagrams accepted (committed).
    pub sends: Counter,
    /// Of those, sent over a WebSocket.
    pub ws_sends: Counter,
    /// Frames queued to push sockets of this node.
    pub pushes: Counter,
    /// Mailbox items acknowledged.
    pub acks: Counter,
    /// Unacknowledged mailbox items (the database's).
    pub mailbox_depth: Gauge,
    /// Time of store calls, from hand-over to answer.
    pub store_seconds: Histogram,
    /// Requests refused by a rate limit (429).
    pub rate_limited: Counter,
    depth_read: Mutex<Option<Instant>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sotto");
        let m = Metrics {
            connections: Gauge::default(),
            sockets: Gauge::default(),
            sends: Counter::default(),
            ws_sends: Counter::default(),
            pushes: Counter::default(),
            acks: Counter::default(),
            mailbox_depth: Gauge::default(),
            store_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            rate_limited: Counter::default(),
            depth_read: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register("connections", "TLS connections open", m.connections.clone());
        registry.register(
            "push_sockets",
            "Push sockets (WebSockets) open",
            m.sockets.clone(),
        );
        registry.register("sends", "Datagrams accepted (committed)", m.sends.clone());
        registry.register(
            "ws_sends",
            "Datagrams accepted (committed) that came over a WebSocket",
            m.ws_sends.clone(),
        );
        registry.register(
            "pushes",
            "Frames queued to this node's push sockets",
            m.pushes.clone(),
        );
        registry.register("acks", "Mailbox items acknowledged", m.acks.clone());
        registry.register(
            "mailbox_depth",
            "Unacknowledged mailbox items in the database",
            m.mailbox_depth.clone(),
        );
        registry.register(
            "store_seconds",
            "Time of store calls, from hand-over to answer",
            m.store_seconds.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit of this node",
            m.rate_limited.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Whether the mailbox depth is due for a reading (and, if so, marks
    /// it read now).
    fn depth_due(&self) -> bool {
        let mut at = self.depth_read.lock().unwrap_or_else(|p| p.into_inner());
        match *at {
            Some(t) if t.elapsed() < DEPTH_EVERY => false,
            _ => {
                *at = Some(Instant::now());
                true
            }
        }
    }
}

/// Times one store call into the histogram.
pub(crate) struct Timer<'a>(&'a Histogram, Instant);

impl<'a> Timer<'a> {
    pub fn start(h: &'a Histogram) -> Timer<'a> {
        Timer(h, Instant::now())
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed().as_secs_f64());
    }
}

/// Counts one open connection or socket until dropped.
pub(crate) struct Open(Gauge);

impl Open {
    pub fn new(g: &Gauge) -> Open {
        g.inc();
        Open(g.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) async fn get(State(state): State<AppState>) -> Response {
    if state.metrics.depth_due() {
        match state.db(|s| s.pending_items()).await {
            Ok(n) => {
                state
                    .metrics
                    .mailbox_depth
                    .set(n.min(i64::MAX as u64) as i64);
            }
            Err(e) => tracing::warn!(error = %e.message, "metrics: mailbox depth unreadable"),
        }
    }
    let mut text = String::new();
    if encode(&mut text, &state.metrics.registry).is_err() {
        return crate::api::ApiError::internal("metrics could not be encoded").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
