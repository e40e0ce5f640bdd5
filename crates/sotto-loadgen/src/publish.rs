//! Publishers: each sends its pre-signed `POST /v1/messages` requests over
//! its own pool of HTTP connections, a bounded number in flight
//! (`--send-over http`), or its datagrams over its device's WebSocket
//! (`--send-over ws`, the default; [`crate::publish_ws`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use sotto_api::AuthHeaders;
use sotto_loadgen::net::{self, Api, Result};
use sotto_loadgen::stats::{now_ns, Tracker, ACCEPTED, SENT};
use tokio::task::JoinHandle;

use crate::setup::{bounded, Ctx, Msg, Sealed};

/// How publishers send.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOver {
    /// Binary send frames on the device's authenticated WebSocket, up to
    /// --inflight unanswered (one signature per publisher, at connect).
    Ws,
    /// One signed `POST /v1/messages` per datagram, --inflight HTTP/1.1
    /// connections per publisher.
    Http,
}

impl SendOver {
    pub fn name(self) -> &'static str {
        match self {
            SendOver::Ws => "ws",
            SendOver::Http => "http",
        }
    }
}

/// The publishers' connections, opened before the timed phase.
pub enum Publishers {
    Http(Vec<Api>),
    Ws(Vec<sotto_loadgen::net::Ws>),
}

impl Publishers {
    pub async fn connect(
        ctx: &Ctx,
        over: SendOver,
        sealed: &[Sealed],
        inflight: usize,
    ) -> Result<Publishers> {
        Ok(match over {
            SendOver::Http => Publishers::Http(
                crate::setup::publisher_clients(ctx, sealed.len(), inflight).await?,
            ),
            SendOver::Ws => Publishers::Ws(crate::publish_ws::connect(ctx, sealed).await?),
        })
    }

    /// Starts every publisher's send loop (see [`start_publishers`]).
    pub fn start(
        self,
        sealed: &mut [Sealed],
        inflight: usize,
        rate: u64,
        deadline: Instant,
        t: &Arc<Tracker>,
    ) -> Vec<JoinHandle<Vec<u32>>> {
        match self {
            Publishers::Http(apis) => start_publishers(sealed, inflight, rate, deadline, t, &apis),
            Publishers::Ws(sockets) => {
                crate::publish_ws::start(sealed, sockets, inflight, rate, deadline, t)
            }
        }
    }
}

/// One HTTP client (connection pool) per publisher, connections opened
/// before the timed phase (bounded by --setup-timeout).
pub async fn connect_publishers(ctx: &Ctx, npub: usize, inflight: usize) -> Result<Vec<Api>> {
    bounded(ctx.setup, "publisher connections", async {
        let mut out = Vec::new();
        for _ in 0..npub {
            out.push(warm_client(ctx, inflight, inflight).await?);
        }
        Ok(out)
    })
    .await
}

/// A new HTTP client on the context's server and clock, with `warm`
/// connections opened.
pub async fn warm_client(ctx: &Ctx, pool: usize, warm: usize) -> Result<Api> {
    let mut api = Api::new(&ctx.base, ctx.tls.clone(), pool)?;
    api.clock_offset_ms = ctx.api.clock_offset_ms;
    api.warm_up(warm).await?;
    Ok(api)
}

/// Starts every publisher's send loop (taking its messages); `rate` is the
/// total in msgs/s, 0 = as fast as the server answers. Each task returns
/// its send -> answer latencies, us.
pub fn start_publishers(
    sealed: &mut [Sealed],
    inflight: usize,
    rate: u64,
    deadline: Instant,
    t: &Arc<Tracker>,
    pub_apis: &[Api],
) -> Vec<JoinHandle<Vec<u32>>> {
    let rate_per_pub = rate_per_pub(rate, sealed.len());
    let shown = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for (p, s) in sealed.iter_mut().enumerate() {
        let dev = HeaderValue::from_str(&hex::encode(s.device.id().0)).expect("hex");
        let msgs = std::mem::take(&mut s.msgs);
        hs.extend(spawn_publisher(
            pub_apis[p].clone(),
            dev,
            msgs,
            inflight,
            rate_per_pub,
            deadline,
            t.clone(),
            shown.clone(),
        ));
    }
    hs
}

/// A publisher's send loop: `inflight` workers take pre-signed requests off
/// its queue in order; with a rate, message k is sent no earlier than
/// start + k / rate.
#[allow(clippy::too_many_arguments)]
fn spawn_publisher(
    api: Api,
    device_hex: HeaderValue,
    msgs: Vec<Msg>,
    inflight: usize,
    rate_per_pub: f64,
    deadline: Instant,
    t: Arc<Tracker>,
    errors_shown: Arc<AtomicU64>,
) -> Vec<JoinHandle<Vec<u32>>> {
    let queue = Arc::new(Mutex::new(VecDeque::from(msgs)));
    let start = tokio::time::Instant::now();
    let url = format!("{}{}", api.base, sotto_api::paths::MESSAGES);
    (0..inflight.max(1))
        .map(|_| {
            let (api, q, t, url, dev, shown) = (
                api.clone(),
                queue.clone(),
                t.clone(),
                url.clone(),
                device_hex.clone(),
                errors_shown.clone(),
            );
            tokio::spawn(async move {
                // send -> answer (durable) latencies, us
                let mut lats = Vec::new();
                loop {
                    let Some(m) = q.lock().unwrap().pop_front() else {
                        break;
                    };
                    if rate_per_pub > 0.0 {
                        let due = start + Duration::from_secs_f64(m.k as f64 / rate_per_pub);
                        tokio::time::sleep_until(due).await;
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                    let id = m.id as usize;
                    t.state[id].fetch_or(SENT, Relaxed);
                    t.sent.fetch_add(1, Relaxed);
                    let sent_ns = now_ns().max(1);
                    t.sent_ns[id].store(sent_ns, Relaxed);
                    let r = api
                        .http
                        .post(&url)
                        .header(AuthHeaders::DEVICE, dev.clone())
                        .header(AuthHeaders::TIME, m.time)
                        .header(AuthHeaders::SIGNATURE, m.signature)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .body(m.datagram)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            lats.push(((now_ns() - sent_ns) / 1000).min(u32::MAX as u64) as u32);
                            t.state[id].fetch_or(ACCEPTED, Relaxed);
                            t.accepted.fetch_add(1, Relaxed);
                        }
                        Ok(r) => {
                            t.send_errors.fetch_add(1, Relaxed);
                            let status = r.status();
                            let body = r.bytes().await.unwrap_or_default();
                            if shown.fetch_add(1, Relaxed) < 5 {
                                eprintln!("send: {status} {}", String::from_utf8_lossy(&body));
                            }
                        }
                        Err(e) => {
                            t.send_errors.fetch_add(1, Relaxed);
                            t.conn_errors.fetch_add(1, Relaxed);
                            if shown.fetch_add(1, Relaxed) < 5 {
                                eprintln!("send: {}", net::chain(&e));
                            }
                        }
                    }
                }
                lats
            })
        })
        .collect()
}

/// Each publisher's share of a total `rate` (msgs/s; 0 = as fast as possible).
pub(crate) fn rate_per_pub(rate: u64, publishers: usize) -> f64 {
    if rate == 0 {
        0.0
    } else {
        rate as f64 / publishers as f64
    }
}
