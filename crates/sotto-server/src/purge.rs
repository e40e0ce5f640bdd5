//! The retention task: deletes acknowledged datagrams past the retention
//! window and expired link requests, at start and then every minute. Safe
//! to run on several nodes at once (each purge is one transaction).

use std::time::Duration;

use crate::state::{now_ms, AppState};

const EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run(state: AppState) {
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(EVERY);
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
