//! The device core over real peer sessions (TCP on loopback, Noise, Yamux):
//! homes made with no server (an encrypted store each), chat and group
//! messages as the core's sealed datagrams, stored in each home's history
//! once, with the same keys and safety numbers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use rand_core::OsRng;
use sotto_device::{Event as CoreEvent, Home, Message, NewUser, Rejection};
use sotto_p2p::node::GroupEvent;
use sotto_p2p::{spawn, Event, Handle, PeerDevice, RejectReason, ShellConfig, ShellEvent, Trust};
use sotto_proto::{Datagram, UserPublic};
use sotto_store::client::ClientStore;
use tokio::sync::Notify;

const PASS: &str = "a long enough passphrase";
const WAIT: Duration = Duration::from_secs(60);

/// A device in its own home, running as a peer; what its node reported and
/// what its core made of it.
struct Dev {
    name: String,
    handle: Handle,
    device: Arc<tokio::sync::Mutex<PeerDevice>>,
    shell: Arc<Mutex<Vec<ShellEvent>>>,
    core: Arc<Mutex<Vec<CoreEvent>>>,
    notify: Arc<Notify>,
    _home: tempfile::TempDir,
}

/// A new user `user` with no server, presenting itself to peers as
/// `hello` (its own name, unless it lies).
async fn dev_as(user: &str, hello: &str) -> Dev {
    let home = tempfile::tempdir().unwrap();
    let store = ClientStore::create(home.path(), PASS).unwrap();
    NewUser::new(&mut OsRng, 1_767_225_600_000, user)
        .unwrap()
        .finish(Box::new(store), Box::new(OsRng), Home::default())
        .unwrap();
    let mut device = PeerDevice::open(home.path(), PASS).unwrap();
    let mut identity = device.identity();
    identity.name = hello.to_string();
    let mut config = ShellConfig::new(home.path().join("files"));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    let (handle, mut rx) = spawn(identity, config).await.unwrap();
    device.attach(handle.clone());
    let device = Arc::new(tokio::sync::Mutex::new(device));
    let (shell, core, notify) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Notify::new()),
    );
    let (d, s, c, n) = (device.clone(), shell.clone(), core.clone(), notify.clone());
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            // As the daemon does: the core first, then whoever waits.
            let done = d.lock().await.on_event(&ev).await;
            c.lock().unwrap().extend(done);
            s.lock().unwrap().push(ev);
            n.notify_waiters();
        }
    });
    Dev {
        name: hello.to_string(),
        handle,
        device,
        shell,
        core,
        notify,
        _home: home,
    }
}

async fn dev(name: &str) -> Dev {
    dev_as(name, name).await
}

impl Dev {
    fn id(&self) -> PeerId {
        self.handle.peer_id()
    }

    async fn user(&self) -> UserPublic {
        self.device.lock().await.identity().cert.user
    }

    /// Waits for (and removes) the first node event `f` picks.
    async fn wait<T>(&self, what: &str, f: impl Fn(&ShellEvent) -> Option<T>) -> T {
        self.wait_in(&self.shell, what, f).await
    }

    /// Waits for (and removes) the first core event `f` picks.
    async fn wait_core<T>(&self, what: &str, f: impl Fn(&CoreEvent) -> Option<T>) -> T {
        self.wait_in(&self.core, what, f).await
    }

    async fn wait_in<E: std::fmt::Debug, T>(
        &self,
        list: &Mutex<Vec<E>>,
        what: &str,
        f: impl Fn(&E) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            {
                let mut events = list.lock().unwrap();
                if let Some(i) = events.iter().position(|e| f(e).is_some()) {
                    return f(&events.remove(i)).unwrap();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{}: no {what} within {WAIT:?}; {:?}",
                    self.name,
                    list.lock().unwrap()
                );
            }
        }
    }

    async fn message(&self) -> Message {
        self.wait_core("message", |e| match e {
            CoreEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    async fn connect(&self, other: &Dev) {
        self.handle
            .dial(other.handle.addresses()[0].clone())
            .await
            .unwrap();
        let o = other.id();
        self.wait("peer found", |e| match e {
            ShellEvent::Node(Event::PeerFound { peer, .. }) if *peer == o => Some(()),
            _ => None,
        })
        .await;
    }

    async fn history(&self) -> Vec<(String, String, String)> {
        self.device
            .lock()
            .await
            .history()
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.from, m.to, m.body))
            .collect()
    }
}

/// `b` asks `a` for a session, each handing over its device core's prekey,
/// and `a` accepts: the session id, once both cores know of it.
async fn session(a: &Dev, b: &Dev) -> [u8; 16] {
    let pb = b.device.lock().await.prekey().await.unwrap();
    let q = b.handle.request(a.id(), Some(pb)).await.unwrap();
    let bid = b.id();
    a.wait("request", |e| match e {
        ShellEvent::Node(Event::SessionRequested { peer, .. }) if *peer == bid => Some(()),
        _ => None,
    })
    .await;
    let pa = a.device.lock().await.prekey().await.unwrap();
    let s = a.handle.accept(b.id(), q, Some(pa)).await.unwrap();
    for d in [a, b] {
        d.wait("session opened", |e| match e {
            ShellEvent::Node(Event::SessionOpened { session, .. }) if *session == s => Some(()),
            _ => None,
        })
        .await;
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_the_cores_datagrams_stored_once_and_a_replayed_datagram_shows_once() {
    let alice = dev("alice").await;
    let bob = dev("bob").await;
    bob.connect(&alice).await;
    let s = session(&alice, &bob).await;

    let sent = bob
        .device
        .lock()
        .await
        .send_text("alice", "hello, no server here")
        .await
        .unwrap();
    let got = alice.message().await;
    assert_eq!(
        (
            got.id,
            got.from.as_str(),
            got.to.as_str(),
            got.body.as_str()
        ),
        (sent.id, "bob", "alice", "hello, no server here")
    );
    // What crossed the session is a sotto datagram signed by bob's device,
    // not the text.
    let raw = alice
        .wait("datagram", |e| match e {
            ShellEvent::Node(Event::Datagram { data, .. }) => Some(data.clone()),
            _ => None,
        })
        .await;
    let d = Datagram::decode(&raw).unwrap();
    assert_eq!(d.sender.user, bob.user().await);
    assert!(!raw
        .windows(b"no server here".len())
        .any(|w| w == b"no server here"));

    // Attack: the same sealed datagram again over the peer session (a new
    // session frame, so the transport lets it through): shown once.
    bob.handle.send_datagram(s, raw).await.unwrap();
    alice
        .wait_core("duplicate", |e| {
            matches!(e, CoreEvent::Duplicate).then_some(())
        })
        .await;
    assert_eq!(
        alice.history().await,
        [("bob".into(), "alice".into(), "hello, no server here".into())]
    );

    alice
        .device
        .lock()
        .await
        .send_text("bob", "hi bob")
        .await
        .unwrap();
    assert_eq!(bob.message().await.body, "hi bob");
    assert_eq!(bob.history().await.len(), 2);

    // The same keys as through a server: each side's contact is the other's
    // user key (so the safety numbers agree).
    let contacts = alice.device.lock().await.contacts().unwrap();
    assert_eq!(contacts, [("bob".to_string(), bob.user().await)]);
    let contacts = bob.device.lock().await.contacts().unwrap();
    assert_eq!(contacts, [("alice".to_string(), alice.user().await)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_an_impostor_cannot_open_a_session_or_have_words_stored_as_the_user() {
    let alice = dev("alice").await;
    let bob = dev("bob").await;
    bob.connect(&alice).await;
    session(&alice, &bob).await;
    bob.device
        .lock()
        .await
        .send_text("alice", "the real bob")
        .await
        .unwrap();
    alice.message().await;

    // mallory's own user key, claiming to be bob in her hello: shown as a
    // mismatch, her request refused.
    let mallory = dev_as("bob", "bob").await;
    mallory.connect(&alice).await;
    let m = mallory.id();
    let trust = alice
        .wait("mallory found", |e| match e {
            ShellEvent::Node(Event::PeerFound { peer, identity }) if *peer == m => {
                Some(identity.trust)
            }
            _ => None,
        })
        .await;
    assert_eq!(trust, Trust::KeyMismatch);
    let q = mallory.handle.request(alice.id(), None).await.unwrap();
    let reason = mallory
        .wait("rejection", |e| match e {
            ShellEvent::Node(Event::SessionRejected {
                request, reason, ..
            }) if *request == q => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, RejectReason::IdentityMismatch);

    // Under her own name she gets a session, then sends a text whose body
    // claims to be from bob: refused, nothing stored as bob's.
    let mallory = dev_as("bob", "mallory").await;
    mallory.connect(&alice).await;
    session(&alice, &mallory).await;
    mallory
        .device
        .lock()
        .await
        .send_text("alice", "it is bob, trust me")
        .await
        .unwrap();
    let refused = alice
        .wait_core("refusal", |e| match e {
            CoreEvent::Rejected(r) => Some(r.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        refused,
        Rejection::SenderKeyMismatch {
            claimed: "bob".into()
        }
    );
    assert_eq!(
        alice.history().await,
        [("bob".into(), "alice".into(), "the real bob".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_are_sealed_by_their_author_for_every_member_and_stored_once() {
    let alice = dev("alice").await;
    let bob = dev("bob").await;
    let carol = dev("carol").await;
    let dave = dev("dave").await;
    let mut sessions = Vec::new();
    for p in [&bob, &carol, &dave] {
        p.connect(&alice).await;
        sessions.push(session(&alice, p).await);
    }
    let g = alice
        .handle
        .group_create("ops".into(), sessions[..2].to_vec())
        .await
        .unwrap();
    for p in [&bob, &carol] {
        p.wait("invitation", |e| {
            matches!(
                e,
                ShellEvent::Node(Event::Group(GroupEvent::Invited { .. }))
            )
            .then_some(())
        })
        .await;
        p.handle.group_join(g).await.unwrap();
        // In the roster before the next member joins: a member takes the
        // members already there at its first roster as the group, and is
        // told only of those who join after it.
        let me = p.name.clone();
        p.wait("itself in the roster", |e| match e {
            ShellEvent::Node(Event::Group(GroupEvent::Joined { name, .. })) if *name == me => {
                Some(())
            }
            _ => None,
        })
        .await;
    }
    bob.wait("carol in the roster", |e| match e {
        ShellEvent::Node(Event::Group(GroupEvent::Joined { name, .. })) if name == "carol" => {
            Some(())
        }
        _ => None,
    })
    .await;

    // bob has no session with carol: he seals for her device with the
    // certificate and prekey alice's roster relayed; alice relays bytes she
    // cannot alter.
    bob.device
        .lock()
        .await
        .send_group_text(g, "standup in 5")
        .await
        .unwrap();
    for p in [&alice, &carol] {
        let m = p.message().await;
        assert_eq!(
            (m.from.as_str(), m.to.as_str(), m.body.as_str()),
            ("bob", "#ops", "standup in 5")
        );
    }
    let raw = carol
        .wait("relayed datagram", |e| match e {
            ShellEvent::Node(Event::Group(GroupEvent::Message { data, .. })) => Some(data.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        Datagram::decode(&raw).unwrap().sender.user,
        bob.user().await
    );

    alice
        .device
        .lock()
        .await
        .send_group_text(g, "thanks bob")
        .await
        .unwrap();
    assert_eq!(bob.message().await.body, "thanks bob");
    assert_eq!(carol.message().await.body, "thanks bob");

    // A newcomer reads only what is sent after joining.
    alice.handle.group_invite(g, sessions[2]).await.unwrap();
    dave.wait("invitation", |e| {
        matches!(
            e,
            ShellEvent::Node(Event::Group(GroupEvent::Invited { .. }))
        )
        .then_some(())
    })
    .await;
    dave.handle.group_join(g).await.unwrap();
    carol
        .wait("dave in the roster", |e| match e {
            ShellEvent::Node(Event::Group(GroupEvent::Joined { name, .. })) if name == "dave" => {
                Some(())
            }
            _ => None,
        })
        .await;
    carol
        .device
        .lock()
        .await
        .send_group_text(g, "welcome dave")
        .await
        .unwrap();
    assert_eq!(dave.message().await.body, "welcome dave");
    assert_eq!(
        dave.history().await,
        [("carol".into(), "#ops".into(), "welcome dave".into())]
    );
    let want: Vec<(String, String, String)> = [
        ("bob", "standup in 5"),
        ("alice", "thanks bob"),
        ("carol", "welcome dave"),
    ]
    .into_iter()
    .map(|(f, b)| (f.to_string(), "#ops".to_string(), b.to_string()))
    .collect();
    bob.message().await;
    assert_eq!(bob.history().await, want);
}
