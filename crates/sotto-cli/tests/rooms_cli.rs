//! The command-line contract of issue 5 (secure rooms), run as a user
//! would: the real `sotto` binary, a real server process, real temp dirs.

mod common;

use std::path::Path;

use common::*;

fn show(home: &Path) -> serde_json::Value {
    let v = json_lines(&ok(home, &["room", "show", "Launch", "--json"]));
    assert_eq!(v.len(), 1);
    v[0].clone()
}

#[test]
fn room_contract_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    let carol = register(dir.path(), "carol", &server);

    let out = ok(
        &alice,
        &[
            "room",
            "create",
            "Launch",
            "--description",
            "Q3 launch",
            "--ttl",
            "1d",
            "--members",
            "bob,carol",
            "--admins",
            "bob",
        ],
    );
    assert!(out.contains("created room \"Launch\""), "{out}");

    let rooms = json_lines(&ok(&alice, &["rooms", "--json"]));
    assert_eq!(rooms.len(), 1);
    assert_eq!(
        (
            rooms[0]["title"].as_str(),
            rooms[0]["ttl"].as_str(),
            rooms[0]["members"].as_u64()
        ),
        (Some("Launch"), Some("1 day"), Some(3))
    );
    let listed = ok(&alice, &["rooms"]);
    assert!(
        listed.contains("Launch") && listed.contains("1 day") && listed.contains("3 members"),
        "{listed}"
    );

    ok(
        &bob,
        &["room", "send", "Launch", "draft is in the shared drive"],
    );

    let human = ok(&carol, &["room", "show", "Launch"]);
    assert!(
        human.contains("Q3 launch") && human.contains("ttl: 1 day"),
        "{human}"
    );
    assert!(
        human.contains("members: alice *, bob *, carol"),
        "admins first, marked: {human}"
    );
    assert!(
        human.contains("bob: draft is in the shared drive"),
        "{human}"
    );
    let v = show(&carol);
    assert_eq!(v["description"], "Q3 launch");
    let members: Vec<(String, bool)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["admin"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![
            ("alice".into(), true),
            ("bob".into(), true),
            ("carol".into(), false)
        ]
    );

    let found = json_lines(&ok(
        &carol,
        &["room", "search", "Launch", "draft", "--json"],
    ));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["text"], "draft is in the shared drive");
    assert_eq!(found[0]["from"], "bob");
    assert!(json_lines(&ok(&carol, &["room", "search", "Launch", "nope", "--json"])).is_empty());

    // A non-admin's change: one clear line, non-zero, nothing anywhere.
    let before = show(&alice)["head"].clone();
    let e = err(&carol, &["room", "set", "Launch", "--ttl", "1h"]);
    assert!(e.contains("not an admin"), "{e}");
    assert_eq!(show(&carol)["ttl"], "1 day");
    assert_eq!(show(&alice)["head"], before, "nothing reached alice");

    let out = ok(&bob, &["room", "set", "Launch", "--ttl", "1h"]);
    assert!(
        out.contains("bob changed the TTL from 1 day to 1 hour"),
        "{out}"
    );
    let v = show(&carol);
    assert_eq!(v["ttl"], "1 hour");
    let texts: Vec<&str> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"bob changed the TTL from 1 day to 1 hour"),
        "{texts:?}"
    );

    ok(&carol, &["room", "leave", "Launch"]);
    let v = show(&alice);
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert_eq!(show(&bob)["head"], v["head"]);

    let log = ok(&carol, &["room", "log", "Launch", "--verify"]);
    assert!(log.contains("verified:"), "{log}");
    let log = json_lines(&ok(
        &carol,
        &["room", "log", "Launch", "--verify", "--json"],
    ));
    assert!(log[0]["broken"].is_null());
    assert_eq!(
        log[0]["entries"].as_array().unwrap().len(),
        4,
        "create, message, ttl, leave"
    );

    // Addressing: by id; a title shared by two rooms asks for the id.
    let id = v["id"].as_str().unwrap().to_string();
    ok(&alice, &["room", "show", &id]);
    ok(&alice, &["room", "create", "Launch", "--members", "bob"]);
    let e = err(&alice, &["room", "show", "Launch"]);
    assert!(e.contains("several rooms") && e.contains(&id), "{e}");
    let e = err(&alice, &["room", "show", "Nothing"]);
    assert!(e.contains("no room"), "{e}");
}

#[test]
fn a_linked_device_recovers_a_room() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    ok(&alice, &["room", "create", "Sync", "--members", "bob"]);
    ok(&alice, &["room", "send", "Sync", "kept for bob"]);
    let rooms = json_lines(&ok(&bob, &["rooms", "--json"]));
    let id = rooms[0]["id"].as_str().unwrap().to_string();

    let bob2 = link(dir.path(), "bob2", &bob, &server);
    assert!(json_lines(&ok(&bob2, &["rooms", "--json"])).is_empty());
    let e = err(&bob2, &["room", "show", &id]);
    assert!(e.contains("no room"), "{e}");
    let out = ok(&bob2, &["room", "recover", &id]);
    assert!(out.contains("asked your other devices"), "{out}");
    ok(&bob, &["rooms"]); // bob's first device answers while syncing
    let v = json_lines(&ok(&bob2, &["room", "show", &id, "--json"]));
    let lines = v[0]["lines"].as_array().unwrap();
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert!(texts.contains(&"kept for bob"), "{texts:?}");
    assert_eq!(
        v[0]["head"],
        json_lines(&ok(&alice, &["room", "show", "Sync", "--json"]))[0]["head"]
    );

    // A member added later has the room on its first command, without
    // waiting for anyone to answer, and nothing from before it joined.
    let carol = register(dir.path(), "carol", &server);
    ok(&alice, &["room", "set", "Sync", "--add", "carol"]);
    let v = json_lines(&ok(&carol, &["room", "show", "Sync", "--json"]));
    let members: Vec<&str> = v[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["alice", "bob", "carol"]);
    let texts: Vec<&str> = v[0]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(!texts.contains(&"kept for bob"), "{texts:?}");
    assert!(texts.contains(&"carol was added by alice"), "{texts:?}");
}

#[test]
fn room_log_verify_reports_a_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let _bob = register(dir.path(), "bob", &server);
    ok(&alice, &["room", "create", "Audit", "--members", "bob"]);
    ok(&alice, &["room", "send", "Audit", "first"]);
    ok(&alice, &["room", "send", "Audit", "second"]);
    assert!(ok(&alice, &["room", "log", "Audit", "--verify"]).contains("verified: 3 entries"));

    // The store is encrypted: change entry 2 through the library's test hook.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = sotto_client::Client::open(&alice, PASS).await.unwrap();
        let records = client.room_records("Audit").unwrap();
        let mut bytes = records[1].1.clone();
        let at = bytes.len() - 70;
        bytes[at] ^= 0x01;
        assert!(client.tamper_room_record("Audit", 1, &bytes).unwrap());
    });
    let e = err(&alice, &["room", "log", "Audit", "--verify"]);
    assert!(e.contains("broken at entry 2"), "{e}");
    let out = run(&alice, &["room", "log", "Audit", "--verify", "--json"]);
    assert!(!out.status.success());
    let report = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert!(report[0]["broken"].as_str().unwrap().contains("entry 2"));
}
