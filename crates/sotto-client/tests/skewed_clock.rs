//! Every TTL decision uses the master clock (the server's), also offline:
//! against a server whose clock runs two hours behind this machine, a
//! message with one hour to live is kept, in a room too, and in a process
//! that opens the home without contacting the server. (With this machine's
//! own clock it would have expired an hour before it was sent.)
//!
//! Its own test binary: the server's test clock offset is per process.

use std::path::Path;

use sotto_client::{Client, LineContent, Ttl};
use sotto_server::Config;

const PW: &str = "correct horse battery staple";
const HOUR_MS: i64 = 3_600_000;

async fn register(url: &str, home: &Path, name: &str) -> Client {
    Client::register(home, PW, name, url, None).await.unwrap().0
}

fn room_messages(c: &mut Client, room: &str) -> Vec<String> {
    c.room_show(room)
        .unwrap()
        .lines
        .into_iter()
        .filter_map(|l| match l.content {
            LineContent::Message(t) => Some(t),
            LineContent::Notice(_) => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_follow_the_servers_clock_not_this_machines() {
    sotto_server::testing::set_clock_offset_ms(-2 * HOUR_MS);
    let dir = tempfile::tempdir().unwrap();
    let running = sotto_server::start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("srv"),
    ))
    .await
    .unwrap();
    let url = format!("https://{}", running.addr);
    let mut alice = register(&url, &dir.path().join("alice"), "alice").await;
    let mut bob = register(&url, &dir.path().join("bob"), "bob").await;

    alice
        .send_with_ttl("bob", "an hour to live", 3600)
        .await
        .unwrap();
    alice
        .room_create("Brief", "", Ttl::HOUR, &["bob".to_string()], &[])
        .await
        .unwrap();
    alice.room_send("Brief", "also an hour").await.unwrap();

    let r = bob.sync().await.unwrap();
    assert_eq!(r.messages.len(), 1, "{:?}", r.rejected);
    let sent_at = r.messages[0].sent_at as i64;
    let local = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (local - 2 * HOUR_MS - sent_at).abs() < 60_000,
        "stamped by the server's clock"
    );
    let bodies = |c: &mut Client| -> Vec<String> {
        c.history(None, None)
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect()
    };
    assert_eq!(bodies(&mut bob), ["an hour to live"]);
    assert_eq!(bodies(&mut alice), ["an hour to live"]);
    assert_eq!(room_messages(&mut bob, "Brief"), ["also an hour"]);
    drop(bob);

    // Another process, offline: the offset measured before is kept.
    let mut bob = Client::open(&dir.path().join("bob"), PW).await.unwrap();
    running.shutdown().await;
    assert_eq!(bodies(&mut bob), ["an hour to live"]);
    assert_eq!(room_messages(&mut bob, "Brief"), ["also an hour"]);
    // An hour later by the master clock, the room message goes.
    bob.shift_room_clock(HOUR_MS + 60_000);
    assert!(room_messages(&mut bob, "Brief").is_empty());
}
