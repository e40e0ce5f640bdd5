//! The retention task: deletes acknowledged datagrams past the retention
//! window, unacknowledged ones past their time to live, expired link
//! requests and remembered request ids, at start and then every minute
//! (more often for a retention under two minutes, so a short window is
//! honoured within about half its length). It also lets the rate limiters
//! forget idle keys. Safe to run on several nodes at once (each purge is
//! one transaction).
//!
//! Once traffic stops after a burst it also gives the allocator's free
//! memory back to the system ([`give_back_free_memory`], [`TRIM_EVERY`]).

use std::time::Duration;

use crate::state::{now_ms, AppState};

const EVERY: Duration = Duration::from_secs(60);
const AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// How often the trim looks at the traffic. It trims once when no send,
/// push or ack happened since its last look and some did since the last
/// trim: a trim walks the heap holding the allocator's locks (0.75 ms on
/// a small heap, 157 ms on a 200 MB one while a drain was running), a pause
/// kept out of busy periods.
const TRIM_EVERY: Duration = Duration::from_secs(5);

pub(crate) async fn run(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    // Every minute, or every half of a window shorter than two minutes.
    let shortest = match state.retention_ms {
        0 => state.limits.unacked_ttl,
        ms => Duration::from_millis(ms).min(state.limits.unacked_ttl),
    };
    let period = (shortest / 2).clamp(AT_MOST_EVERY, EVERY);
    let mut tick = tokio::time::interval(period);
    let mut trim = tokio::time::interval(TRIM_EVERY);
    // Ticks missed while the purge ran come later, not at once: two looks
    // microseconds apart would see no traffic on a busy node.
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let traffic = || {
        let m = &state.metrics;
        m.sends.get() + m.ws_sends.get() + m.pushes.get() + m.acks.get()
    };
    let (mut seen, mut trimmed) = (0, 0);
    loop {
        tokio::select! {
            _ = trim.tick() => {
                let now = traffic();
                if now == seen && now != trimmed {
                    let _ = tokio::task::spawn_blocking(give_back_free_memory).await;
                    trimmed = now;
                }
                seen = now;
            }
            _ = tick.tick() => {
                let retention = state.retention_ms;
                let ttl = state.limits.unacked_ttl.as_millis().min(u64::MAX as u128) as u64;
                match state.db(move |s| s.purge(now_ms(), retention, ttl)).await {
                    Ok(p) if p.expired > 0 => tracing::info!(
                        items = p.expired,
                        "unacknowledged items past their time to live deleted"
                    ),
                    Ok(p) => tracing::debug!(acked = p.mailbox_rows, datagrams = p.datagrams, links = p.links, requests = p.requests, "purged"),
                    Err(e) => tracing::warn!(error = %e.message, "retention purge failed"),
                }
                if let Some(limiters) = &state.limiters {
                    limiters.forget_idle();
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// glibc's malloc keeps what a burst freed inside its heap, where it is
/// free but still counted in RSS: a node that drained 50,000 queued
/// messages held 156 MB afterwards, and 45 MB after a trim
/// (docs/PERFORMANCE.md, "Memory after a burst"). `malloc_trim` returns the
/// free pages anywhere in the heap to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_free_memory() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only releases pages that hold no allocation; it
    // takes the allocator's own locks and is given no pointer of ours.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        took_us = started.elapsed().as_micros() as u64,
        "free memory given back"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() {}
