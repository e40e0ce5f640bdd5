//! The retention task: deletes acknowledged datagrams past the retention
//! window and expired link requests, at start and then every minute (more
//! often for a retention under two minutes, so a short window is honoured
//! within about half its length). Safe to run on several nodes at once
//! (each purge is one transaction).

use std::time::Duration;

use crate::state::{now_ms, AppState};

const EVERY: Duration = Duration::from_secs(60);
const AT_MOST_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    let period = match state.retention_ms {
        0 => EVERY,
        ms => (Duration::from_millis(ms) / 2).clamp(AT_MOST_EVERY, EVERY),
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let retention = state.retention_ms;
                if let Err(e) = state.db(move |s| s.purge(now_ms(), retention)).await {
                    eprintln!("sotto-server: retention purge failed: {}", e.message);
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
