//! Setup before a timed phase: registering the simulated devices, starting
//! the publishers' sessions, and sealing and signing every datagram ahead of
//! time, so that the timed phase measures the server, not the client's
//! cryptography.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use reqwest::header::HeaderValue;
use sha2::{Digest, Sha256};
use sotto_loadgen::net::{Api, Result};
use sotto_loadgen::sim::{self, SimDevice};
use sotto_loadgen::stats::{rss_kb, Tracker};
use sotto_proto::{content, DeviceId, Payload, UserPublic};
use tokio::sync::Semaphore;

use crate::index::Index;

/// Bytes of the body that identify a message: id u64 | target subscriber u32.
pub const HDR: usize = 12;
/// Pre-signed requests carry the time they were signed at; the server
/// accepts CLOCK_SKEW_MS (5 min) of difference, so a timed phase may last
/// at most this long.
pub const MAX_TIMED_SECS: u64 = 240;

/// What every scenario runs with.
#[derive(Clone)]
pub struct Ctx {
    /// The first node's API ([`Ctx::node`] spreads devices over all).
    pub api: Api,
    pub tls: Arc<rustls::ClientConfig>,
    /// The first node's URL.
    pub base: String,
    /// One API per `--server` (nodes sharing one database and certificate).
    pub nodes: Vec<Api>,
    /// The server processes (`--server-pid`, one per node): their RSS and
    /// CPU are summed.
    pub pids: Vec<u32>,
    pub label: String,
    pub prefix: String,
    pub setup: Duration,
}

impl Ctx {
    /// The node the `i`-th device of a role uses: round-robin over the
    /// `--server` URLs.
    pub fn node(&self, i: usize) -> &Api {
        &self.nodes[i % self.nodes.len()]
    }

    /// This context aimed at the node of the `i`-th device (its `api` and
    /// `base`), for code that talks to one node.
    pub fn on_node(&self, i: usize) -> Ctx {
        let api = self.node(i).clone();
        Ctx {
            base: api.base.clone(),
            api,
            ..self.clone()
        }
    }
}

/// Runs `f`, failing with "`what`: not done within ..." after `limit`.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: not done within {limit:?}")),
    }
}

/// Awaits spawned tasks in order, failing on the first error.
pub async fn join_all<T>(hs: Vec<tokio::task::JoinHandle<Result<T>>>) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(hs.len());
    for h in hs {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Registers one device per name, `concurrency` at a time, in order; the
/// `i`-th through the node it will use ([`Ctx::node`]).
pub async fn register_many(
    ctx: &Ctx,
    names: Vec<String>,
    one_time: u32,
    concurrency: usize,
) -> Result<Vec<SimDevice>> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut hs = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        let (api, sem) = (ctx.node(i).clone(), sem.clone());
        hs.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            sim::register(&api, &name, one_time).await
        }));
    }
    join_all(hs).await
}

/// One pre-sealed, pre-signed `POST /v1/messages`.
pub struct Msg {
    /// Index of this message in its publisher's schedule.
    pub k: u64,
    pub id: u32,
    pub datagram: Vec<u8>,
    pub time: HeaderValue,
    pub signature: HeaderValue,
}

/// A publisher with its share of the messages, ready to send.
pub struct Sealed {
    pub device: SimDevice,
    pub msgs: Vec<Msg>,
    /// (SHA-256 of datagram, id)
    pub hashes: Vec<([u8; 32], u32)>,
}

/// What a publisher needs to know of a subscriber: (username hash, user, device).
type SubKey = ([u8; 32], UserPublic, DeviceId);

/// Target subscriber of the k-th message of publisher p (as mqtt-loadgen).
pub fn target(k: u64, p: usize, nsub: usize) -> usize {
    ((k + p as u64) % nsub as u64) as usize
}

/// Publishers: start sessions with every subscriber they will send to, then
/// seal and sign their share of ids [p, p+P, p+2P, ...) < n.
async fn prepare_publishers(
    ctx: &Ctx,
    pubs: Vec<SimDevice>,
    subs: &[SubKey],
    n: u64,
    bytes: usize,
) -> Result<Vec<Sealed>> {
    let npub = pubs.len();
    let nsub = subs.len();
    let subs = Arc::new(subs.to_vec());
    let mut hs = Vec::new();
    for (p, mut dev) in pubs.into_iter().enumerate() {
        let api = ctx.node(p).clone();
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
    join_all(hs).await
}

fn seal_share(
    mut dev: SimDevice,
    p: usize,
    npub: usize,
    subs: &[SubKey],
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
            sotto_api::paths::MESSAGES,
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

fn datagram_len(sealed: &[Sealed]) -> usize {
    sealed
        .iter()
        .find_map(|s| s.msgs.first())
        .map(|m| m.datagram.len())
        .unwrap_or(0)
}

/// The shape of a publish/subscribe run (relay and offline).
pub struct Shape {
    pub publishers: usize,
    pub subscribers: usize,
    pub messages: u64,
    pub bytes: usize,
    /// -T, seconds.
    pub timeout: u64,
}

impl Shape {
    pub fn new(
        publishers: usize,
        subscribers: usize,
        messages: u64,
        bytes: usize,
        timeout: u64,
    ) -> Shape {
        Shape {
            publishers,
            subscribers,
            messages,
            bytes,
            timeout,
        }
    }
}

/// Everything a publish/subscribe run starts its timed phase with.
pub struct Traffic {
    pub t: Arc<Tracker>,
    /// Server RSS before setup, kB.
    pub rss_idle: Option<u64>,
    pub subs: Vec<SimDevice>,
    pub sealed: Vec<Sealed>,
    pub index: Arc<Index>,
    /// Size of one sealed datagram, bytes.
    pub dg_len: usize,
}

/// Checks the shape, then registers subscribers and publishers, starts the
/// sessions and seals every message (bounded by --setup-timeout).
pub async fn prepare_traffic(ctx: &Ctx, shape: &Shape) -> Result<Traffic> {
    if shape.bytes < HDR {
        return Err(format!("--bytes must be >= {HDR}"));
    }
    if shape.timeout > MAX_TIMED_SECS {
        return Err(format!(
            "-T must be <= {MAX_TIMED_SECS} (requests are signed before the timed phase)"
        ));
    }
    if shape.publishers == 0 || shape.subscribers == 0 {
        return Err("need at least one publisher and one subscriber".into());
    }
    let t = Tracker::new(shape.messages as usize);
    let rss_idle = rss_kb(&ctx.pids);
    let (subs, sealed, index) = bounded(ctx.setup, "setup", setup_devices(ctx, shape)).await?;
    let dg_len = datagram_len(&sealed);
    Ok(Traffic {
        t,
        rss_idle,
        subs,
        sealed,
        index,
        dg_len,
    })
}

/// Registers subscribers and publishers, starts the sessions and seals.
async fn setup_devices(
    ctx: &Ctx,
    shape: &Shape,
) -> Result<(Vec<SimDevice>, Vec<Sealed>, Arc<Index>)> {
    let (npub, nsub, n, bytes) = (
        shape.publishers,
        shape.subscribers,
        shape.messages,
        shape.bytes,
    );
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
    let sub_keys: Vec<SubKey> = subs
        .iter()
        .map(|s| (s.username_hash, s.user, s.id()))
        .collect();
    let sealed = prepare_publishers(ctx, pubs, &sub_keys, n, bytes).await?;
    let index = Arc::new(Index::build(&sealed, n as usize, nsub));
    println!(
        "setup: sessions started, {n} datagrams sealed and requests signed in {:.1}s ({} B datagram for a {bytes} B body)",
        t1.elapsed().as_secs_f64(),
        datagram_len(&sealed)
    );
    Ok((subs, sealed, index))
}

/// One HTTP client per publisher, the `p`-th on its node ([`Ctx::node`]),
/// connections opened before the timed phase.
pub async fn publisher_clients(ctx: &Ctx, npub: usize, inflight: usize) -> Result<Vec<Api>> {
    let mut out = Vec::with_capacity(npub);
    for p in 0..npub {
        out.extend(crate::publish::connect_publishers(&ctx.on_node(p), 1, inflight).await?);
    }
    Ok(out)
}

/// An owned copy of a device's signing key (for a spawned task).
pub fn key_of(d: &SimDevice) -> sotto_proto::DeviceKey {
    sotto_proto::DeviceKey::from_bytes(&d.key().to_bytes())
}
