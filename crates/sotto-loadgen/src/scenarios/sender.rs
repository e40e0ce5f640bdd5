//! sender: an organisation's systems calling the sender API
//! (`POST /v1/sender/messages`, `Authorization: Bearer <api key>`) with M
//! messages to N phone numbers, C calls in flight. Numbers nobody
//! registered are held (sealed under the hold key, one invitation SMS per
//! number queued); registered ones are sealed to their devices at once.
//! Reports accepted msgs/s, p50/p99/max API latency and how many came back
//! `held` and `sent`. The sender is made beforehand with `sotto admin
//! sender add`; run the server with `--no-rate-limits` (every call comes
//! from one address).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand_core::{OsRng, RngCore};
use sotto_loadgen::net::{chain, Result};
use sotto_loadgen::stats::{fmt, pct};

use crate::report::ResultLine;
use crate::setup::Ctx;

#[derive(Args, Clone)]
pub struct SenderArgs {
    /// The sender's API key (as `sotto admin sender add` printed it).
    #[arg(long, env = "SOTTO_SENDER_API_KEY")]
    api_key: String,
    /// Distinct phone numbers: +1555 and 7 digits, from --first on.
    #[arg(short = 'N', long, default_value_t = 1000)]
    numbers: u64,
    /// The 7 digits of the first number (default: random, so new numbers
    /// each run). Numbers registered beforehand (`sotto register-phone`)
    /// measure sealing to registered numbers.
    #[arg(long)]
    first: Option<u64>,
    /// Messages in all, round-robin over the numbers.
    #[arg(short = 'M', long, default_value_t = 1000)]
    messages: u64,
    /// Calls in flight.
    #[arg(short = 'C', long, default_value_t = 32)]
    concurrency: u64,
    /// Body bytes.
    #[arg(short = 'B', long, default_value_t = 200)]
    bytes: usize,
    /// Hard wall-clock limit of the timed phase, seconds.
    #[arg(short = 'T', long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Default)]
struct Counts {
    held: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
}

pub async fn sender(ctx: &Ctx, a: &SenderArgs) -> Result<()> {
    if a.numbers == 0 || a.numbers > 10_000_000 {
        return Err("-N must be 1 to 10,000,000".into());
    }
    let base = match a.first {
        Some(f) if f + a.numbers <= 10_000_000 => f,
        Some(_) => return Err("--first + -N must stay within 7 digits".into()),
        None => OsRng.next_u64() % (10_000_000 - a.numbers),
    };
    let url = format!("{}/v1/sender/messages", ctx.base);
    let body_text = "x".repeat(a.bytes);
    let auth = format!("Bearer {}", a.api_key);
    // The key works (and the connections are warm) before the clock starts.
    ctx.api.warm_up(a.concurrency as usize).await?;
    let probe = ctx
        .api
        .http
        .get(format!("{}/v1/sender/messages/0", ctx.base))
        .header("authorization", &auth)
        .send()
        .await
        .map_err(|e| chain(&e))?;
    if probe.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Err("the API key is refused (401)".into());
    }
    println!(
        "sender: {} messages to {} numbers, {} in flight, {} B bodies",
        a.messages, a.numbers, a.concurrency, a.bytes
    );
    let next = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (next, counts) = (next.clone(), counts.clone());
        let (http, url, auth) = (ctx.api.http.clone(), url.clone(), auth.clone());
        let (messages, numbers, body_text) = (a.messages, a.numbers, body_text.clone());
        tasks.push(tokio::spawn(async move {
            let mut lats_us: Vec<u32> = Vec::new();
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= messages || Instant::now() > deadline {
                    return lats_us;
                }
                let to = format!("+1555{:07}", base + k % numbers);
                let req = serde_json::json!({"to": to, "body": body_text});
                let t0 = Instant::now();
                let answer = http
                    .post(&url)
                    .header("authorization", &auth)
                    .json(&req)
                    .send()
                    .await;
                let status = match answer {
                    Ok(r) if r.status().as_u16() == 202 => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["status"].as_str().map(str::to_owned)),
                    _ => None,
                };
                lats_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match status.as_deref() {
                    Some("held") => counts.held.fetch_add(1, Relaxed),
                    Some("sent") => counts.sent.fetch_add(1, Relaxed),
                    _ => counts.errors.fetch_add(1, Relaxed),
                };
            }
        }));
    }
    let mut lats = Vec::new();
    for t in tasks {
        lats.extend(t.await.map_err(|e| e.to_string())?);
    }
    let secs = start.elapsed().as_secs_f64();
    lats.sort_unstable();
    let (held, sent, errors) = (
        counts.held.load(Relaxed),
        counts.sent.load(Relaxed),
        counts.errors.load(Relaxed),
    );
    let rate = (held + sent) as f64 / secs;
    println!(
        "sender: {} accepted ({} held, {} sent), {} errors in {:.2}s: {:.0} msgs/s; latency ms p50 {} p99 {} max {}",
        held + sent,
        held,
        sent,
        errors,
        secs,
        rate,
        fmt(pct(&lats, 0.50)),
        fmt(pct(&lats, 0.99)),
        fmt(pct(&lats, 1.0)),
    );
    ResultLine::new(&ctx.label, "sender")
        .kv("numbers", a.numbers)
        .kv("messages", a.messages)
        .kv("concurrency", a.concurrency)
        .kv("held", held)
        .kv("sent", sent)
        .kv("errors", errors)
        .fmt3("secs", secs)
        .fmt3("msgs_per_s", rate)
        .pct("p50_ms", &lats, 0.50)
        .pct("p99_ms", &lats, 0.99)
        .pct("max_ms", &lats, 1.0)
        .print();
    if errors > 0 {
        return Err(format!("{errors} calls failed"));
    }
    Ok(())
}
