//! Device linking attacked against a real `sotto server` process (issue 13,
//! finding 3): another user who saw the code, an approval made without the
//! code, and link data sent as a datagram by another of bob's devices. The
//! attackers' tools are the `sotto` binary and the client library's test
//! hooks; the new device is always the real `sotto link` command.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sotto_client::{Client, LinkSyncBody, SyncContact};

/// A running `sotto link`: the process, the code it printed, its link id
/// and the thread reading the rest of its stdout.
struct LinkRun {
    child: Child,
    code: String,
    link_id: String,
    out: std::thread::JoinHandle<String>,
}

/// Starts `sotto --home HOME link --server URL [--user USER]` and reads
/// its code.
fn start_link(home: &Path, server: &Server, user: Option<&str>) -> LinkRun {
    let mut cmd = sotto();
    cmd.arg("--home")
        .arg(home)
        .args(["link", "--server", &server.url]);
    if let Some(u) = user {
        cmd.args(["--user", u]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let code = loop {
        let line = lines.next().expect("link printed no code").unwrap();
        if let Some(code) = line.strip_prefix("code: ") {
            break code.trim().to_string();
        }
    };
    let out =
        std::thread::spawn(move || lines.map_while(|l| l.ok()).collect::<Vec<_>>().join("\n"));
    LinkRun {
        child,
        link_id: code.rsplit_once('-').unwrap().0.to_string(),
        code,
        out,
    }
}

/// Waits for the link process to end: (success, rest of stdout, stderr).
fn finish_link(run: LinkRun) -> (bool, String, String) {
    let LinkRun { mut child, out, .. } = run;
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "link did not end after approval");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.success(), out.join().unwrap(), stderr)
}

fn device_count(home: &Path) -> usize {
    json_lines(&ok(home, &["devices", "--json"])).len()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The contract: `sotto link --user bob` refuses mallory's approval (she
/// saw the code) with "approved by another user: mallory" and a non-zero
/// exit, and enrols nothing; then bob approves a new run and it completes.
#[test]
fn link_with_user_refuses_an_approval_by_another_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let bob = register(dir.path(), "bob", &server);
    let mallory = register(dir.path(), "mallory", &server);
    let bob2 = dir.path().join("bob2");

    let run = start_link(&bob2, &server, Some("bob"));
    ok(&mallory, &["approve", &run.code]);
    let (success, out, stderr) = finish_link(run);
    assert!(!success, "refused: {out}");
    assert!(
        stderr.contains("approved by another user: mallory"),
        "{stderr}"
    );
    assert!(!out.contains("linked:"), "{out}");
    // Nothing was enrolled on bob2, and bob still has one device.
    let e = err(&bob2, &["inbox"]);
    assert!(e.contains("no sotto account"), "{e}");
    assert_eq!(device_count(&bob), 1);

    // The honest run in the same home completes.
    let run = start_link(&bob2, &server, Some("bob"));
    ok(&bob, &["approve", &run.code]);
    let (success, out, stderr) = finish_link(run);
    assert!(success, "{out}{stderr}");
    assert!(
        out.contains("linked: this device is now a device of bob"),
        "{out}"
    );
    assert_eq!(device_count(&bob), 2);
}

/// Without `--user`, the output names the account joined and its safety
/// fingerprint, which is bob's half of any safety number with bob.
#[test]
fn link_shows_the_user_and_fingerprint_it_joins() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    let bob2 = dir.path().join("bob2");
    let run = start_link(&bob2, &server, None);
    ok(&bob, &["approve", &run.code]);
    let (success, out, stderr) = finish_link(run);
    assert!(success, "{out}{stderr}");
    let fp = out
        .lines()
        .find_map(|l| l.strip_prefix("approved by bob (safety fingerprint "))
        .unwrap_or_else(|| panic!("no account line: {out}"))
        .trim_end_matches(')')
        .to_string();
    assert_eq!(fp.len(), 35, "{fp}");
    let number = ok(&alice, &["verify", "bob"]);
    assert!(number.contains(&fp), "{fp} not in {number}");
    assert!(out.contains("linked: this device is now a device of bob"));
}

/// mallory has no code, only the link id (shown by the server to anyone
/// who polls it, and on the screen): her `sotto approve` with a guessed
/// secret refuses, and an approval her modified client makes anyway (her
/// user key, a made-up secret; the server accepts it, as it cannot tell)
/// is refused by the new device, with and without `--user`.
#[test]
fn an_approval_made_without_the_code_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let bob = register(dir.path(), "bob", &server);
    let mallory = register(dir.path(), "mallory", &server);
    for user in [Some("bob"), None] {
        let bob2 = dir.path().join(format!("bob2-{user:?}"));
        let run = start_link(&bob2, &server, user);
        let guess = format!("{}-{}", run.link_id, "a".repeat(26));
        assert_ne!(guess, run.code);
        let e = err(&mallory, &["approve", &guess]);
        assert!(e.contains("does not match"), "{e}");
        runtime().block_on(async {
            let mut m = Client::open(&mallory, PASS).await.unwrap();
            m.approve_without_code(&run.link_id).await.unwrap();
        });
        let (success, out, stderr) = finish_link(run);
        assert!(!success, "refused: {out}");
        assert!(
            stderr.contains("not made with this device's link code"),
            "{stderr}"
        );
        let e = err(&bob2, &["inbox"]);
        assert!(e.contains("no sotto account"), "{e}");
    }
    assert_eq!(device_count(&bob), 1);
}

/// Another device of bob's (compromised; it has no user key) sends bob2
/// link data as a datagram naming carol, then naming bob with a "verified"
/// contact: the first is refused, the contact of the second comes in
/// unverified, and bob2's contacts from bob's approval stay verified.
#[test]
fn link_data_sent_as_a_datagram_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let _alice = register(dir.path(), "alice", &server);
    let _carol = register(dir.path(), "carol", &server);
    let bob = register(dir.path(), "bob", &server);
    runtime().block_on(async {
        let mut b = Client::open(&bob, PASS).await.unwrap();
        b.verify("alice").await.unwrap();
        b.mark_verified("alice").unwrap();
    });
    let bob3 = link(dir.path(), "bob3", &bob, &server);
    let bob2 = link(dir.path(), "bob2", &bob, &server);
    runtime().block_on(async {
        let mut b3 = Client::open(&bob3, PASS).await.unwrap();
        for name in ["carol", "bob"] {
            let body = LinkSyncBody {
                username: name.into(),
                contacts: vec![SyncContact {
                    username: "dave".into(),
                    user_key: sotto_proto::UserPublic([7; 32]),
                    verified: true,
                }],
                blocked: vec![],
            };
            b3.send_raw_body("bob", sotto_proto::content::LINK_SYNC, body.encode())
                .await
                .unwrap();
        }
    });
    let out = run(&bob2, &["inbox"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("naming another user (carol) was refused"),
        "{stderr}"
    );
    let contacts = runtime().block_on(async {
        let c = Client::open(&bob2, PASS).await.unwrap();
        assert_eq!(c.username(), "bob");
        c.contacts().unwrap()
    });
    let find = |n: &str| contacts.iter().find(|c| c.username == n).unwrap().verified;
    assert!(find("alice"), "from bob's signed approval: verified");
    assert!(!find("dave"), "from a datagram: unverified");
}
