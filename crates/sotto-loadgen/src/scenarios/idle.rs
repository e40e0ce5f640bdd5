//! idle: C devices hold an idle WebSocket for --hold seconds; reports server
//! RSS and CPU.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use sotto_loadgen::net::Result;
use sotto_loadgen::stats::{rss_kb, CpuMeter, Tracker};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::report::ResultLine;
use crate::setup::{bounded, key_of, register_many, Ctx};

#[derive(Args, Clone)]
pub struct IdleArgs {
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

pub async fn idle(ctx: &Ctx, a: &IdleArgs) -> Result<()> {
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
    let rss_before = rss_kb(&ctx.pids);

    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let up = Arc::new(AtomicU64::new(0));
    let t1 = Instant::now();
    let limit = Duration::from_secs(a.timeout);
    let mut hs = Vec::with_capacity(a.clients);
    for (i, d) in devs.iter().enumerate() {
        let key = key_of(d);
        let (api, tls, sem, up, t, mut stop) = (
            ctx.node(i).clone(),
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
    let rss_conn = rss_kb(&ctx.pids);
    let cpu = CpuMeter::start(&ctx.pids);
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let (scpu, _) = cpu.stop();
    let rss_hold = rss_kb(&ctx.pids);
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
    let rss_after = rss_kb(&ctx.pids);
    let per_client = match (rss_before, rss_hold) {
        (Some(b), Some(h)) if a.clients > 0 => (h as f64 - b as f64) / a.clients as f64,
        _ => f64::NAN,
    };
    ResultLine::new(&ctx.label, "idle")
        .kv("C", a.clients)
        .kv("all_connected", ok)
        .kv("still_up", still_up)
        .kv("connect_secs", format!("{connect_secs:.3}"))
        .kv("conn_errors", t.conn_errors.load(Relaxed))
        .kv("rss_idle_kb", rss_before.unwrap_or(0))
        .kv("rss_connected_kb", rss_conn.unwrap_or(0))
        .kv("rss_hold_kb", rss_hold.unwrap_or(0))
        .kv("rss_after_kb", rss_after.unwrap_or(0))
        .fmt3("kb_per_client", per_client)
        .fmt3("server_cpu_idle", scpu)
        .print();
    Ok(())
}
