//! Subscribers on WebSocket: every push is matched and acknowledged on the
//! socket; a subscriber the server drops reconnects and fetches what is
//! pending, as a client does.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use sotto_api::{Ack, Push};
use sotto_loadgen::net::{Api, Result, Ws};
use sotto_loadgen::sim::SimDevice;
use sotto_loadgen::stats::Tracker;
use sotto_proto::DeviceKey;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::index::Index;
use crate::mailbox::{fetch_page, more_after};
use crate::receive::SubOut;
use crate::setup::{join_all, key_of, Ctx};

/// Everything a subscriber needs to (re)connect.
#[derive(Clone)]
pub struct Conn {
    pub api: Api,
    pub tls: Arc<rustls::ClientConfig>,
    pub index: Arc<Index>,
    pub t: Arc<Tracker>,
    pub keep: bool,
}

/// Opens one WebSocket per device, `concurrency` at a time, in order; the
/// `i`-th to its node ([`Ctx::node`]).
pub async fn connect_all(ctx: &Ctx, devs: &[SimDevice], concurrency: usize) -> Result<Vec<Ws>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut hs = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        let key = key_of(d);
        let (api, tls, sem) = (ctx.node(i).clone(), ctx.tls.clone(), sem.clone());
        hs.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            api.websocket(&key, tls).await
        }));
    }
    join_all(hs).await
}

/// The `Ack` frame for `seqs`.
fn ack_frame(seqs: Vec<u64>) -> Message {
    Message::Text(serde_json::to_string(&Ack { seqs }).expect("json"))
}

/// Handles one push frame; returns the seq to acknowledge.
fn on_frame(text: &str, sub: usize, c: &Conn, out: &mut SubOut) -> Option<u64> {
    match serde_json::from_str::<Push>(text) {
        Ok(Push::Message(item)) => {
            let maybe_redelivered = out.reconnects > 0;
            if let Some(l) = out.receive(&item, sub, &c.index, &c.t, c.keep, maybe_redelivered) {
                out.lats.push(l);
            }
            Some(item.seq)
        }
        Ok(Push::PrekeysLow(_)) => {
            out.prekeys_low += 1;
            None
        }
        // The load generator's datagrams are far below the server's inline
        // push limit: a notice is not what it expects.
        // Nor is an answer to a send: subscribers do not send.
        Ok(Push::Notice(_) | Push::SendResult(_)) | Err(_) => {
            c.t.malformed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// A subscriber's WebSocket: every push is matched, and acknowledged on the
/// socket (one `Ack` frame for all the pushes that were ready together). If
/// the server drops the socket (it does so to a device that falls behind),
/// the subscriber does what a client does: reconnects, then fetches what is
/// pending with `GET /v1/mailbox` and acknowledges it.
pub fn spawn_subscriber(
    c: Conn,
    key: DeviceKey,
    mut ws: Ws,
    sub: usize,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<SubOut> {
    tokio::spawn(async move {
        let mut out = SubOut::default();
        let mut seqs = Vec::new();
        'session: loop {
            let mut closed = false;
            while !closed {
                let first = tokio::select! {
                    m = ws.next() => m,
                    _ = stop.changed() => break 'session,
                };
                let mut frame = first;
                loop {
                    match frame {
                        Some(Ok(Message::Text(s))) => {
                            if let Some(seq) = on_frame(&s, sub, &c, &mut out) {
                                seqs.push(seq);
                            }
                        }
                        Some(Ok(Message::Close(f))) => {
                            if out.reconnects == 0 && !*stop.borrow() {
                                eprintln!("sub {sub}: closed by the server: {f:?}");
                            }
                            closed = true;
                            break;
                        }
                        None => {
                            closed = true;
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            c.t.conn_errors.fetch_add(1, Relaxed);
                            eprintln!("sub {sub}: {e}");
                            closed = true;
                            break;
                        }
                    }
                    if seqs.len() >= 256 {
                        break;
                    }
                    match ws.next().now_or_never() {
                        Some(f) => frame = f,
                        None => break,
                    }
                }
                if !seqs.is_empty() && !closed {
                    out.acked += 1;
                    if ws.send(ack_frame(std::mem::take(&mut seqs))).await.is_err() {
                        c.t.conn_errors.fetch_add(1, Relaxed);
                        closed = true;
                    }
                }
            }
            if *stop.borrow() {
                return out;
            }
            // reconnect, then fetch what is pending (acks not sent are
            // covered: those items are fetched again)
            seqs.clear();
            out.reconnects += 1;
            if out.reconnects > 50 {
                eprintln!(
                    "sub {sub}: giving up after {} reconnects",
                    out.reconnects - 1
                );
                return out;
            }
            ws = loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if *stop.borrow() {
                    return out;
                }
                match c.api.websocket(&key, c.tls.clone()).await {
                    Ok(ws) => break ws,
                    Err(e) => {
                        c.t.conn_errors.fetch_add(1, Relaxed);
                        eprintln!("sub {sub}: reconnect: {e}");
                    }
                }
            };
            fetch_pending(&c, &key, &mut ws, sub, &mut out).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        out
    })
}

/// After a reconnect: fetches what is pending with `GET /v1/mailbox`,
/// matches it, and acknowledges each page on the new socket.
async fn fetch_pending(c: &Conn, key: &DeviceKey, ws: &mut Ws, sub: usize, out: &mut SubOut) {
    let mut after = 0u64;
    for _ in 0..1000 {
        let batch = match fetch_page(&c.api, key, after, 500).await {
            Ok(b) => b,
            Err(e) => {
                c.t.conn_errors.fetch_add(1, Relaxed);
                eprintln!("sub {sub}: fetch: {e}");
                break;
            }
        };
        let mut fetched = Vec::with_capacity(batch.items.len());
        for it in &batch.items {
            after = after.max(it.seq);
            fetched.push(it.seq);
            if let Some(l) = out.receive(it, sub, &c.index, &c.t, c.keep, true) {
                out.lats.push(l);
            }
        }
        if !fetched.is_empty() {
            out.acked += 1;
            let _ = ws.send(ack_frame(fetched)).await;
        }
        if !more_after(&batch) {
            break;
        }
    }
}
