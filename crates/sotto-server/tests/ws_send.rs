//! Sending datagrams over the device's WebSocket (binary send frames,
//! `send_result` answers), and what a stranger, another member, a removed
//! device and a flooding device can do with it. Real server, real TLS,
//! real signatures.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use sotto_api::frame::encode_send;
use sotto_api::*;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const CHILD_ENV: &str = "SOTTO_TEST_WS_SEND_CHILD_DATA";

#[test]
fn child_server() {
    common::child_server(CHILD_ENV, Duration::from_secs(3600));
}

async fn send_frame(ws: &mut Ws, req: u64, datagram: &[u8]) {
    ws.send(Message::Binary(encode_send(req, datagram)))
        .await
        .unwrap();
}

/// The next `send_result` on `ws` (skipping pings and pushes), within 10 s.
async fn next_result(ws: &mut Ws) -> SendResult {
    loop {
        if let Push::SendResult(r) = next_push(ws).await {
            return r;
        }
    }
}

/// The close code the server ends `ws` with (`None` if it just drops it).
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

fn error_code(r: &SendResult) -> &str {
    assert!(r.ok.is_none(), "refused: {r:?}");
    &r.error.as_ref().expect("an error").code
}

/// Alice and Bob registered, Alice with a session to Bob's device.
async fn alice_and_bob(http: &Http) -> (Dev, Dev, User) {
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(http, 5).await;
    let b = bob.register(http, 5).await;
    // The first datagram starts the session; it goes over HTTP.
    let d = seal_to(http, &mut a, &bob, "hello").await;
    assert_eq!(send(http, &a, d).await.status(), StatusCode::OK);
    (a, b, bob)
}

#[tokio::test]
async fn pipelined_sends_are_answered_once_each_after_commit_and_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (mut a, mut b, _) = alice_and_bob(&http).await;
    let mut bob_ws = websocket(&http, &b).await;
    let mut ws = websocket(&http, &a).await;
    // 200 sends written before any answer is read: more than the server
    // takes in flight at once (64); it reads the rest as answers go out.
    let n = 200u64;
    let mut ids = Vec::new();
    for req in 1..=n {
        let d = seal_for(&mut a, &[b.id()], &format!("ws {req}"));
        ids.push(hex::encode(sha2_of(&d)));
        send_frame(&mut ws, req * 3, &d).await;
    }
    let mut answered = HashSet::new();
    for _ in 0..n {
        let r = next_result(&mut ws).await;
        let ok = r.ok.as_ref().unwrap_or_else(|| panic!("refused: {r:?}"));
        assert_eq!(ok.delivered_to, 1);
        assert_eq!(ok.datagram_id, ids[(r.req / 3 - 1) as usize]);
        assert!(answered.insert(r.req), "req {} answered twice", r.req);
    }
    // Durable and pushed: Bob's mailbox holds them all (after "hello").
    let mut pushed = 0;
    while pushed < n {
        if let Push::Message(item) = next_push(&mut bob_ws).await {
            if open_text(&mut b, &item).starts_with("ws ") {
                pushed += 1;
            }
        }
    }
    let page: MailboxBatch = http
        .call(
            b.key(),
            Method::GET,
            "/v1/mailbox?after=0&limit=500",
            NO_BODY,
        )
        .await;
    assert_eq!(page.items.len() as u64, n + 1);
    let metrics = http.metrics_text().await;
    assert!(
        metrics.contains(&format!("sotto_ws_sends_total {n}")),
        "{metrics}"
    );
    server.shutdown().await;
}

fn sha2_of(d: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(d).into()
}

/// A stranger: the socket exists only after a signed upgrade of a
/// registered device, so there is nothing to send a frame on.
#[tokio::test]
async fn no_socket_without_a_registered_devices_signature() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let stranger = User::new("stranger").device();
    let refused = try_websocket(&http, &stranger).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    // Unsigned upgrade.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let req = format!("wss://{}/v1/ws", http.addr)
        .into_client_request()
        .unwrap();
    let connector =
        tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(tls_config(&http.fingerprint)));
    let refused =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
            .await
            .unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    server.shutdown().await;
}

/// A member sends, on its own socket, a datagram that names another device
/// as its sender (one it captured, or forged): refused, nothing stored.
#[tokio::test]
async fn a_datagram_naming_another_sender_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (mut a, b, _) = alice_and_bob(&http).await;
    let mallory = User::new("mallory").register(&http, 5).await;
    let mut ws = websocket(&http, &mallory).await;
    let alices = seal_for(&mut a, &[b.id()], "in alice's name");
    send_frame(&mut ws, 1, &alices).await;
    let r = next_result(&mut ws).await;
    assert_eq!((r.req, error_code(&r)), (1, codes::UNAUTHORIZED));
    // Not a datagram at all: refused too, the socket stays.
    send_frame(&mut ws, 2, b"not a datagram").await;
    let r = next_result(&mut ws).await;
    assert_eq!((r.req, error_code(&r)), (2, codes::BAD_REQUEST));
    assert_eq!(fetch(&http, &b).await.items.len(), 1, "only alice's hello");
    server.shutdown().await;
}

/// A req used before on the socket (the same frame again, or a smaller
/// req) is refused without storing anything; the socket goes on.
#[tokio::test]
async fn a_replayed_req_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (mut a, b, _) = alice_and_bob(&http).await;
    let mut ws = websocket(&http, &a).await;
    let d = seal_for(&mut a, &[b.id()], "once");
    send_frame(&mut ws, 10, &d).await;
    assert!(next_result(&mut ws).await.ok.is_some());
    send_frame(&mut ws, 10, &d).await;
    let r = next_result(&mut ws).await;
    assert_eq!((r.req, error_code(&r)), (10, codes::REPLAYED));
    send_frame(&mut ws, 9, &d).await;
    let r = next_result(&mut ws).await;
    assert_eq!((r.req, error_code(&r)), (9, codes::REPLAYED));
    assert_eq!(
        fetch(&http, &b).await.items.len(),
        2,
        "hello and one 'once'"
    );
    let d = seal_for(&mut a, &[b.id()], "next");
    send_frame(&mut ws, 11, &d).await;
    assert!(next_result(&mut ws).await.ok.is_some());
    assert_eq!(fetch(&http, &b).await.items.len(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_and_malformed_frames_close_the_socket_with_a_clear_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| c.limits.max_datagram = 4096).await;
    let http = Http::of(&server);
    let (_, b, _) = alice_and_bob(&http).await;
    // Over max_datagram but within the frame limit: refused as the HTTP
    // route refuses the body (413 too_large), and the socket stays.
    let mut ws = websocket(&http, &b).await;
    send_frame(&mut ws, 1, &vec![7; 5000]).await;
    let r = next_result(&mut ws).await;
    assert_eq!((r.req, error_code(&r)), (1, codes::TOO_LARGE));
    // Over the frame limit (max_datagram + 9, and never less than the
    // 256 KiB of text frames): 1009, closed.
    let _ = ws
        .send(Message::Binary(encode_send(1, &vec![7; 300_000])))
        .await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    // A text frame over 256 KiB, though within the binary limit: 1009.
    let server2 = start_with(dir.path().join("big").as_path(), |_| {}).await;
    let http2 = Http::of(&server2);
    let c = User::new("carol").register(&http2, 1).await;
    let mut ws = websocket(&http2, &c).await;
    let _ = ws.send(Message::Text(" ".repeat(300_000))).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    // A binary frame over 256 KiB, though the message would be within the
    // datagram limit: 1009 (a frame header alone makes the server reserve
    // room for the whole frame, so frames stay small)...
    let mut ws = websocket(&http2, &c).await;
    let _ = ws
        .send(Message::Binary(encode_send(1, &vec![7; 300_000])))
        .await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    // ... while the same message split into continuation frames is read
    // and answered (not a datagram: refused by its decoder, socket kept).
    let mut ws = websocket(&http2, &c).await;
    let whole = encode_send(1, &vec![7; 300_000]);
    let parts: Vec<&[u8]> = whole.chunks(100_000).collect();
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Continue)
        };
        let last = i + 1 == parts.len();
        ws.send(Message::Frame(Frame::message(part.to_vec(), opcode, last)))
            .await
            .unwrap();
    }
    let r = next_result(&mut ws).await;
    assert_eq!(r.req, 1);
    assert!(r.error.is_some(), "garbage is not stored: {r:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ws.next())
            .await
            .is_err(),
        "the socket stays open after a refused fragmented send"
    );
    server2.shutdown().await;
    // A frame type the server does not know (0x02, sealed sender, is
    // reserved): 1003.
    let mut ws = websocket(&http, &b).await;
    let mut sealed = encode_send(1, b"datagram");
    sealed[0] = frame::SEND_SEALED;
    ws.send(Message::Binary(sealed)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    // Too short to hold a req and a datagram: 1007.
    let mut ws = websocket(&http, &b).await;
    ws.send(Message::Binary(vec![frame::SEND, 0, 0, 0, 0, 0, 0, 0, 1]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
    // A text frame that is not UTF-8: 1007.
    let mut ws = websocket(&http, &b).await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
    // Text that is not an Ack: 1007.
    let mut ws = websocket(&http, &b).await;
    send_text(&mut ws, "{\"type\":\"send\"}").await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
    // The server still serves the device.
    assert_eq!(fetch(&http, &b).await.items.len(), 1);
    server.shutdown().await;
}

/// A stolen device removed by its owner: its socket is closed and nothing
/// it sends on it afterwards is stored.
#[tokio::test]
async fn a_removed_devices_socket_cannot_send() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.register(&http, 5).await;
    let b1 = bob.register(&http, 5).await;
    let mut stolen = bob.link(&http, &b1).await;
    let d = seal_to(&http, &mut stolen, &alice, "before").await;
    let mut ws = websocket(&http, &stolen).await;
    send_frame(&mut ws, 1, &d).await;
    assert!(
        next_result(&mut ws).await.ok.is_some(),
        "sends before removal"
    );
    let time = now_ms();
    let removal = RemoveDevice {
        time_ms: time,
        signature: b64::encode(&bob.key.sign_removal(&stolen.id(), time)),
    };
    let path = format!("/v1/devices/{}", hex::encode(stolen.id().0));
    let _: serde_json::Value = http
        .call(b1.key(), Method::DELETE, &path, Some(&removal))
        .await;
    let d = seal_for(&mut stolen, &[a.id()], "after");
    let _ = ws.send(Message::Binary(encode_send(2, &d))).await;
    // Whatever it reads before the close is no acceptance.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("closed within 10 s")
        {
            Some(Ok(Message::Text(t))) => {
                if let Ok(Push::SendResult(r)) = serde_json::from_str::<Push>(&t) {
                    assert!(r.ok.is_none(), "accepted after removal: {r:?}");
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    let items = fetch(&http, &a).await.items;
    assert_eq!(items.len(), 1, "only the datagram sent before removal");
    server.shutdown().await;
}

/// A send answered ok is durable: SIGKILL right after the answer, restart
/// on the same data, and the datagram is in the recipient's mailbox.
#[tokio::test]
async fn a_send_answered_ok_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, fingerprint) = common::spawn_child("child_server", CHILD_ENV, dir.path());
    let http = Http::new(addr, &fingerprint);
    let (mut a, mut b, _) = alice_and_bob(&http).await;
    let mut ws = websocket(&http, &a).await;
    for req in 1..=20 {
        let d = seal_for(&mut a, &[b.id()], &format!("durable {req}"));
        send_frame(&mut ws, req, &d).await;
    }
    for _ in 0..20 {
        assert!(next_result(&mut ws).await.ok.is_some());
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let server = start(dir.path(), Duration::from_secs(3600)).await;
    let http = Http::of(&server);
    let items = fetch(&http, &b).await.items;
    assert_eq!(items.len(), 21);
    let mut texts: Vec<String> = items.iter().map(|i| open_text(&mut b, i)).collect();
    texts.sort();
    let mut want: Vec<String> = (1..=20).map(|r| format!("durable {r}")).collect();
    want.push("hello".into());
    want.sort();
    assert_eq!(texts, want);
    server.shutdown().await;
}

/// A peer that never answers pings (vanished, or holding the socket on
/// purpose) is closed after two unanswered pings (1001); one that answers
/// stays. Pings every 400 ms here: closed within three rounds.
#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.limits.ping_every = Duration::from_millis(400);
    })
    .await;
    let http = Http::of(&server);
    let (a, b, _) = alice_and_bob(&http).await;
    // Never polled: tungstenite answers a ping only when its socket is read.
    let mut silent = websocket(&http, &a).await;
    let mut answering = websocket(&http, &b).await;
    // Read (and so answer pings) for more than three rounds.
    let watched = tokio::time::timeout(Duration::from_millis(2000), async {
        loop {
            match answering.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        watched.is_err(),
        "the answering peer was closed: {watched:?}"
    );
    // By now the silent one has had at least four ping turns: it was
    // closed before this reads it. (Reading answers the pings queued
    // before the close frame; the server may have dropped the connection
    // by then, so the client may see a reset instead of the frame.)
    let ended = tokio::time::timeout(Duration::from_millis(1000), async {
        loop {
            match silent.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
                // Dropped (a reset): closed too, the frame unread.
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    let code = ended.expect("the silent peer was closed");
    assert!(matches!(code, Some(CloseCode::Away) | None), "{code:?}");
    server.shutdown().await;
}

/// A server shutting down (SIGTERM) tells every connected device to go
/// elsewhere (1001) before `shutdown` returns, that is before the process
/// exits: the devices reconnect at once (to another node) instead of
/// finding a dead socket at their next ping. The server runs on its own
/// runtime, dropped right after `shutdown` as the process's exit would:
/// a session still running then is cut without its close frame.
#[test]
fn shutdown_closes_every_socket_with_1001_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(start_with(dir.path(), |c| c.limits.rates = None));
    let http = Http::of(&server);
    let mut sockets = client_rt.block_on(async {
        let mut sockets = Vec::new();
        for i in 0..40 {
            let dev = User::new(&format!("user{i}")).register(&http, 0).await;
            sockets.push(websocket(&http, &dev).await);
        }
        sockets
    });
    server_rt.block_on(server.shutdown());
    drop(server_rt);
    client_rt.block_on(async {
        for ws in &mut sockets {
            assert_eq!(close_code(ws).await, Some(CloseCode::Away));
        }
    });
}
