//! Real nodes on loopback sockets, and waiting for what they report.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use rand_core::OsRng;
use sotto_p2p::node::{FileEvent, GroupEvent};
use sotto_p2p::{spawn, Event, Handle, Identity, ShellConfig, ShellEvent};
use sotto_proto::UserKey;
use tokio::sync::Notify;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Peer {
    pub name: String,
    pub user: UserKey,
    pub handle: Handle,
    pub events: Arc<Mutex<Vec<ShellEvent>>>,
    notify: Arc<Notify>,
    pub dir: tempfile::TempDir,
}

pub fn identity(name: &str, user: &UserKey) -> Identity {
    Identity::new_device(&mut OsRng, name, user, 1)
}

pub fn loopback_config(dir: &std::path::Path) -> ShellConfig {
    let mut c = ShellConfig::new(dir.join("files"));
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.mdns = false;
    c
}

/// A node for a new user `name` on loopback, mDNS off.
pub async fn peer(name: &str) -> Peer {
    let user = UserKey::generate(&mut OsRng);
    let id = identity(name, &user);
    peer_with(name, user, id, |_| {}).await
}

pub async fn peer_with(
    name: &str,
    user: UserKey,
    id: Identity,
    tweak: impl FnOnce(&mut ShellConfig),
) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(dir.path());
    tweak(&mut config);
    let (handle, mut rx) = spawn(id, config).await.unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let notify = Arc::new(Notify::new());
    let (e, n) = (events.clone(), notify.clone());
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            e.lock().unwrap().push(ev);
            n.notify_waiters();
        }
    });
    Peer {
        name: name.into(),
        user,
        handle,
        events,
        notify,
        dir,
    }
}

impl Peer {
    pub fn id(&self) -> PeerId {
        self.handle.peer_id()
    }

    pub fn addr(&self) -> Multiaddr {
        self.handle.addresses()[0].clone()
    }

    /// Waits for (and removes) the first event `f` picks.
    pub async fn wait<T>(&self, what: &str, f: impl Fn(&ShellEvent) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            {
                let mut events = self.events.lock().unwrap();
                if let Some(i) = events.iter().position(|e| f(e).is_some()) {
                    return f(&events.remove(i)).unwrap();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let events = self.events.lock().unwrap();
                panic!(
                    "{}: no {what} within {WAIT:?}; events: {:?}",
                    self.name,
                    &events[..events.len().min(20)]
                );
            }
        }
    }

    pub fn seen(&self, f: impl Fn(&ShellEvent) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(f)
    }

    /// Connects to `other` by address and waits until each has proved
    /// itself to the other.
    pub async fn connect(&self, other: &Peer) {
        self.handle.dial(other.addr()).await.unwrap();
        let o = other.id();
        self.wait("peer found", |e| match e {
            ShellEvent::Node(Event::PeerFound { peer, .. }) if *peer == o => Some(()),
            _ => None,
        })
        .await;
        let me = self.id();
        other
            .wait("peer found", |e| match e {
                ShellEvent::Node(Event::PeerFound { peer, .. }) if *peer == me => Some(()),
                _ => None,
            })
            .await;
    }

    /// The request `from` sent, as this node was asked it.
    pub async fn requested_by(&self, from: &Peer) -> u64 {
        let p = from.id();
        self.wait("session request", |e| match e {
            ShellEvent::Node(Event::SessionRequested { peer, request, .. }) if *peer == p => {
                Some(*request)
            }
            _ => None,
        })
        .await
    }

    pub async fn opened(&self) -> [u8; 16] {
        self.wait("session opened", |e| match e {
            ShellEvent::Node(Event::SessionOpened { session, .. }) => Some(*session),
            _ => None,
        })
        .await
    }

    pub async fn datagram(&self) -> Vec<u8> {
        self.wait("datagram", |e| match e {
            ShellEvent::Node(Event::Datagram { data, .. }) => Some(data.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for a group event `f` accepts.
    pub async fn group_event(&self, what: &str, f: impl Fn(&GroupEvent) -> bool) {
        self.wait(what, |e| match e {
            ShellEvent::Node(Event::Group(g)) if f(g) => Some(()),
            _ => None,
        })
        .await
    }

    pub async fn group_message(&self) -> Vec<u8> {
        self.wait("group message", |e| match e {
            ShellEvent::Node(Event::Group(GroupEvent::Message { data, .. })) => Some(data.clone()),
            _ => None,
        })
        .await
    }

    pub fn group_messages_seen(&self) -> Vec<Vec<u8>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                ShellEvent::Node(Event::Group(GroupEvent::Message { data, .. })) => {
                    Some(data.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub async fn file_done(&self, incoming: bool) -> bool {
        self.wait("file complete", |e| match e {
            ShellEvent::Node(Event::File(FileEvent::Complete {
                incoming: i, ok, ..
            })) if *i == incoming => Some(*ok),
            _ => None,
        })
        .await
    }
}

/// `b` asks `a` for a session and `a` accepts: the session id.
pub async fn session(a: &Peer, b: &Peer) -> [u8; 16] {
    let q = b.handle.request(a.id(), None).await.unwrap();
    let got = a.requested_by(b).await;
    assert_eq!(got, q);
    let s = a.handle.accept(b.id(), q, None).await.unwrap();
    assert_eq!(b.opened().await, s);
    assert_eq!(a.opened().await, s);
    s
}
