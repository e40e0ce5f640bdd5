//! sotto-loadgen: bounded load generator for a running sotto server, in the
//! shapes of work of `shared/tools/mqtt-loadgen` (the Mosquitto baseline).
//!
//! Scenarios (subcommands):
//!   relay   - S subscriber devices hold a WebSocket (`GET /v1/ws`) and ack each
//!             push; P publisher devices send N datagrams with a B-byte body,
//!             round-robin over the subscribers, at most --inflight unanswered
//!             per publisher: as send frames on the publisher's own WebSocket
//!             (`--send-over ws`, default) or as `POST /v1/messages` requests
//!             (`--send-over http`); `--rate R` paces
//!             the total at R msgs/s for latency. Reports delivered msgs/s,
//!             latency p50/p99/max from send to push receipt, lost/duplicate/
//!             misrouted counts.
//!   offline - the S subscribers stay offline while P publishers send M
//!             datagrams (each stored durably before its answer); then the
//!             subscribers drain their mailboxes with `GET /v1/mailbox` +
//!             `POST /v1/mailbox/ack`. Reports publish and drain throughput.
//!   idle    - C devices hold an idle WebSocket for --hold seconds; reports
//!             server RSS and CPU.
//!   sender  - the sender API (`POST /v1/sender/messages`, an API key made
//!             with `sotto admin sender add`): M messages to N phone
//!             numbers, C in flight; reports msgs/s, p50/p99 latency and
//!             how many were held (unregistered numbers) or sent.
//!   phone   - registers N phone numbers as `sotto register-phone` +
//!             `verify-phone` do (the code read from the server's
//!             `--sms-sink` file), sends M messages to them through the
//!             sender API (sealed on the server), drains and opens them on
//!             the devices; `--e2e K`: K held messages each followed to
//!             its number's registration and opening (p50/p99).
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
//! Several nodes of one deployment (one database, one certificate): give
//! `--server` more than once; devices are spread round-robin over them and
//! the `--server-pid`s' RSS and CPU are summed.
//!
//! Only loopback targets are accepted; every phase is bounded by a count and
//! a wall-clock limit, and a watchdog ends the process after --max-secs.
//! Output: human lines and one `RESULT key=value ...` line per run.

mod index;
mod mailbox;
mod publish;
mod publish_ws;
mod receive;
mod report;
mod scenarios;
mod setup;
mod subscribe;

use std::time::Duration;

use clap::{Parser, Subcommand};
use rand_core::{OsRng, RngCore};
use sotto_loadgen::net::{self, Api, CertCheck, Result};
use sotto_loadgen::stats::now_ns;

use scenarios::idle::{idle, IdleArgs};
use scenarios::offline::{offline, OfflineArgs};
use scenarios::phone::{phone, PhoneArgs};
use scenarios::relay::{relay, RelayArgs};
use scenarios::sender::{sender, SenderArgs};
use setup::Ctx;

#[derive(Parser)]
#[command(about = "Bounded load generator for a running sotto server (loopback only)")]
struct Cli {
    /// The server, https://HOST:PORT; HOST must be a loopback address.
    /// Several nodes (sharing one database and one certificate): repeat it
    /// or give a comma-separated list; devices are spread round-robin over
    /// them (subscriber s on node s mod n, publisher p on node p mod n).
    #[arg(
        long,
        default_value = "https://127.0.0.1:7443",
        value_delimiter = ',',
        num_args = 1
    )]
    server: Vec<String>,
    /// SHA-256 fingerprint (hex) of the server's TLS certificate, as
    /// `sotto server` prints it: the connection is refused on any other.
    #[arg(long, env = "SOTTO_FINGERPRINT")]
    fingerprint: Option<String>,
    /// Accept any server certificate (the target is loopback-only anyway).
    #[arg(long, conflicts_with = "fingerprint")]
    insecure_loopback: bool,
    /// PID of the server: its RSS (/proc/PID/status) and CPU are sampled.
    /// Repeat it (or a comma-separated list) for several nodes: their RSS
    /// and CPU are summed.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    server_pid: Vec<u32>,
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
    /// The sender API: M messages to N phone numbers, C calls in flight (msgs/s, p50/p99).
    Sender(SenderArgs),
    /// Registers N phone numbers (codes from --sms-sink), sends M sender API messages to them; --e2e K held -> registered -> opened.
    Phone(PhoneArgs),
}

#[cfg(feature = "spawn-server")]
async fn spawn_server(dir: &std::path::Path) -> Result<(String, [u8; 32])> {
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let mut config = sotto_server::Config::new(addr, dir.to_path_buf());
    // Every simulated device comes from one address: rates are the
    // server's business, not what a load test measures.
    config.limits.rates = None;
    // the development SMS gateway (`phone --sms-sink DIR/sms.jsonl`)
    let sink = dir.join("sms.jsonl");
    config.phone.sms = sotto_server::phone::sms::SmsConfig::Sink(sink.clone());
    let running = sotto_server::start(config)
        .await
        .map_err(|e| format!("spawn server: {e}"))?;
    let url = format!("https://{}", running.addr);
    let fp = net::parse_fingerprint(&running.fingerprint.to_string())?;
    println!(
        "spawned in-process server at {url} (SMS sink {})",
        sink.display()
    );
    std::mem::forget(running);
    Ok((url, fp))
}

#[cfg(not(feature = "spawn-server"))]
async fn spawn_server(_dir: &std::path::Path) -> Result<(String, [u8; 32])> {
    Err("--spawn-server needs a build with `--features spawn-server`".into())
}

async fn run(cli: Cli) -> Result<()> {
    let (bases, check) = match &cli.spawn_server {
        Some(dir) => {
            let (url, fp) = spawn_server(dir).await?;
            (vec![url], CertCheck::Pinned(fp))
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
            let bases: Vec<String> = cli
                .server
                .iter()
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .collect();
            (bases, check)
        }
    };
    let tls = net::tls_config(check)?;
    let mut nodes = Vec::with_capacity(bases.len());
    for base in &bases {
        let (host, port) = net::parse_server(base)?;
        net::check_loopback(&host, port)?;
        nodes.push(Api::new(base, tls.clone(), 256)?);
    }
    // One clock (one machine); every node gets its offset.
    nodes[0].sync_clock().await?;
    let offset = nodes[0].clock_offset_ms;
    for api in &mut nodes[1..] {
        api.clock_offset_ms = offset;
        api.clock().await?; // reachable before any setup
    }
    let pids = if cli.spawn_server.is_some() && cli.server_pid.is_empty() {
        vec![std::process::id()]
    } else {
        cli.server_pid.clone()
    };
    let prefix = cli
        .prefix
        .clone()
        .unwrap_or_else(|| format!("lg{:08x}", OsRng.next_u32()));
    let ctx = Ctx {
        api: nodes[0].clone(),
        tls,
        base: bases[0].clone(),
        nodes,
        pids,
        label: cli.label.clone(),
        prefix,
        setup: Duration::from_secs(cli.setup_timeout),
    };
    match &cli.cmd {
        Cmd::Relay(a) => relay(&ctx, a).await,
        Cmd::Offline(a) => offline(&ctx, a).await,
        Cmd::Idle(a) => idle(&ctx, a).await,
        Cmd::Sender(a) => sender(&ctx, a).await,
        Cmd::Phone(a) => phone(&ctx, a).await,
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
