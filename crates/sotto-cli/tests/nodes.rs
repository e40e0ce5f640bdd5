//! Several server nodes on one PostgreSQL database (issue 11), run as an
//! operator and users would: real `sotto server --database` processes,
//! real `sotto` clients, a fresh database per test (from
//! `SOTTO_TEST_POSTGRES_URL`; skipped with a message when it is unset).

mod common;
mod phone;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;

/// A database of its own on the test server, dropped at the end.
struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    fn create() -> Option<TestDb> {
        let Some(admin_url) = std::env::var("SOTTO_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            // Straight to stderr: the test harness captures eprintln!, and a
            // skip must be seen.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: SOTTO_TEST_POSTGRES_URL unset");
            return None;
        };
        let name = format!(
            "sotto_nodes_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed)
        );
        // The database itself is made by the first node (or `admin
        // migrate`), as in a fresh deployment.
        let base = admin_url.split('?').next().unwrap();
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        let db = TestDb {
            admin_url,
            name,
            url,
        };
        db.sql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name));
        Some(db)
    }

    fn sql(&self, sql: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls)
                .await
                .expect("connect to SOTTO_TEST_POSTGRES_URL");
            tokio::spawn(conn);
            client.batch_execute(sql).await.unwrap();
        });
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        rt.block_on(async {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&self.admin_url, tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client.batch_execute(&sql).await;
            }
        });
    }
}

/// Node 1 makes the secret and the certificate in its data directory;
/// every other node is given them (what nodes share: README.md).
fn node(db: &TestDb, dir: &Path, n: u32, listen: &str) -> Server {
    node_with(db, dir, n, listen, false)
}

/// As [`node`]; with `own_hold_key` the node makes a hold key of its own
/// instead of sharing the first node's (a misconfigured node).
fn node_with(db: &TestDb, dir: &Path, n: u32, listen: &str, own_hold_key: bool) -> Server {
    let data = dir.join(format!("node{n}"));
    let first = dir.join("node1");
    let mut args: Vec<&OsStr> = vec![
        "--listen".as_ref(),
        listen.as_ref(),
        "--database".as_ref(),
        db.url.as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
    ];
    let (cert, key, secret, hold_key) = (
        first.join("cert.pem"),
        first.join("key.pem"),
        first.join("server_secret"),
        first.join("hold_key"),
    );
    if n > 1 {
        // Every node of one database shares the secret and the hold key.
        args.extend([
            "--cert".as_ref(),
            cert.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--secret-file".as_ref(),
            secret.as_os_str(),
        ]);
        if !own_hold_key {
            args.extend(["--hold-key-file".as_ref(), hold_key.as_os_str()]);
        }
    }
    Server::start_args(&args)
}

/// `sotto listen --json` in the background: each message's body and the
/// moment its line arrived.
struct Listener {
    child: Child,
    lines: mpsc::Receiver<(String, Instant)>,
}

impl Listener {
    fn start(home: &Path) -> Listener {
        let mut child = sotto()
            .arg("--home")
            .arg(home)
            .args(["listen", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let body = v["body"].as_str().unwrap_or_default().to_owned();
                if tx.send((body, Instant::now())).is_err() {
                    break;
                }
            }
        });
        // Time to open the home and connect the socket (a message sent
        // before would be fetched on connect, not pushed: the timing
        // assertions below would then fail, not pass wrongly).
        std::thread::sleep(Duration::from_secs(3));
        Listener { child, lines }
    }

    /// The bodies that arrive within `wait`.
    fn drain(&self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok((body, _)) => got.push(body),
                Err(_) => break,
            }
        }
        got
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `from` sends `body`; returns when the send is acknowledged, and how
/// long after that the listener's line arrived (zero if before).
fn pushed_after_send(from: &Path, to: &str, body: &str, listener: &Listener) -> Duration {
    ok(from, &["send", to, body]);
    let acked = Instant::now();
    let (got, at) = listener
        .lines
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{body:?} was not pushed"));
    assert_eq!(got, body);
    at.saturating_duration_since(acked)
}

#[test]
fn two_nodes_push_both_ways_exactly_once_and_share_a_room() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let n1 = node(&db, dir.path(), 1, "127.0.0.1:0");
    let n2 = node(&db, dir.path(), 2, "127.0.0.1:0");
    assert_eq!(
        n1.fingerprint, n2.fingerprint,
        "the nodes share the certificate"
    );
    let alice = register(dir.path(), "alice", &n1);
    let bob = register(dir.path(), "bob", &n2);
    let carol = register(dir.path(), "carol", &n2);

    // A first message sets up the session (fetched, not pushed).
    ok(&alice, &["send", "bob", "hello"]);
    assert!(ok(&bob, &["inbox"]).contains("hello"));
    ok(&bob, &["send", "alice", "hi"]);
    assert!(ok(&alice, &["inbox"]).contains("hi"));

    // alice (node 1) -> bob (node 2), pushed within a second.
    let listening = Listener::start(&bob);
    for i in 0..3 {
        let late = pushed_after_send(&alice, "bob", &format!("a->b {i}"), &listening);
        assert!(late < Duration::from_secs(1), "push took {late:?}");
    }
    assert_eq!(
        listening.drain(Duration::from_secs(2)),
        Vec::<String>::new(),
        "exactly once"
    );
    drop(listening);
    // bob (node 2) -> alice (node 1).
    let listening = Listener::start(&alice);
    for i in 0..3 {
        let late = pushed_after_send(&bob, "alice", &format!("b->a {i}"), &listening);
        assert!(late < Duration::from_secs(1), "push took {late:?}");
    }
    assert_eq!(
        listening.drain(Duration::from_secs(2)),
        Vec::<String>::new(),
        "exactly once"
    );
    drop(listening);
    let history = json_lines(&ok(&alice, &["inbox", "--json"]));
    for i in 0..3 {
        let body = format!("b->a {i}");
        assert_eq!(
            history.iter().filter(|m| m["body"] == body).count(),
            1,
            "{body}"
        );
    }

    // A room of three over both nodes.
    ok(
        &alice,
        &["room", "create", "Launch", "--members", "bob,carol"],
    );
    ok(&bob, &["room", "send", "Launch", "from node 2"]);
    ok(&alice, &["room", "send", "Launch", "from node 1"]);
    for home in [&alice, &bob, &carol] {
        let shown = ok(home, &["room", "show", "Launch"]);
        assert!(shown.contains("bob: from node 2"), "{shown}");
        assert!(shown.contains("alice: from node 1"), "{shown}");
        assert!(shown.contains("members: alice *, bob, carol"), "{shown}");
    }
}

/// A TCP forwarder standing in for a load balancer: connections go to the
/// node whose port is set now.
fn balancer(to: Arc<AtomicU16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(node) = TcpStream::connect(("127.0.0.1", to.load(Ordering::SeqCst))) else {
                continue;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), node.try_clone().unwrap()),
                (node, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    port
}

fn port_of(server: &Server) -> u16 {
    server.url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_node_killed_under_load_loses_and_duplicates_nothing_acknowledged() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let n1 = node(&db, dir.path(), 1, "127.0.0.1:0");
    let n2 = node(&db, dir.path(), 2, "127.0.0.1:0");
    let to = Arc::new(AtomicU16::new(port_of(&n1)));
    let front = format!("https://127.0.0.1:{}", balancer(to.clone()));
    let alice = dir.path().join("alice");
    ok(&alice, &["register", "alice", "--server", &front]);
    let bob = register(dir.path(), "bob", &n2);
    ok(&alice, &["send", "bob", "hello"]);

    // alice sends a stream; node 1 is killed (SIGKILL) in the middle of
    // it and the balancer sends her to node 2.
    let (acked_tx, acked) = mpsc::channel::<(String, bool)>();
    let sender: PathBuf = alice.clone();
    let stream = std::thread::spawn(move || {
        for i in 0..30 {
            let body = format!("stream {i}");
            let out = run(&sender, &["send", "bob", &body]);
            acked_tx.send((body, out.status.success())).unwrap();
        }
    });
    let mut results = Vec::new();
    while results.len() < 10 {
        results.push(acked.recv().unwrap());
    }
    n1.kill9();
    to.store(port_of(&n2), Ordering::SeqCst);
    stream.join().unwrap();
    results.extend(acked.try_iter());
    let sent: Vec<&String> = results.iter().filter(|r| r.1).map(|r| &r.0).collect();
    assert!(sent.len() >= 25, "most sends succeed: {results:?}");

    let history = json_lines(&ok(&bob, &["inbox", "--json"]));
    for (body, was_acked) in &results {
        let n = history
            .iter()
            .filter(|m| m["body"] == body.as_str())
            .count();
        if *was_acked {
            assert_eq!(n, 1, "{body} acknowledged: shown exactly once");
        } else {
            assert!(n <= 1, "{body} not acknowledged: shown at most once");
        }
    }
}

#[test]
fn admin_migrate_makes_the_database_is_idempotent_and_a_node_with_another_secret_is_refused() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let version = sotto_store::server::POSTGRES_SCHEMA_VERSION;
    let out = ok(dir.path(), &["admin", "migrate", "--database", &db.url]);
    assert_eq!(out.trim(), format!("schema version {version} (was 0)"));
    let out = ok(dir.path(), &["admin", "migrate", "--database", &db.url]);
    assert_eq!(out.trim(), format!("schema version {version} (up to date)"));
    let unreachable = err(
        dir.path(),
        &[
            "admin",
            "migrate",
            "--database",
            "postgres://postgres@127.0.0.1:1/sotto",
        ],
    );
    assert!(
        unreachable.contains("cannot migrate the database"),
        "{unreachable}"
    );

    // A node made the secret; one started with another is refused with
    // one line, before it serves anything.
    let n1 = node(&db, dir.path(), 1, "127.0.0.1:0");
    let other = dir.path().join("other_secret");
    std::fs::write(&other, [9u8; 32]).unwrap();
    let out = sotto()
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &db.url,
            "--data",
        ])
        .arg(dir.path().join("node3"))
        .arg("--secret-file")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not match this database"), "{stderr}");
    assert!(out.stdout.is_empty(), "never listened");
    drop(n1);
}

/// `sotto server` for a node of `db` delivering to phone numbers: the SMS
/// sink and the hold key of node 1 (what nodes share: README.md).
fn phone_node(db: &TestDb, dir: &Path, n: u32) -> Server {
    let data = dir.join(format!("node{n}"));
    let first = dir.join("node1");
    let (sink, hold_key) = (dir.join("sms.jsonl"), first.join("hold_key"));
    let mut args: Vec<&OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--database".as_ref(),
        db.url.as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--sms-sink".as_ref(),
        sink.as_os_str(),
        "--hold-key-file".as_ref(),
        hold_key.as_os_str(),
    ];
    let secret = first.join("server_secret");
    if n > 1 {
        args.extend(["--secret-file".as_ref(), secret.as_os_str()]);
    }
    Server::start_args(&args)
}

/// An organisation's message sent through node 1 to a number that then
/// registers through node 2: held in the shared database, delivered once,
/// reported once (both nodes run the worker); a node given another hold
/// key does not deliver to phone numbers (it could not open what the
/// others held) but serves the rest.
#[test]
fn a_message_held_through_one_node_reaches_a_phone_registering_on_another_once() {
    use phone::*;
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let n1 = phone_node(&db, dir.path(), 1);
    let n2 = phone_node(&db, dir.path(), 2);
    let sink = dir.path().join("sms.jsonl");
    let hook = Receiver::start("/replies");
    let data1 = dir.path().join("node1");
    let out = ok(
        dir.path(),
        &[
            "admin",
            "--data",
            data1.to_str().unwrap(),
            "--database",
            &db.url,
            "sender",
            "add",
            "acme",
            "--name",
            "Acme Clinic",
            "--webhook",
            &hook.url,
        ],
    );
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("api key: "))
        .expect("api key line")
        .to_string();
    let body = "Your results are ready";
    let a = send(
        &n1,
        &key,
        &format!(r#"{{"to": "{NUMBER}", "body": "{body}"}}"#),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["status"], "held");
    let id = a.json()["id"].as_str().unwrap().to_string();
    wait_sms(&sink, NUMBER, "Acme Clinic");
    assert_eq!(
        status(&n2, &key, &id).json()["status"],
        "held",
        "any node answers"
    );

    let pat = dir.path().join("pat");
    let out = ok(&pat, &["register-phone", NUMBER, "--server", &n2.url]);
    assert!(out.contains("verify-phone"), "{out}");
    let out = ok(&pat, &["verify-phone", &otp_for(&sink, NUMBER)]);
    assert!(out.contains("1 held message"), "{out}");
    let inbox = ok(&pat, &["inbox"]);
    assert!(inbox.contains(r#"acme ("Acme Clinic")"#), "{inbox}");
    assert_eq!(inbox.matches(body).count(), 1, "exactly once: {inbox}");
    wait_until(
        "status delivered",
        20,
        || status(&n1, &key, &id).json()["status"] == "delivered",
        || status(&n1, &key, &id).body,
    );
    hook.wait("delivered event", |r| {
        r.body.contains(&id) && r.body.contains("\"delivered\"")
    });
    std::thread::sleep(Duration::from_secs(3));
    for event in ["\"sent\"", "\"delivered\""] {
        let n = hook
            .all()
            .iter()
            .filter(|r| r.body.contains(&id) && r.body.contains(event))
            .count();
        assert_eq!(n, 1, "{event} reported once by two nodes' workers");
    }
    assert_eq!(
        sms(&sink)
            .iter()
            .filter(|(_, t)| t.contains("Acme Clinic"))
            .count(),
        1,
        "one invitation, though two workers send SMS"
    );

    // A third node with a hold key of its own serves, but not phone
    // numbers: it could open nothing the others held.
    let n3 = node_with(&db, dir.path(), 3, "127.0.0.1:0", true);
    let a = send(
        &n3,
        &key,
        &format!(r#"{{"to": "{NUMBER}", "body": "{body}"}}"#),
    );
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.json()["code"], "phone_unavailable");
    assert!(
        a.json()["error"].as_str().unwrap().contains("hold key"),
        "{}",
        a.body
    );
    let bob = register(dir.path(), "bob", &n3);
    assert!(bob.exists(), "everything else is served");
    drop(n3);
    drop((n1, n2));
}
