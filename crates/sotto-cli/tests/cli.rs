//! The command-line contract of issue 4, run as a user would: the real
//! `sotto` binary, a real server process, real temp dirs and sockets.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;

fn inbox(home: &Path) -> Vec<serde_json::Value> {
    json_lines(&ok(home, &["inbox", "--json"]))
}

fn bodies(messages: &[serde_json::Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_users_several_devices_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    let bob2 = link(dir.path(), "bob2", &bob, &server);

    let devices = json_lines(&ok(&bob, &["devices", "--json"]));
    assert_eq!(devices.len(), 2, "bob has two devices: {devices:?}");

    ok(&alice, &["send", "bob", "the meeting moved to 3pm"]);
    for home in [&bob, &bob2] {
        let msgs = inbox(home);
        assert_eq!(bodies(&msgs), ["the meeting moved to 3pm"], "{home:?}");
        let m = &msgs[0];
        assert_eq!(m["from"], "alice");
        assert_eq!(m["to"], "bob");
        assert!(m["id"].is_string() && m["sent_at"].is_u64());
        // Fetching again shows it once.
        assert_eq!(inbox(home).len(), 1);
    }

    // A body from standard input.
    let mut child = sotto()
        .arg("--home")
        .arg(&bob2)
        .args(["send", "alice", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"ok, 3pm it is\n").unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        bodies(&inbox(&alice)),
        ["the meeting moved to 3pm", "ok, 3pm it is"]
    );
    // bob's other device has the reply in its history too.
    assert_eq!(
        bodies(&inbox(&bob)),
        ["the meeting moved to 3pm", "ok, 3pm it is"]
    );

    // Safety numbers agree on both sides.
    let a = json_lines(&ok(&alice, &["verify", "bob", "--json"]));
    let b = json_lines(&ok(&bob, &["verify", "alice", "--json"]));
    let number = a[0]["safety_number"].as_str().unwrap();
    assert_eq!(number.len(), 60, "{a:?}");
    assert!(number.bytes().all(|d| d.is_ascii_digit()));
    assert_eq!(number, b[0]["safety_number"].as_str().unwrap());
    let human = ok(&alice, &["verify", "bob"]);
    assert!(
        human.contains(&number[..5]),
        "the human form shows the digits: {human}"
    );

    // Blocking drops silently (alice is not told), unblocking lets through.
    ok(&bob, &["block", "alice"]);
    ok(&alice, &["send", "bob", "are you there?"]);
    assert!(!ok(&bob, &["inbox"]).contains("are you there?"));
    ok(&bob, &["unblock", "alice"]);
    ok(&alice, &["send", "bob", "still there?"]);
    assert!(ok(&bob, &["inbox"]).contains("still there?"));

    // Clear errors.
    let e = err(&alice, &["send", "nobody-here", "hi"]);
    assert!(e.contains("nobody-here"), "{e}");
    let wrong = sotto()
        .arg("--home")
        .arg(&alice)
        .env("SOTTO_PASSPHRASE", "wrong")
        .arg("inbox")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("passphrase"));
}

#[test]
fn changed_key_is_shown_refused_then_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    ok(&alice, &["send", "bob", "hi"]);
    // Alice's store holds another key for bob, as if the server now showed
    // bob with a new key.
    {
        let store = sotto_store::client::ClientStore::open(&alice, PASS).unwrap();
        let mut contact = store.contact("bob").unwrap().unwrap();
        contact.user_key = [7; 32];
        store.put_contact(&contact).unwrap();
    }
    let e = err(&alice, &["send", "bob", "are you you?"]);
    assert!(e.contains("key changed"), "{e}");
    // verify shows the number for the new key, and still refuses.
    let out = run(&alice, &["verify", "bob", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept"));
    let shown = json_lines(&String::from_utf8(out.stdout).unwrap());
    let bobs = json_lines(&ok(&bob, &["verify", "alice", "--json"]));
    assert_eq!(shown[0]["safety_number"], bobs[0]["safety_number"]);
    err(&alice, &["send", "bob", "still refused"]);
    let accepted = json_lines(&ok(&alice, &["verify", "bob", "--accept", "--json"]));
    assert_eq!(accepted[0]["safety_number"], bobs[0]["safety_number"]);
    ok(&alice, &["send", "bob", "accepted"]);
    assert_eq!(bodies(&inbox(&bob)), ["hi", "accepted"]);
}

#[test]
fn accepted_datagram_survives_server_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let server = Server::start(&data);
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    ok(&alice, &["send", "bob", "sent while bob was offline"]);
    let url = server.url.clone();
    let fingerprint = server.fingerprint.clone();
    server.kill9();

    let listen = url.strip_prefix("https://").unwrap();
    let restarted = Server::start_on(&data, listen);
    assert_eq!(
        restarted.fingerprint, fingerprint,
        "the certificate is kept across restarts"
    );
    assert_eq!(bodies(&inbox(&bob)), ["sent while bob was offline"]);
}

#[test]
fn server_unreachable_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(
        &dir.path().join("x"),
        &["register", "x", "--server", "https://127.0.0.1:9"],
    );
    assert!(e.contains("127.0.0.1:9"), "{e}");
}

#[test]
fn nothing_readable_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    // Names long enough that random ciphertext will not contain them by chance.
    let alice = register(dir.path(), "alice-c4f1e8", &server);
    let bob = register(dir.path(), "bob-93d0aa", &server);
    let body = "secret-body-7f3a9c";
    ok(&alice, &["send", "bob-93d0aa", body]);
    assert_eq!(bodies(&inbox(&bob)), [body]);
    for needle in [body, "alice-c4f1e8", "bob-93d0aa"] {
        for root in [dir.path().join("srv"), alice.clone(), bob.clone()] {
            assert_no_clear_text(&root, needle.as_bytes());
        }
    }
}

fn assert_no_clear_text(root: &Path, needle: &[u8]) {
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_clear_text(&path, needle);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} contains {:?} in clear",
            path.display(),
            String::from_utf8_lossy(needle)
        );
    }
}

#[test]
fn a_short_passphrase_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let home = dir.path().join("alice");
    let out = sotto()
        .arg("--home")
        .arg(&home)
        .env("SOTTO_PASSPHRASE", "1234567")
        .args(["register", "alice", "--server", &server.url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("at least 8 characters"), "{e}");
    assert!(!home.join(sotto_store::client::DB_FILE).exists());
    // Registered with a long enough one, the home is its owner's only.
    let home = register(dir.path(), "alice", &server);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&home).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for f in std::fs::read_dir(&home).unwrap() {
            let p = f.unwrap().path();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}

/// Issue 13, finding 12: `sotto devices remove <id>` (the contract), run
/// on the device holding the user key; the removed device is refused, and
/// alice's next message reaches only bob's remaining device.
#[test]
fn a_lost_device_is_removed_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    let lost = link(dir.path(), "bob-lost", &bob, &server);
    let devices = json_lines(&ok(&bob, &["devices", "--json"]));
    let lost_id = devices.iter().find(|d| d["this_device"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let first_id = devices.iter().find(|d| d["this_device"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The lost device does not hold the user key: it cannot remove bob's.
    let e = err(&lost, &["devices", "remove", &first_id]);
    assert!(e.contains("user key"), "{e}");
    let out = ok(&bob, &["devices", "remove", &lost_id]);
    assert!(out.contains(&lost_id), "{out}");
    let left = json_lines(&ok(&bob, &["devices", "--json"]));
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], first_id.as_str());

    ok(&alice, &["send", "bob", "after the loss"]);
    assert_eq!(bodies(&inbox(&bob)), ["after the loss"]);
    err(&lost, &["inbox"]);
    let e = err(&bob, &["devices", "remove", &"ab".repeat(32)]);
    assert!(e.contains("sotto devices"), "{e}");
}
