//! Runs each scenario of the load generator, small, against an in-process
//! server on real sockets (`--spawn-server`), and checks its RESULT line.

use std::collections::HashMap;
use std::process::Command;

fn run(args: &[&str]) -> HashMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sotto-loadgen"))
        .arg("--spawn-server")
        .arg(dir.path())
        .args(["--max-secs", "120"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    result_line(&stdout)
}

fn result_line(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .expect("a RESULT line");
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn relay_delivers_everything_once_and_acks_it() {
    let r = run(&[
        "relay",
        "-P",
        "2",
        "-S",
        "3",
        "-N",
        "60",
        "-B",
        "64",
        "--inflight",
        "4",
        "-T",
        "30",
    ]);
    for (k, v) in [
        ("received", "60"),
        ("lost", "0"),
        ("dup", "0"),
        ("misrouted", "0"),
        ("opened", "60"),
    ] {
        assert_eq!(r[k], v, "{k}: {r:?}");
    }
    assert_eq!(r["unacked_left"], "0", "{r:?}");
    assert_ne!(r["p99_ms"], "NA");
    // By default publishers send on their WebSocket.
    assert_eq!(r["send_over"], "ws", "{r:?}");
    assert_eq!(r["send_errors"], "0", "{r:?}");
}

#[test]
fn relay_over_http_requests_still_works() {
    let r = run(&[
        "relay",
        "--send-over",
        "http",
        "-P",
        "2",
        "-S",
        "3",
        "-N",
        "40",
        "--inflight",
        "4",
        "-T",
        "30",
    ]);
    for (k, v) in [
        ("send_over", "http"),
        ("received", "40"),
        ("lost", "0"),
        ("dup", "0"),
        ("opened", "40"),
    ] {
        assert_eq!(r[k], v, "{k}: {r:?}");
    }
}

#[test]
fn relay_at_a_rate_and_offline_drain() {
    let r = run(&[
        "relay", "-P", "1", "-S", "2", "-N", "40", "--rate", "200", "-T", "30",
    ]);
    assert_eq!(r["received"], "40", "{r:?}");
    let r = run(&[
        "offline", "-P", "2", "-S", "3", "-M", "60", "--page", "7", "-T", "30",
    ]);
    for (k, v) in [
        ("send_over", "ws"),
        ("acked", "60"),
        ("received", "60"),
        ("lost", "0"),
        ("dup", "0"),
        ("opened", "60"),
        ("unacked_left", "0"),
    ] {
        assert_eq!(r[k], v, "{k}: {r:?}");
    }
}

#[test]
fn idle_connections_stay_up() {
    let r = run(&["idle", "-C", "20", "--hold", "1", "-T", "30"]);
    assert_eq!(r["all_connected"], "true", "{r:?}");
    assert_eq!(r["still_up"], "20", "{r:?}");
}

/// Two nodes on one PostgreSQL database (a fresh one from
/// `SOTTO_TEST_POSTGRES_URL`; skipped when it is unset), sharing the
/// certificate and the secret: the load generator spreads devices over both
/// `--server`s, so half the pushes cross nodes, and nothing is lost.
#[test]
fn relay_over_two_nodes_delivers_everything_once() {
    let Some(admin) = std::env::var("SOTTO_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: SOTTO_TEST_POSTGRES_URL unset");
        return;
    };
    let name = format!("sotto_loadgen_{}", std::process::id());
    let base = admin.split('?').next().unwrap();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    let drop_db = |admin: &str| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
                .await
                .expect("connect to SOTTO_TEST_POSTGRES_URL");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .unwrap();
        });
    };
    drop_db(&admin);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (d1, d2) = (dir.path().join("node1"), dir.path().join("node2"));
    let start = |data: std::path::PathBuf, first: Option<&std::path::Path>| {
        let mut c = sotto_server::Config::new("127.0.0.1:0".parse().unwrap(), data);
        c.database = Some(url.clone());
        c.limits.rates = None;
        if let Some(first) = first {
            c.tls = sotto_server::Tls::Files {
                cert: first.join("cert.pem"),
                key: first.join("key.pem"),
            };
            c.secret_file = Some(first.join("server_secret"));
        }
        rt.block_on(sotto_server::start(c)).unwrap()
    };
    let n1 = start(d1.clone(), None);
    let n2 = start(d2, Some(&d1));
    assert_eq!(n1.fingerprint, n2.fingerprint);
    let pid = std::process::id().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_sotto-loadgen"))
        .args(["--server", &format!("https://{}", n1.addr)])
        .args(["--server", &format!("https://{}", n2.addr)])
        .args(["--fingerprint", &n1.fingerprint])
        .args(["--server-pid", &format!("{pid},{pid}")])
        .args(["--max-secs", "120"])
        .args([
            "relay",
            "-P",
            "2",
            "-S",
            "4",
            "-N",
            "60",
            "--inflight",
            "4",
            "-T",
            "30",
        ])
        .output()
        .unwrap();
    // Both nodes took sends and pushed to their own sockets: the devices
    // were spread over the two URLs.
    let counters = rt.block_on(async {
        let fp = sotto_loadgen::net::parse_fingerprint(&n1.fingerprint).unwrap();
        let tls =
            sotto_loadgen::net::tls_config(sotto_loadgen::net::CertCheck::Pinned(fp)).unwrap();
        let api = sotto_loadgen::net::Api::new("https://127.0.0.1", tls, 1).unwrap();
        let mut counters = Vec::new();
        for n in [&n1, &n2] {
            let text = api
                .http
                .get(format!("https://{}/metrics", n.addr))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value = |name: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                    .unwrap_or(0.0) as u64
            };
            counters.push((value("sotto_sends_total"), value("sotto_pushes_total")));
        }
        n1.shutdown().await;
        n2.shutdown().await;
        counters
    });
    drop_db(&admin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = result_line(&stdout);
    for (k, v) in [
        ("received", "60"),
        ("lost", "0"),
        ("dup", "0"),
        ("misrouted", "0"),
        ("opened", "60"),
        ("unacked_left", "0"),
    ] {
        assert_eq!(r[k], v, "{k}: {r:?}");
    }
    for (node, (sends, pushes)) in counters.iter().enumerate() {
        assert!(*sends > 0 && *pushes > 0, "node {node}: {counters:?}");
    }
    assert_eq!(
        counters.iter().map(|c| c.0).sum::<u64>(),
        60,
        "{counters:?}"
    );
    // both pids are read (summed): the RSS is about twice this process's
    let rss: u64 = r["rss_after_kb"].parse().unwrap();
    assert!(rss > 0, "{r:?}");
}

/// The sender scenario against a sender made on the data directory first
/// (as `sotto admin sender add` does): every call accepted and held (no
/// number is registered); a wrong API key stops the run before timing.
#[test]
fn sender_api_messages_are_held_for_unregistered_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let admin = sotto_server::phone::admin::Admin::open(dir.path(), None, None, None).unwrap();
    let key = admin
        .sender_add("acme", "Acme Clinic", "http://127.0.0.1:9/none")
        .unwrap()
        .api_key;
    drop(admin);
    let sender = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_sotto-loadgen"))
            .arg("--spawn-server")
            .arg(dir.path())
            .args(["--max-secs", "120", "sender", "--api-key", key])
            .args(["-N", "30", "-M", "60", "-C", "4", "-T", "30"])
            .output()
            .unwrap()
    };
    let out = sender("sk_wrong");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = sender(&key);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap();
    for kv in ["held=60", "sent=0", "errors=0", "scenario=sender"] {
        assert!(line.split_whitespace().any(|w| w == kv), "{kv}: {line}");
    }
}
