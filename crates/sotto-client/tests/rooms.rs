//! Secure rooms end to end: an in-process server on a real socket, real
//! clients in temp dirs, every room message in normal encrypted datagrams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_client::{Client, RoomChanges, Ttl};
use sotto_server::{Config, Running};
use tempfile::TempDir;

const PW: &str = "correct horse battery staple";

struct Server {
    _running: Running,
    url: String,
    _dir: TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let running = sotto_server::start(Config::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("srv"),
    ))
    .await
    .unwrap();
    Server {
        url: format!("https://{}", running.addr),
        _running: running,
        _dir: dir,
    }
}

fn home(dir: &TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

async fn register(srv: &Server, home: &Path, name: &str) -> Client {
    Client::register(home, PW, name, &srv.url, None)
        .await
        .unwrap()
        .0
}

async fn link(srv: &Server, existing: &mut Client, home: &Path) -> Client {
    let pending = Client::link_start(home, PW, &srv.url, None).await.unwrap();
    let code = pending.code().to_string();
    let (new, approved) = tokio::join!(
        pending.wait(Duration::from_secs(60)),
        existing.approve(&code)
    );
    approved.unwrap();
    new.unwrap()
}

/// Syncs every client a few rounds, so that requests get answered and
/// answers taken in.
async fn settle(clients: &mut [&mut Client]) {
    for _ in 0..3 {
        for c in clients.iter_mut() {
            let r = c.sync().await.unwrap();
            assert!(r.rejected.is_empty(), "{}: {:?}", c.username(), r.rejected);
        }
    }
}

fn messages(c: &mut Client, room: &str) -> Vec<String> {
    c.room_show(room)
        .unwrap()
        .lines
        .into_iter()
        .filter(|l| l.kind == "message")
        .map(|l| format!("{}: {}", l.from, l.text))
        .collect()
}

fn notices(c: &mut Client, room: &str) -> Vec<String> {
    c.room_show(room)
        .unwrap()
        .lines
        .into_iter()
        .filter(|l| l.kind == "notice")
        .map(|l| l.text)
        .collect()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_two_devices_converge() {
    let srv = server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut alice = register(&srv, &home(&dir, "alice"), "alice").await;
    let mut bob = register(&srv, &home(&dir, "bob"), "bob").await;
    let mut bob2 = link(&srv, &mut bob, &home(&dir, "bob2")).await;
    let mut carol = register(&srv, &home(&dir, "carol"), "carol").await;
    let mut dave = register(&srv, &home(&dir, "dave"), "dave").await;
    settle(&mut [&mut bob, &mut bob2]).await;

    let created = alice
        .room_create(
            "Launch",
            "Q3 launch",
            Ttl::DAY,
            &names(&["bob", "carol"]),
            &names(&["bob"]),
        )
        .await
        .unwrap();
    assert_eq!((created.members, created.ttl.as_str()), (3, "1 day"));
    settle(&mut [&mut bob, &mut bob2, &mut carol]).await;
    for c in [&mut bob, &mut bob2, &mut carol] {
        let v = c.room_show("Launch").unwrap();
        assert_eq!(
            (v.title.as_str(), v.description.as_str(), v.ttl.as_str()),
            ("Launch", "Q3 launch", "1 day")
        );
        let members: Vec<(String, bool)> = v
            .members
            .iter()
            .map(|m| (m.name.clone(), m.admin))
            .collect();
        assert_eq!(
            members,
            vec![
                ("alice".into(), true),
                ("bob".into(), true),
                ("carol".into(), false)
            ],
            "admins first, names resolved"
        );
    }

    bob.room_send("Launch", "draft is in the shared drive")
        .await
        .unwrap();
    settle(&mut [&mut alice, &mut bob2, &mut carol]).await;
    for c in [&mut alice, &mut bob2, &mut carol] {
        assert_eq!(
            messages(c, "Launch"),
            vec!["bob: draft is in the shared drive"]
        );
    }
    let found = carol.room_search("Launch", "DRAFT").unwrap();
    assert_eq!(found.len(), 1);
    assert!(carol
        .room_search("Launch", "nothing like it")
        .unwrap()
        .is_empty());

    let lines = bob
        .room_set(
            "Launch",
            &RoomChanges {
                ttl: Some(Ttl::HOUR),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        lines,
        vec!["[Launch] bob changed the TTL from 1 day to 1 hour"]
    );
    settle(&mut [&mut alice, &mut bob2, &mut carol]).await;
    assert!(notices(&mut carol, "Launch")
        .contains(&"bob changed the TTL from 1 day to 1 hour".to_string()));

    // Add dave: his device gets the add entry, asks for the history.
    alice
        .room_set(
            "Launch",
            &RoomChanges {
                add: names(&["dave"]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    settle(&mut [&mut dave, &mut alice, &mut bob, &mut bob2, &mut carol]).await;
    let v = dave.room_show("Launch").unwrap();
    assert_eq!(v.ttl, "1 hour");
    assert_eq!(v.members.len(), 4);
    assert!(
        messages(&mut dave, "Launch").is_empty(),
        "dave gets nothing sent before he joined"
    );
    dave.room_send("Launch", "hello from dave").await.unwrap();
    settle(&mut [&mut alice, &mut bob, &mut bob2, &mut carol]).await;
    assert!(messages(&mut carol, "Launch").contains(&"dave: hello from dave".to_string()));

    // Remove dave, then carol leaves.
    bob.room_set(
        "Launch",
        &RoomChanges {
            remove: names(&["dave"]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    settle(&mut [&mut alice, &mut bob2, &mut carol, &mut dave]).await;
    assert!(notices(&mut dave, "Launch").contains(&"dave was removed by bob".to_string()));
    carol.room_leave("Launch").await.unwrap();
    settle(&mut [&mut alice, &mut bob, &mut bob2, &mut carol]).await;

    let reference = alice.room_show("Launch").unwrap();
    let members: Vec<&str> = reference.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(members, vec!["alice", "bob"]);
    assert!(notices(&mut alice, "Launch").contains(&"carol left".to_string()));
    for c in [&mut bob, &mut bob2, &mut carol] {
        let v = c.room_show("Launch").unwrap();
        assert_eq!(
            v.head,
            reference.head,
            "{} has the same log head",
            c.username()
        );
        assert_eq!(
            (v.title, v.ttl, v.members, v.entries),
            (
                reference.title.clone(),
                reference.ttl.clone(),
                reference.members.clone(),
                reference.entries
            )
        );
    }
    for c in [&alice, &bob, &bob2, &carol] {
        assert_eq!(c.room_log("Launch", true).unwrap().broken, None);
    }
}
