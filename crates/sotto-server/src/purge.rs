//! The retention task: deletes acknowledged datagrams past the retention
//! window, unacknowledged ones past their time to live, expired link
//! requests and remembered request ids, at start and then every minute
//! (more often for a retention under two minutes, so a short window is
//! honoured within about half its length). It also lets the rate limiters
//! forget idle keys. Safe to run on several nodes at once (each purge is
//! one transaction).

use std::time::Duration;

use crate::state::{now_ms, AppState};

const EVERY: Duration = Duration::from_secs(60);
const AT_MOST_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    // Every minute, or every half of a window shorter than two minutes.
    let shortest = match state.retention_ms {
        0 => state.limits.unacked_ttl,
        ms => Duration::from_millis(ms).min(state.limits.unacked_ttl),
    };
    let period = (shortest / 2).clamp(AT_MOST_EVERY, EVERY);
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
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
