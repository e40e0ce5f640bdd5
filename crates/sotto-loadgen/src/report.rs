//! The `RESULT key=value ...` line each run ends with (parsed by
//! scripts/bench-vs-mosquitto.sh and scripts/bench-summary.py: keep the
//! keys, their order and their formats).

use std::fmt::{Display, Write};
use std::sync::atomic::Ordering::Relaxed;

use sotto_loadgen::stats::{fmt, pct, Tracker};

pub struct ResultLine(String);

impl ResultLine {
    pub fn new(label: &str, scenario: &str) -> ResultLine {
        ResultLine(format!("RESULT label={label} scenario={scenario}"))
    }

    /// Appends ` key=value`.
    pub fn kv(mut self, key: &str, value: impl Display) -> ResultLine {
        write!(self.0, " {key}={value}").expect("write to String");
        self
    }

    /// Appends `v` with three decimals, `NA` if it is NaN (`stats::fmt`).
    pub fn fmt3(self, key: &str, v: f64) -> ResultLine {
        self.kv(key, fmt(v))
    }

    /// Appends the `q` quantile of latencies in us, in ms.
    pub fn pct(self, key: &str, lats_us: &[u32], q: f64) -> ResultLine {
        self.fmt3(key, pct(lats_us, q))
    }

    /// Appends the delivery counts shared by relay and offline, from
    /// `published` to `conn_errors`.
    pub fn delivery(self, published: u64, accepted: u64, received: u64, t: &Tracker) -> ResultLine {
        self.kv("published", published)
            .kv("acked", accepted)
            .kv("received", received)
            .kv("lost", t.lost())
            .kv("dup", t.dups.load(Relaxed))
            .kv("misrouted", t.misrouted.load(Relaxed))
            .kv("malformed", t.malformed.load(Relaxed))
            .kv("send_errors", t.send_errors.load(Relaxed))
            .kv("conn_errors", t.conn_errors.load(Relaxed))
    }

    pub fn print(self) {
        println!("{}", self.0);
    }
}
