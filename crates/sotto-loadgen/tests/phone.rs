//! The `phone` scenario, small, against a real server (in this process,
//! real sockets, an SMS sink file): numbers registered with codes read
//! from the sink, every message sealed on the server reaches its number's
//! device once and opens, and held messages reach newly registered numbers
//! and end `delivered`.

use std::collections::HashMap;
use std::process::Command;

fn result_line(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn registers_numbers_then_every_message_reaches_its_device_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    std::fs::create_dir_all(&data).unwrap();
    let admin = sotto_server::phone::admin::Admin::open(&data, None, None, None).unwrap();
    let key = admin
        .sender_add("acme", "Acme Clinic", "http://127.0.0.1:9/none")
        .unwrap()
        .api_key;
    drop(admin);
    let sink = data.join("sms.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = sotto_server::Config::new("127.0.0.1:0".parse().unwrap(), data.clone());
    config.limits.rates = None;
    config.phone.sms = sotto_server::phone::sms::SmsConfig::Sink(sink.clone());
    let server = rt.block_on(sotto_server::start(config)).unwrap();
    let loadgen = |key: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sotto-loadgen"))
            .args(["--server", &format!("https://{}", server.addr)])
            .args(["--fingerprint", &server.fingerprint])
            .args(["--max-secs", "150", "phone", "--api-key", key])
            .arg("--sms-sink")
            .arg(&sink)
            .args(args)
            .output()
            .unwrap()
    };
    let out = loadgen(
        &key,
        &["-N", "5", "-M", "12", "-R", "3", "-C", "4", "--e2e", "3"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = result_line(&stdout);
    for (k, v) in [
        ("scenario", "phone"),
        ("registered", "5"),
        // `sent`: each number had a registered device to seal to
        ("sent", "12"),
        ("send_errors", "0"),
        // each device opened exactly the messages to its number
        ("received", "12"),
        ("opened", "12"),
        ("open_failed", "0"),
        ("lost", "0"),
        ("dup", "0"),
        ("misrouted", "0"),
        ("e2e", "3"),
        ("e2e_opened", "3"),
        ("e2e_lost", "0"),
        ("e2e_dup", "0"),
        ("e2e_delivered", "3"),
        // one code per registration, each read by its waiter
        ("otp_sms", "8"),
        ("otp_sms_unclaimed", "0"),
    ] {
        assert_eq!(r[k], v, "{k}: {r:?}");
    }
    assert_ne!(r["p99_ms"], "NA", "{r:?}");
    assert_ne!(r["e2e_open_p99_ms"], "NA", "{r:?}");
    // A wrong key stops the run before anything is registered.
    let out = loadgen("sk_wrong", &["-N", "2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    rt.block_on(server.shutdown());
}
