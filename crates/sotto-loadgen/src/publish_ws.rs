//! Publishers over their device's authenticated WebSocket (`--send-over
//! ws`): one socket per publisher, opened before the timed phase with one
//! signed upgrade; each datagram goes as a binary send frame
//! (`sotto_api::frame`) with a request id, at most --inflight unanswered,
//! and is counted accepted when its `send_result` frame says ok (the
//! server answers only once the datagram is committed).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sotto_api::{frame, Push};
use sotto_loadgen::net::{Result, Ws};
use sotto_loadgen::stats::{now_ns, Tracker, ACCEPTED, SENT};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::setup::{bounded, join_all, key_of, Ctx, Msg, Sealed};

/// Opens every publisher's WebSocket (bounded by --setup-timeout).
pub async fn connect(ctx: &Ctx, sealed: &[Sealed]) -> Result<Vec<Ws>> {
    bounded(ctx.setup, "publisher sockets", async {
        let mut hs = Vec::new();
        // publisher p sends through node p mod n, as its HTTP twin does
        for (p, s) in sealed.iter().enumerate() {
            let (api, tls, key) = (ctx.node(p).clone(), ctx.tls.clone(), key_of(&s.device));
            hs.push(tokio::spawn(async move { api.websocket(&key, tls).await }));
        }
        join_all(hs).await
    })
    .await
}

/// Starts every publisher's send loop on its socket (as
/// `publish::start_publishers`).
pub fn start(
    sealed: &mut [Sealed],
    sockets: Vec<Ws>,
    inflight: usize,
    rate: u64,
    deadline: Instant,
    t: &Arc<Tracker>,
) -> Vec<JoinHandle<Vec<u32>>> {
    let rate_per_pub = crate::publish::rate_per_pub(rate, sealed.len());
    let shown = Arc::new(AtomicU64::new(0));
    sealed
        .iter_mut()
        .zip(sockets)
        .map(|(s, ws)| {
            let msgs = VecDeque::from(std::mem::take(&mut s.msgs));
            tokio::spawn(publisher(
                ws,
                msgs,
                inflight.max(1),
                rate_per_pub,
                deadline,
                t.clone(),
                shown.clone(),
            ))
        })
        .collect()
}

/// One publisher: sends while fewer than `inflight` are unanswered (paced
/// by the rate, if any), reads answers, until every message is answered
/// or the deadline. Returns send -> answer latencies, us.
async fn publisher(
    ws: Ws,
    mut msgs: VecDeque<Msg>,
    inflight: usize,
    rate_per_pub: f64,
    deadline: Instant,
    t: Arc<Tracker>,
    shown: Arc<AtomicU64>,
) -> Vec<u32> {
    let (mut sink, mut stream) = ws.split();
    let start = tokio::time::Instant::now();
    // req -> (message id, sent at, ns)
    let mut pending: HashMap<u64, (usize, u64)> = HashMap::with_capacity(inflight);
    let mut lats = Vec::with_capacity(msgs.len());
    let mut req = 0u64;
    let show = |what: String| {
        if shown.fetch_add(1, Relaxed) < 5 {
            eprintln!("send: {what}");
        }
    };
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let can_send = !msgs.is_empty() && pending.len() < inflight;
        let due = match (msgs.front(), rate_per_pub > 0.0) {
            (Some(m), true) => start + Duration::from_secs_f64(m.k as f64 / rate_per_pub),
            _ => start,
        };
        tokio::select! {
            biased;
            frame = stream.next(), if !pending.is_empty() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(other)) => {
                        show(format!("unexpected frame {other:?}"));
                        break;
                    }
                    Some(Err(e)) => {
                        show(format!("socket: {e}"));
                        break;
                    }
                    None => {
                        show("socket closed".into());
                        break;
                    }
                };
                let Ok(Push::SendResult(r)) = serde_json::from_str::<Push>(&text) else {
                    continue;
                };
                let Some((id, sent_ns)) = pending.remove(&r.req) else {
                    show(format!("answer to unknown req {}", r.req));
                    continue;
                };
                match (r.ok, r.error) {
                    (Some(_), _) => {
                        lats.push(((now_ns() - sent_ns) / 1000).min(u32::MAX as u64) as u32);
                        t.state[id].fetch_or(ACCEPTED, Relaxed);
                        t.accepted.fetch_add(1, Relaxed);
                    }
                    (None, e) => {
                        t.send_errors.fetch_add(1, Relaxed);
                        show(format!("{e:?}"));
                    }
                }
            }
            _ = tokio::time::sleep_until(due), if can_send => {
                // Every message that is due and fits the window, then one
                // flush (one TLS record and write for the lot).
                let now = tokio::time::Instant::now();
                let mut failed = None;
                while pending.len() < inflight {
                    let Some(m) = msgs.front() else { break };
                    if rate_per_pub > 0.0
                        && start + Duration::from_secs_f64(m.k as f64 / rate_per_pub) > now
                    {
                        break;
                    }
                    let m = msgs.pop_front().expect("front");
                    let id = m.id as usize;
                    req += 1;
                    t.state[id].fetch_or(SENT, Relaxed);
                    t.sent.fetch_add(1, Relaxed);
                    let sent_ns = now_ns().max(1);
                    t.sent_ns[id].store(sent_ns, Relaxed);
                    pending.insert(req, (id, sent_ns));
                    let frame = Message::Binary(frame::encode_send(req, &m.datagram));
                    if let Err(e) = sink.feed(frame).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed.or(sink.flush().await.err()) {
                    show(format!("socket: {e}"));
                    break;
                }
            }
            else => break,
        }
    }
    // Unanswered sends failed with the connection (or the deadline).
    let lost = pending.len() as u64;
    t.send_errors.fetch_add(lost, Relaxed);
    t.conn_errors.fetch_add(lost, Relaxed);
    let _ = sink.close().await;
    lats
}
