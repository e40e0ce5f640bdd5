//! The API end to end over real TLS sockets, with real protocol devices.

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use sotto_api::*;

const RETAIN: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn register_and_look_up_users() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    assert_eq!(server.fingerprint.len(), 64);
    let http = Http::of(&server);
    let alice = User::new("alice");
    let bob = User::new("bob");
    let a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;

    let found: UserDevices = http
        .call(
            a.key(),
            Method::GET,
            &format!("/v1/users/{}", bob.hash()),
            NO_BODY,
        )
        .await;
    assert_eq!(found.user, hex::encode(bob.key.public().0));
    assert_eq!(found.devices, vec![b64::encode(&b.device.cert().encode())]);
    let own: UserDevices = http
        .call(a.key(), Method::GET, "/v1/devices", NO_BODY)
        .await;
    assert_eq!(own.user, hex::encode(alice.key.public().0));

    let nobody = hex::encode(username_hash("nobody"));
    let (status, code) = http
        .fail(a.key(), Method::GET, &format!("/v1/users/{nobody}"), vec![])
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, codes::UNKNOWN_USER)
    );

    // The name is taken, whoever asks and however it is capitalised.
    let mallory = User {
        name: "ALICE".into(),
        key: sotto_proto::UserKey::generate(&mut rand_core::OsRng),
    };
    let mut m = mallory.device();
    let req = register_request(&mallory, &mut m, 1);
    let (status, code) = http
        .fail(
            m.key(),
            Method::POST,
            "/v1/register",
            serde_json::to_vec(&req).unwrap(),
        )
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, codes::USERNAME_TAKEN)
    );

    // A registration signed by another device than the certificate's.
    let carol = User::new("carol");
    let mut c = carol.device();
    let req = register_request(&carol, &mut c, 1);
    let (status, _) = http
        .fail(
            a.key(),
            Method::POST,
            "/v1/register",
            serde_json::to_vec(&req).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A certificate not signed by its user key.
    let mut forged = register_request(&carol, &mut c, 1);
    let mut cert = b64::decode(&forged.cert).unwrap();
    *cert.last_mut().unwrap() ^= 1;
    forged.cert = b64::encode(&cert);
    let (status, _) = http
        .fail(
            c.key(),
            Method::POST,
            "/v1/register",
            serde_json::to_vec(&forged).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A prekey signed by someone else.
    let mut bad_prekey = register_request(&carol, &mut c, 1);
    bad_prekey.prekeys = register_request(&bob, &mut bob.device(), 1).prekeys;
    let (status, _) = http
        .fail(
            c.key(),
            Method::POST,
            "/v1/register",
            serde_json::to_vec(&bad_prekey).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

#[tokio::test]
async fn send_fetch_ack_without_retention() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 5).await;

    let datagram = seal_to(&http, &mut a, &bob, "the meeting moved to 3pm").await;
    let resp = send(&http, &a, datagram.clone()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let sent: SendResponse = resp.json().await.unwrap();
    assert_eq!(sent.delivered_to, 1);
    assert_eq!(
        sent.datagram_id,
        hex::encode(sha2::Digest::finalize(
            <sha2::Sha256 as sha2::Digest>::new_with_prefix(&datagram)
        ))
    );

    let batch = fetch(&http, &b).await;
    assert_eq!(batch.items.len(), 1);
    assert!(!batch.more);
    assert_eq!(batch.items[0].seq, 1);
    assert_eq!(
        open_text(&mut b, &batch.items[0]),
        "the meeting moved to 3pm"
    );
    assert!(
        fetch(&http, &a).await.items.is_empty(),
        "the sender's mailbox is not touched"
    );

    let _: serde_json::Value = http
        .call(
            b.key(),
            Method::POST,
            "/v1/mailbox/ack",
            Some(&Ack { seqs: vec![1] }),
        )
        .await;
    assert!(fetch(&http, &b).await.items.is_empty());
    // Retention 0: gone on delivery.
    let path = format!("/v1/datagrams/{}", sent.datagram_id);
    assert_eq!(
        http.fail(b.key(), Method::GET, &path, vec![]).await.0,
        StatusCode::NOT_FOUND
    );

    // Paging with after/limit.
    for i in 0..3 {
        let d = seal_for(&mut a, &[b.id()], &format!("m{i}"));
        assert_eq!(send(&http, &a, d).await.status(), StatusCode::OK);
    }
    let page: MailboxBatch = http
        .call(b.key(), Method::GET, "/v1/mailbox?after=0&limit=2", NO_BODY)
        .await;
    assert_eq!(
        page.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert!(page.more);
    let page: MailboxBatch = http
        .call(b.key(), Method::GET, "/v1/mailbox?after=3", NO_BODY)
        .await;
    assert_eq!(
        page.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![4]
    );
    let (status, code) = http
        .fail(b.key(), Method::GET, "/v1/mailbox?after=x", vec![])
        .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, codes::BAD_REQUEST)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn acknowledged_datagrams_are_retained_for_their_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let c = carol.register(&http, 5).await;
    let datagram = seal_to(&http, &mut a, &bob, "keep me").await;
    let sent: SendResponse = send(&http, &a, datagram.clone())
        .await
        .json()
        .await
        .unwrap();
    let _: serde_json::Value = http
        .call(
            b.key(),
            Method::POST,
            "/v1/mailbox/ack",
            Some(&Ack { seqs: vec![1] }),
        )
        .await;
    assert!(
        fetch(&http, &b).await.items.is_empty(),
        "acknowledged: no longer pending"
    );
    let path = format!("/v1/datagrams/{}", sent.datagram_id);
    let resp = http.signed(b.key(), Method::GET, &path, vec![]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), datagram);
    // Only for devices of a user it was addressed to (not other users, not
    // the sender); another device of bob is covered by the store test.
    assert_eq!(
        http.fail(c.key(), Method::GET, &path, vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.fail(a.key(), Method::GET, &path, vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    server.shutdown().await;
}

#[tokio::test]
async fn retained_datagrams_are_purged_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::from_secs(3)).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let datagram = seal_to(&http, &mut a, &bob, "short-lived").await;
    let sent: SendResponse = send(&http, &a, datagram).await.json().await.unwrap();
    let ack = Ack { seqs: vec![1] };
    let _: serde_json::Value = http
        .call(b.key(), Method::POST, "/v1/mailbox/ack", Some(&ack))
        .await;
    let path = format!("/v1/datagrams/{}", sent.datagram_id);
    assert_eq!(
        http.signed(b.key(), Method::GET, &path, vec![])
            .await
            .status(),
        StatusCode::OK
    );
    // The purge task runs every 1.5 s for a 3 s window.
    let mut status = StatusCode::OK;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        status = http
            .signed(b.key(), Method::GET, &path, vec![])
            .await
            .status();
        if status == StatusCode::NOT_FOUND {
            break;
        }
    }
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "purged after the retention window"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn prekey_exhaustion_serves_the_reserve_and_tells_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let a = alice.register(&http, 1).await;
    let mut b = bob.register(&http, 2).await;
    let mut ws = websocket(&http, &b).await;

    let claim_path = format!("/v1/users/{}/bundles", bob.hash());
    let mut kinds = Vec::new();
    let mut prekeys = Vec::new();
    for _ in 0..4 {
        let claim: ClaimResponse = http
            .call(
                a.key(),
                Method::POST,
                &claim_path,
                Some(&ClaimRequest::default()),
            )
            .await;
        assert_eq!(claim.bundles.len(), 1);
        let p = sotto_proto::SignedPrekey::decode(&b64::decode(&claim.bundles[0].prekey).unwrap())
            .unwrap();
        kinds.push(p.kind);
        prekeys.push(p.id);
    }
    use sotto_proto::PrekeyKind::*;
    assert_eq!(kinds, vec![OneTime, OneTime, Reserve, Reserve]);
    assert_ne!(prekeys[0], prekeys[1], "each one-time key is served once");
    assert_eq!(prekeys[2], prekeys[3]);

    // Bob was told each time: the pool is below the low-water mark.
    let mut last = None;
    for _ in 0..4 {
        match next_push(&mut ws).await {
            Push::PrekeysLow(status) => last = Some(status),
            other => panic!("unexpected push {other:?}"),
        }
    }
    assert_eq!(
        last,
        Some(PrekeyStatus {
            one_time: 0,
            reserve_served: 2
        })
    );
    let status: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    assert_eq!(
        status,
        PrekeyStatus {
            one_time: 0,
            reserve_served: 2
        }
    );

    // Bob refills; one-time keys are used again.
    let fresh = b.device.generate_prekeys(&mut rand_core::OsRng, 20);
    let upload = PrekeyUpload {
        prekeys: fresh.iter().map(|p| b64::encode(&p.encode())).collect(),
        reserve: None,
    };
    let status: PrekeyStatus = http
        .call(b.key(), Method::POST, "/v1/prekeys", Some(&upload))
        .await;
    assert_eq!(
        status,
        PrekeyStatus {
            one_time: 20,
            reserve_served: 0
        }
    );
    let claim: ClaimResponse = http
        .call(
            a.key(),
            Method::POST,
            &claim_path,
            Some(&ClaimRequest::default()),
        )
        .await;
    let p =
        sotto_proto::SignedPrekey::decode(&b64::decode(&claim.bundles[0].prekey).unwrap()).unwrap();
    assert_eq!((p.kind, p.id), (OneTime, fresh[0].id));

    // A refill must be signed by the uploading device itself.
    let foreign = PrekeyUpload {
        prekeys: vec![upload.prekeys[0].clone()],
        reserve: None,
    };
    let (status, _) = http
        .fail(
            a.key(),
            Method::POST,
            "/v1/prekeys",
            serde_json::to_vec(&foreign).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

/// Finding 11: a blocked sender used to get 403 `blocked` on every send
/// and claim. Now it gets what anyone else gets, and nothing is stored.
#[tokio::test]
async fn a_blocked_sender_is_not_told_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let (alice, bob, carol) = (User::new("alice"), User::new("bob"), User::new("carol"));
    let mut a = alice.register(&http, 5).await;
    let b = bob.register(&http, 5).await;
    let mut c = carol.register(&http, 5).await;
    let block = Block {
        username_hash: alice.hash(),
    };
    // Sessions made before the block...
    let datagram = seal_to(&http, &mut a, &bob, "let me in").await;
    let _: serde_json::Value = http
        .call(b.key(), Method::POST, "/v1/blocks", Some(&block))
        .await;
    let blocks: Blocks = http.call(b.key(), Method::GET, "/v1/blocks", NO_BODY).await;
    assert_eq!(blocks.blocked, vec![alice.hash()]);
    // ... are answered as any send is (carol's, unblocked, for comparison)
    // but nothing reaches bob.
    let blocked = send(&http, &a, datagram.clone()).await;
    assert_eq!(blocked.status(), StatusCode::OK);
    let blocked: SendResponse = blocked.json().await.unwrap();
    let from_carol = seal_to(&http, &mut c, &bob, "hello").await;
    let unblocked: SendResponse = send(&http, &c, from_carol).await.json().await.unwrap();
    assert_eq!(blocked.delivered_to, unblocked.delivered_to);
    let pending = fetch(&http, &b).await.items;
    assert_eq!(pending.len(), 1, "only carol's");
    // A claim is answered too (with the reserve key), and spends nothing.
    let before: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    let claim = format!("/v1/users/{}/bundles", bob.hash());
    let claimed: ClaimResponse = http
        .call(
            a.key(),
            Method::POST,
            &claim,
            Some(&ClaimRequest::default()),
        )
        .await;
    assert_eq!(claimed.bundles.len(), 1);
    let after: PrekeyStatus = http
        .call(b.key(), Method::GET, "/v1/prekeys", NO_BODY)
        .await;
    assert_eq!(before, after, "a blocked claimant cannot drain the pool");

    let path = format!("/v1/blocks/{}", alice.hash());
    let _: serde_json::Value = http.call(b.key(), Method::DELETE, &path, NO_BODY).await;
    assert_eq!(send(&http, &a, datagram).await.status(), StatusCode::OK);
    assert_eq!(fetch(&http, &b).await.items.len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_recipient_devices_and_forged_senders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 5).await;

    // A session with a device the server has never seen.
    let ghost_user = User::new("ghost");
    let mut ghost = ghost_user.device();
    let prekey = ghost.device.generate_prekeys(&mut rand_core::OsRng, 1)[0];
    let bundle = sotto_proto::PrekeyBundle {
        cert: *ghost.device.cert(),
        prekey,
    }
    .verify(&ghost_user.key.public())
    .unwrap();
    a.device
        .start_session(&mut rand_core::OsRng, &bundle)
        .unwrap();
    let _ = seal_to(&http, &mut a, &bob, "warm-up").await; // sessions with bob
    let datagram = seal_for(&mut a, &[b.id(), ghost.id()], "to a ghost");
    let (status, code) = error_of(send(&http, &a, datagram).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, codes::UNKNOWN_DEVICE)
    );
    assert!(
        fetch(&http, &b).await.items.is_empty(),
        "refused as a whole"
    );

    // Bob cannot post a datagram Alice made.
    let datagram = seal_for(&mut a, &[b.id()], "from alice");
    let (status, _) = error_of(send(&http, &b, datagram.clone()).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Garbage is not a datagram.
    let (status, code) = error_of(send(&http, &a, b"not a datagram".to_vec()).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, codes::BAD_REQUEST)
    );
    // Alice can, and Bob opens it.
    assert_eq!(send(&http, &a, datagram).await.status(), StatusCode::OK);
    let batch = fetch(&http, &b).await;
    assert_eq!(open_text(&mut b, &batch.items[0]), "from alice");
    server.shutdown().await;
}

#[tokio::test]
async fn pushes_reach_connected_devices_and_acks_work_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Duration::ZERO).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let mut b = bob.register(&http, 20).await;
    let mut ws = websocket(&http, &b).await;
    let datagram = seal_to(&http, &mut a, &bob, "pushed").await;
    // Claiming Bob's bundle pushed prekeys_low? No: 19 keys are left.
    assert_eq!(send(&http, &a, datagram).await.status(), StatusCode::OK);
    let item = match next_push(&mut ws).await {
        Push::Message(item) => item,
        other => panic!("unexpected push {other:?}"),
    };
    assert_eq!(open_text(&mut b, &item), "pushed");
    send_text(
        &mut ws,
        &serde_json::to_string(&Ack {
            seqs: vec![item.seq],
        })
        .unwrap(),
    )
    .await;
    // The ack is applied asynchronously; poll briefly.
    let mut pending = usize::MAX;
    for _ in 0..50 {
        pending = fetch(&http, &b).await.items.len();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_new_device_is_linked_by_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let (alice, bob) = (User::new("alice"), User::new("bob"));
    let mut a = alice.register(&http, 5).await;
    let b1 = bob.register(&http, 5).await;

    // The new device has keys but no certificate yet.
    let new_key = sotto_proto::DeviceKey::generate(&mut rand_core::OsRng);
    let public = new_key.public_keys();
    let pre: Vec<_> = (1..=3)
        .map(|i| {
            new_key
                .generate_prekey(&mut rand_core::OsRng, i, sotto_proto::PrekeyKind::OneTime)
                .0
        })
        .collect();
    let reserve = new_key
        .generate_prekey(&mut rand_core::OsRng, 4, sotto_proto::PrekeyKind::Reserve)
        .0;
    let req = LinkRequest {
        device: hex::encode(public.id.0),
        dh: hex::encode(public.dh),
        proof: hex::encode([5u8; 32]),
        prekeys: pre.iter().map(|p| b64::encode(&p.encode())).collect(),
        reserve: b64::encode(&reserve.encode()),
    };
    let created: LinkCreated = http
        .call(&new_key, Method::POST, "/v1/link", Some(&req))
        .await;
    let status_path = format!("/v1/link/{}/status", created.link_id);
    let status: LinkStatus = http
        .client
        .get(http.url(&status_path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!status.approved);

    let read: LinkRequest = http
        .call(
            b1.key(),
            Method::GET,
            &format!("/v1/link/{}", created.link_id),
            NO_BODY,
        )
        .await;
    assert_eq!(read, req);
    // Alice cannot approve it into Bob's account with her own key... she
    // would only add it to hers; a certificate for other keys is refused.
    let wrong = bob.key.certify(
        &sotto_proto::DeviceKey::generate(&mut rand_core::OsRng).public_keys(),
        now_ms(),
    );
    let approve_path = format!("/v1/link/{}/approve", created.link_id);
    let body = serde_json::to_vec(&LinkApprove {
        cert: b64::encode(&wrong.encode()),
        approval: b64::encode(b"sealed"),
    })
    .unwrap();
    assert_eq!(
        http.fail(b1.key(), Method::POST, &approve_path, body)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let by_alice = serde_json::to_vec(&LinkApprove {
        cert: b64::encode(&bob.key.certify(&public, now_ms()).encode()),
        approval: b64::encode(b"sealed"),
    })
    .unwrap();
    assert_eq!(
        http.fail(a.key(), Method::POST, &approve_path, by_alice)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let cert = bob.key.certify(&public, now_ms());
    let _: serde_json::Value = http
        .call(
            b1.key(),
            Method::POST,
            &approve_path,
            Some(&LinkApprove {
                cert: b64::encode(&cert.encode()),
                approval: b64::encode(b"sealed for the new device"),
            }),
        )
        .await;
    let status: LinkStatus = http
        .client
        .get(http.url(&status_path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status.approved);
    assert_eq!(status.cert, Some(b64::encode(&cert.encode())));
    assert_eq!(status.username_hash, Some(bob.hash()));
    // The sealed approval is handed over as it came (the server cannot
    // read it).
    assert_eq!(
        status.approval,
        Some(b64::encode(b"sealed for the new device"))
    );

    // Both of Bob's devices now receive what Alice sends.
    let b2 = Dev {
        username: "bob".into(),
        device: sotto_proto::Device::new(new_key, cert).unwrap(),
    };
    let datagram = seal_to(&http, &mut a, &bob, "to both").await;
    let sent: SendResponse = send(&http, &a, datagram).await.json().await.unwrap();
    assert_eq!(sent.delivered_to, 2);
    assert_eq!(fetch(&http, &b1).await.items.len(), 1);
    assert_eq!(fetch(&http, &b2).await.items.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn every_documented_path_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let doc: serde_json::Value = http
        .client
        .get(http.url(OPENAPI_PATH))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18);
    for (path, ops) in paths {
        let concrete = path
            .replace("{username_hash}", &"ab".repeat(32))
            .replace("{datagram_id}", &"cd".repeat(32))
            .replace("{link_id}", "abc");
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = http
                .client
                .request(m, http.url(&concrete))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let text = resp.text().await.unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !text.contains("no such endpoint"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_are_all_stored_and_pushed_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), RETAIN).await;
    let http = Http::of(&server);
    let bob = User::new("bob");
    let mut b = bob.register(&http, 100).await;
    let mut ws = websocket(&http, &b).await;
    let (senders, each) = (16, 25);
    let bob_dev = b.id();
    let mut tasks = Vec::new();
    for n in 0..senders {
        let http = http.clone();
        let user = User::new(&format!("sender{n}"));
        let mut dev = user.register(&http, 1).await;
        let first = seal_to(&http, &mut dev, &bob, &format!("{n}/0")).await;
        tasks.push(tokio::spawn(async move {
            assert_eq!(send(&http, &dev, first).await.status(), StatusCode::OK);
            for i in 1..each {
                let d = seal_for(&mut dev, &[bob_dev], &format!("{n}/{i}"));
                assert_eq!(send(&http, &dev, d).await.status(), StatusCode::OK);
            }
        }));
    }
    let started = std::time::Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} sends from {senders} concurrent senders in {elapsed:?}",
        senders * each
    );
    // Every send was pushed once (concurrent sends may be pushed out of
    // sequence order), and the sequence numbers have no gap.
    let mut pushed = Vec::new();
    for _ in 0..senders * each {
        match next_push(&mut ws).await {
            Push::Message(item) => pushed.push(item.seq),
            other => panic!("unexpected push {other:?}"),
        }
    }
    pushed.sort_unstable();
    assert_eq!(pushed, (1..=(senders * each) as u64).collect::<Vec<_>>());
    // And all are in the mailbox, each once, and open.
    let mut seen = std::collections::HashSet::new();
    let mut after = 0;
    loop {
        let page: MailboxBatch = http
            .call(
                b.key(),
                Method::GET,
                &format!("/v1/mailbox?after={after}&limit=500"),
                NO_BODY,
            )
            .await;
        for item in &page.items {
            assert!(seen.insert(open_text(&mut b, item)));
            after = item.seq;
        }
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), senders * each);
    server.shutdown().await;
}
