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
