//! `GET /metrics`: scraped as Prometheus would (no credentials), its
//! counters move with what the node does, and it names no one.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use sotto_api::{Ack, MailboxBatch, Push, UserDevices};
use sotto_server::{Rate, Rates};

/// Scrapes `/metrics` without any signature: (name with labels, value).
async fn scrape(http: &Http) -> HashMap<String, f64> {
    let resp = http.client.get(http.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, name: &str) -> f64 {
    *m.get(name)
        .unwrap_or_else(|| panic!("{name} missing from {:?}", m.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraping_works_and_the_counters_move() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| {
        c.retention = Duration::ZERO;
        c.limits.rates = Some(Rates {
            lookups_per_device: Rate::new(2, Duration::from_secs(60)),
            ..Rates::default()
        });
    })
    .await;
    let http = Http::of(&server);
    let before = scrape(&http).await;
    for name in [
        "sotto_sends_total",
        "sotto_pushes_total",
        "sotto_acks_total",
        "sotto_rate_limited_total",
        "sotto_mailbox_depth",
        "sotto_push_sockets",
    ] {
        assert_eq!(get(&before, name), 0.0, "{name} starts at zero");
    }
    assert!(get(&before, "sotto_connections") >= 1.0, "the scrape's own");

    let alice = User::new("alice");
    let mut a = alice.register(&http, 2).await;
    let bob = User::new("bob");
    let mut b = bob.register(&http, 20).await;
    let mut ws = websocket(&http, &b).await;
    let datagram = seal_to(&http, &mut a, &bob, "counted").await;
    assert!(send(&http, &a, datagram).await.status().is_success());
    // (A prekeys-low notice may come first: every frame counts.)
    let mut frames = 0.0;
    let item = loop {
        frames += 1.0;
        if let Push::Message(item) = next_push(&mut ws).await {
            break item;
        }
    };
    assert_eq!(open_text(&mut b, &item), "counted");

    // The depth is re-read at most every second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let during = scrape(&http).await;
    assert_eq!(get(&during, "sotto_sends_total"), 1.0);
    assert_eq!(get(&during, "sotto_pushes_total"), frames);
    assert_eq!(get(&during, "sotto_push_sockets"), 1.0);
    assert_eq!(get(&during, "sotto_mailbox_depth"), 1.0);
    assert!(get(&during, "sotto_store_seconds_count") > get(&before, "sotto_store_seconds_count"));

    let _: serde_json::Value = http
        .call(
            b.key(),
            Method::POST,
            "/v1/mailbox/ack",
            Some(&Ack {
                seqs: vec![item.seq],
            }),
        )
        .await;
    let left: MailboxBatch = fetch(&http, &b).await;
    assert!(left.items.is_empty());
    // Lookups past the limit: refused and counted.
    let path = format!("/v1/users/{}", alice.hash());
    for _ in 0..2 {
        let _: UserDevices = http.call(b.key(), Method::GET, &path, NO_BODY).await;
    }
    let (status, _) = http.fail(b.key(), Method::GET, &path, vec![]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    drop(ws);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = scrape(&http).await;
    assert_eq!(get(&after, "sotto_acks_total"), 1.0);
    assert_eq!(get(&after, "sotto_rate_limited_total"), 1.0);
    assert_eq!(get(&after, "sotto_mailbox_depth"), 0.0);
    assert_eq!(get(&after, "sotto_push_sockets"), 0.0);
    server.shutdown().await;
}

/// A stranger may scrape (the endpoint is open, as Prometheus expects),
/// but what it learns is the node's totals: no label or value names a
/// device, user or address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_no_device_user_or_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(dir.path(), |c| c.limits.rates = None).await;
    let http = Http::of(&server);
    let alice = User::new("alice");
    let mut a = alice.register(&http, 2).await;
    let bob = User::new("bob");
    let b = bob.register(&http, 2).await;
    let datagram = seal_to(&http, &mut a, &bob, "who?").await;
    send(&http, &a, datagram).await;
    let text = http.metrics_text().await;
    for needle in [
        hex::encode(a.id().0),
        hex::encode(b.id().0),
        alice.hash(),
        bob.hash(),
        hex::encode(&a.id().0[..8]),
        "127.0.0.1".to_string(),
    ] {
        assert!(!text.contains(&needle), "/metrics names {needle}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains('{') || line.contains("le="),
            "only histogram labels: {line}"
        );
    }
    server.shutdown().await;
}
