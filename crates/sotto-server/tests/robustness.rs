//! Hostile or broken input: every bad request gets a 4xx (as ErrorBody
//! JSON) or a closed socket, and the server keeps serving everyone else.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use sotto_api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Another client is still served normally.
async fn still_serving(http: &Http, dev: &Dev) {
    let fresh = Http::new(http.addr, &http.fingerprint);
    assert!(fresh.clock().await > 0);
    let own: UserDevices = fresh
        .call(dev.key(), Method::GET, "/v1/devices", NO_BODY)
        .await;
    assert_eq!(own.devices.len(), 1);
}

#[tokio::test]
async fn malformed_bodies_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let bob = User::new("bob");
    let b = bob.register(&http, 5).await;

    for body in [&b"{"[..], b"[]", b"{\"seqs\": \"x\"}", b"\xff\xfe", b""] {
        let (status, code) = http
            .fail(b.key(), Method::POST, "/v1/mailbox/ack", body.to_vec())
            .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, codes::BAD_REQUEST),
            "{body:?}"
        );
    }
    let (status, code) = http
        .fail(b.key(), Method::POST, "/v1/register", b"not json".to_vec())
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, codes::BAD_REQUEST)
    );
    let (status, code) = http
        .fail(b.key(), Method::GET, "/v1/users/not-hex", vec![])
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, codes::BAD_REQUEST)
    );
    let (status, code) = error_of(
        http.client
            .get(http.url("/v2/nothing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, codes::NOT_FOUND)
    );
    let (status, _) = error_of(http.client.put(http.url("/v1/clock")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // A WebSocket path asked for without an upgrade.
    let (status, _) = http.fail(b.key(), Method::GET, "/v1/ws", vec![]).await;
    assert!(status.is_client_error());
    still_serving(&http, &b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let bob = User::new("bob");
    let b = bob.register(&http, 5).await;

    // JSON over 1 MiB, correctly signed.
    let big = serde_json::to_vec(&Ack {
        seqs: vec![1; 600_000],
    })
    .unwrap();
    assert!(big.len() > 1 << 20);
    match http
        .signed_at(b.key(), Method::POST, "/v1/mailbox/ack", big, None)
        .await
    {
        Ok(resp) => {
            let (status, code) = error_of(resp).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::PAYLOAD_TOO_LARGE, codes::TOO_LARGE)
            );
        }
        // The server may answer and close before the upload finishes.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // A datagram over the protocol's maximum, announced by Content-Length.
    let huge = vec![0u8; sotto_proto::datagram::MAX_DATAGRAM + 1];
    match http
        .signed_at(b.key(), Method::POST, "/v1/messages", huge, None)
        .await
    {
        Ok(resp) => {
            let (status, code) = error_of(resp).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::PAYLOAD_TOO_LARGE, codes::TOO_LARGE)
            );
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    // Too many prekeys in one upload.
    let key = b.key();
    let many = PrekeyUpload {
        prekeys: vec![String::new(); 1001],
        reserve: None,
    };
    let (status, _) = http
        .fail(
            key,
            Method::POST,
            "/v1/prekeys",
            serde_json::to_vec(&many).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    still_serving(&http, &b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_signatures_and_stale_times_are_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let expect_401 = |r: reqwest::Response| async move {
        let (status, code) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED)
        );
    };

    // No headers at all.
    expect_401(
        http.client
            .get(http.url("/v1/devices"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    // Stale and future times.
    let old = now_ms() - 6 * 60 * 1000;
    expect_401(
        http.signed_at(b.key(), Method::GET, "/v1/devices", vec![], Some(old))
            .await
            .unwrap(),
    )
    .await;
    let future = now_ms() + 6 * 60 * 1000;
    expect_401(
        http.signed_at(b.key(), Method::GET, "/v1/devices", vec![], Some(future))
            .await
            .unwrap(),
    )
    .await;
    // Within the window is fine.
    let slightly_off = now_ms() - 60 * 1000;
    let ok = http
        .signed_at(
            b.key(),
            Method::GET,
            "/v1/devices",
            vec![],
            Some(slightly_off),
        )
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    // Bob's id with Alice's signature.
    let time = now_ms();
    let sig = a
        .key()
        .sign(&request_signing_bytes("GET", "/v1/devices", time, b""));
    let r = http
        .client
        .get(http.url("/v1/devices"))
        .header(AuthHeaders::DEVICE, hex::encode(b.id().0))
        .header(AuthHeaders::TIME, time.to_string())
        .header(AuthHeaders::SIGNATURE, hex::encode(sig))
        .send()
        .await
        .unwrap();
    expect_401(r).await;
    // A signature over another path, and over another body.
    let sig = b
        .key()
        .sign(&request_signing_bytes("GET", "/v1/blocks", time, b""));
    let r = http
        .client
        .get(http.url("/v1/devices"))
        .header(AuthHeaders::DEVICE, hex::encode(b.id().0))
        .header(AuthHeaders::TIME, time.to_string())
        .header(AuthHeaders::SIGNATURE, hex::encode(sig))
        .send()
        .await
        .unwrap();
    expect_401(r).await;
    let body = serde_json::to_vec(&Ack { seqs: vec![1] }).unwrap();
    let sig = b.key().sign(&request_signing_bytes(
        "POST",
        "/v1/mailbox/ack",
        time,
        b"{\"seqs\":[2]}",
    ));
    let r = http
        .client
        .post(http.url("/v1/mailbox/ack"))
        .header(AuthHeaders::DEVICE, hex::encode(b.id().0))
        .header(AuthHeaders::TIME, time.to_string())
        .header(AuthHeaders::SIGNATURE, hex::encode(sig))
        .body(body)
        .send()
        .await
        .unwrap();
    expect_401(r).await;
    // Garbage header values.
    let r = http
        .client
        .get(http.url("/v1/devices"))
        .header(AuthHeaders::DEVICE, "zz")
        .header(AuthHeaders::TIME, "soon")
        .header(AuthHeaders::SIGNATURE, "00")
        .send()
        .await
        .unwrap();
    expect_401(r).await;
    // A valid signature by a device the server does not know.
    let stranger = User::new("stranger").device();
    expect_401(
        http.signed(stranger.key(), Method::GET, "/v1/devices", vec![])
            .await,
    )
    .await;
    // The WebSocket upgrade needs the same signature.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("wss://{}/v1/ws", http.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert(AuthHeaders::DEVICE, hex::encode(b.id().0).parse().unwrap());
    let connector = tokio_tungstenite::Connector::Rustls(Arc::new(tls_config(&http.fingerprint)));
    let refused =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector)).await;
    assert!(refused.is_err());
    still_serving(&http, &b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_websocket_frames_close_only_that_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 20).await;
    let mut good = websocket(&http, &b).await;

    for bad in [
        Message::Text("hello".into()),
        Message::Text("{\"seqs\": [\"x\"]}".into()),
        Message::Binary(vec![0, 1, 2, 3]),
        Message::Text("[".repeat(300_000)),
    ] {
        let mut ws = websocket(&http, &b).await;
        let _ = futures_util::SinkExt::send(&mut ws, bad).await;
        assert!(
            closed(&mut ws).await,
            "the server closes a socket that sends garbage"
        );
    }

    // The well-behaved socket still gets its pushes, and HTTP still works.
    let datagram = seal_to(&http, &mut a, &bob, "still here").await;
    assert_eq!(send(&http, &a, datagram).await.status(), StatusCode::OK);
    match next_push(&mut good).await {
        Push::Message(item) => assert_eq!(open_text(&mut b, &item), "still here"),
        other => panic!("unexpected push {other:?}"),
    }
    still_serving(&http, &b).await;
    server.shutdown().await;
}

#[tokio::test]
async fn raw_garbage_on_the_socket_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let b = User::new("bob").register(&http, 5).await;

    // Not TLS at all: the handshake fails and the connection is closed.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "closed, or a TLS alert");

    // TLS, then bytes that are not HTTP: a 400 or a closed connection.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(&server.fingerprint)));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"\x00\x01garbage garbage\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );

    // A request whose headers never end is cut off, not waited on forever
    // by everyone: other clients are served meanwhile.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    still_serving(&http, &b).await;
    drop(slow);
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_acks_do_not_hold_up_pushes_and_a_refused_ack_still_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 20).await;
    let mut ws = websocket(&http, &b).await;

    // A burst of acks (more than the server keeps in flight per socket, of
    // sequence numbers that are not pending), then sends: the pushes still
    // come, and the acks of the real items are applied.
    for i in 0..300u64 {
        let ack = serde_json::to_string(&Ack {
            seqs: vec![1_000_000 + i],
        })
        .unwrap();
        send_text(&mut ws, &ack).await;
    }
    for n in 0..3 {
        let text = format!("burst {n}");
        let datagram = seal_to(&http, &mut a, &bob, &text).await;
        assert_eq!(send(&http, &a, datagram).await.status(), StatusCode::OK);
        let item = match next_push(&mut ws).await {
            Push::Message(item) => item,
            other => panic!("unexpected push {other:?}"),
        };
        assert_eq!(open_text(&mut b, &item), text);
        let ack = serde_json::to_string(&Ack {
            seqs: vec![item.seq],
        })
        .unwrap();
        send_text(&mut ws, &ack).await;
    }
    let mut pending = usize::MAX;
    for _ in 0..50 {
        pending = fetch(&http, &b).await.items.len();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0, "every ack sent over the socket is applied");

    // An ack the server refuses (too many sequence numbers) closes the
    // socket with a policy violation, as before.
    let too_many = serde_json::to_string(&Ack {
        seqs: (1..=10_001).collect(),
    })
    .unwrap();
    send_text(&mut ws, &too_many).await;
    let code = loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    still_serving(&http, &b).await;
    server.shutdown().await;
}
