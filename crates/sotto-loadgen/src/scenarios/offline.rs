//! offline: the S subscribers stay offline while P publishers send M
//! datagrams (each stored durably before its answer); then the subscribers
//! drain their mailboxes with `GET /v1/mailbox` + `POST /v1/mailbox/ack`.
//! Reports publish and drain throughput.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use sotto_api::Ack;
use sotto_loadgen::net::{Api, Result};
use sotto_loadgen::stats::{now_ns, rss_kb, CpuMeter, RssSampler, Tracker};
use sotto_proto::DeviceKey;
use tokio::task::JoinHandle;

use crate::index::Index;
use crate::mailbox::{fetch_page, mailbox_left, more_after};
use crate::publish::{warm_client, Publishers, SendOver};
use crate::receive::{open_received, SubOut};
use crate::report::ResultLine;
use crate::setup::{key_of, prepare_traffic, Ctx, Shape};

#[derive(Args, Clone)]
pub struct OfflineArgs {
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
    /// How publishers send: frames on their WebSocket, or HTTP requests.
    #[arg(long, value_enum, default_value_t = SendOver::Ws)]
    send_over: SendOver,
    /// Mailbox page size (`limit`) when draining.
    #[arg(long, default_value_t = 500)]
    page: usize,
    #[arg(long)]
    no_verify: bool,
}

pub async fn offline(ctx: &Ctx, a: &OfflineArgs) -> Result<()> {
    let shape = Shape::new(a.publishers, a.subscribers, a.messages, a.bytes, a.timeout);
    let mut tr = prepare_traffic(ctx, &shape).await?;
    let limit = Duration::from_secs(a.timeout);
    let keep = !a.no_verify;
    let pubs = Publishers::connect(ctx, a.send_over, &tr.sealed, a.inflight).await?;
    println!(
        "offline: {} subscribers offline; sending {} x {} B body ({} B datagram)",
        a.subscribers, a.messages, a.bytes, tr.dg_len
    );

    // phase 1: send while the subscribers are offline
    let rss_s = RssSampler::start(&ctx.pids);
    let cpu = CpuMeter::start(&ctx.pids);
    let t0 = Instant::now();
    let ph = pubs.start(&mut tr.sealed, a.inflight, 0, t0 + limit, &tr.t);
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
    let published = tr.t.sent.load(Relaxed);
    let accepted = tr.t.accepted.load(Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_queued = rss_kb(&ctx.pids);
    println!(
        "offline: sent {published} (accepted, durable: {accepted}) in {pub_secs:.3}s; server RSS with queue {} kB",
        rss_queued.unwrap_or(0)
    );

    // phase 2: drain with GET /v1/mailbox + POST /v1/mailbox/ack
    // one pool per node; subscriber s drains on its node
    let nodes = ctx.nodes.len().min(a.subscribers).max(1);
    let mut drain_apis = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let per_node = a.subscribers.div_ceil(nodes);
        drain_apis.push(warm_client(&ctx.on_node(n), 2 * per_node, per_node).await?);
    }
    let cpu = CpuMeter::start(&ctx.pids);
    let t1_ns = now_ns();
    let t1 = Instant::now();
    let deadline = t1 + limit;
    let ack_done = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for (s, d) in tr.subs.iter().enumerate() {
        hs.push(tokio::spawn(drain_one(
            drain_apis[s % nodes].clone(),
            key_of(d),
            s,
            a.page,
            tr.index.clone(),
            tr.t.clone(),
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
    let drain_secs = (tr.t.last_rx_ns.load(Relaxed).max(t1_ns + 1) - t1_ns) as f64 / 1e9;
    let ack_secs = (ack_done.load(Relaxed).max(t1_ns + 1) - t1_ns) as f64 / 1e9;
    let (drain_scpu, ccpu) = cpu.stop();
    if Instant::now() >= deadline {
        eprintln!("offline: drain timeout reached ({}s)", a.timeout);
    }
    let rss_peak = rss_s.finish().await;
    let (unacked_left, never_fetched) = mailbox_left(&ctx.api, &tr.subs, &tr.index, &tr.t).await;
    let rss_after = rss_kb(&ctx.pids);
    let (opened, open_failed) = open_received(keep, tr.subs, outs).await;
    let recv = tr.t.received.load(Relaxed);
    ResultLine::new(&ctx.label, "offline")
        .kv("P", a.publishers)
        .kv("S", a.subscribers)
        .kv("N", a.messages)
        .kv("B", a.bytes)
        .kv("datagram_B", tr.dg_len)
        .kv("send_over", a.send_over.name())
        .delivery(published, accepted, recv, &tr.t)
        .kv("drain_errors", drain_errors)
        .kv("unacked_left", unacked_left)
        .kv("never_fetched", never_fetched)
        .kv("opened", opened)
        .kv("open_failed", open_failed)
        .kv("publish_secs", format!("{pub_secs:.3}"))
        .kv(
            "publish_msgs_per_s",
            format!("{:.0}", published as f64 / pub_secs),
        )
        .kv("secs", format!("{drain_secs:.3}"))
        .kv("msgs_per_s", format!("{:.0}", recv as f64 / drain_secs))
        .kv("ack_secs", format!("{ack_secs:.3}"))
        .kv("p50_ms", "NA")
        .kv("p99_ms", "NA")
        .kv("max_ms", "NA")
        .pct("send_p50_ms", &send_lats, 0.50)
        .pct("send_p99_ms", &send_lats, 0.99)
        .kv("rss_idle_kb", tr.rss_idle.unwrap_or(0))
        .kv("rss_queued_kb", rss_queued.unwrap_or(0))
        .kv("rss_peak_kb", rss_peak)
        .kv("rss_after_kb", rss_after.unwrap_or(0))
        .fmt3("server_cpu", drain_scpu)
        .fmt3("server_cpu_publish", pub_scpu)
        .fmt3("client_cpu", ccpu)
        .print();
    Ok(())
}

/// Drains one subscriber's mailbox: fetch a page, acknowledge it (the ack
/// runs while the next page is fetched), until nothing more waits.
#[allow(clippy::too_many_arguments)]
async fn drain_one(
    api: Api,
    key: DeviceKey,
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
        let batch = fetch_page(&api, &key, after, page).await?;
        let mut seqs = Vec::with_capacity(batch.items.len());
        for it in &batch.items {
            after = after.max(it.seq);
            seqs.push(it.seq);
            out.receive(it, sub, &index, &t, keep, false);
        }
        if !seqs.is_empty() {
            let (api, key, done) = (api.clone(), key.clone(), ack_done_ns.clone());
            out.acked += 1;
            acks.push(tokio::spawn(async move {
                let _: serde_json::Value = api
                    .json(
                        &key,
                        Method::POST,
                        sotto_api::paths::MAILBOX_ACK,
                        Some(&Ack { seqs }),
                    )
                    .await?;
                done.fetch_max(now_ns(), Relaxed);
                Ok(())
            }));
        }
        if !more_after(&batch) {
            break;
        }
    }
    for a in acks {
        a.await.map_err(|e| e.to_string())??;
    }
    Ok(out)
}
