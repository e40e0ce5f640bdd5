//! sotto-loadgen: bounded load generator for a running sotto server, in the
//! shapes of work of `shared/tools/mqtt-loadgen` (the Mosquitto baseline).
//!
//! Scenarios (subcommands):
//!   relay   - S subscriber devices hold a WebSocket (`GET /v1/ws`) and ack each
//!             push; P publisher devices send N datagrams (`POST /v1/messages`)
//!             with a B-byte body, round-robin over the subscribers, at most
//!             --inflight requests in flight per publisher; `--rate R` paces
//!             the total at R msgs/s for latency. Reports delivered msgs/s,
//!             latency p50/p99/max from send to push receipt, lost/duplicate/
//!             misrouted counts.
//!   offline - the S subscribers stay offline while P publishers send M
//!             datagrams (each stored durably before its answer); then the
//!             subscribers drain their mailboxes with `GET /v1/mailbox` +
//!             `POST /v1/mailbox/ack`. Reports publish and drain throughput.
//!   idle    - C devices hold an idle WebSocket for --hold seconds; reports
//!             server RSS and CPU.
//!
//! Every device is a real user with a real device certificate and signed
//! prekeys, registered through the API; publishers claim prekey bundles,
//! verify them and start real sessions; every datagram is sealed with
//! sotto-proto. Datagrams are sealed and their requests signed BEFORE the
//! timed phase, so that the timed phase measures the server, not the
//! client's cryptography (push receipt is matched by the SHA-256 of the
//! datagram; subscribers open every received datagram after the timed
//! phase, `--no-verify` skips that).
//!
//! Only loopback targets are accepted; every phase is bounded by a count and
//! a wall-clock limit, and a watchdog ends the process after --max-secs.
//! Output: human lines and one `RESULT key=value ...` line per run.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use sha2::{Digest, Sha256};
use sotto_api::{b64, Ack, AuthHeaders, MailboxBatch, MailboxItem, Push};
use sotto_loadgen::net::{self, Api, CertCheck, Result, Ws};
use sotto_loadgen::sim::{self, SimDevice};
use sotto_loadgen::stats::{
    fmt, now_ns, pct, rss_kb, CpuMeter, RssSampler, Tracker, ACCEPTED, RECEIVED, SENT,
};
use sotto_proto::{content, Payload};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Bytes of the body that identify a message: id u64 | target subscriber u32.
const HDR: usize = 12;
/// Pre-signed requests carry the time they were signed at; the server
/// accepts CLOCK_SKEW_MS (5 min) of difference, so a timed phase may last
/// at most this long.
const MAX_TIMED_SECS: u64 = 240;

#[derive(Parser)]
#[command(about = "Bounded load generator for a running sotto server (loopback only)")]
struct Cli {
    /// The server, https://HOST:PORT; HOST must be a loopback address.
    #[arg(long, default_value = "https://127.0.0.1:7443")]
    server: String,
    /// SHA-256 fingerprint (hex) of the server's TLS certificate, as
    /// `sotto server` prints it: the connection is refused on any other.
    #[arg(long, env = "SOTTO_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Accept any server certificate (the target is loopback-only anyway).
    #[arg(long, conflicts_with = "fingerprint")]
    insecure_loopback: bool,
    /// PID of the server: its RSS (/proc/PID/status) and CPU are sampled.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Start an in-process server with its data in DIR (convenience; built
    /// with `--features spawn-server`). RSS/CPU then include the load
    /// generator itself.
    #[arg(long)]
    spawn_server: Option<std::path::PathBuf>,
    /// Free-form label copied into the RESULT line.
    #[arg(long, default_value = "sotto")]
    label: String,
    /// Prefix of the simulated usernames (random by default: users persist
    /// in the server's database, so each run needs new names).
    #[arg(long)]
    prefix: Option<String>,
    /// Limit for the setup phase (registration, sessions, connections), s.
    #[arg(long, default_value_t = 300)]
    setup_timeout: u64,
    /// Hard limit for the whole process, s: a watchdog exits after it.
    #[arg(long, default_value_t = 1200)]
    max_secs: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// S subscribers on WebSocket, P publishers send N datagrams (saturation, or --rate for latency).
    Relay(RelayArgs),
    /// S subscribers offline while M datagrams are sent; then they drain GET /v1/mailbox + ack.
    Offline(OfflineArgs),
    /// C idle WebSocket connections held for --hold seconds (server RSS and CPU).
    Idle(IdleArgs),
}

#[derive(Args, Clone)]
struct RelayArgs {
    #[arg(short = 'P', long, default_value_t = 4)]
    publishers: usize,
    #[arg(short = 'S', long, default_value_t = 100)]
    subscribers: usize,
    /// Total messages (over all publishers).
    #[arg(short = 'N', long, default_value_t = 100_000)]
    messages: u64,
    /// Body size in bytes (>= 12), sealed in a datagram.
    #[arg(short = 'B', long, default_value_t = 256)]
    bytes: usize,
    /// Target total send rate in msgs/s; 0 = as fast as the server answers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Hard wall-clock limit for the send+deliver phase, seconds.
    #[arg(short = 'T', long, default_value_t = 60)]
    timeout: u64,
    /// Requests in flight per publisher (each on its own HTTP/1.1 connection).
    #[arg(long, default_value_t = 100)]
    inflight: usize,
    /// Do not open the received datagrams after the timed phase.
    #[arg(long)]
    no_verify: bool,
}

#[derive(Args, Clone)]
struct OfflineArgs {
    #[arg(short = 'P', long, default_value_t = 4)]
    publishers: usize,
    #[arg(short = 'S', long, default_value_t = 100)]
    subscribers: usize,
    /// Messages sent while the subscribers are offline (total).
    #[arg(short = 'M', long, default_value_t = 100_000)]
    messages: u64,
    #[arg(short = 'B', long, default_value_t = 256)]
    bytes: usize,
    /// Hard wall-clock limit for each phase (publish, drain), seconds.
    #[arg(short = 'T', long, default_value_t = 60)]
    timeout: u64,
    #[arg(long, default_value_t = 100)]
    inflight: usize,
    /// Mailbox page size (`limit`) when draining.
    #[arg(long, default_value_t = 500)]
    page: usize,
    #[arg(long)]
    no_verify: bool,
}

#[derive(Args, Clone)]
struct IdleArgs {
    /// Number of idle WebSocket connections (one registered device each).
    #[arg(short = 'C', long, default_value_t = 1000)]
    clients: usize,
    /// Seconds to hold the connections after all are up.
    #[arg(long, default_value_t = 5)]
    hold: u64,
    /// Max concurrent connection attempts.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Max concurrent registrations (setup, not measured).
    #[arg(long, default_value_t = 32)]
    register_concurrency: usize,
    /// Hard wall-clock limit for the connect phase, seconds.
    #[arg(short = 'T', long, default_value_t = 60)]
    timeout: u64,
}

struct Ctx {
    api: Api,
    tls: Arc<rustls::ClientConfig>,
    base: String,
    pid: Option<u32>,
    label: String,
    prefix: String,
    setup: Duration,
}

// ---------------------------------------------------------------- setup helpers

async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: not done within {limit:?}")),
    }
}

/// Registers one device per name, `concurrency` at a time, in order.
async fn register_many(
    ctx: &Ctx,
    names: Vec<String>,
    one_time: u32,
    concurrency: usize,
) -> Result<Vec<SimDevice>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut hs = Vec::with_capacity(names.len());
    for name in names {
        let (api, sem) = (ctx.api.clone(), sem.clone());
        hs.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            sim::register(&api, &name, one_time).await
        }));
    }
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// One pre-sealed, pre-signed `POST /v1/messages`.
struct Msg {
    /// Index of this message in its publisher's schedule.
    k: u64,
    id: u32,
    datagram: Vec<u8>,
    time: HeaderValue,
    signature: HeaderValue,
}

struct Sealed {
    device: SimDevice,
    msgs: Vec<Msg>,
    /// (SHA-256 of datagram, id)
    hashes: Vec<([u8; 32], u32)>,
}

/// Target subscriber of the k-th message of publisher p (as mqtt-loadgen).
fn target(k: u64, p: usize, nsub: usize) -> usize {
    ((k + p as u64) % nsub as u64) as usize
}

/// Publishers: start sessions with every subscriber they will send to, then
/// seal and sign their share of ids [p, p+P, p+2P, ...) < n.
async fn prepare_publishers(
    ctx: &Ctx,
    pubs: Vec<SimDevice>,
    subs: &[(
        /*hash*/ [u8; 32],
        sotto_proto::UserPublic,
        sotto_proto::DeviceId,
    )],
    n: u64,
    bytes: usize,
) -> Result<Vec<Sealed>> {
    let npub = pubs.len();
    let nsub = subs.len();
    let subs = Arc::new(subs.to_vec());
    let mut hs = Vec::new();
    for (p, mut dev) in pubs.into_iter().enumerate() {
        let api = ctx.api.clone();
        let subs = subs.clone();
        hs.push(tokio::spawn(async move {
            let share = if (p as u64) < n {
                (n - p as u64).div_ceil(npub as u64)
            } else {
                0
            };
            for k in 0..share.min(nsub as u64) {
                let s = target(k, p, nsub);
                sim::start_session(&api, &mut dev, &subs[s].0, &subs[s].1).await?;
            }
            let time_ms = api.server_now_ms();
            tokio::task::spawn_blocking(move || seal_share(dev, p, npub, &subs, n, bytes, time_ms))
                .await
                .map_err(|e| e.to_string())?
        }));
    }
    let mut out = Vec::new();
    for h in hs {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

fn seal_share(
    mut dev: SimDevice,
    p: usize,
    npub: usize,
    subs: &[([u8; 32], sotto_proto::UserPublic, sotto_proto::DeviceId)],
    n: u64,
    bytes: usize,
    time_ms: u64,
) -> Result<Sealed> {
    let mut rng = OsRng;
    let mut msgs = Vec::new();
    let mut hashes = Vec::new();
    let conversation: [u8; 32] = Sha256::digest(dev.name.as_bytes()).into();
    let (mut k, mut id) = (0u64, p as u64);
    while id < n {
        let s = target(k, p, subs.len());
        let mut body = vec![0u8; bytes];
        body[0..8].copy_from_slice(&id.to_le_bytes());
        body[8..12].copy_from_slice(&(s as u32).to_le_bytes());
        let mut message_id = [0u8; 16];
        rng.fill_bytes(&mut message_id);
        let payload = Payload {
            message_id,
            conversation,
            sender: dev.user,
            sent_at: time_ms,
            ttl: 0,
            content_type: content::TEXT,
            body,
        };
        let datagram = dev
            .device
            .seal(&mut rng, &payload, &[subs[s].2])
            .map_err(|e| format!("seal: {e}"))?;
        let sig = dev.key().sign(&sotto_api::request_signing_bytes(
            "POST",
            "/v1/messages",
            time_ms,
            &datagram,
        ));
        hashes.push((Sha256::digest(&datagram).into(), id as u32));
        msgs.push(Msg {
            k,
            id: id as u32,
            datagram,
            time: HeaderValue::from(time_ms),
            signature: HeaderValue::from_str(&hex::encode(sig)).expect("hex"),
        });
        k += 1;
        id += npub as u64;
    }
    dev.device.take_changes();
    Ok(Sealed {
        device: dev,
        msgs,
        hashes,
    })
}

/// Datagram hash -> message id, and message id -> target subscriber.
struct Index {
    by_hash: HashMap<[u8; 32], u32>,
    target: Vec<u32>,
}

impl Index {
    fn build(sealed: &[Sealed], n: usize, nsub: usize) -> Index {
        let mut by_hash = HashMap::with_capacity(n);
        let mut tgt = vec![u32::MAX; n];
        for (p, s) in sealed.iter().enumerate() {
            for (h, id) in &s.hashes {
                by_hash.insert(*h, *id);
            }
            for m in &s.msgs {
                tgt[m.id as usize] = target(m.k, p, nsub) as u32;
            }
        }
        Index {
            by_hash,
            target: tgt,
        }
    }

    /// Matches a received datagram to its message id.
    fn lookup(&self, datagram: &[u8]) -> Option<(usize, usize)> {
        let h: [u8; 32] = Sha256::digest(datagram).into();
        let id = *self.by_hash.get(&h)? as usize;
        Some((id, self.target[id] as usize))
    }
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
    let url = format!("{}/v1/messages", api.base);
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

/// What a subscriber brings back.
#[derive(Default)]
struct SubOut {
    lats: Vec<u32>,
    /// (id, datagram), kept for opening after the timed phase.
    got: Vec<(u32, Vec<u8>)>,
    acked: u64,
    prekeys_low: u64,
    reconnects: u64,
}

/// Matches one mailbox item (pushed, or fetched after a reconnect).
fn on_item(
    item: &MailboxItem,
    sub: usize,
    index: &Index,
    t: &Tracker,
    keep: bool,
    fetched: bool,
    out: &mut SubOut,
) {
    match b64::decode(&item.datagram).and_then(|d| index.lookup(&d).map(|x| (x, d))) {
        Some(((id, target), d)) => {
            if (fetched || out.reconnects > 0) && t.state[id].load(Relaxed) & RECEIVED != 0 {
                // around a reconnect: pushed before the socket was dropped
                // but not acknowledged, or fetched and pushed both
                t.redelivered.fetch_add(1, Relaxed);
                return;
            }
            if let Some(l) = t.on_receive(id, sub, target) {
                out.lats.push(l);
                if keep {
                    out.got.push((id as u32, d));
                }
            }
        }
        None => {
            t.malformed.fetch_add(1, Relaxed);
        }
    }
}

/// Handles one push frame; returns the seq to acknowledge.
fn on_frame(
    text: &str,
    sub: usize,
    index: &Index,
    t: &Tracker,
    keep: bool,
    out: &mut SubOut,
) -> Option<u64> {
    match serde_json::from_str::<Push>(text) {
        Ok(Push::Message(item)) => {
            on_item(&item, sub, index, t, keep, false, out);
            Some(item.seq)
        }
        Ok(Push::PrekeysLow(_)) => {
            out.prekeys_low += 1;
            None
        }
        Err(_) => {
            t.malformed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Everything a subscriber needs to (re)connect.
#[derive(Clone)]
struct Conn {
    api: Api,
    tls: Arc<rustls::ClientConfig>,
    index: Arc<Index>,
    t: Arc<Tracker>,
    keep: bool,
}

/// A subscriber's WebSocket: every push is matched, and acknowledged on the
/// socket (one `Ack` frame for all the pushes that were ready together). If
/// the server drops the socket (it does so to a device that falls behind),
/// the subscriber does what a client does: reconnects, then fetches what is
/// pending with `GET /v1/mailbox` and acknowledges it.
fn spawn_subscriber(
    c: Conn,
    key: sotto_proto::DeviceKey,
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
                            if let Some(seq) = on_frame(&s, sub, &c.index, &c.t, c.keep, &mut out) {
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
                    let ack = serde_json::to_string(&Ack {
                        seqs: std::mem::take(&mut seqs),
                    })
                    .expect("json");
                    out.acked += 1;
                    if ws.send(Message::Text(ack)).await.is_err() {
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
            let mut after = 0u64;
            for _ in 0..1000 {
                let path = format!("/v1/mailbox?after={after}&limit=500");
                let batch: MailboxBatch =
                    match c.api.json(&key, Method::GET, &path, None::<&()>).await {
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
                    on_item(it, sub, &c.index, &c.t, c.keep, true, &mut out);
                }
                if !fetched.is_empty() {
                    let ack = serde_json::to_string(&Ack { seqs: fetched }).expect("json");
                    out.acked += 1;
                    let _ = ws.send(Message::Text(ack)).await;
                }
                if !batch.more || batch.items.is_empty() {
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        out
    })
}

async fn connect_all(ctx: &Ctx, devs: &[SimDevice], concurrency: usize) -> Result<Vec<Ws>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut hs = Vec::new();
    for d in devs {
        let key = sotto_proto::DeviceKey::from_bytes(&d.key().to_bytes());
        let (api, tls, sem) = (ctx.api.clone(), ctx.tls.clone(), sem.clone());
        hs.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            api.websocket(&key, tls).await
        }));
    }
    let mut out = Vec::new();
    for h in hs {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
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

/// Items still pending in each subscriber's mailbox: (received but still
/// unacknowledged, never received).
async fn mailbox_left(ctx: &Ctx, subs: &[SimDevice], index: &Index, t: &Tracker) -> (u64, u64) {
    let (mut unacked, mut unseen) = (0, 0);
    for d in subs {
        let mut after = 0u64;
        for _ in 0..100 {
            let path = format!("/v1/mailbox?after={after}&limit=1000");
            let Ok(b) = ctx
                .api
                .json::<MailboxBatch>(d.key(), Method::GET, &path, None::<&()>)
                .await
            else {
                break;
            };
            for it in &b.items {
                after = after.max(it.seq);
                let seen = b64::decode(&it.datagram)
                    .and_then(|dg| index.lookup(&dg))
                    .map(|(id, _)| t.state[id].load(Relaxed) & RECEIVED != 0)
                    .unwrap_or(false);
                if seen {
                    unacked += 1
                } else {
                    unseen += 1
                }
            }
            if !b.more || b.items.is_empty() {
                break;
            }
        }
    }
    (unacked, unseen)
}

fn sub_keys(subs: &[SimDevice]) -> Vec<([u8; 32], sotto_proto::UserPublic, sotto_proto::DeviceId)> {
    subs.iter()
        .map(|s| (s.username_hash, s.user, s.id()))
        .collect()
}

fn datagram_len(sealed: &[Sealed]) -> usize {
    sealed
        .iter()
        .find_map(|s| s.msgs.first())
        .map(|m| m.datagram.len())
        .unwrap_or(0)
}

/// Registers subscribers and publishers, starts the sessions and seals.
async fn setup_devices(
    ctx: &Ctx,
    npub: usize,
    nsub: usize,
    n: u64,
    bytes: usize,
) -> Result<(Vec<SimDevice>, Vec<Sealed>, Arc<Index>)> {
    let t0 = Instant::now();
    // each publisher claims one prekey of each subscriber
    let sub_names = (0..nsub)
        .map(|s| format!("{}-sub-{s}", ctx.prefix))
        .collect();
    let subs = register_many(ctx, sub_names, npub as u32 + 1, 32).await?;
    let pub_names = (0..npub)
        .map(|p| format!("{}-pub-{p}", ctx.prefix))
        .collect();
    let pubs = register_many(ctx, pub_names, 1, 32).await?;
    println!(
        "setup: {nsub} subscribers + {npub} publishers registered in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    let sealed = prepare_publishers(ctx, pubs, &sub_keys(&subs), n, bytes).await?;
    let index = Arc::new(Index::build(&sealed, n as usize, nsub));
    println!(
        "setup: sessions started, {n} datagrams sealed and requests signed in {:.1}s ({} B datagram for a {bytes} B body)",
        t1.elapsed().as_secs_f64(),
        datagram_len(&sealed)
    );
    Ok((subs, sealed, index))
}

fn start_publishers(
    ctx: &Ctx,
    sealed: &mut [Sealed],
    inflight: usize,
    rate: u64,
    deadline: Instant,
    t: &Arc<Tracker>,
    pub_apis: &[Api],
) -> Vec<JoinHandle<Vec<u32>>> {
    let rate_per_pub = if rate == 0 {
        0.0
    } else {
        rate as f64 / sealed.len() as f64
    };
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
    let _ = ctx;
    hs
}

/// One HTTP client (connection pool) per publisher, connections opened
/// before the timed phase.
async fn publisher_clients(ctx: &Ctx, npub: usize, inflight: usize) -> Result<Vec<Api>> {
    let mut out = Vec::new();
    for _ in 0..npub {
        let mut api = Api::new(&ctx.base, ctx.tls.clone(), inflight)?;
        api.clock_offset_ms = ctx.api.clock_offset_ms;
        api.warm_up(inflight).await?;
        out.push(api);
    }
    Ok(out)
}

// ---------------------------------------------------------------- relay

async fn relay(ctx: &Ctx, a: &RelayArgs) -> Result<()> {
    if a.bytes < HDR {
        return Err(format!("--bytes must be >= {HDR}"));
    }
    if a.timeout > MAX_TIMED_SECS {
        return Err(format!(
            "-T must be <= {MAX_TIMED_SECS} (requests are signed before the timed phase)"
        ));
    }
    if a.publishers == 0 || a.subscribers == 0 {
        return Err("need at least one publisher and one subscriber".into());
    }
    let n = a.messages as usize;
    let t = Tracker::new(n);
    let rss_idle = rss_kb(ctx.pid);
    let (subs, mut sealed, index) = bounded(
        ctx.setup,
        "setup",
        setup_devices(ctx, a.publishers, a.subscribers, a.messages, a.bytes),
    )
    .await?;
    let dg_len = datagram_len(&sealed);
    let keep = !a.no_verify;

    let (stop_tx, stop_rx) = watch::channel(false);
    let wss = bounded(
        ctx.setup,
        "subscriber connections",
        connect_all(ctx, &subs, 100),
    )
    .await?;
    let conn = Conn {
        api: ctx.api.clone(),
        tls: ctx.tls.clone(),
        index: index.clone(),
        t: t.clone(),
        keep,
    };
    let sub_h: Vec<_> = wss
        .into_iter()
        .enumerate()
        .map(|(s, ws)| {
            let key = sotto_proto::DeviceKey::from_bytes(&subs[s].key().to_bytes());
            spawn_subscriber(conn.clone(), key, ws, s, stop_rx.clone())
        })
        .collect();
    let pub_apis = bounded(
        ctx.setup,
        "publisher connections",
        publisher_clients(ctx, a.publishers, a.inflight),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "relay: {} subs (WebSocket) + {} pubs ({} connections each) connected; sending {} x {} B body ({} B datagram), rate {}",
        a.subscribers,
        a.publishers,
        a.inflight,
        a.messages,
        a.bytes,
        dg_len,
        if a.rate == 0 { "max".to_string() } else { format!("{}/s", a.rate) }
    );

    let rss = RssSampler::start(ctx.pid);
    let cpu = CpuMeter::start(ctx.pid);
    let t_start_ns = now_ns();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let ph = start_publishers(
        ctx,
        &mut sealed,
        a.inflight,
        a.rate,
        deadline,
        &t,
        &pub_apis,
    );
    let mut last_print = Instant::now();
    loop {
        let all_sent = ph.iter().all(|h| h.is_finished());
        let recv = t.received.load(Relaxed);
        if all_sent && recv >= t.accepted.load(Relaxed) {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("relay: timeout reached ({}s)", a.timeout);
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "  .. sent {} accepted {} received {}",
                t.sent.load(Relaxed),
                t.accepted.load(Relaxed),
                recv
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end_ns = t.last_rx_ns.load(Relaxed).max(t_start_ns + 1);
    let (scpu, ccpu) = cpu.stop();
    let mut send_lats = Vec::new();
    for h in ph {
        if h.is_finished() {
            send_lats.extend(h.await.unwrap_or_default());
        } else {
            h.abort();
        }
    }
    send_lats.sort_unstable();
    tokio::time::sleep(Duration::from_millis(300)).await; // late duplicates, acks
    let rss_peak = rss.finish().await;
    let rss_loaded = rss_kb(ctx.pid);
    let (unacked_left, never_pushed) = bounded(ctx.setup, "mailbox check", async {
        Ok(mailbox_left(ctx, &subs, &index, &t).await)
    })
    .await?;
    let _ = stop_tx.send(true);
    let mut outs = Vec::new();
    for h in sub_h {
        if let Ok(Ok(o)) = tokio::time::timeout(Duration::from_secs(10), h).await {
            outs.push(o);
        }
    }
    let mut lats: Vec<u32> = outs.iter().flat_map(|o| o.lats.iter().copied()).collect();
    lats.sort_unstable();
    let prekeys_low: u64 = outs.iter().map(|o| o.prekeys_low).sum();
    let reconnects: u64 = outs.iter().map(|o| o.reconnects).sum();
    let (opened, open_failed) = if keep && outs.len() == subs.len() {
        let got = outs.into_iter().map(|o| o.got).collect();
        verify_opened(subs, got).await
    } else {
        (0, 0)
    };

    let recv = t.received.load(Relaxed);
    let secs = (end_ns - t_start_ns) as f64 / 1e9;
    let mps = recv as f64 / secs;
    println!(
        "RESULT label={} scenario=relay P={} S={} N={} B={} rate={} datagram_B={} published={} acked={} received={} lost={} dup={} misrouted={} malformed={} send_errors={} conn_errors={} unacked_left={} never_pushed={} reconnects={} redelivered={} opened={} open_failed={} secs={:.3} msgs_per_s={:.0} MBps={:.2} p50_ms={} p99_ms={} max_ms={} send_p50_ms={} send_p99_ms={} rss_idle_kb={} rss_peak_kb={} rss_after_kb={} server_cpu={} client_cpu={} prekeys_low={}",
        ctx.label,
        a.publishers,
        a.subscribers,
        a.messages,
        a.bytes,
        a.rate,
        dg_len,
        t.sent.load(Relaxed),
        t.accepted.load(Relaxed),
        recv,
        t.lost(),
        t.dups.load(Relaxed),
        t.misrouted.load(Relaxed),
        t.malformed.load(Relaxed),
        t.send_errors.load(Relaxed),
        t.conn_errors.load(Relaxed),
        unacked_left,
        never_pushed,
        reconnects,
        t.redelivered.load(Relaxed),
        opened,
        open_failed,
        secs,
        mps,
        mps * a.bytes as f64 / 1e6,
        fmt(pct(&lats, 0.50)),
        fmt(pct(&lats, 0.99)),
        fmt(lats.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN)),
        fmt(pct(&send_lats, 0.50)),
        fmt(pct(&send_lats, 0.99)),
        rss_idle.unwrap_or(0),
        rss_peak,
        rss_loaded.unwrap_or(0),
        fmt(scpu),
        fmt(ccpu),
        prekeys_low,
    );
    Ok(())
}

// ---------------------------------------------------------------- offline

/// Drains one subscriber's mailbox: fetch a page, acknowledge it (the ack
/// runs while the next page is fetched), until nothing more waits.
#[allow(clippy::too_many_arguments)]
async fn drain_one(
    api: Api,
    key: sotto_proto::DeviceKey,
    sub: usize,
    page: usize,
    index: Arc<Index>,
    t: Arc<Tracker>,
    keep: bool,
    deadline: Instant,
    ack_done_ns: Arc<AtomicU64>,
) -> Result<SubOut> {
    let key = Arc::new(key);
    let mut out = SubOut::default();
    let mut after = 0u64;
    let mut acks: Vec<JoinHandle<Result<()>>> = Vec::new();
    while Instant::now() < deadline {
        let path = format!("/v1/mailbox?after={after}&limit={page}");
        let batch: MailboxBatch = api.json(&key, Method::GET, &path, None::<&()>).await?;
        let mut seqs = Vec::with_capacity(batch.items.len());
        for it in &batch.items {
            after = after.max(it.seq);
            seqs.push(it.seq);
            match b64::decode(&it.datagram).and_then(|d| index.lookup(&d).map(|x| (x, d))) {
                Some(((id, target), d)) => {
                    if t.on_receive(id, sub, target).is_some() && keep {
                        out.got.push((id as u32, d));
                    }
                }
                None => {
                    t.malformed.fetch_add(1, Relaxed);
                }
            }
        }
        if !seqs.is_empty() {
            let (api, key, done) = (api.clone(), key.clone(), ack_done_ns.clone());
            out.acked += 1;
            acks.push(tokio::spawn(async move {
                let _: serde_json::Value = api
                    .json(&key, Method::POST, "/v1/mailbox/ack", Some(&Ack { seqs }))
                    .await?;
                done.fetch_max(now_ns(), Relaxed);
                Ok(())
            }));
        }
        if !batch.more || batch.items.is_empty() {
            break;
        }
    }
    for a in acks {
        a.await.map_err(|e| e.to_string())??;
    }
    Ok(out)
}

async fn offline(ctx: &Ctx, a: &OfflineArgs) -> Result<()> {
    if a.bytes < HDR {
        return Err(format!("--bytes must be >= {HDR}"));
    }
    if a.timeout > MAX_TIMED_SECS {
        return Err(format!(
            "-T must be <= {MAX_TIMED_SECS} (requests are signed before the timed phase)"
        ));
    }
    if a.publishers == 0 || a.subscribers == 0 {
        return Err("need at least one publisher and one subscriber".into());
    }
    let n = a.messages as usize;
    let t = Tracker::new(n);
    let rss_idle = rss_kb(ctx.pid);
    let limit = Duration::from_secs(a.timeout);
    let (subs, mut sealed, index) = bounded(
        ctx.setup,
        "setup",
        setup_devices(ctx, a.publishers, a.subscribers, a.messages, a.bytes),
    )
    .await?;
    let dg_len = datagram_len(&sealed);
    let keep = !a.no_verify;
    let pub_apis = bounded(
        ctx.setup,
        "publisher connections",
        publisher_clients(ctx, a.publishers, a.inflight),
    )
    .await?;
    println!(
        "offline: {} subscribers offline; sending {} x {} B body ({} B datagram)",
        a.subscribers, n, a.bytes, dg_len
    );

    // phase 1: send while the subscribers are offline
    let rss_s = RssSampler::start(ctx.pid);
    let cpu = CpuMeter::start(ctx.pid);
    let t0 = Instant::now();
    let ph = start_publishers(ctx, &mut sealed, a.inflight, 0, t0 + limit, &t, &pub_apis);
    let mut send_lats = Vec::new();
    for h in ph {
        if let Ok(Ok(v)) =
            tokio::time::timeout_at((t0 + limit + Duration::from_secs(5)).into(), h).await
        {
            send_lats.extend(v);
        }
    }
    send_lats.sort_unstable();
    let pub_secs = t0.elapsed().as_secs_f64();
    let (pub_scpu, _) = cpu.stop();
    drop(pub_apis);
    let published = t.sent.load(Relaxed);
    let accepted = t.accepted.load(Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_queued = rss_kb(ctx.pid);
    println!(
        "offline: sent {published} (accepted, durable: {accepted}) in {pub_secs:.3}s; server RSS with queue {} kB",
        rss_queued.unwrap_or(0)
    );

    // phase 2: drain with GET /v1/mailbox + POST /v1/mailbox/ack
    let mut drain_api = Api::new(&ctx.base, ctx.tls.clone(), 2 * a.subscribers)?;
    drain_api.clock_offset_ms = ctx.api.clock_offset_ms;
    drain_api.warm_up(a.subscribers).await?;
    let cpu = CpuMeter::start(ctx.pid);
    let t1_ns = now_ns();
    let t1 = Instant::now();
    let deadline = t1 + limit;
    let ack_done = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for (s, d) in subs.iter().enumerate() {
        let key = sotto_proto::DeviceKey::from_bytes(&d.key().to_bytes());
        hs.push(tokio::spawn(drain_one(
            drain_api.clone(),
            key,
            s,
            a.page,
            index.clone(),
            t.clone(),
            keep,
            deadline,
            ack_done.clone(),
        )));
    }
    let mut outs = Vec::new();
    let mut drain_errors = 0u64;
    for h in hs {
        match tokio::time::timeout_at((deadline + Duration::from_secs(5)).into(), h).await {
            Ok(Ok(Ok(o))) => outs.push(o),
            Ok(Ok(Err(e))) => {
                drain_errors += 1;
                if drain_errors <= 3 {
                    eprintln!("drain: {e}");
                }
            }
            _ => drain_errors += 1,
        }
    }
    let drain_secs = (t.last_rx_ns.load(Relaxed).max(t1_ns + 1) - t1_ns) as f64 / 1e9;
    let ack_secs = (ack_done.load(Relaxed).max(t1_ns + 1) - t1_ns) as f64 / 1e9;
    let (drain_scpu, ccpu) = cpu.stop();
    if Instant::now() >= deadline {
        eprintln!("offline: drain timeout reached ({}s)", a.timeout);
    }
    let rss_peak = rss_s.finish().await;
    let (unacked_left, never_fetched) = mailbox_left(ctx, &subs, &index, &t).await;
    let rss_after = rss_kb(ctx.pid);
    let (opened, open_failed) = if keep && outs.len() == subs.len() {
        let got = outs.into_iter().map(|o| o.got).collect();
        verify_opened(subs, got).await
    } else {
        (0, 0)
    };
    let recv = t.received.load(Relaxed);
    println!(
        "RESULT label={} scenario=offline P={} S={} N={} B={} datagram_B={} published={} acked={} received={} lost={} dup={} misrouted={} malformed={} send_errors={} conn_errors={} drain_errors={} unacked_left={} never_fetched={} opened={} open_failed={} publish_secs={:.3} publish_msgs_per_s={:.0} secs={:.3} msgs_per_s={:.0} ack_secs={:.3} p50_ms=NA p99_ms=NA max_ms=NA send_p50_ms={} send_p99_ms={} rss_idle_kb={} rss_queued_kb={} rss_peak_kb={} rss_after_kb={} server_cpu={} server_cpu_publish={} client_cpu={}",
        ctx.label,
        a.publishers,
        a.subscribers,
        a.messages,
        a.bytes,
        dg_len,
        published,
        accepted,
        recv,
        t.lost(),
        t.dups.load(Relaxed),
        t.misrouted.load(Relaxed),
        t.malformed.load(Relaxed),
        t.send_errors.load(Relaxed),
        t.conn_errors.load(Relaxed),
        drain_errors,
        unacked_left,
        never_fetched,
        opened,
        open_failed,
        pub_secs,
        published as f64 / pub_secs,
        drain_secs,
        recv as f64 / drain_secs,
        ack_secs,
        fmt(pct(&send_lats, 0.50)),
        fmt(pct(&send_lats, 0.99)),
        rss_idle.unwrap_or(0),
        rss_queued.unwrap_or(0),
        rss_peak,
        rss_after.unwrap_or(0),
        fmt(drain_scpu),
        fmt(pub_scpu),
        fmt(ccpu)
    );
    Ok(())
}

// ---------------------------------------------------------------- idle

async fn idle(ctx: &Ctx, a: &IdleArgs) -> Result<()> {
    let t = Tracker::new(0);
    let t0 = Instant::now();
    let names = (0..a.clients)
        .map(|i| format!("{}-idle-{i}", ctx.prefix))
        .collect();
    let devs = bounded(
        ctx.setup,
        "registration",
        register_many(ctx, names, 1, a.register_concurrency),
    )
    .await?;
    println!(
        "idle: {} devices registered in {:.1}s",
        a.clients,
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kb(ctx.pid);

    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let up = Arc::new(AtomicU64::new(0));
    let t1 = Instant::now();
    let limit = Duration::from_secs(a.timeout);
    let mut hs = Vec::with_capacity(a.clients);
    for d in &devs {
        let key = sotto_proto::DeviceKey::from_bytes(&d.key().to_bytes());
        let (api, tls, sem, up, t, mut stop) = (
            ctx.api.clone(),
            ctx.tls.clone(),
            sem.clone(),
            up.clone(),
            t.clone(),
            stop_rx.clone(),
        );
        hs.push(tokio::spawn(async move {
            let ws = {
                let _p = sem.acquire_owned().await;
                match tokio::time::timeout(limit, api.websocket(&key, tls)).await {
                    Ok(Ok(ws)) => ws,
                    Ok(Err(e)) => {
                        if t.conn_errors.fetch_add(1, Relaxed) < 3 {
                            eprintln!("idle: {e}");
                        }
                        return;
                    }
                    Err(_) => {
                        t.conn_errors.fetch_add(1, Relaxed);
                        return;
                    }
                }
            };
            up.fetch_add(1, Relaxed);
            let mut ws = ws;
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            if !*stop.borrow() { t.conn_errors.fetch_add(1, Relaxed); }
                            return;
                        }
                        _ => {}
                    },
                    _ = stop.changed() => break,
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
        }));
    }
    while (up.load(Relaxed) + t.conn_errors.load(Relaxed)) < a.clients as u64
        && t1.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_secs = t1.elapsed().as_secs_f64();
    let ok = up.load(Relaxed) == a.clients as u64;
    println!(
        "idle: {} of {} WebSocket connections up in {connect_secs:.1}s",
        up.load(Relaxed),
        a.clients
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_conn = rss_kb(ctx.pid);
    let cpu = CpuMeter::start(ctx.pid);
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let (scpu, _) = cpu.stop();
    let rss_hold = rss_kb(ctx.pid);
    let still_up = up.load(Relaxed) - hs.iter().filter(|h| h.is_finished()).count() as u64;
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for h in hs {
        let ab = h.abort_handle();
        if tokio::time::timeout_at(deadline, h).await.is_err() {
            ab.abort();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kb(ctx.pid);
    let per_client = match (rss_before, rss_hold) {
        (Some(b), Some(h)) if a.clients > 0 => (h as f64 - b as f64) / a.clients as f64,
        _ => f64::NAN,
    };
    println!(
        "RESULT label={} scenario=idle C={} all_connected={} still_up={} connect_secs={:.3} conn_errors={} rss_idle_kb={} rss_connected_kb={} rss_hold_kb={} rss_after_kb={} kb_per_client={} server_cpu_idle={}",
        ctx.label,
        a.clients,
        ok,
        still_up,
        connect_secs,
        t.conn_errors.load(Relaxed),
        rss_before.unwrap_or(0),
        rss_conn.unwrap_or(0),
        rss_hold.unwrap_or(0),
        rss_after.unwrap_or(0),
        fmt(per_client),
        fmt(scpu)
    );
    Ok(())
}

// ---------------------------------------------------------------- main

#[cfg(feature = "spawn-server")]
async fn spawn_server(dir: &std::path::Path) -> Result<(String, [u8; 32])> {
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let running = sotto_server::start(sotto_server::Config::new(addr, dir.to_path_buf()))
        .await
        .map_err(|e| format!("spawn server: {e}"))?;
    let url = format!("https://{}", running.addr);
    let fp = net::parse_fingerprint(&running.fingerprint.to_string())?;
    println!("spawned in-process server at {url}");
    std::mem::forget(running);
    Ok((url, fp))
}

#[cfg(not(feature = "spawn-server"))]
async fn spawn_server(_dir: &std::path::Path) -> Result<(String, [u8; 32])> {
    Err("--spawn-server needs a build with `--features spawn-server`".into())
}

async fn run(cli: Cli) -> Result<()> {
    let (base, check) = match &cli.spawn_server {
        Some(dir) => {
            let (url, fp) = spawn_server(dir).await?;
            (url, CertCheck::Pinned(fp))
        }
        None => {
            let check = match (&cli.fingerprint, cli.insecure_loopback) {
                (Some(fp), _) => CertCheck::Pinned(net::parse_fingerprint(fp)?),
                (None, true) => CertCheck::AnyOnLoopback,
                (None, false) => return Err(
                    "give --fingerprint HEX (as `sotto server` prints it) or --insecure-loopback"
                        .into(),
                ),
            };
            (cli.server.trim_end_matches('/').to_string(), check)
        }
    };
    let (host, port) = net::parse_server(&base)?;
    net::check_loopback(&host, port)?;
    let tls = net::tls_config(check)?;
    let mut api = Api::new(&base, tls.clone(), 256)?;
    api.sync_clock().await?;
    let pid = if cli.spawn_server.is_some() {
        cli.server_pid.or(Some(std::process::id()))
    } else {
        cli.server_pid
    };
    let prefix = cli
        .prefix
        .clone()
        .unwrap_or_else(|| format!("lg{:08x}", OsRng.next_u32()));
    let ctx = Ctx {
        api,
        tls,
        base,
        pid,
        label: cli.label.clone(),
        prefix,
        setup: Duration::from_secs(cli.setup_timeout),
    };
    match &cli.cmd {
        Cmd::Relay(a) => relay(&ctx, a).await,
        Cmd::Offline(a) => offline(&ctx, a).await,
        Cmd::Idle(a) => idle(&ctx, a).await,
    }
}

fn main() {
    now_ns();
    let cli = Cli::parse();
    let max = Duration::from_secs(cli.max_secs);
    std::thread::spawn(move || {
        std::thread::sleep(max);
        eprintln!("error: --max-secs ({}s) reached, exiting", max.as_secs());
        std::process::exit(3);
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    // do not wait for lingering connections
    std::process::exit(0);
}
