//! One history whatever carried the message: users made with no server
//! chat peer to peer, then publish the same identity on a server; users of
//! a server keep talking peer to peer while it is down, and afterwards each
//! side's `inbox` holds every message once, in order.

mod common;

use std::path::Path;

use common::*;

fn bodies(home: &Path) -> Vec<String> {
    json_lines(&ok(home, &["--json", "inbox"]))
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect()
}

fn safety(home: &Path, with: &str) -> String {
    json_lines(&ok(home, &["--json", "verify", with]))[0]["safety_number"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn init_chat_peer_to_peer_then_register_and_message_through_the_server_with_the_same_safety_number()
{
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    let made = ok(&alice, &["init", "alice"]);
    assert!(made.contains("created alice"), "{made}");
    ok(&bob, &["init", "bob"]);
    // No server: inbox lists what this device holds (nothing yet).
    assert_eq!(ok(&alice, &["inbox"]), "");
    assert!(err(&alice, &["send", "bob", "x"]).contains("no server"));

    let a = up(&alice, &[]);
    let _b = up(&bob, &[]);
    p2p_session(&bob, &alice, "alice", &a.addr);
    ok(&bob, &["p2p", "send", "alice", "hello, no server here"]);
    wait_until(
        "bob's message in alice's inbox",
        20,
        || bodies(&alice) == ["hello, no server here"],
        || ok(&alice, &["inbox"]),
    );
    let json = json_lines(&ok(&alice, &["--json", "inbox"]));
    assert_eq!(json[0]["from"], "bob");
    assert_eq!(json[0]["to"], "alice");
    ok(&alice, &["p2p", "send", "bob", "hi bob"]);
    wait_until(
        "alice's answer",
        20,
        || bodies(&bob) == ["hello, no server here", "hi bob"],
        || ok(&bob, &["inbox"]),
    );

    // Both publish the identities they made with `init`.
    let server = Server::start(&dir.path().join("srv"));
    let reg = ok(&alice, &["register", "alice", "--server", &server.url]);
    assert!(reg.contains("registered alice"), "{reg}");
    ok(&bob, &["register", "bob", "--server", &server.url]);
    // The keys the peers proved are the ones the server lists: no key
    // change, and the same safety number on both sides.
    let (sa, sb) = (safety(&alice, "bob"), safety(&bob, "alice"));
    assert_eq!(sa, sb);
    assert!(
        sa.chars().filter(char::is_ascii_digit).count() == 60,
        "{sa}"
    );

    ok(&alice, &["send", "bob", "through the server"]);
    assert_eq!(
        bodies(&bob),
        ["hello, no server here", "hi bob", "through the server"]
    );
    // The name stays bound: another user cannot register alice's name
    // from a home made with `init` for someone else.
    let eve = dir.path().join("eve");
    ok(&eve, &["init", "alice"]);
    assert!(err(&eve, &["register", "alice", "--server", &server.url]).contains("taken"));
}

#[test]
fn server_down_the_peers_keep_talking_and_each_history_holds_every_message_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let server = Server::start(&data);
    let listen = server.url.trim_start_matches("https://").to_string();
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    ok(&alice, &["send", "bob", "1 through the server"]);
    assert_eq!(bodies(&bob), ["1 through the server"]);

    let a = up(&alice, &[]);
    let _b = up(&bob, &[]);
    p2p_session(&bob, &alice, "alice", &a.addr);

    drop(server);
    // `sotto send` finds the server down and uses the open peer session.
    let sent = run(&alice, &["send", "bob", "2 while the server is down"]);
    assert!(sent.status.success(), "{sent:?}");
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains("peer to peer"),
        "{sent:?}"
    );
    assert!(String::from_utf8_lossy(&sent.stderr).contains("cannot reach the server"));
    ok(&bob, &["p2p", "send", "alice", "3 still down"]);
    wait_until(
        "the peer messages",
        20,
        || bodies(&bob).len() == 3 && bodies(&alice).len() == 3,
        || format!("{:?} / {:?}", bodies(&alice), bodies(&bob)),
    );

    let _server = Server::start_on(&data, &listen);
    ok(&alice, &["send", "bob", "4 through the server again"]);
    ok(&bob, &["send", "alice", "5 and back"]);
    let want = [
        "1 through the server",
        "2 while the server is down",
        "3 still down",
        "4 through the server again",
        "5 and back",
    ];
    assert_eq!(bodies(&bob), want);
    assert_eq!(bodies(&alice), want);
    // Once more: nothing comes twice.
    assert_eq!(bodies(&alice), want);
}
