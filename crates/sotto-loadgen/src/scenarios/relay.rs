//! relay: S subscriber devices hold a WebSocket and ack each push; P
//! publisher devices send N datagrams round-robin over the subscribers.
//! Reports delivered msgs/s, latency from send to push receipt, and
//! lost/duplicate/misrouted counts.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use clap::Args;
use sotto_loadgen::net::Result;
use sotto_loadgen::stats::{now_ns, rss_kb, CpuMeter, RssSampler};
use tokio::sync::watch;

use crate::mailbox::mailbox_left;
use crate::publish::{Publishers, SendOver};
use crate::receive::open_received;
use crate::report::ResultLine;
use crate::setup::{bounded, key_of, prepare_traffic, Ctx, Shape};
use crate::subscribe::{connect_all, spawn_subscriber, Conn};

#[derive(Args, Clone)]
pub struct RelayArgs {
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
    /// Sends in flight per publisher (over HTTP, each on its own HTTP/1.1
    /// connection).
    #[arg(long, default_value_t = 100)]
    inflight: usize,
    /// How publishers send: frames on their WebSocket, or HTTP requests.
    #[arg(long, value_enum, default_value_t = SendOver::Ws)]
    send_over: SendOver,
    /// Do not open the received datagrams after the timed phase.
    #[arg(long)]
    no_verify: bool,
}

pub async fn relay(ctx: &Ctx, a: &RelayArgs) -> Result<()> {
    let shape = Shape::new(a.publishers, a.subscribers, a.messages, a.bytes, a.timeout);
    let mut tr = prepare_traffic(ctx, &shape).await?;
    let keep = !a.no_verify;

    let (stop_tx, stop_rx) = watch::channel(false);
    let wss = bounded(
        ctx.setup,
        "subscriber connections",
        connect_all(ctx, &tr.subs, 100),
    )
    .await?;
    let conn = Conn {
        api: ctx.api.clone(),
        tls: ctx.tls.clone(),
        index: tr.index.clone(),
        t: tr.t.clone(),
        keep,
    };
    let sub_h: Vec<_> = wss
        .into_iter()
        .enumerate()
        .map(|(s, ws)| {
            // reconnects and fetches go to the subscriber's own node
            let conn = Conn {
                api: ctx.node(s).clone(),
                ..conn.clone()
            };
            spawn_subscriber(conn, key_of(&tr.subs[s]), ws, s, stop_rx.clone())
        })
        .collect();
    let pubs = Publishers::connect(ctx, a.send_over, &tr.sealed, a.inflight).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!(
        "relay: {} subs (WebSocket) + {} pubs (over {}, {} in flight each) connected; sending {} x {} B body ({} B datagram), rate {}",
        a.subscribers,
        a.publishers,
        a.send_over.name(),
        a.inflight,
        a.messages,
        a.bytes,
        tr.dg_len,
        if a.rate == 0 { "max".to_string() } else { format!("{}/s", a.rate) }
    );

    let rss = RssSampler::start(&ctx.pids);
    let cpu = CpuMeter::start(&ctx.pids);
    let t_start_ns = now_ns();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let ph = pubs.start(&mut tr.sealed, a.inflight, a.rate, deadline, &tr.t);
    let mut last_print = Instant::now();
    loop {
        let all_sent = ph.iter().all(|h| h.is_finished());
        let recv = tr.t.received.load(Relaxed);
        if all_sent && recv >= tr.t.accepted.load(Relaxed) {
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
                tr.t.sent.load(Relaxed),
                tr.t.accepted.load(Relaxed),
                recv
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let end_ns = tr.t.last_rx_ns.load(Relaxed).max(t_start_ns + 1);
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
    let rss_loaded = rss_kb(&ctx.pids);
    let (unacked_left, never_pushed) = bounded(ctx.setup, "mailbox check", async {
        Ok(mailbox_left(&ctx.api, &tr.subs, &tr.index, &tr.t).await)
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
    let (opened, open_failed) = open_received(keep, tr.subs, outs).await;

    let recv = tr.t.received.load(Relaxed);
    let secs = (end_ns - t_start_ns) as f64 / 1e9;
    let mps = recv as f64 / secs;
    ResultLine::new(&ctx.label, "relay")
        .kv("P", a.publishers)
        .kv("S", a.subscribers)
        .kv("N", a.messages)
        .kv("B", a.bytes)
        .kv("rate", a.rate)
        .kv("datagram_B", tr.dg_len)
        .kv("send_over", a.send_over.name())
        .delivery(
            tr.t.sent.load(Relaxed),
            tr.t.accepted.load(Relaxed),
            recv,
            &tr.t,
        )
        .kv("unacked_left", unacked_left)
        .kv("never_pushed", never_pushed)
        .kv("reconnects", reconnects)
        .kv("redelivered", tr.t.redelivered.load(Relaxed))
        .kv("opened", opened)
        .kv("open_failed", open_failed)
        .kv("secs", format!("{secs:.3}"))
        .kv("msgs_per_s", format!("{mps:.0}"))
        .kv("MBps", format!("{:.2}", mps * a.bytes as f64 / 1e6))
        .pct("p50_ms", &lats, 0.50)
        .pct("p99_ms", &lats, 0.99)
        .fmt3(
            "max_ms",
            lats.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
        )
        .pct("send_p50_ms", &send_lats, 0.50)
        .pct("send_p99_ms", &send_lats, 0.99)
        .kv("rss_idle_kb", tr.rss_idle.unwrap_or(0))
        .kv("rss_peak_kb", rss_peak)
        .kv("rss_after_kb", rss_loaded.unwrap_or(0))
        .fmt3("server_cpu", scpu)
        .fmt3("client_cpu", ccpu)
        .kv("prekeys_low", prekeys_low)
        .print();
    Ok(())
}
