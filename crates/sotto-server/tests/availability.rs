//! Abusive clients cannot stop or fill the server (issue 13, findings 6 to
//! 9): each test performs the attack on real sockets and checks that it
//! fails and that honest clients are served.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::*;
use reqwest::{Method, StatusCode};
use sotto_api::*;
use sotto_server::{Rate, Rates};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ATTACKER: &str = "127.0.0.1";
const HONEST: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Reads until the server closes (or answers); true if it did within `t`.
async fn cut_within(
    conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    t: Duration,
) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(t, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // a 408 answer, then the close
            }
        }
    })
    .await
    .is_ok()
}

/// Finding 6: connections that send the headers of a request announcing a
/// body, and then nothing, used to hold a slot for ever; with every slot
/// held, nobody else got in.
#[tokio::test]
async fn slow_requests_from_one_address_do_not_keep_out_another() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.limits.max_connections = 16;
        c.limits.connections_per_address = 4;
        c.limits.header_timeout = Duration::from_secs(2);
        c.limits.body_timeout = Duration::from_secs(2);
    })
    .await;
    // The attacker tries to take every slot, half with a body that never
    // comes, half with headers that never end.
    let mut held = Vec::new();
    for i in 0..16 {
        let Ok(mut conn) = tls_from(ip(ATTACKER), server.addr, &server.fingerprint).await else {
            continue;
        };
        let head: &[u8] = if i % 2 == 0 {
            b"POST /v1/link HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
        } else {
            b"POST /v1/link HTTP/1.1\r\nHost: x\r\n"
        };
        if conn.write_all(head).await.is_ok() {
            held.push(conn);
        }
    }
    // An honest client from another address is served at once.
    let honest = Http::from_ip(server.addr, &server.fingerprint, ip(HONEST));
    let started = Instant::now();
    assert!(honest.clock().await > 0);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not kept waiting"
    );
    // Beyond its share, the attacker's connections were closed at once.
    let mut open = 0;
    for conn in held.iter_mut() {
        if !cut_within(conn, Duration::from_millis(200)).await {
            open += 1;
        }
    }
    assert!(open <= 4, "{open} slow connections held from one address");
    // Those it holds are cut after the read timeout.
    for conn in held.iter_mut() {
        assert!(cut_within(conn, Duration::from_secs(6)).await);
    }
    // And its address gets its share back.
    let again = Http::from_ip(server.addr, &server.fingerprint, ip(ATTACKER));
    assert!(again.clock().await > 0);
    server.shutdown().await;
}

/// Finding 6/7: a client that asks for a large answer and never reads it
/// pinned its connection (and what it buffered) for ever.
#[tokio::test]
async fn a_reader_that_never_reads_is_cut_after_the_write_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.limits.connections_per_address = 1;
        c.limits.write_timeout = Duration::from_secs(1);
        c.limits.rates = None;
    })
    .await;
    let http = Http::from_ip(server.addr, &server.fingerprint, ip(HONEST));
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    // Eight megabytes wait for bob.
    let big = "x".repeat(1 << 20);
    let first = seal_to(&http, &mut a, &bob, &big).await;
    assert_eq!(send(&http, &a, first).await.status(), StatusCode::OK);
    for _ in 0..7 {
        let d = seal_for(&mut a, &[b.id()], &big);
        assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    }
    // From the attacker's address (one connection allowed): a signed fetch
    // of all of it, never read.
    let mut conn = tls_from(ip(ATTACKER), server.addr, &server.fingerprint)
        .await
        .unwrap();
    let path = "/v1/mailbox?after=0&limit=100";
    let time = now_ms();
    let sig = b.key().sign(&request_signing_bytes("GET", path, time, b""));
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{}: {}\r\n{}: {time}\r\n{}: {}\r\n\r\n",
        AuthHeaders::DEVICE,
        hex::encode(b.id().0),
        AuthHeaders::TIME,
        AuthHeaders::SIGNATURE,
        hex::encode(sig)
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    // While the server is stuck writing, the address's only slot is taken;
    // after the write timeout it is free again.
    let other = Http::from_ip(server.addr, &server.fingerprint, ip(ATTACKER));
    let started = Instant::now();
    loop {
        let tried = tokio::time::timeout(
            Duration::from_secs(2),
            other.client.get(other.url("/v1/clock")).send(),
        )
        .await;
        if matches!(tried, Ok(Ok(r)) if r.status().is_success()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stalled connection was never cut"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(conn);
    server.shutdown().await;
}

/// Finding 6: upgraded WebSockets left every count; now they have their
/// own cap, and a device its own share.
#[tokio::test]
async fn websockets_are_capped_in_all_and_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.limits.max_websockets = 3;
        c.limits.websockets_per_device = 2;
    })
    .await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 20).await;
    let mut first = websocket(&http, &b).await;
    let mut second = websocket(&http, &b).await;
    // A third socket of bob closes his oldest.
    let mut third = websocket(&http, &b).await;
    assert!(closed(&mut first).await, "the oldest socket is replaced");
    // (Its session gives its slot back right after the close frame.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The server's cap: alice gets the last slot, then nobody.
    let _alice_ws = websocket(&http, &a).await;
    let carol = User::new("carol").register(&http, 1).await;
    let refused = try_websocket(&http, &carol).await.unwrap_err();
    match refused {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 503, got {other}"),
    }
    // Bob's two live sockets both get his pushes.
    let d = seal_to(&http, &mut a, &bob, "to both").await;
    assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    let mut got = Vec::new();
    for ws in [&mut second, &mut third] {
        match next_push(ws).await {
            Push::Message(item) => got.push(item),
            other => panic!("unexpected push {other:?}"),
        }
    }
    assert_eq!(got[0], got[1]);
    assert_eq!(open_text(&mut b, &got[0]), "to both");
    server.shutdown().await;
}

/// Finding 7: a push over the socket's frame limit closed the socket, and
/// large pushes queued whole. Now a large datagram is announced by id and
/// size, fetched over HTTP, and the socket stays.
#[tokio::test]
async fn a_datagram_over_the_frame_limit_reaches_a_connected_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 20).await;
    let mut ws = websocket(&http, &b).await;
    let big = "y".repeat(1_500_000);
    let d = seal_to(&http, &mut a, &bob, &big).await;
    let size = d.len() as u64;
    assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    let notice = match next_push(&mut ws).await {
        Push::Notice(n) => n,
        other => panic!("expected a notice, got {other:?}"),
    };
    assert_eq!(notice.size, size);
    let batch = fetch(&http, &b).await;
    assert_eq!(batch.items[0].seq, notice.seq);
    assert_eq!(open_text(&mut b, &batch.items[0]), big);
    // The same socket still carries the next (small) message inline.
    let d = seal_for(&mut a, &[b.id()], "small");
    assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    match next_push(&mut ws).await {
        Push::Message(item) => assert_eq!(open_text(&mut b, &item), "small"),
        other => panic!("unexpected push {other:?}"),
    }
    server.shutdown().await;
}

const CHILD_ENV: &str = "SOTTO_TEST_AVAILABILITY_CHILD";

#[test]
fn child_server() {
    common::child_server(CHILD_ENV, Duration::ZERO);
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Finding 7: four sockets that never read took the server from 12 to 382
/// MiB (each queued up to 256 whole datagrams). Now what they hold is
/// bounded in bytes and large datagrams are notices.
#[tokio::test]
async fn sockets_that_never_read_do_not_grow_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, fp) = spawn_child("child_server", CHILD_ENV, dir.path());
    let pid = child.0.id();
    let http = Http::new(addr, &fp);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let mut stuck = Vec::new();
    for _ in 0..4 {
        stuck.push(websocket(&http, &b).await); // never read
    }
    let big = "z".repeat(900_000);
    let first = seal_to(&http, &mut a, &bob, &big).await;
    assert_eq!(send(&http, &a, first).await.status(), StatusCode::OK);
    let before = rss_kb(pid);
    for _ in 0..60 {
        let d = seal_for(&mut a, &[b.id()], &big);
        assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_kb(pid).saturating_sub(before);
    // 60 x 1.2 MB of base64 for each of 4 sockets would be ~290 MB.
    assert!(grown < 64 * 1024, "the server grew by {grown} kB");
    drop(stuck);
}

/// Finding 8: no quota. A sender filling another device's mailbox is now
/// refused with a clear 409 once it is full, and nothing accepted is lost.
#[tokio::test]
async fn a_full_mailbox_is_a_clear_refusal_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.limits.set_mailbox_mb(1);
        c.limits.max_datagram = 300_000;
    })
    .await;
    let http = Http::of(&server);
    let (mallory, bob) = (User::new("mallory"), User::new("bob"));
    let mut m = mallory.register(&http, 5).await;
    let mut b = bob.register(&http, 5).await;
    let filler = "f".repeat(200_000);
    let first = seal_to(&http, &mut m, &bob, &filler).await;
    assert_eq!(send(&http, &m, first).await.status(), StatusCode::OK);
    let mut accepted = 1;
    let (status, code) = loop {
        let d = seal_for(&mut m, &[b.id()], &filler);
        let resp = send(&http, &m, d).await;
        if resp.status() != StatusCode::OK {
            break error_of(resp).await;
        }
        accepted += 1;
        assert!(accepted < 10, "1 MiB holds at most five 200 kB datagrams");
    };
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, codes::MAILBOX_FULL)
    );
    // A datagram over the server's limit: 413 before anything is stored.
    let huge = seal_for(&mut m, &[b.id()], &"h".repeat(400_000));
    let resp = http
        .signed_at(m.key(), Method::POST, "/v1/messages", huge, None)
        .await;
    if let Ok(resp) = resp {
        assert_eq!(error_of(resp).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Everything accepted is there; once fetched, there is room again.
    let items = fetch(&http, &b).await.items;
    assert_eq!(items.len(), accepted);
    for item in &items {
        assert_eq!(open_text(&mut b, item).len(), filler.len());
    }
    let ack = Ack {
        seqs: items.iter().map(|i| i.seq).collect(),
    };
    let _: serde_json::Value = http
        .call(b.key(), Method::POST, "/v1/mailbox/ack", Some(&ack))
        .await;
    let d = seal_for(&mut m, &[b.id()], "room again");
    assert_eq!(send(&http, &m, d).await.status(), StatusCode::OK);
    server.shutdown().await;
}

/// Finding 8: unacknowledged items never expired.
#[tokio::test]
async fn unacknowledged_items_expire() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.limits.unacked_ttl = Duration::from_secs(1);
    })
    .await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let d = seal_to(&http, &mut a, &bob, "soon gone").await;
    assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    assert_eq!(fetch(&http, &b).await.items.len(), 1);
    let started = Instant::now();
    while !fetch(&http, &b).await.items.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    server.shutdown().await;
}

fn small_rates() -> Rates {
    Rates {
        lookups_per_device: Rate::new(10, Duration::from_secs(60)),
        accounts_per_address: Rate::new(3, Duration::from_secs(60)),
        link_polls_per_address: Rate::new(5, Duration::from_secs(60)),
        ..Rates::default()
    }
}

/// The Retry-After of a 429, asserting the shape.
async fn retry_after(resp: reqwest::Response) -> u64 {
    let secs: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let (status, code) = error_of(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, codes::RATE_LIMITED)
    );
    assert!(secs >= 1);
    secs
}

/// Finding 9: 150 claims in 0.8 s drained a device's one-time prekeys.
#[tokio::test]
async fn prekey_claims_are_rate_limited_before_the_pool_drains() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await; // default rates
    let http = Http::of(&server);
    let (mallory, bob, alice) = (User::new("mallory"), User::new("bob"), User::new("alice"));
    let m = mallory.register(&http, 1).await;
    let b = bob.register(&http, 50).await;
    let a = alice.register(&http, 1).await;
    let claim = format!("/v1/users/{}/bundles", bob.hash());
    let mut refused = None;
    for _ in 0..50 {
        let resp = http
            .signed(m.key(), Method::POST, &claim, b"{}".to_vec())
            .await;
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let secs = retry_after(refused.expect("claims are limited")).await;
    assert!(secs > 1);
    let pool: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    assert!(pool.one_time >= 40, "not drained: {}", pool.one_time);
    // Another user still starts a session with bob.
    let _: ClaimResponse = http
        .call(
            a.key(),
            Method::POST,
            &claim,
            Some(&ClaimRequest::default()),
        )
        .await;
    server.shutdown().await;
}

/// Finding 9: directory lookups, registrations and link requests without
/// an account are limited per device and per address; another address is
/// not affected.
#[tokio::test]
async fn lookups_registrations_and_links_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| c.limits.rates = Some(small_rates())).await;
    let attacker = Http::from_ip(server.addr, &server.fingerprint, ip(ATTACKER));
    let honest = Http::from_ip(server.addr, &server.fingerprint, ip(HONEST));
    // Registrations and link requests share one budget per address.
    let m = User::new("m0").register(&attacker, 1).await;
    User::new("m1").register(&attacker, 1).await;
    let linked = User::new("m1");
    let mut dev = linked.device();
    let req = register_request(&linked, &mut dev, 1);
    let link = LinkRequest {
        device: hex::encode(dev.id().0),
        dh: hex::encode(dev.key().public_keys().dh),
        proof: hex::encode([0u8; 32]),
        prekeys: req.prekeys.clone(),
        reserve: req.reserve.clone(),
    };
    let _: LinkCreated = attacker
        .call(dev.key(), Method::POST, "/v1/link", Some(&link))
        .await;
    let mut next = User::new("m3").device();
    let req = register_request(&User::new("m3"), &mut next, 1);
    let resp = attacker
        .signed(
            next.key(),
            Method::POST,
            "/v1/register",
            serde_json::to_vec(&req).unwrap(),
        )
        .await;
    retry_after(resp).await;
    // Another address registers as usual.
    let h = User::new("h").register(&honest, 1).await;
    // Lookups: ten, then refused for that device only.
    let path = format!("/v1/users/{}", User::new("m1").hash());
    for _ in 0..10 {
        let _: UserDevices = attacker.call(m.key(), Method::GET, &path, NO_BODY).await;
    }
    retry_after(attacker.signed(m.key(), Method::GET, &path, vec![]).await).await;
    let _: UserDevices = honest.call(h.key(), Method::GET, &path, NO_BODY).await;
    server.shutdown().await;
}
