//! End to end: an in-process server on a real socket, clients in real temp
//! dirs, everything over TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_client::{Client, DeviceError as D, Error, Event, Message, Rejection};
use sotto_server::{Config, Running};
use tempfile::TempDir;

const PW: &str = "correct horse battery staple";

/// A server config for these tests: rate limits off, because some drain a
/// prekey pool on purpose (the limits have their own tests in
/// sotto-server).
fn config(addr: std::net::SocketAddr, data: std::path::PathBuf) -> Config {
    let mut config = Config::new(addr, data);
    config.limits.rates = None;
    config
}

struct Server {
    running: Option<Running>,
    data: PathBuf,
    addr: std::net::SocketAddr,
    fingerprint: String,
    _dir: TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("srv");
        let running = sotto_server::start(config("127.0.0.1:0".parse().unwrap(), data.clone()))
            .await
            .unwrap();
        let (addr, fingerprint) = (running.addr, running.fingerprint.clone());
        Server {
            running: Some(running),
            data,
            addr,
            fingerprint,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Restarts on the same address and data directory.
    async fn restart(&mut self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match sotto_server::start(config(self.addr, self.data.clone())).await {
                Ok(r) => {
                    assert_eq!(
                        r.fingerprint, self.fingerprint,
                        "certificate kept across restarts"
                    );
                    self.running = Some(r);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("restart failed: {last:?}");
    }
}

struct Homes(TempDir);

impl Homes {
    fn new() -> Homes {
        Homes(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

async fn register(srv: &Server, home: &Path, name: &str) -> Client {
    let (client, fp) = Client::register(home, PW, name, &srv.url(), None)
        .await
        .unwrap();
    assert_eq!(fp, srv.fingerprint, "TOFU pins the server's certificate");
    client
}

async fn link(srv: &Server, existing: &mut Client, home: &Path) -> Client {
    let pending = Client::link_start(home, PW, &srv.url(), Some(&srv.fingerprint))
        .await
        .unwrap();
    let code = pending.code().to_string();
    let (new, approved) = tokio::join!(
        pending.wait(Duration::from_secs(60)),
        existing.approve(&code)
    );
    approved.unwrap();
    let new = new.unwrap();
    assert_eq!(new.username(), existing.username());
    assert!(!new.holds_user_key());
    new
}

fn bodies(msgs: &[Message]) -> Vec<&str> {
    msgs.iter().map(|m| m.body.as_str()).collect()
}

fn count(c: &mut Client, body: &str) -> usize {
    c.history(None, None)
        .unwrap()
        .iter()
        .filter(|m| m.body == body)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_each_see_messages_once() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut a1 = register(&srv, &homes.path("a1"), "alice").await;
    let mut b1 = register(&srv, &homes.path("b1"), "bob").await;
    let mut a2 = link(&srv, &mut a1, &homes.path("a2")).await;
    let mut b2 = link(&srv, &mut b1, &homes.path("b2")).await;
    assert_eq!(a1.devices().await.unwrap().len(), 2);
    assert_eq!(
        b2.devices()
            .await
            .unwrap()
            .iter()
            .filter(|d| d.this_device)
            .count(),
        1
    );

    let sent = a1.send("bob", "the meeting moved to 3pm").await.unwrap();
    assert!(sent.outgoing);
    for c in [&mut b1, &mut b2, &mut a2] {
        let r = c.sync().await.unwrap();
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        assert_eq!(bodies(&r.messages), ["the meeting moved to 3pm"]);
        let m = &r.messages[0];
        assert_eq!(
            (m.from.as_str(), m.to.as_str(), m.id),
            ("alice", "bob", sent.id)
        );
        // Nothing new the second time.
        assert!(c.sync().await.unwrap().messages.is_empty());
    }
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert_eq!(count(c, "the meeting moved to 3pm"), 1);
    }
    assert!(a2.history(Some("bob"), None).unwrap()[0].outgoing);

    // The reply, from bob's linked device.
    b2.send("alice", "ok, 3pm").await.unwrap();
    for c in [&mut a1, &mut a2, &mut b1] {
        let r = c.sync().await.unwrap();
        assert_eq!(bodies(&r.messages), ["ok, 3pm"]);
        assert_eq!(r.messages[0].from, "bob");
    }
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        assert_eq!(count(c, "ok, 3pm"), 1);
        let conv = c.history(None, None).unwrap();
        assert_eq!(conv.len(), 2);
        assert_eq!(
            conv[0].conversation, conv[1].conversation,
            "one conversation for both directions"
        );
    }
    // Same safety number on both sides.
    assert_eq!(
        a2.verify("bob").await.unwrap(),
        b1.verify("alice").await.unwrap()
    );
    // The second send reuses sessions, so works the same.
    a2.send("bob", "second").await.unwrap();
    for c in [&mut b1, &mut b2, &mut a1] {
        assert_eq!(bodies(&c.sync().await.unwrap().messages), ["second"]);
    }
    // A device linked later receives the contact list, and new messages.
    let mut a3 = link(&srv, &mut a1, &homes.path("a3")).await;
    let contacts = a3.contacts().unwrap();
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].username, "bob");
    b1.send("alice", "to all three").await.unwrap();
    for c in [&mut a1, &mut a2, &mut a3, &mut b2] {
        assert_eq!(bodies(&c.sync().await.unwrap().messages), ["to all three"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_receives_after_server_restart() {
    let mut srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let bob = register(&srv, &homes.path("bob"), "bob").await;
    drop(bob); // bob goes offline
    alice.send("bob", "while you were away").await.unwrap();
    srv.restart().await;
    let mut bob = Client::open(&homes.path("bob"), PW).await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(bodies(&r.messages), ["while you were away"]);
    assert!(matches!(
        Client::open(&homes.path("bob"), "not it").await,
        Err(Error::WrongPassphrase)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekey_exhaustion_uses_reserve_then_refills() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut carol = register(&srv, &homes.path("carol"), "carol").await;
    assert_eq!(bob.prekey_status().await.unwrap().one_time, 100);
    // Someone drains bob's pool.
    for _ in 0..100 {
        assert_eq!(alice.claim_bundles("bob").await.unwrap(), 1);
    }
    assert_eq!(bob.prekey_status().await.unwrap().one_time, 0);
    // Sending still works: on the reserve key.
    alice.send("bob", "on the reserve").await.unwrap();
    let st = bob.prekey_status().await.unwrap();
    assert_eq!((st.one_time, st.reserve_served), (0, 1));
    // bob opens it and refills during the same sync.
    let r = bob.sync().await.unwrap();
    assert_eq!(bodies(&r.messages), ["on the reserve"]);
    let st = bob.prekey_status().await.unwrap();
    assert_eq!(st.one_time, 100);
    // A new sender gets a one-time key again.
    carol.send("bob", "one-time again").await.unwrap();
    assert_eq!(bob.prekey_status().await.unwrap().one_time, 99);
    assert_eq!(
        bodies(&bob.sync().await.unwrap().messages),
        ["one-time again"]
    );
    // And the reserve session keeps working too.
    alice.send("bob", "still here").await.unwrap();
    carol.send("bob", "carol again").await.unwrap();
    // Senders with a session claim no new prekey.
    assert_eq!(bob.prekey_status().await.unwrap().one_time, 99);
    assert_eq!(
        bodies(&bob.sync().await.unwrap().messages),
        ["still here", "carol again"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_and_unknown_are_clear_errors() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    alice.send("bob", "before").await.unwrap();
    bob.block("alice").await.unwrap();
    assert_eq!(bob.blocked().unwrap(), ["alice"]);
    // The server drops it silently: alice is not told she is blocked.
    alice.send("bob", "after").await.unwrap();
    // bob drops what was already waiting from alice, and never sees "after".
    let r = bob.sync().await.unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(r.blocked, 1);
    // bob cannot write to alice while blocking her.
    assert!(matches!(
        bob.send("alice", "x").await,
        Err(Error::Device(D::YouBlocked(_)))
    ));
    bob.unblock("alice").await.unwrap();
    alice.send("bob", "after unblock").await.unwrap();
    assert_eq!(
        bodies(&bob.sync().await.unwrap().messages),
        ["after unblock"]
    );

    let e = alice.send("nobody-here", "hello?").await.unwrap_err();
    assert!(
        matches!(&e, Error::Device(D::UnknownUser(u)) if u == "nobody-here"),
        "{e}"
    );
    // Writing to oneself with no other device.
    let e = alice.send("alice", "note").await.unwrap_err();
    assert!(
        matches!(&e, Error::Device(D::NoDevices(u)) if u == "alice"),
        "{e}"
    );
    assert!(alice
        .contacts()
        .unwrap()
        .iter()
        .all(|c| c.username != "alice"));
    assert!(matches!(
        alice.verify("nobody-here").await,
        Err(Error::Device(D::UnknownUser(_)))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_but_unacknowledged_is_shown_once() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    alice.send("bob", "one").await.unwrap();
    alice.send("bob", "two").await.unwrap();
    bob.set_skip_ack(true);
    assert_eq!(bodies(&bob.sync().await.unwrap().messages), ["one", "two"]);
    drop(bob); // "killed" after storing, before acknowledging

    let mut bob = Client::open(&homes.path("bob"), PW).await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(
        r.messages.is_empty(),
        "redelivered messages are not shown again"
    );
    assert_eq!(r.duplicates, 2);
    assert_eq!(bodies(&bob.history(None, None).unwrap()), ["one", "two"]);
    // Now acknowledged: nothing comes back.
    let r = bob.sync().await.unwrap();
    assert_eq!((r.messages.len(), r.duplicates), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_change_is_refused_until_trusted() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    alice.send("bob", "hi").await.unwrap();
    // Alice's store believes another key for bob (as if the server now
    // showed bob with a new key).
    {
        let store = sotto_store::client::ClientStore::open(&homes.path("alice"), PW).unwrap();
        let mut c = store.contact("bob").unwrap().unwrap();
        c.user_key = [7; 32];
        c.verified = true;
        store.put_contact(&c).unwrap();
    }
    let e = alice.send("bob", "are you you?").await.unwrap_err();
    assert!(
        matches!(&e, Error::Device(D::KeyChanged { username }) if username == "bob"),
        "{e}"
    );
    assert!(matches!(
        alice.verify("bob").await,
        Err(Error::Device(D::KeyChanged { .. }))
    ));
    // The new number can be compared before the new key is accepted.
    let presented = alice.presented_safety_number("bob").await.unwrap();
    assert_eq!(presented, bob.verify("alice").await.unwrap());
    assert!(matches!(
        alice.send("bob", "still refused").await,
        Err(Error::Device(D::KeyChanged { .. }))
    ));
    let n = alice.trust("bob").await.unwrap();
    assert_eq!(n, presented);
    assert!(!alice.contacts().unwrap()[0].verified);
    alice.send("bob", "accepted").await.unwrap();
    assert_eq!(
        bodies(&bob.sync().await.unwrap().messages),
        ["hi", "accepted"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_is_pinned() {
    let mut srv = Server::start().await;
    let homes = Homes::new();
    let wrong = "00".repeat(32);
    let e = Client::register(&homes.path("x"), PW, "xavier", &srv.url(), Some(&wrong))
        .await
        .err()
        .unwrap();
    assert!(matches!(&e, Error::CertificateChanged { .. }), "{e}");
    let (mut alice, fp) = Client::register(
        &homes.path("alice"),
        PW,
        "alice",
        &srv.url(),
        Some(&srv.fingerprint.to_uppercase()),
    )
    .await
    .unwrap();
    assert_eq!(fp, srv.fingerprint);
    assert_eq!(alice.server_fingerprint().unwrap(), srv.fingerprint);
    alice.sync().await.unwrap();
    // Another server (another certificate) on the same address.
    srv.stop().await;
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = None;
    for _ in 0..50 {
        if let Ok(r) = sotto_server::start(config(srv.addr, other_dir.path().join("srv"))).await {
            other = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let other = other.expect("second server");
    assert_ne!(other.fingerprint, srv.fingerprint);
    let mut alice = Client::open(&homes.path("alice"), PW).await.unwrap();
    let e = alice.sync().await.unwrap_err();
    match &e {
        Error::CertificateChanged { pinned, presented } => {
            assert_eq!(pinned, &srv.fingerprint);
            assert_eq!(presented, &other.fingerprint);
        }
        other => panic!("expected CertificateChanged, got {other}"),
    }
    assert!(e.to_string().contains("CERTIFICATE CHANGED"));
    other.shutdown().await;
    // Nothing listening: unreachable.
    let e = alice.sync().await.unwrap_err();
    assert!(matches!(e, Error::ServerUnreachable { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_delivers_pushed_messages() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    alice.send("bob", "waiting before listen").await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listen = bob.listen(move |e| {
        let _ = tx.send(e);
    });
    let drive = async {
        let mut got = Vec::new();
        let mut sent = false;
        while got.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("event in time")
                .unwrap()
            {
                Event::Message(m) => got.push(m.body),
                Event::Connected if !sent => {
                    sent = true;
                    alice.send("bob", "pushed").await.unwrap();
                }
                _ => {}
            }
        }
        got
    };
    let got = tokio::select! {
        r = listen => panic!("listen returned: {r:?}"),
        got = drive => got,
    };
    assert_eq!(got, ["waiting before listen", "pushed"]);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn all_files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_readable_on_disk_after_send() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let (alice_name, bob_name) = ("alice-qx7z", "bobby-k3vw");
    let body = "launch codes: zebra-7741-omega";
    let mut alice = register(&srv, &homes.path("alice"), alice_name).await;
    let mut bob = register(&srv, &homes.path("bob"), bob_name).await;
    alice.send(bob_name, body).await.unwrap();
    // Check while bob has not fetched (the datagram waits on the server),
    // then after he did.
    for fetched in [false, true] {
        if fetched {
            assert_eq!(bodies(&bob.sync().await.unwrap().messages), [body]);
            bob.send(alice_name, body).await.unwrap();
        }
        let mut secrets: Vec<(String, Vec<u8>)> = vec![
            ("body".into(), body.as_bytes().to_vec()),
            ("body fragment".into(), b"zebra-7741".to_vec()),
            ("alice's name".into(), alice_name.as_bytes().to_vec()),
            ("bob's name".into(), bob_name.as_bytes().to_vec()),
        ];
        for (who, home) in [("alice", homes.path("alice")), ("bob", homes.path("bob"))] {
            let store = sotto_store::client::ClientStore::open(&home, PW).unwrap();
            let acc = store.account().unwrap().unwrap();
            secrets.push((
                format!("{who}'s user key"),
                acc.user_key.as_ref().unwrap().to_vec(),
            ));
            secrets.push((
                format!("{who}'s device signing key"),
                acc.device_key[..32].to_vec(),
            ));
            secrets.push((
                format!("{who}'s device agreement key"),
                acc.device_key[32..].to_vec(),
            ));
            for (i, p) in store.prekeys().unwrap().iter().take(3).enumerate() {
                secrets.push((format!("{who}'s prekey secret {i}"), p[5..].to_vec()));
            }
        }
        let mut files = Vec::new();
        all_files(&srv.data, &mut files);
        all_files(homes.0.path(), &mut files);
        assert!(
            files.len() >= 4,
            "{:?}",
            files.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for (path, bytes) in &files {
            for (what, needle) in &secrets {
                assert!(
                    !contains(bytes, needle),
                    "{what} readable in {}",
                    path.display()
                );
                let hexed = hex::encode(needle);
                assert!(
                    !contains(bytes, hexed.as_bytes()),
                    "{what} (hex) readable in {}",
                    path.display()
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_needs_the_user_key_and_the_right_code() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut a1 = register(&srv, &homes.path("a1"), "alice").await;
    let mut a2 = link(&srv, &mut a1, &homes.path("a2")).await;
    let pending = Client::link_start(&homes.path("a3"), PW, &srv.url(), None)
        .await
        .unwrap();
    let code = pending.code().to_string();
    assert!(matches!(
        a2.approve(&code).await,
        Err(Error::Device(D::NoUserKey))
    ));
    // A code with another secret than the waiting device's (a guess, or a
    // stale code under a reused link id).
    let (id, secret) = code.rsplit_once('-').unwrap();
    let bad = format!(
        "{id}-{}",
        if secret.starts_with('a') { "b" } else { "a" }.repeat(26)
    );
    assert!(matches!(
        a1.approve(&bad).await,
        Err(Error::Device(D::LinkCodeMismatch))
    ));
    assert!(matches!(
        a1.approve("nonsense").await,
        Err(Error::Device(D::BadLinkCode(_)))
    ));
    drop(pending);
    assert_eq!(a1.devices().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecryptable_datagram_is_reported_and_acknowledged() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    alice.send("bob", "first").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap().messages), ["first"]);
    // bob loses his session with alice (here: by accepting a "new" key for
    // her, which drops the sessions with her old devices), while alice
    // keeps using it.
    {
        let store = sotto_store::client::ClientStore::open(&homes.path("bob"), PW).unwrap();
        let mut c = store.contact("alice").unwrap().unwrap();
        c.user_key = [9; 32];
        store.put_contact(&c).unwrap();
    }
    bob.trust("alice").await.unwrap();
    alice.send("bob", "lost").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.messages.is_empty());
    assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
    assert!(
        matches!(r.rejected[0], Rejection::Unopenable(_)),
        "{:?}",
        r.rejected[0]
    );
    // It was acknowledged: not delivered again.
    let r = bob.sync().await.unwrap();
    assert!(r.rejected.is_empty() && r.messages.is_empty());
    // bob can still write to alice (a new session), and alice reads it.
    bob.send("alice", "new session").await.unwrap();
    assert_eq!(
        bodies(&alice.sync().await.unwrap().messages),
        ["new session"]
    );
    // alice now writes on the new session: healed.
    alice.send("bob", "healed").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap().messages), ["healed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_reconnects_after_server_restart() {
    let mut srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listen = bob.listen(move |e| {
        let _ = tx.send(e);
    });
    let drive = async {
        assert!(matches!(next(&mut rx).await, Event::Connected));
        srv.restart().await;
        loop {
            match next(&mut rx).await {
                Event::Disconnected { .. } => {}
                Event::Connected => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut alice = Client::open(&homes.path("alice"), PW).await.unwrap();
        alice.send("bob", "after the restart").await.unwrap();
        loop {
            if let Event::Message(m) = next(&mut rx).await {
                return m.body;
            }
        }
    };
    let got = tokio::select! {
        r = listen => panic!("listen returned: {r:?}"),
        got = drive => got,
    };
    assert_eq!(got, "after the restart");
    drop(alice.sync().await);
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("event in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_refuse_forged_sender_names() {
    use sotto_device::{LinkSyncBody, TextBody};
    use sotto_proto::content;
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    let mut mallory = register(&srv, &homes.path("mallory"), "mallory").await;
    alice.send("bob", "real alice").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap().messages), ["real alice"]);
    let forged = |sender: &str, recipient: &str, text: &str| {
        TextBody {
            sender: sender.into(),
            recipient: recipient.into(),
            text: text.into(),
        }
        .encode()
    };
    // mallory claims to be alice (a contact bob knows), then carol (a user
    // bob has not seen: looked up, and her key is not mallory's), then a
    // user that does not exist; then writes "to carol" into bob's mailbox.
    mallory
        .send_raw_body("bob", content::TEXT, forged("alice", "bob", "I am alice"))
        .await
        .unwrap();
    let _carol = register(&srv, &homes.path("carol"), "carol").await;
    mallory
        .send_raw_body("bob", content::TEXT, forged("carol", "bob", "I am carol"))
        .await
        .unwrap();
    mallory
        .send_raw_body(
            "bob",
            content::TEXT,
            forged("nobody-x", "bob", "I am nobody"),
        )
        .await
        .unwrap();
    mallory
        .send_raw_body(
            "bob",
            content::TEXT,
            forged("mallory", "carol", "misaddressed"),
        )
        .await
        .unwrap();
    // Contact data may only come from one's own devices.
    let sync = LinkSyncBody {
        username: "bob".into(),
        contacts: vec![],
        blocked: vec!["alice".into()],
    };
    mallory
        .send_raw_body("bob", content::LINK_SYNC, sync.encode())
        .await
        .unwrap();
    // A body that does not decode.
    mallory
        .send_raw_body("bob", content::TEXT, vec![9, 9, 9])
        .await
        .unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.messages.is_empty(), "{:?}", r.messages);
    assert_eq!(r.rejected.len(), 6, "{:?}", r.rejected);
    // The two whose claimed sender is checked against the directory come
    // once it answered, after the others.
    assert_eq!(
        r.rejected,
        [
            Rejection::SenderKeyMismatch {
                claimed: "alice".into()
            },
            Rejection::NotForYou {
                from: "mallory".into(),
                to: "carol".into()
            },
            Rejection::ForeignLinkSync,
            Rejection::UnreadableBody {
                content_type: content::TEXT
            },
            Rejection::SenderNotOwner {
                claimed: "carol".into()
            },
            Rejection::SenderUnknown {
                claimed: "nobody-x".into()
            },
        ]
    );
    assert!(bob.blocked().unwrap().is_empty());
    assert_eq!(bob.history(None, None).unwrap().len(), 1);
    // mallory writing as mallory is fine.
    mallory.send("bob", "honest").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert_eq!(bodies(&r.messages), ["honest"]);
    assert_eq!(r.messages[0].from, "mallory");
}

/// The client's futures can be spawned on a multi-threaded runtime (what a
/// terminal UI needs).
#[allow(dead_code)]
fn futures_are_send(c: &mut Client) {
    fn send<T: Send>(_: T) {}
    send(c.sync());
    send(c.send("bob", "x"));
    send(c.devices());
    send(c.listen(|_| {}));
    send(c.approve("x"));
    send(Client::open(Path::new("x"), "y"));
    send(Client::register(
        Path::new("x"),
        "y",
        "z",
        "https://h:1",
        None,
    ));
    send(Client::link_start(Path::new("x"), "y", "https://h:1", None));
}

/// Two processes on one home (e.g. `sotto listen` running while the user
/// sends): each operation reloads the state the other one changed, so no
/// session counter is reused and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_home_stay_consistent() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let mut alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    let mut alice_again = Client::open(&homes.path("alice"), PW).await.unwrap();
    alice.send("bob", "one").await.unwrap();
    alice_again.send("bob", "two").await.unwrap();
    alice.send("bob", "three").await.unwrap();
    let r = bob.sync().await.unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(r.duplicates, 0);
    assert_eq!(bodies(&r.messages), ["one", "two", "three"]);
    // Replies: one instance receives, the other then sends on.
    bob.send("alice", "four").await.unwrap();
    assert_eq!(
        bodies(&alice_again.sync().await.unwrap().messages),
        ["four"]
    );
    alice.send("bob", "five").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap().messages), ["five"]);
    assert!(alice.sync().await.unwrap().messages.is_empty());
    assert_eq!(alice.history(None, None).unwrap().len(), 5);
}

/// A listening device refills its pool when the server says it runs low.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_device_refills_on_prekeys_low_push() {
    let srv = Server::start().await;
    let homes = Homes::new();
    let alice = register(&srv, &homes.path("alice"), "alice").await;
    let mut bob = register(&srv, &homes.path("bob"), "bob").await;
    let mut bob_again = Client::open(&homes.path("bob"), PW).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listen = bob.listen(move |e| {
        let _ = tx.send(e);
    });
    let drive = async {
        assert!(matches!(next(&mut rx).await, Event::Connected));
        for _ in 0..95 {
            alice.claim_bundles("bob").await.unwrap();
        }
        // The server pushes `prekeys_low` below its low-water mark; bob
        // uploads a new batch without any sync.
        for _ in 0..200 {
            if bob_again.prekey_status().await.unwrap().one_time >= 100 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no refill: {:?}", bob_again.prekey_status().await.unwrap());
    };
    tokio::select! {
        r = listen => panic!("listen returned: {r:?}"),
        () = drive => {}
    }
}
