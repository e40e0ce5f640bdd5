//! Nothing lost, nothing readable: an acknowledged send survives SIGKILL of
//! the server process and a restart on the same data directory, and the
//! data directory holds no username, message body or client key in clear.
//!
//! The server to kill runs in a child process: this test binary re-runs
//! itself with `SOTTO_TEST_CHILD_DATA` set, which turns `child_server` into
//! a server that prints its address and waits to be killed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use sotto_api::*;

const CHILD_ENV: &str = "SOTTO_TEST_CHILD_DATA";

#[test]
fn child_server() {
    common::child_server(CHILD_ENV, Duration::from_secs(3600));
}

fn spawn_child(dir: &Path) -> (KillOnDrop, SocketAddr, String) {
    common::spawn_child("child_server", CHILD_ENV, dir)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn an_acknowledged_send_survives_sigkill_and_nothing_is_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, fingerprint) = spawn_child(dir.path());
    let http = Http::new(addr, &fingerprint);
    let (alice, bob) = (User::new("alice-durable"), User::new("bob-durable"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 5).await;
    let body = "secret plans for the durable meeting";
    let mut sent = Vec::new();
    for i in 0..5 {
        let datagram = if i == 0 {
            seal_to(&http, &mut a, &bob, &format!("{body} {i}")).await
        } else {
            seal_for(&mut a, &[b.id()], &format!("{body} {i}"))
        };
        let resp = send(&http, &a, datagram).await;
        assert_eq!(resp.status(), StatusCode::OK);
        sent.push(resp.json::<SendResponse>().await.unwrap().datagram_id);
    }
    // No clean shutdown: SIGKILL right after the last acknowledgement.
    child.0.kill().unwrap();
    child.0.wait().unwrap();

    // Search the raw files as the crash left them (WAL included).
    let mut needles: Vec<(String, Vec<u8>)> = vec![
        ("alice's name".into(), b"alice-durable".to_vec()),
        ("bob's name".into(), b"bob-durable".to_vec()),
        (
            "alice's username hash".into(),
            username_hash("alice-durable").to_vec(),
        ),
        (
            "alice's username hash (hex)".into(),
            hex::encode(username_hash("alice-durable")).into_bytes(),
        ),
        ("the body".into(), b"secret plans".to_vec()),
        (
            "alice's user secret key".into(),
            alice.key.to_bytes().to_vec(),
        ),
        ("bob's user secret key".into(), bob.key.to_bytes().to_vec()),
    ];
    needles.push((
        "alice's device secret keys".into(),
        a.key().to_bytes()[..32].to_vec(),
    ));
    needles.push((
        "bob's device dh secret".into(),
        b.key().to_bytes()[32..].to_vec(),
    ));
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        files += 1;
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{} contains {what} in clear",
                path.display()
            );
        }
    }
    assert!(files >= 4, "database, WAL, secret, certificate");

    // Restart on the same data directory: same certificate, and Bob gets
    // every acknowledged datagram, in order.
    let server = start(dir.path(), Duration::from_secs(3600)).await;
    assert_eq!(server.fingerprint, fingerprint, "the certificate is reused");
    let http = Http::of(&server);
    let batch = fetch(&http, &b).await;
    assert_eq!(batch.items.len(), 5);
    for (i, item) in batch.items.iter().enumerate() {
        assert_eq!(item.seq, i as u64 + 1);
        assert_eq!(open_text(&mut b, item), format!("{body} {i}"));
    }
    // And the server goes on: sequence numbers continue.
    let d = seal_for(&mut a, &[b.id()], "after the crash");
    assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    let page: MailboxBatch = http
        .call(b.key(), Method::GET, "/v1/mailbox?after=5", NO_BODY)
        .await;
    assert_eq!(
        page.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![6]
    );
    let _ = sent;
    server.shutdown().await;
}

#[tokio::test]
async fn clean_restart_keeps_users_prekeys_and_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), Duration::ZERO).await;
    let fingerprint = first.fingerprint.clone();
    let http = Http::of(&first);
    let bob = User::new("bob");
    let b = bob.register(&http, 3).await;
    first.shutdown().await;

    let second = start(dir.path(), Duration::ZERO).await;
    assert_eq!(second.fingerprint, fingerprint);
    let http = Http::of(&second);
    let status: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    assert_eq!(status.one_time, 3);
    second.shutdown().await;
}

#[tokio::test]
async fn a_busy_port_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), Duration::ZERO).await;
    let other = tempfile::tempdir().unwrap();
    let config = sotto_server::Config::new(first.addr, other.path().to_path_buf());
    let err = sotto_server::start(config)
        .await
        .err()
        .expect("the port is taken");
    assert_eq!(
        err.to_string(),
        format!("cannot listen on {}: address in use", first.addr)
    );
    // A data directory that cannot be created.
    let file = other.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let config = sotto_server::Config::new("127.0.0.1:0".parse().unwrap(), file.join("srv"));
    let err = sotto_server::start(config)
        .await
        .err()
        .expect("no data directory");
    let line = err.to_string();
    assert!(
        line.starts_with("cannot open the data directory ") && !line.contains('\n'),
        "{line}"
    );
    // Certificates from files: a missing file names itself.
    let mut config =
        sotto_server::Config::new("127.0.0.1:0".parse().unwrap(), other.path().to_path_buf());
    config.tls = sotto_server::Tls::Files {
        cert: other.path().join("nope.pem"),
        key: other.path().join("nope.key"),
    };
    let err = sotto_server::start(config)
        .await
        .err()
        .expect("no certificate");
    assert!(err.to_string().contains("nope.pem"), "{err}");
    // Real certificate files work, and the fingerprint is theirs.
    let mut config =
        sotto_server::Config::new("127.0.0.1:0".parse().unwrap(), other.path().to_path_buf());
    config.tls = sotto_server::Tls::Files {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let third = sotto_server::start(config).await.unwrap();
    assert_eq!(third.fingerprint, first.fingerprint);
    assert!(Http::of(&third).clock().await > 0);
    third.shutdown().await;
    first.shutdown().await;
}
