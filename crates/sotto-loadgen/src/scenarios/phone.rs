//! phone: the sender API to registered numbers, and a held message's way
//! to a handset that registers, end to end. Against a server started with
//! `--sms-sink FILE --no-rate-limits` on this machine (the codes are read
//! from FILE) and a sender made with `sotto admin sender add`:
//!
//! 1. registers N numbers, as `sotto register-phone` + `verify-phone` do
//!    (R at a time; the code read from the sink);
//! 2. sends M messages round-robin to them through `POST
//!    /v1/sender/messages` (C in flight): each must come back `sent`, the
//!    server sealing it to the number's device; reports msgs/s and
//!    p50/p99/max API latency;
//! 3. (unless `--no-verify`) every device drains its mailbox, opens each
//!    datagram and acknowledges it: each message must arrive once;
//! 4. `--e2e K`: K times, one message to a new number (`held`), that
//!    number registered (code from the sink) and verified, the message
//!    fetched and opened by the new device and acknowledged, then `GET
//!    /v1/sender/messages/{id}` polled until `delivered`; reports p50/p99
//!    of each step from the sender's POST.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use rand_core::{OsRng, RngCore};
use sotto_api::phone::SenderMessageCreated;
use sotto_loadgen::net::{chain, Api, Result};
use sotto_loadgen::phone::{self, message_index, message_text, PhoneDevice};
use sotto_loadgen::sms::SmsSink;
use sotto_loadgen::stats::{fmt, pct};

use crate::report::ResultLine;
use crate::setup::{bounded, join_all, Ctx};

#[derive(Args, Clone)]
pub struct PhoneArgs {
    /// The sender's API key (as `sotto admin sender add` printed it).
    #[arg(long, env = "SOTTO_SENDER_API_KEY")]
    api_key: String,
    /// The server's `--sms-sink` file (the server runs on this machine).
    #[arg(long)]
    sms_sink: std::path::PathBuf,
    /// Numbers to register: +1555 and 7 digits from --first on.
    #[arg(short = 'N', long, default_value_t = 100)]
    numbers: u64,
    /// The 7 digits of the first number (default random). The --e2e
    /// numbers follow the N registered ones.
    #[arg(long)]
    first: Option<u64>,
    /// Registrations in flight.
    #[arg(short = 'R', long, default_value_t = 64)]
    register_concurrency: usize,
    /// Messages to the registered numbers, round-robin (default: N).
    #[arg(short = 'M', long)]
    messages: Option<u64>,
    /// Sender API calls in flight.
    #[arg(short = 'C', long, default_value_t = 32)]
    concurrency: usize,
    /// Body bytes.
    #[arg(short = 'B', long, default_value_t = 200)]
    bytes: usize,
    /// End-to-end rounds (held message -> registration -> opened).
    #[arg(long, default_value_t = 0)]
    e2e: u64,
    /// End-to-end rounds in flight.
    #[arg(long, default_value_t = 1)]
    e2e_concurrency: usize,
    /// Skip draining and opening the registered devices' mailboxes.
    #[arg(long)]
    no_verify: bool,
    /// Longest wait for one code in the sink, s.
    #[arg(long, default_value_t = 120)]
    otp_timeout: u64,
    /// Hard wall-clock limit of the send phase, s.
    #[arg(short = 'T', long, default_value_t = 300)]
    timeout: u64,
}

/// The run's sender API access.
#[derive(Clone)]
struct SenderApi {
    http: reqwest::Client,
    base: String,
    auth: String,
}

impl SenderApi {
    async fn post(&self, to: &str, text: &str) -> Result<SenderMessageCreated> {
        let req = serde_json::json!({"to": to, "body": text});
        let r = self
            .http
            .post(format!(
                "{}{}",
                self.base,
                sotto_api::paths::SENDER_MESSAGES
            ))
            .header("authorization", &self.auth)
            .json(&req)
            .send()
            .await
            .map_err(|e| format!("POST /v1/sender/messages: {}", chain(&e)))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if status.as_u16() != 202 {
            return Err(format!(
                "POST /v1/sender/messages: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("POST /v1/sender/messages: {e}"))
    }

    /// The status of message `id`.
    async fn status(&self, id: &str) -> Result<String> {
        let r = self
            .http
            .get(format!(
                "{}{}",
                self.base,
                sotto_api::paths::sender_message(id)
            ))
            .header("authorization", &self.auth)
            .send()
            .await
            .map_err(|e| format!("GET /v1/sender/messages/{id}: {}", chain(&e)))?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("GET /v1/sender/messages/{id}: {status} {v}"));
        }
        Ok(v["status"].as_str().unwrap_or("").to_string())
    }
}

fn number(i: u64) -> String {
    format!("+1555{i:07}")
}

fn lat_line(what: &str, lats: &[u32]) -> String {
    format!(
        "{what} ms p50 {} p99 {} max {}",
        fmt(pct(lats, 0.50)),
        fmt(pct(lats, 0.99)),
        fmt(pct(lats, 1.0))
    )
}

pub async fn phone(ctx: &Ctx, a: &PhoneArgs) -> Result<()> {
    let messages = a.messages.unwrap_or(a.numbers);
    let span = a.numbers + a.e2e;
    if span == 0 || span > 10_000_000 {
        return Err("-N + --e2e must be 1 to 10,000,000".into());
    }
    if messages > 0 && a.numbers == 0 {
        return Err("-M needs registered numbers (-N)".into());
    }
    let base = match a.first {
        Some(f) if f + span <= 10_000_000 => f,
        Some(_) => return Err("--first + -N + --e2e must stay within 7 digits".into()),
        None => OsRng.next_u64() % (10_000_000 - span),
    };
    let api = SenderApi {
        http: ctx.api.http.clone(),
        base: ctx.base.clone(),
        auth: format!("Bearer {}", a.api_key),
    };
    ctx.api
        .warm_up(a.concurrency.max(a.register_concurrency).min(256))
        .await?;
    if let Err(e) = api.status("0").await {
        if e.contains("401") {
            return Err("the API key is refused (401)".into());
        }
    }
    let sink = SmsSink::follow(&a.sms_sink)?;
    let otp_limit = Duration::from_secs(a.otp_timeout);
    let run = OsRng.next_u32();
    let mut result = ResultLine::new(&ctx.label, "phone")
        .kv("numbers", a.numbers)
        .kv("messages", messages)
        .kv("concurrency", a.concurrency)
        .kv("register_concurrency", a.register_concurrency)
        .kv("bytes", a.bytes);
    let mut failures = Vec::new();

    // 1. registration
    let mut devices = Vec::new();
    if a.numbers > 0 {
        // one one-time prekey per message sealed to the device (each
        // starts a session), and one spare
        let one_time = (messages.div_ceil(a.numbers) + 1).min(1000) as u32;
        println!(
            "phone: registering {} numbers ({} at a time, {one_time} one-time prekeys each)",
            a.numbers, a.register_concurrency
        );
        let t0 = Instant::now();
        let numbers = (0..a.numbers).map(|i| number(base + i)).collect();
        devices = bounded(
            ctx.setup,
            "registration",
            phone::register_phones(
                &ctx.api,
                &sink,
                numbers,
                one_time,
                a.register_concurrency,
                otp_limit,
            ),
        )
        .await?;
        let secs = t0.elapsed().as_secs_f64();
        let mut total: Vec<u32> = devices.iter().map(|d| d.total_us).collect();
        let mut otp: Vec<u32> = devices.iter().map(|d| d.otp_wait_us).collect();
        total.sort_unstable();
        otp.sort_unstable();
        let rate = devices.len() as f64 / secs;
        println!(
            "phone: {} numbers registered in {secs:.1}s ({rate:.0}/s); {}; {}",
            devices.len(),
            lat_line("register+verify", &total),
            lat_line("code in the sink after", &otp),
        );
        result = result
            .kv("registered", devices.len())
            .fmt3("register_secs", secs)
            .fmt3("registers_per_s", rate)
            .pct("register_p50_ms", &total, 0.5)
            .pct("register_p99_ms", &total, 0.99)
            .pct("otp_wait_p50_ms", &otp, 0.5)
            .pct("otp_wait_p99_ms", &otp, 0.99);
    }

    // 2. the sender API to registered numbers
    if messages > 0 {
        let (sent, errors, secs, lats) = send_all(&api, &devices, run, messages, a).await?;
        let rate = sent as f64 / secs;
        println!(
            "phone: {sent} of {messages} sent (sealed on the server), {errors} errors in {secs:.2}s: {rate:.0} msgs/s; {}",
            lat_line("latency", &lats)
        );
        result = result
            .kv("sent", sent)
            .kv("send_errors", errors)
            .fmt3("secs", secs)
            .fmt3("msgs_per_s", rate)
            .pct("p50_ms", &lats, 0.50)
            .pct("p99_ms", &lats, 0.99)
            .pct("max_ms", &lats, 1.0);
        if errors > 0 {
            failures.push(format!("{errors} sender API calls failed"));
        }
        // 3. every message arrives once and opens
        if !a.no_verify {
            let t0 = Instant::now();
            let v = verify(ctx, devices, run, messages, a.numbers).await?;
            println!(
                "phone: mailboxes drained in {:.1}s: {} received, {} opened, {} failed to open, {} lost, {} duplicated, {} misrouted",
                t0.elapsed().as_secs_f64(),
                v.received,
                v.opened,
                v.failed,
                v.lost,
                v.dup,
                v.misrouted
            );
            result = result
                .kv("received", v.received)
                .kv("opened", v.opened)
                .kv("open_failed", v.failed)
                .kv("lost", v.lost)
                .kv("dup", v.dup)
                .kv("misrouted", v.misrouted);
            if v.lost + v.dup + v.failed + v.misrouted > 0 {
                failures.push("messages lost, duplicated, misrouted or unopened".into());
            }
        }
    }

    // 4. end to end: held -> registered -> opened -> delivered
    if a.e2e > 0 {
        let e = e2e(ctx, &api, &sink, base + a.numbers, run, a).await?;
        println!(
            "phone: end to end, {} rounds: {} opened, {} lost, {} duplicated, {} delivered seen",
            a.e2e, e.opened, e.lost, e.dup, e.delivered_seen
        );
        println!("phone: {}", lat_line("POST -> code in the sink", &e.otp));
        println!("phone: {}", lat_line("POST -> verified", &e.verified));
        println!("phone: {}", lat_line("POST -> opened", &e.open));
        println!(
            "phone: {}",
            lat_line("POST -> `delivered` seen", &e.delivered)
        );
        result = result
            .kv("e2e", a.e2e)
            .kv("e2e_opened", e.opened)
            .kv("e2e_lost", e.lost)
            .kv("e2e_dup", e.dup)
            .kv("e2e_delivered", e.delivered_seen)
            .pct("e2e_otp_p50_ms", &e.otp, 0.5)
            .pct("e2e_verified_p50_ms", &e.verified, 0.5)
            .pct("e2e_open_p50_ms", &e.open, 0.5)
            .pct("e2e_open_p99_ms", &e.open, 0.99)
            .pct("e2e_open_max_ms", &e.open, 1.0)
            .pct("e2e_delivered_p50_ms", &e.delivered, 0.5)
            .pct("e2e_delivered_p99_ms", &e.delivered, 0.99);
        if e.lost + e.dup > 0 || e.delivered_seen != a.e2e {
            failures.push("end to end: messages lost, duplicated or never `delivered`".into());
        }
    }
    let (codes, unclaimed) = sink.counts();
    result
        .kv("otp_sms", codes)
        .kv("otp_sms_unclaimed", unclaimed)
        .print();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Phase 2: M messages, C in flight; (sent, errors, secs, sorted us).
async fn send_all(
    api: &SenderApi,
    devices: &[PhoneDevice],
    run: u32,
    messages: u64,
    a: &PhoneArgs,
) -> Result<(u64, u64, f64, Vec<u32>)> {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let numbers: Arc<Vec<String>> = Arc::new(devices.iter().map(|d| d.number.clone()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let (sent, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let start = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (api, numbers, next) = (api.clone(), numbers.clone(), next.clone());
        let (sent, errors, bytes) = (sent.clone(), errors.clone(), a.bytes);
        hs.push(tokio::spawn(async move {
            let mut lats: Vec<u32> = Vec::new();
            loop {
                let k = next.fetch_add(1, Relaxed);
                if k >= messages || Instant::now() > deadline {
                    return Ok::<_, String>(lats);
                }
                let to = &numbers[(k % numbers.len() as u64) as usize];
                let text = message_text(run, k, bytes);
                let t0 = Instant::now();
                let r = api.post(to, &text).await;
                lats.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match r {
                    Ok(c) if c.status == "sent" => sent.fetch_add(1, Relaxed),
                    Ok(c) => {
                        eprintln!("phone: {to}: status {:?}, want \"sent\"", c.status);
                        errors.fetch_add(1, Relaxed)
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Relaxed) == 0 {
                            eprintln!("phone: {e}");
                        }
                        0
                    }
                };
            }
        }));
    }
    let mut lats: Vec<u32> = join_all(hs).await?.into_iter().flatten().collect();
    let secs = start.elapsed().as_secs_f64();
    lats.sort_unstable();
    Ok((sent.load(Relaxed), errors.load(Relaxed), secs, lats))
}

#[derive(Default)]
struct Verified {
    received: u64,
    opened: u64,
    failed: u64,
    lost: u64,
    dup: u64,
    misrouted: u64,
}

/// Phase 3: each device drains its mailbox (32 at a time) and opens every
/// datagram; message k must reach device k mod N, once.
async fn verify(
    ctx: &Ctx,
    devices: Vec<PhoneDevice>,
    run: u32,
    messages: u64,
    n: u64,
) -> Result<Verified> {
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut hs = Vec::with_capacity(devices.len());
    for (i, mut d) in devices.into_iter().enumerate() {
        let (api, sem) = (ctx.api.clone(), sem.clone());
        hs.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let o = phone::drain_and_open(&api, &mut d.dev).await?;
            Ok::<_, String>((i as u64, o))
        }));
    }
    let mut seen = vec![false; messages as usize];
    let mut v = Verified::default();
    for (i, o) in join_all(hs).await? {
        v.failed += o.failed;
        v.received += o.texts.len() as u64 + o.failed;
        for t in o.texts {
            let Some(k) = message_index(run, &t).filter(|&k| k < messages) else {
                v.failed += 1;
                continue;
            };
            v.opened += 1;
            if k % n != i {
                v.misrouted += 1;
            }
            if std::mem::replace(&mut seen[k as usize], true) {
                v.dup += 1;
            }
        }
    }
    v.lost = seen.iter().filter(|s| !**s).count() as u64;
    Ok(v)
}

#[derive(Default)]
struct E2e {
    /// From the sender's POST, us: the code in the sink, the verify's
    /// answer, the message opened, `delivered` seen.
    otp: Vec<u32>,
    verified: Vec<u32>,
    open: Vec<u32>,
    delivered: Vec<u32>,
    opened: u64,
    lost: u64,
    dup: u64,
    delivered_seen: u64,
}

/// Phase 4: K rounds, `--e2e-concurrency` at a time, on numbers from
/// `first` on.
async fn e2e(
    ctx: &Ctx,
    api: &SenderApi,
    sink: &SmsSink,
    first: u64,
    run: u32,
    a: &PhoneArgs,
) -> Result<E2e> {
    let sem = Arc::new(tokio::sync::Semaphore::new(a.e2e_concurrency.max(1)));
    let otp_limit = Duration::from_secs(a.otp_timeout);
    let mut hs = Vec::new();
    for j in 0..a.e2e {
        let (node, api, sink, sem) = (ctx.api.clone(), api.clone(), sink.clone(), sem.clone());
        let bytes = a.bytes;
        hs.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            e2e_round(
                &node,
                &api,
                &sink,
                &number(first + j),
                run,
                j,
                bytes,
                otp_limit,
            )
            .await
        }));
    }
    let mut out = E2e::default();
    for r in join_all(hs).await? {
        out.otp.push(r.otp_us);
        out.verified.push(r.verified_us);
        match r.opened {
            0 => out.lost += 1,
            1 => {
                out.opened += 1;
                out.open.push(r.open_us);
            }
            n => {
                out.opened += 1;
                out.dup += n - 1;
            }
        }
        if let Some(d) = r.delivered_us {
            out.delivered_seen += 1;
            out.delivered.push(d);
        }
    }
    for v in [
        &mut out.otp,
        &mut out.verified,
        &mut out.open,
        &mut out.delivered,
    ] {
        v.sort_unstable();
    }
    Ok(out)
}

struct Round {
    otp_us: u32,
    verified_us: u32,
    open_us: u32,
    /// Copies of the message that opened.
    opened: u64,
    delivered_us: Option<u32>,
}

/// One held message to `to`, the number registered, the message opened.
#[allow(clippy::too_many_arguments)]
async fn e2e_round(
    node: &Api,
    api: &SenderApi,
    sink: &SmsSink,
    to: &str,
    run: u32,
    j: u64,
    bytes: usize,
    otp_limit: Duration,
) -> Result<Round> {
    let us = |t: Instant| t.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let text = message_text(run, j, bytes);
    let t0 = Instant::now();
    let created = api.post(to, &text).await?;
    if created.status != "held" {
        return Err(format!("{to}: status {:?}, want \"held\"", created.status));
    }
    let registering_us = us(t0);
    let PhoneDevice {
        mut dev,
        delivered,
        otp_wait_us,
        ..
    } = phone::register_phone(node, sink, to, 2, otp_limit).await?;
    let verified_us = us(t0);
    let otp_us = registering_us.saturating_add(otp_wait_us);
    if delivered != 1 {
        return Err(format!(
            "{to}: the verify sealed {delivered} held messages, want 1"
        ));
    }
    let mut opened = 0u64;
    let mut open_us = 0;
    // The verify sealed it before answering: the first fetch has it.
    let o = phone::drain_and_open(node, &mut dev).await?;
    for t in &o.texts {
        if message_index(run, t) == Some(j) && *t == text {
            opened += 1;
        }
    }
    if opened > 0 {
        open_us = us(t0);
    }
    let mut delivered_us = None;
    let limit = Instant::now() + Duration::from_secs(30);
    while opened > 0 && Instant::now() < limit {
        if api.status(&created.id).await? == "delivered" {
            delivered_us = Some(us(t0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Round {
        otp_us,
        verified_us,
        open_us,
        opened,
        delivered_us,
    })
}
