//! Counting: per-message state, latency percentiles, server RSS and CPU
//! from /proc (the same measures as mqtt-loadgen).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's time base (monotonic).
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

pub const SENT: u8 = 1;
pub const ACCEPTED: u8 = 2;
pub const RECEIVED: u8 = 4;

/// Per message id: state bits and the send time; global counters.
pub struct Tracker {
    pub state: Vec<AtomicU8>,
    pub sent_ns: Vec<AtomicU64>,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub send_errors: AtomicU64,
    pub received: AtomicU64,
    pub dups: AtomicU64,
    /// Received again around a reconnect (pushed, then the socket dropped
    /// before the ack; or both fetched and pushed): at-least-once delivery
    /// that a client deduplicates, not counted as `dups`.
    pub redelivered: AtomicU64,
    pub misrouted: AtomicU64,
    pub malformed: AtomicU64,
    pub conn_errors: AtomicU64,
    pub first_rx_ns: AtomicU64,
    pub last_rx_ns: AtomicU64,
}

impl Tracker {
    pub fn new(n: usize) -> Arc<Tracker> {
        Arc::new(Tracker {
            state: (0..n).map(|_| AtomicU8::new(0)).collect(),
            sent_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            conn_errors: AtomicU64::new(0),
            first_rx_ns: AtomicU64::new(u64::MAX),
            last_rx_ns: AtomicU64::new(0),
        })
    }

    /// Accepted by the server (2xx) but never received.
    pub fn lost(&self) -> u64 {
        self.state
            .iter()
            .filter(|s| s.load(Relaxed) & (ACCEPTED | RECEIVED) == ACCEPTED)
            .count() as u64
    }

    /// Records a receipt of message `id` by subscriber `sub` whose expected
    /// subscriber is `target`; returns the latency in microseconds.
    pub fn on_receive(&self, id: usize, sub: usize, target: usize) -> Option<u32> {
        let now = now_ns();
        if target != sub {
            self.misrouted.fetch_add(1, Relaxed);
        }
        let prev = self.state[id].fetch_or(RECEIVED, Relaxed);
        if prev & RECEIVED != 0 {
            self.dups.fetch_add(1, Relaxed);
            return None;
        }
        self.received.fetch_add(1, Relaxed);
        self.first_rx_ns.fetch_min(now, Relaxed);
        self.last_rx_ns.fetch_max(now, Relaxed);
        let sent = self.sent_ns[id].load(Relaxed);
        if sent == 0 {
            return None;
        }
        Some((now.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32)
    }
}

/// Percentile of sorted microsecond latencies, in ms.
pub fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        "NA".into()
    } else {
        format!("{v:.3}")
    }
}

/// The summed RSS of the server processes (several nodes), kB; `None`
/// when there are none or one cannot be read.
pub fn rss_kb(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_one(p)).sum()
}

fn rss_one(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime+stime in clock ticks summed over the server processes.
fn servers_cpu_ticks(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_ticks(&p.to_string())).sum()
}

/// utime+stime in clock ticks for a pid ("self" allowed).
fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Server (summed over its processes) and own CPU, in cores used on
/// average over an interval.
pub struct CpuMeter {
    t0: Instant,
    server: Option<u64>,
    me: Option<u64>,
    pids: Vec<u32>,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> CpuMeter {
        CpuMeter {
            t0: Instant::now(),
            server: servers_cpu_ticks(pids),
            me: cpu_ticks("self"),
            pids: pids.to_vec(),
        }
    }

    /// (server cores, client cores).
    pub fn stop(&self) -> (f64, f64) {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let hz = 100.0; // USER_HZ
        let s = match (self.server, servers_cpu_ticks(&self.pids)) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / hz / wall,
            _ => f64::NAN,
        };
        let m = match (self.me, cpu_ticks("self")) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / hz / wall,
            _ => f64::NAN,
        };
        (s, m)
    }
}

/// Samples the server's RSS (summed over its processes) every 100 ms;
/// keeps the peak.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    h: JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pids: &[u32]) -> RssSampler {
        let pids = pids.to_vec();
        let peak = Arc::new(AtomicU64::new(rss_kb(&pids).unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (peak.clone(), stop.clone());
        let h = tokio::spawn(async move {
            while !s2.load(Relaxed) {
                if let Some(r) = rss_kb(&pids) {
                    p2.fetch_max(r, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler { peak, stop, h }
    }

    pub async fn finish(self) -> u64 {
        self.stop.store(true, Relaxed);
        let _ = self.h.await;
        self.peak.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(pct(&v, 0.5), 51.0);
        assert_eq!(pct(&v, 0.99), 99.0);
        assert!(pct(&[], 0.5).is_nan());
    }

    #[test]
    fn lost_dup_and_misrouted_are_counted() {
        let t = Tracker::new(3);
        for i in 0..3 {
            t.state[i].fetch_or(SENT | ACCEPTED, Relaxed);
            t.sent_ns[i].store(now_ns().max(1), Relaxed);
        }
        assert!(t.on_receive(0, 0, 0).is_some());
        assert!(t.on_receive(0, 0, 0).is_none());
        t.on_receive(1, 1, 2);
        assert_eq!(t.lost(), 1);
        assert_eq!(t.dups.load(Relaxed), 1);
        assert_eq!(t.misrouted.load(Relaxed), 1);
    }
}
