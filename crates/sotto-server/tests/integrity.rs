//! Replays inside the signature window and device removal (issue 13,
//! findings 10 and 12): a small signed-request helper replays exactly the
//! bytes a device sent, and a removed device tries to carry on.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use sotto_api::*;

/// One signed request, kept so it can be sent again byte for byte.
struct Recorded {
    method: Method,
    path: String,
    body: Vec<u8>,
    time: u64,
}

impl Recorded {
    fn new(method: Method, path: &str, body: Vec<u8>) -> Recorded {
        Recorded {
            method,
            path: path.to_string(),
            body,
            time: now_ms(),
        }
    }

    async fn send(&self, http: &Http, dev: &Dev) -> reqwest::Response {
        http.signed_at(
            dev.key(),
            self.method.clone(),
            &self.path,
            self.body.clone(),
            Some(self.time),
        )
        .await
        .unwrap()
    }
}

async fn replayed(resp: reqwest::Response) {
    let (status, code) = error_of(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, codes::REPLAYED)
    );
}

/// Finding 10: one signed claim sent three times got three prekeys.
#[tokio::test]
async fn a_replayed_claim_gets_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.register(&http, 5).await;
    let b = bob.register(&http, 10).await;
    let claim = Recorded::new(
        Method::POST,
        &format!("/v1/users/{}/bundles", bob.hash()),
        b"{}".to_vec(),
    );
    assert_eq!(claim.send(&http, &a).await.status(), StatusCode::OK);
    for _ in 0..2 {
        replayed(claim.send(&http, &a).await).await;
    }
    let pool: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    assert_eq!(pool.one_time, 9, "one claim, one prekey");
    server.shutdown().await;
}

/// Finding 10: a replayed refill re-inserted served prekeys and reset the
/// reserve counter, so a one-time prekey was served twice.
#[tokio::test]
async fn a_replayed_refill_cannot_bring_back_a_served_prekey() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.register(&http, 1).await;
    let mut b = bob.register(&http, 0).await;
    let fresh = b.device.generate_prekeys(&mut rand_core::OsRng, 2);
    let upload = PrekeyUpload {
        prekeys: fresh.iter().map(|p| b64::encode(&p.encode())).collect(),
        reserve: None,
    };
    let refill = Recorded::new(
        Method::POST,
        "/v1/prekeys",
        serde_json::to_vec(&upload).unwrap(),
    );
    assert_eq!(refill.send(&http, &b).await.status(), StatusCode::OK);
    // Alice takes both, then the reserve.
    let path = format!("/v1/users/{}/bundles", bob.hash());
    let mut served = Vec::new();
    for _ in 0..3 {
        let c: ClaimResponse = http
            .call(a.key(), Method::POST, &path, Some(&ClaimRequest::default()))
            .await;
        served.push(c.bundles[0].prekey.clone());
    }
    assert_eq!(&served[..2], &upload.prekeys[..]);
    // The same refill again: refused as a replay...
    replayed(refill.send(&http, &b).await).await;
    // ... and even signed anew, the served ids are refused.
    let (status, code) = http
        .fail(b.key(), Method::POST, "/v1/prekeys", refill.body.clone())
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, codes::PREKEY_REUSED)
    );
    let pool: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    assert_eq!(
        (pool.one_time, pool.reserve_served),
        (0, 1),
        "nothing re-inserted, the reserve counter kept"
    );
    server.shutdown().await;
}

/// Finding 10: state-changing requests are single-use: a replayed block
/// after an unblock, a replayed WebSocket upgrade (whose socket could
/// acknowledge, deleting the victim's mail) and a replayed send.
#[tokio::test]
async fn blocks_sockets_and_sends_are_single_use() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let block = Recorded::new(
        Method::POST,
        "/v1/blocks",
        serde_json::to_vec(&Block {
            username_hash: alice.hash(),
        })
        .unwrap(),
    );
    assert_eq!(block.send(&http, &b).await.status(), StatusCode::OK);
    let path = format!("/v1/blocks/{}", alice.hash());
    let _: serde_json::Value = http.call(b.key(), Method::DELETE, &path, NO_BODY).await;
    replayed(block.send(&http, &b).await).await;
    let blocks: Blocks = http.call(b.key(), Method::GET, "/v1/blocks", NO_BODY).await;
    assert!(blocks.blocked.is_empty());

    // The upgrade request, captured and replayed.
    let time = now_ms();
    let upgrade = |time: u64| {
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("wss://{}/v1/ws", http.addr),
            )
            .unwrap();
        let sig = b
            .key()
            .sign(&request_signing_bytes("GET", "/v1/ws", time, b""));
        let h = req.headers_mut();
        h.insert(AuthHeaders::DEVICE, hex::encode(b.id().0).parse().unwrap());
        h.insert(AuthHeaders::TIME, time.to_string().parse().unwrap());
        h.insert(AuthHeaders::SIGNATURE, hex::encode(sig).parse().unwrap());
        req
    };
    let connector = || {
        Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
            tls_config(&http.fingerprint),
        )))
    };
    let first =
        tokio_tungstenite::connect_async_tls_with_config(upgrade(time), None, false, connector())
            .await;
    assert!(first.is_ok());
    let again =
        tokio_tungstenite::connect_async_tls_with_config(upgrade(time), None, false, connector())
            .await;
    match again {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::CONFLICT)
        }
        other => panic!(
            "a replayed upgrade must be refused: {:?}",
            other.map(|_| ())
        ),
    }

    // A send replayed after bob acknowledged it is not stored again.
    let d = seal_to(&http, &mut a, &bob, "once").await;
    let send = Recorded::new(Method::POST, "/v1/messages", d);
    assert_eq!(send.send(&http, &a).await.status(), StatusCode::OK);
    let items = fetch(&http, &b).await.items;
    let ack = Ack {
        seqs: items.iter().map(|i| i.seq).collect(),
    };
    let _: serde_json::Value = http
        .call(b.key(), Method::POST, "/v1/mailbox/ack", Some(&ack))
        .await;
    replayed(send.send(&http, &a).await).await;
    assert!(fetch(&http, &b).await.items.is_empty());
    server.shutdown().await;
}

fn removal(user: &User, target: &Dev) -> RemoveDevice {
    let time = now_ms();
    RemoveDevice {
        time_ms: time,
        signature: b64::encode(&user.key.sign_removal(&target.id(), time)),
    }
}

/// Finding 12: there was no way to remove a lost or stolen device.
#[tokio::test]
async fn a_removed_device_is_gone_from_the_directory_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b1 = bob.register(&http, 5).await;
    let stolen = bob.link(&http, &b1).await;
    let d = seal_to(&http, &mut a, &bob, "before").await;
    assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    let mut ws = websocket(&http, &stolen).await;
    let path = format!("/v1/devices/{}", hex::encode(stolen.id().0));

    // The stolen device cannot remove its owner's first device, nor sign a
    // removal without the user key.
    let first = format!("/v1/devices/{}", hex::encode(b1.id().0));
    let forged = RemoveDevice {
        time_ms: now_ms(),
        signature: b64::encode(&stolen.key().sign(b"anything")),
    };
    let (status, _) = http
        .fail(
            stolen.key(),
            Method::DELETE,
            &first,
            serde_json::to_vec(&forged).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Alice cannot remove bob's device, even with her own user key.
    let (status, code) = http
        .fail(
            a.key(),
            Method::DELETE,
            &path,
            serde_json::to_vec(&removal(&alice, &stolen)).unwrap(),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, codes::UNKNOWN_DEVICE)
    );

    // Bob's first device, with the user key, removes it.
    let _: serde_json::Value = http
        .call(
            b1.key(),
            Method::DELETE,
            &path,
            Some(&removal(&bob, &stolen)),
        )
        .await;
    let listed: UserDevices = http
        .call(
            a.key(),
            Method::GET,
            &format!("/v1/users/{}", bob.hash()),
            NO_BODY,
        )
        .await;
    assert_eq!(listed.devices.len(), 1, "gone from the directory");
    // Its requests are refused, its socket closed, sends to it refused.
    let (status, _) = http
        .fail(stolen.key(), Method::GET, "/v1/mailbox", vec![])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(closed(&mut ws).await);
    let d = seal_for(&mut a, &[stolen.id()], "after");
    let (status, code) = error_of(send(&http, &a, d).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, codes::UNKNOWN_DEVICE)
    );
    // Bob's first device still works.
    assert_eq!(fetch(&http, &b1).await.items.len(), 1);
    server.shutdown().await;
}
