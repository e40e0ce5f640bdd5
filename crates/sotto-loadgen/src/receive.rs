//! What a subscriber receives: matching each mailbox item (pushed or
//! fetched) to its message, and opening what was received after the timed
//! phase.

use std::sync::atomic::Ordering::Relaxed;

use sotto_api::MailboxItem;
use sotto_loadgen::sim::SimDevice;
use sotto_loadgen::stats::{Tracker, RECEIVED};

use crate::index::Index;

/// What a subscriber brings back.
#[derive(Default)]
pub struct SubOut {
    /// Send -> receipt latencies, us.
    pub lats: Vec<u32>,
    /// (id, datagram), kept for opening after the timed phase.
    pub got: Vec<(u32, Vec<u8>)>,
    pub acked: u64,
    pub prekeys_low: u64,
    pub reconnects: u64,
}

impl SubOut {
    /// Matches one mailbox item and records its receipt by subscriber `sub`
    /// (keeping the datagram if `keep`); returns the latency, us, of a first
    /// receipt. With `maybe_redelivered` (around a reconnect), an item
    /// already received is counted as redelivered, not as a duplicate.
    pub fn receive(
        &mut self,
        item: &MailboxItem,
        sub: usize,
        index: &Index,
        t: &Tracker,
        keep: bool,
        maybe_redelivered: bool,
    ) -> Option<u32> {
        let Some((id, target, d)) = index.lookup_item(item) else {
            t.malformed.fetch_add(1, Relaxed);
            return None;
        };
        if maybe_redelivered && t.state[id].load(Relaxed) & RECEIVED != 0 {
            // around a reconnect: pushed before the socket was dropped
            // but not acknowledged, or fetched and pushed both
            t.redelivered.fetch_add(1, Relaxed);
            return None;
        }
        let lat = t.on_receive(id, sub, target)?;
        if keep {
            self.got.push((id as u32, d));
        }
        Some(lat)
    }
}

/// Opens what each subscriber received when asked to (`keep`) and every
/// subscriber came back: (opened, failed), (0, 0) otherwise.
pub async fn open_received(keep: bool, subs: Vec<SimDevice>, outs: Vec<SubOut>) -> (u64, u64) {
    if keep && outs.len() == subs.len() {
        let got = outs.into_iter().map(|o| o.got).collect();
        verify_opened(subs, got).await
    } else {
        (0, 0)
    }
}

/// Opens what each subscriber received (in id order, which is each
/// session's counter order): (opened, failed).
async fn verify_opened(subs: Vec<SimDevice>, got: Vec<Vec<(u32, Vec<u8>)>>) -> (u64, u64) {
    let mut hs = Vec::new();
    for (mut dev, mut got) in subs.into_iter().zip(got) {
        hs.push(tokio::task::spawn_blocking(move || {
            got.sort_by_key(|g| g.0);
            let (mut ok, mut bad) = (0u64, 0u64);
            for (id, d) in got {
                match dev.device.open(&d) {
                    Ok(o)
                        if o.payload.body.len() >= 8
                            && o.payload.body[0..8] == (id as u64).to_le_bytes() =>
                    {
                        ok += 1
                    }
                    Ok(_) => bad += 1,
                    Err(e) => {
                        if bad == 0 {
                            eprintln!("verify: {}: {e}", dev.name);
                        }
                        bad += 1
                    }
                }
            }
            (ok, bad)
        }));
    }
    let (mut ok, mut bad) = (0, 0);
    for h in hs {
        if let Ok((o, b)) = h.await {
            ok += o;
            bad += b;
        }
    }
    (ok, bad)
}
