//! Reading a device's mailbox (`GET /v1/mailbox`) page by page.

use std::sync::atomic::Ordering::Relaxed;

use reqwest::Method;
use sotto_api::MailboxBatch;
use sotto_loadgen::net::{Api, Result};
use sotto_loadgen::sim::SimDevice;
use sotto_loadgen::stats::{Tracker, RECEIVED};
use sotto_proto::DeviceKey;

use crate::index::Index;

/// One page of at most `limit` items with a seq above `after`.
pub async fn fetch_page(
    api: &Api,
    key: &DeviceKey,
    after: u64,
    limit: usize,
) -> Result<MailboxBatch> {
    let path = sotto_api::paths::mailbox(after, limit as u32);
    api.json(key, Method::GET, &path, None::<&()>).await
}

/// Whether another page may follow `batch`.
pub fn more_after(batch: &MailboxBatch) -> bool {
    batch.more && !batch.items.is_empty()
}

/// Items still pending in each subscriber's mailbox: (received but still
/// unacknowledged, never received).
pub async fn mailbox_left(api: &Api, subs: &[SimDevice], index: &Index, t: &Tracker) -> (u64, u64) {
    let (mut unacked, mut unseen) = (0, 0);
    for d in subs {
        let mut after = 0u64;
        for _ in 0..100 {
            let Ok(b) = fetch_page(api, d.key(), after, 1000).await else {
                break;
            };
            for it in &b.items {
                after = after.max(it.seq);
                let seen = index
                    .lookup_item(it)
                    .map(|(id, _, _)| t.state[id].load(Relaxed) & RECEIVED != 0)
                    .unwrap_or(false);
                if seen {
                    unacked += 1
                } else {
                    unseen += 1
                }
            }
            if !more_after(&b) {
                break;
            }
        }
    }
    (unacked, unseen)
}
