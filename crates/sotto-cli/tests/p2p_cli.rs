//! `sotto p2p` and `sotto rendezvous` as a user runs them: two homes
//! registered once with a server, then peer to peer (the server is stopped
//! before the peers start).

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;

#[test]
fn two_peers_reject_accept_send_a_file_and_close_with_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    drop(server);

    assert!(err(&alice, &["p2p", "peers"]).contains("no peer daemon"));
    let a = up(&alice, &[]);
    let _b = up(&bob, &[]);
    // Another local user cannot drive alice's peer: the socket is hers only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(alice.join("p2p.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let connected = ok(&bob, &["p2p", "connect", &a.addr]);
    assert!(connected.contains("alice"), "{connected}");
    let peers = ok(&bob, &["p2p", "peers"]);
    assert!(peers.contains("alice  first-seen  via explicit"), "{peers}");

    // bob asks; alice rejects; bob sees the rejection (not a timeout).
    let ask = |home: &Path| {
        sotto()
            .arg("--home")
            .arg(home)
            .args(["p2p", "request", "alice"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let asking = ask(&bob);
    wait_until(
        "the request reaching alice",
        20,
        || ok(&alice, &["p2p", "requests"]).contains("bob"),
        String::new,
    );
    let listed = json_lines(&ok(&alice, &["--json", "p2p", "requests"]));
    assert_eq!(listed[0]["name"], "bob");
    ok(&alice, &["p2p", "reject", "bob"]);
    let out = asking.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rejected by alice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let asking = ask(&bob);
    wait_until(
        "the second request",
        20,
        || ok(&alice, &["p2p", "requests"]).contains("bob"),
        String::new,
    );
    ok(&alice, &["p2p", "accept", "bob"]);
    let out = asking.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "accepted");

    ok(&bob, &["p2p", "send", "alice", "hello, no server here"]);
    let report = dir.path().join("report.pdf");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&report, &bytes).unwrap();
    let sent = run(
        &bob,
        &["p2p", "send-file", "alice", report.to_str().unwrap()],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(
        String::from_utf8_lossy(&sent.stderr).contains("100%"),
        "a progress bar"
    );
    assert_eq!(
        std::fs::read(alice.join("files/report.pdf")).unwrap(),
        bytes
    );

    ok(&alice, &["p2p", "close", "bob"]);
    wait_until(
        "the session closing on bob's side",
        20,
        || err(&bob, &["p2p", "send", "alice", "late"]).contains("no open session"),
        String::new,
    );
    drop(a);
}

#[test]
fn rendezvous_prints_its_address_and_peers_find_each_other_there() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let alice = register(dir.path(), "alice", &server);
    let bob = register(dir.path(), "bob", &server);
    drop(server);
    let (mut rz, point) = rendezvous("127.0.0.1:0");
    assert!(point.starts_with("/ip4/127.0.0.1/tcp/") && point.contains("/p2p/"));
    let _a = up(&alice, &["--rendezvous", &point]);
    let _b = up(&bob, &["--rendezvous", &point]);
    let found_via_rendezvous = |home: &Path, other: &str| {
        ok(home, &["p2p", "peers"]).lines().any(|l| {
            l.starts_with(&format!("{other}  first-seen  via ")) && l.contains("rendezvous")
        })
    };
    wait_until(
        "alice and bob finding each other through the rendezvous point",
        20,
        || found_via_rendezvous(&bob, "alice") || found_via_rendezvous(&alice, "bob"),
        String::new,
    );
    let _ = rz.kill();
    let _ = rz.wait();
}

#[test]
fn peers_are_remembered_in_the_home_and_dialled_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (dir.path().join("alice"), dir.path().join("bob"));
    ok(&alice, &["init", "alice"]);
    ok(&bob, &["init", "bob"]);
    // alice listens on a fixed port, as a peer others can find again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let a = up(&alice, &["--listen", &listen]);
    let b = up(&bob, &[]);
    p2p_session(&bob, &alice, "alice", &a.addr);
    drop((a, b));

    // Nothing runs at alice's address: bob remembers her, not connected.
    let b = up(&bob, &[]);
    wait_until(
        "alice listed as remembered",
        20,
        || ok(&bob, &["p2p", "peers"]).contains("alice  remembered (not connected)"),
        || ok(&bob, &["p2p", "peers"]),
    );
    drop(b);

    // Both again: bob dials alice by himself, and knows her key (verified,
    // not first-seen: the name was kept in his home).
    let _a = up(&alice, &["--listen", &listen]);
    let _b = up(&bob, &[]);
    wait_until(
        "bob reconnecting to alice",
        20,
        || ok(&bob, &["p2p", "peers"]).contains("alice  verified  via explicit"),
        || ok(&bob, &["p2p", "peers"]),
    );
}

#[test]
fn a_group_session_message_shows_in_every_members_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let homes: Vec<_> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| {
            let h = dir.path().join(n);
            ok(&h, &["init", n]);
            h
        })
        .collect();
    let (alice, bob, carol) = (&homes[0], &homes[1], &homes[2]);
    let a = up(alice, &[]);
    let _b = up(bob, &[]);
    let _c = up(carol, &[]);
    p2p_session(bob, alice, "alice", &a.addr);
    p2p_session(carol, alice, "alice", &a.addr);
    ok(
        alice,
        &["p2p", "group", "create", "ops", "--members", "bob,carol"],
    );
    for m in [bob, carol] {
        wait_until(
            "the invitation",
            20,
            || ok(m, &["p2p", "groups"]).contains("ops  invited"),
            || ok(m, &["p2p", "groups"]),
        );
        ok(m, &["p2p", "group", "join", "ops"]);
    }
    wait_until(
        "both members in bob's roster",
        20,
        || {
            let g = ok(bob, &["p2p", "groups"]);
            g.contains("ops  member") && g.contains("carol") && g.contains("alice")
        },
        || ok(bob, &["p2p", "groups"]),
    );

    ok(alice, &["p2p", "group", "send", "ops", "standup in 5"]);
    ok(bob, &["p2p", "group", "send", "ops", "on my way"]);
    let inbox = |h: &std::path::Path| -> Vec<(String, String, String)> {
        json_lines(&ok(h, &["--json", "inbox"]))
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap().to_string();
                (s("from"), s("to"), s("body"))
            })
            .collect()
    };
    let want = vec![
        (
            "alice".to_string(),
            "#ops".to_string(),
            "standup in 5".to_string(),
        ),
        (
            "bob".to_string(),
            "#ops".to_string(),
            "on my way".to_string(),
        ),
    ];
    for h in [alice, bob, carol] {
        wait_until(
            "both group messages, once each",
            20,
            || inbox(h) == want,
            || format!("{:?}", inbox(h)),
        );
    }
}
