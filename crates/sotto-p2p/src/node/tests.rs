//! Nodes wired together in memory: every behaviour of the state machine
//! without a socket (the loopback tests in `tests/` run the same flows over
//! libp2p).

use std::collections::{HashMap, HashSet};

use rand_core::OsRng;
use sotto_proto::UserKey;

use super::*;
use crate::identity::Trust;
use crate::wire::{Hello, Proof, CHUNK, MAX_FILE_WINDOW};

fn identity_of(name: &str, user: &UserKey) -> Identity {
    Identity::new_device(&mut OsRng, name, user, 1)
}

#[derive(Default)]
struct Disk {
    partial: HashMap<Id, Vec<u8>>,
    done: HashMap<String, Vec<u8>>,
    sources: HashMap<Id, Vec<u8>>,
    reads: usize,
}

struct Net {
    nodes: HashMap<PeerId, Node>,
    links: HashSet<(PeerId, PeerId)>,
    events: HashMap<PeerId, Vec<Event>>,
    disk: HashMap<PeerId, Disk>,
    disconnects: Vec<(PeerId, PeerId, &'static str)>,
    /// Nodes whose disk never finishes a write (so they never ack).
    stuck: HashSet<PeerId>,
    /// Nodes whose checks wait here (answered by the test).
    hold_checks: HashSet<PeerId>,
    held_checks: Vec<(PeerId, Id)>,
    now: u64,
}

impl Net {
    fn new() -> Net {
        Net {
            nodes: HashMap::new(),
            links: HashSet::new(),
            events: HashMap::new(),
            disk: HashMap::new(),
            disconnects: Vec::new(),
            stuck: HashSet::new(),
            hold_checks: HashSet::new(),
            held_checks: Vec::new(),
            now: 1_000_000,
        }
    }

    fn add(&mut self, identity: Identity, config: Config) -> PeerId {
        let peer = PeerId::random();
        self.nodes
            .insert(peer, Node::new(identity, peer, config, self.now));
        self.disk.insert(peer, Disk::default());
        peer
    }

    fn user(&mut self, name: &str) -> (PeerId, UserKey) {
        self.user_with(name, Config::default())
    }

    fn user_with(&mut self, name: &str, config: Config) -> (PeerId, UserKey) {
        let user = UserKey::generate(&mut OsRng);
        let p = self.add(identity_of(name, &user), config);
        (p, user)
    }

    fn node(&mut self, p: PeerId) -> &mut Node {
        self.nodes.get_mut(&p).unwrap()
    }

    fn connect(&mut self, a: PeerId, b: PeerId) {
        self.links.insert((a, b));
        self.links.insert((b, a));
        let now = self.now;
        self.node(a).link_up(b, now);
        self.node(b).link_up(a, now);
        self.run();
    }

    fn drop_link(&mut self, a: PeerId, b: PeerId) {
        if self.links.remove(&(a, b)) | self.links.remove(&(b, a)) {
            let now = self.now;
            for (x, y) in [(a, b), (b, a)] {
                if let Some(n) = self.nodes.get_mut(&x) {
                    n.link_down(y, now);
                }
            }
        }
    }

    /// Handles one output of some node; false when every node is idle.
    fn step(&mut self) -> bool {
        let peers: Vec<PeerId> = self.nodes.keys().copied().collect();
        for p in peers {
            let Some(out) = self.node(p).poll_output() else {
                continue;
            };
            let now = self.now;
            match out {
                Output::Send { peer, frame } => {
                    if self.links.contains(&(p, peer)) {
                        if let Some(n) = self.nodes.get_mut(&peer) {
                            n.handle_frame(p, frame, now);
                        }
                    }
                }
                Output::Disconnect { peer, why } => {
                    self.disconnects.push((p, peer, why));
                    self.drop_link(p, peer);
                }
                Output::Event(e) => self.events.entry(p).or_default().push(e),
                Output::File(io) => self.file_io(p, io),
            }
            return true;
        }
        false
    }

    fn file_io(&mut self, p: PeerId, io: FileIo) {
        let disk = self.disk.get_mut(&p).unwrap();
        match io {
            FileIo::Open { file, .. } => {
                // Created empty, as the shell does.
                disk.partial.insert(file, Vec::new());
                self.node(p).file_opened(&file);
            }
            FileIo::Write { file, offset, data } => {
                let buf = disk.partial.get_mut(&file).unwrap();
                assert_eq!(buf.len() as u64, offset, "writes are contiguous");
                buf.extend_from_slice(&data);
                let upto = buf.len() as u64;
                if !self.stuck.contains(&p) {
                    self.node(p).file_written(&file, upto);
                }
            }
            FileIo::Check { file, .. } if self.hold_checks.contains(&p) => {
                self.held_checks.push((p, file));
            }
            FileIo::Check { file, name } => {
                let buf = disk.partial.remove(&file).unwrap();
                disk.done.insert(name, buf);
                self.node(p).file_checked(&file, true);
            }
            FileIo::Discard { file } => {
                disk.partial.remove(&file);
            }
            FileIo::Read { file, offset, len } => {
                let src = &disk.sources[&file];
                let data = src[offset as usize..offset as usize + len].to_vec();
                disk.reads += 1;
                self.node(p).file_data(&file, offset, data.into());
            }
            FileIo::Release { .. } => {}
        }
    }

    fn run(&mut self) {
        while self.step() {}
    }

    fn events(&mut self, p: PeerId) -> Vec<Event> {
        std::mem::take(self.events.entry(p).or_default())
    }

    fn open_session(&mut self, a: PeerId, b: PeerId) -> Id {
        let q = self.node(a).request(&b, None).unwrap();
        self.run();
        let s = self.node(b).accept(&a, q, None).unwrap();
        self.run();
        s
    }
}

fn opened(events: &[Event]) -> Option<Id> {
    events.iter().find_map(|e| match e {
        Event::SessionOpened { session, .. } => Some(*session),
        _ => None,
    })
}

#[test]
fn request_reject_request_accept_chat_close() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    net.connect(a, b);
    let found = net.events(a);
    assert!(found.iter().any(|e| matches!(e,
        Event::PeerFound { peer, identity } if *peer == b && identity.name == "bob" && identity.trust == Trust::FirstSeen)));

    let q1 = net.node(b).request(&a, None).unwrap();
    net.run();
    let asked = net.events(a);
    assert!(asked.iter().any(|e| matches!(e, Event::SessionRequested { request, from, .. } if *request == q1 && from.name == "bob")));
    assert_eq!(net.node(a).pending_requests().len(), 1);
    net.node(a).reject(&b, q1).unwrap();
    net.run();
    assert!(net.events(b).contains(&Event::SessionRejected {
        peer: a,
        request: q1,
        reason: RejectReason::Declined
    }));
    assert!(net.node(a).pending_requests().is_empty());

    let q2 = net.node(b).request(&a, None).unwrap();
    net.run();
    let sid = net.node(a).accept(&b, q2, None).unwrap();
    net.run();
    assert_eq!(
        opened(&net.events(b)),
        Some(sid),
        "both sides hold one session id"
    );
    assert_eq!(opened(&net.events(a)), Some(sid));

    net.node(b)
        .send_datagram(&sid, b"hello, no server here".to_vec())
        .unwrap();
    net.node(a).send_datagram(&sid, b"hi bob".to_vec()).unwrap();
    net.run();
    assert!(net.events(a).contains(&Event::Datagram {
        session: sid,
        data: b"hello, no server here".to_vec()
    }));
    assert!(net.events(b).contains(&Event::Datagram {
        session: sid,
        data: b"hi bob".to_vec()
    }));

    assert!(net.node(a).holds_session_keys(&sid) && net.node(b).holds_session_keys(&sid));
    net.node(a).close(&sid).unwrap();
    net.run();
    assert!(
        !net.node(a).holds_session_keys(&sid),
        "keys erased on the closing side"
    );
    assert!(
        !net.node(b).holds_session_keys(&sid),
        "keys erased on the other side"
    );
    assert!(net.events(b).contains(&Event::SessionClosed {
        session: sid,
        by_peer: true
    }));
    assert!(net.node(b).send_datagram(&sid, b"x".to_vec()).is_err());
    assert!(net.disconnects.is_empty());
}

/// Builds a hello as an impostor would: `name` claimed, `proof` as given.
fn hello_frame(name: &str, proof: Option<Proof>) -> Vec<u8> {
    Frame::Hello(Hello {
        name: name.into(),
        expires_at: u64::MAX,
        groups: vec![],
        proof,
    })
    .encode()
}

#[test]
fn an_impostor_cannot_open_a_session_as_the_user_it_claims() {
    let mut net = Net::new();
    let alice_user = UserKey::generate(&mut OsRng);
    let alice_id = identity_of("alice", &alice_user);
    let alice_cert = alice_id.cert;
    let real_alice = net.add(alice_id, Config::default());
    let mut config = Config::default();
    config.known.insert("alice".into(), alice_user.public());
    let bob = net.add(identity_of("bob", &UserKey::generate(&mut OsRng)), config);
    net.connect(real_alice, bob);
    let real_hello = {
        let n = &net.nodes[&real_alice];
        make_hello(&n.identity, &real_alice, u64::MAX, vec![])
    };
    net.events(bob);

    let mallory_user = UserKey::generate(&mut OsRng);
    let mallory = identity_of("mallory", &mallory_user);
    let forged_sig = mallory.key.sign(b"anything");
    let as_alice = identity_of("alice", &mallory_user);
    let own = |imp: &PeerId| Frame::Hello(make_hello(&as_alice, imp, u64::MAX, vec![])).encode();
    type Make<'a> = Box<dyn Fn(&PeerId) -> Vec<u8> + 'a>;
    let cases: Vec<(&str, Make, Trust)> = vec![
        (
            "no proof",
            Box::new(|_| hello_frame("alice", None)),
            Trust::Unverified,
        ),
        (
            "alice's certificate, signature by another key",
            Box::new(|_| {
                hello_frame(
                    "alice",
                    Some(Proof {
                        cert: alice_cert,
                        signature: forged_sig,
                    }),
                )
            }),
            Trust::Unverified,
        ),
        (
            "alice's genuine hello replayed from another peer id",
            Box::new(|_| Frame::Hello(real_hello.clone()).encode()),
            Trust::Unverified,
        ),
        (
            "its own valid certificate, claiming alice's name",
            Box::new(own),
            Trust::KeyMismatch,
        ),
    ];
    for (what, make, trust) in cases {
        // The impostor is a raw peer id: it speaks frames directly.
        let imp = PeerId::random();
        let hello = make(&imp);
        net.links.insert((imp, bob));
        net.links.insert((bob, imp));
        let now = net.now;
        net.node(bob).link_up(imp, now);
        net.node(bob).handle_frame(imp, hello, now);
        net.run();
        let identity = net.node(bob).peer_identity(&imp).cloned().unwrap();
        assert_eq!(identity.trust, trust, "{what}");
        // A request with alice's certificate, signed by what the impostor
        // has (not alice's device key), and one with its own.
        let q = crate::session::request(&mut OsRng, &mallory, &imp, &bob, 1, None);
        let mut with_alice_cert = q.request.clone();
        with_alice_cert.cert = alice_cert;
        net.node(bob)
            .handle_frame(imp, Frame::Request(with_alice_cert).encode(), now);
        let mut q2 = q.request.clone();
        q2.id = 2;
        net.node(bob)
            .handle_frame(imp, Frame::Request(q2).encode(), now);
        let mut sent = Vec::new();
        while let Some(o) = net.node(bob).poll_output() {
            sent.push(o);
        }
        assert!(
            !sent
                .iter()
                .any(|o| matches!(o, Output::Event(Event::SessionRequested { .. }))),
            "{what}: the user is never asked"
        );
        let rejects = sent
            .iter()
            .filter_map(|o| match o {
                Output::Send { peer, frame } if *peer == imp => Frame::decode(frame).ok(),
                _ => None,
            })
            .filter(
                |f| matches!(f, Frame::Reject { reason, .. } if *reason != RejectReason::Declined),
            )
            .count();
        assert_eq!(
            rejects, 2,
            "{what}: both requests are refused with a reason"
        );
        net.drop_link(imp, bob);
    }
    assert!(net.node(bob).sessions().next().is_none());
}

#[test]
fn misbehaving_peers_are_disconnected_and_the_node_carries_on() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    // A frame before the hello, then garbage.
    for (bytes, why) in [
        (
            Frame::Reject {
                request: 1,
                reason: RejectReason::Declined,
            }
            .encode(),
            "a frame before the hello",
        ),
        (vec![1, 99, 0, 0], "malformed frame"),
    ] {
        let imp = PeerId::random();
        net.node(a).link_up(imp, 0);
        net.node(a).handle_frame(imp, bytes, 0);
        let outs: Vec<Output> = std::iter::from_fn(|| net.node(a).poll_output()).collect();
        assert!(
            outs.iter().any(
                |o| matches!(o, Output::Disconnect { peer, why: w } if *peer == imp && *w == why)
            ),
            "{why}"
        );
    }
    // Silence: no hello in time.
    let imp = PeerId::random();
    let now = net.now;
    net.node(a).link_up(imp, now);
    let deadline = net.node(a).poll_timeout().unwrap();
    assert!(deadline <= now + Config::default().hello_timeout_ms);
    net.node(a)
        .handle_timeout(now + Config::default().hello_timeout_ms);
    let outs: Vec<Output> = std::iter::from_fn(|| net.node(a).poll_output()).collect();
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Disconnect { peer, .. } if *peer == imp)));
    // A request flood: over the burst the peer is cut off.
    net.connect(a, b);
    for _ in 0..10 {
        let _ = net.node(b).request(&a, None);
    }
    net.run();
    assert!(net
        .disconnects
        .iter()
        .any(|(p, q, why)| *p == a && *q == b && *why == "request rate limit"));
    let pending = net.node(a).pending_requests().len();
    assert!(pending <= Config::default().max_pending_per_peer);
    // alice still works with others.
    let (c, _) = net.user("carol");
    net.connect(a, c);
    let s = net.open_session(c, a);
    net.node(c).send_datagram(&s, vec![1]).unwrap();
    net.run();
    assert!(net.events(a).contains(&Event::Datagram {
        session: s,
        data: vec![1]
    }));
}

#[test]
fn pending_requests_are_bounded_and_answered_as_too_many() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    net.connect(a, b);
    let ids: Vec<u64> = (0..3)
        .map(|_| net.node(b).request(&a, None).unwrap())
        .collect();
    net.run();
    assert_eq!(net.node(a).pending_requests().len(), 2);
    assert!(net.events(b).contains(&Event::SessionRejected {
        peer: a,
        request: ids[2],
        reason: RejectReason::TooManyPending
    }));
}

#[test]
fn a_file_survives_a_dropped_link_and_is_checked_whole() {
    let mut net = Net::new();
    // A small window, so that a drop finds most of the file unsent.
    let config = Config {
        file_window: 1 << 20,
        ack_every: 256 << 10,
        ..Config::default()
    };
    let (a, _) = net.user_with("alice", config.clone());
    let (b, _) = net.user_with("bob", config);
    net.connect(a, b);
    let sid = net.open_session(b, a);
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let file = net
        .node(b)
        .send_file(&sid, "report.pdf", data.len() as u64)
        .unwrap();
    net.disk
        .get_mut(&b)
        .unwrap()
        .sources
        .insert(file, data.clone());
    // Run until alice holds about half, then cut the link.
    while net.disk[&a].partial.get(&file).map_or(0, |p| p.len()) < data.len() / 2 {
        assert!(net.step());
    }
    net.drop_link(a, b);
    net.run();
    let partial = net.disk[&a].partial[&file].len();
    assert!(partial > 0 && partial < data.len());
    net.connect(a, b);
    net.run();
    assert_eq!(net.disk[&a].done["report.pdf"], data, "identical bytes");
    let ea = net.events(a);
    let eb = net.events(b);
    for (events, incoming) in [(&ea, true), (&eb, false)] {
        assert!(events.iter().any(
            |e| matches!(e, Event::File(FileEvent::Progress { incoming: i, .. }) if *i == incoming)
        ));
        assert!(events.contains(&Event::File(FileEvent::Complete {
            file,
            name: "report.pdf".into(),
            incoming,
            ok: true
        })));
    }
}

/// Seals `inner` from `from` on session `s` and runs the network.
fn inject(net: &mut Net, from: PeerId, s: &Id, inner: Inner) {
    net.node(from).seal(s, &inner).unwrap();
    net.run();
}

/// Seals `inner` from `from` on session `s` and returns the frame instead
/// of delivering it.
fn capture(net: &mut Net, from: PeerId, s: &Id, inner: Inner) -> Vec<u8> {
    net.node(from).seal(s, &inner).unwrap();
    let Some(Output::Send { frame, .. }) = net.node(from).poll_output() else {
        panic!("a frame to send");
    };
    frame
}

fn chunk(id: Id, offset: u64, data: &[u8]) -> Inner {
    Inner::FileChunk {
        id,
        offset,
        data: data.to_vec(),
    }
}

fn completed(net: &mut Net, p: PeerId, file: Id, name: &str, ok: bool) -> bool {
    net.events(p).contains(&Event::File(FileEvent::Complete {
        file,
        name: name.into(),
        incoming: true,
        ok,
    }))
}

/// A truncated file (fewer bytes than the offered size) is never made
/// visible; the missing bytes complete it.
#[test]
fn a_file_is_made_visible_only_once_every_byte_of_its_size_arrived() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    let id = [5u8; 16];
    let offer = Inner::FileOffer {
        id,
        name: "x.bin".into(),
        size: 10,
    };
    inject(&mut net, m, &s, offer);
    inject(&mut net, m, &s, chunk(id, 0, b"sotto!"));
    assert_eq!(net.disk[&a].partial[&id], b"sotto!", "written");
    assert!(net.disk[&a].done.is_empty(), "not visible while short");
    assert!(!completed(&mut net, a, id, "x.bin", true));
    inject(&mut net, m, &s, chunk(id, 6, b"p2p."));
    assert_eq!(net.disk[&a].done["x.bin"], b"sotto!p2p.");
    assert!(completed(&mut net, a, id, "x.bin", true));
    assert!(net.disconnects.is_empty());
}

/// Chunks out of order, repeated (sealed again by the sender), or after a
/// gap are ignored: the file only ever grows by the next bytes in order.
#[test]
fn reordered_repeated_or_dropped_chunks_never_reach_the_file_out_of_order() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    let id = [6u8; 16];
    let offer = Inner::FileOffer {
        id,
        name: "y.bin".into(),
        size: 9,
    };
    inject(&mut net, m, &s, offer);
    inject(&mut net, m, &s, chunk(id, 3, b"DEF")); // ahead: reordered
    inject(&mut net, m, &s, chunk(id, 0, b"abc"));
    inject(&mut net, m, &s, chunk(id, 0, b"abc")); // repeated
    inject(&mut net, m, &s, chunk(id, 6, b"ghi")); // after a gap: 3..6 dropped
    assert_eq!(net.disk[&a].partial[&id], b"abc");
    assert!(net.disk[&a].done.is_empty());
    inject(&mut net, m, &s, chunk(id, 3, b"def"));
    assert_eq!(net.disk[&a].partial[&id], b"abcdef");
    assert!(net.disk[&a].done.is_empty());
    inject(&mut net, m, &s, chunk(id, 6, b"ghi"));
    assert_eq!(net.disk[&a].done["y.bin"], b"abcdefghi");
    assert!(net.disconnects.is_empty(), "ignored, not errors");
}

/// The very frame of a chunk delivered again (a replay on the wire) does
/// not open: its counter was taken. Nothing more is written.
#[test]
fn a_replayed_chunk_frame_does_not_open() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    let id = [7u8; 16];
    let offer = Inner::FileOffer {
        id,
        name: "z.bin".into(),
        size: 8,
    };
    inject(&mut net, m, &s, offer);
    let frame = capture(&mut net, m, &s, chunk(id, 0, b"four"));
    let now = net.now;
    net.node(a).handle_frame(m, frame.clone(), now);
    net.run();
    assert_eq!(net.disk[&a].partial[&id], b"four");
    net.node(a).handle_frame(m, frame, now);
    net.run();
    assert_eq!(net.disk[&a].partial[&id], b"four", "written once");
    assert!(net.disk[&a].done.is_empty());
    assert!(net
        .disconnects
        .contains(&(a, m, "a message that does not open")));
}

/// A chunk taken from another session (another peer's transfer to the
/// same receiver) does not open under this session's key, is refused on
/// its own session when it comes from another peer, and a chunk naming
/// another session's file id is refused.
#[test]
fn a_chunk_from_another_session_or_file_is_refused() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    let (m, _) = net.user("mallory");
    net.connect(a, b);
    net.connect(a, m);
    let sb = net.open_session(b, a);
    let sm = net.open_session(m, a);
    let (fb, fm) = ([8u8; 16], [9u8; 16]);
    for (from, s, id) in [(b, sb, fb), (m, sm, fm)] {
        let offer = Inner::FileOffer {
            id,
            name: "w.bin".into(),
            size: 4,
        };
        inject(&mut net, from, &s, offer);
    }
    // bob's genuine chunk, replayed by mallory as her own session's.
    let frame = capture(&mut net, b, &sb, chunk(fb, 0, b"bob!"));
    let mut moved = frame.clone();
    moved[2..18].copy_from_slice(&sm);
    let now = net.now;
    net.node(a).handle_frame(m, moved, now);
    net.run();
    assert!(net
        .disconnects
        .contains(&(a, m, "a message that does not open")));
    net.disconnects.clear();
    net.connect(a, m);
    // As it is, from mallory: not her session.
    net.node(a).handle_frame(m, frame, now);
    net.run();
    assert!(net
        .disconnects
        .contains(&(a, m, "a message on another peer's session")));
    net.disconnects.clear();
    net.connect(a, m);
    // Sealed by mallory in her session, but naming bob's file.
    inject(&mut net, m, &sm, chunk(fb, 0, b"evil"));
    assert!(net
        .disconnects
        .contains(&(a, m, "a chunk for another session's transfer")));
    assert!(net.disk[&a].partial[&fb].is_empty(), "bob's file untouched");
    assert!(net.disk[&a].partial[&fm].is_empty());
    assert!(net.disk[&a].done.is_empty());
}

/// A sender that ignores the window while the receiver's disk is slow (no
/// acks) is disconnected before the receiver holds more than the window.
#[test]
fn chunks_beyond_the_window_disconnect_the_sender_and_bound_memory() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.stuck.insert(a);
    net.connect(a, m);
    let s = net.open_session(m, a);
    let id = [7u8; 16];
    let size = 4 * MAX_FILE_WINDOW;
    let offer = Inner::FileOffer {
        id,
        name: "flood.bin".into(),
        size,
    };
    inject(&mut net, m, &s, offer);
    let mut offset = 0u64;
    while net.disconnects.is_empty() && offset < size {
        let chunk = Inner::FileChunk {
            id,
            offset,
            data: vec![0; CHUNK],
        };
        // The link may be gone already: then seal fails and the loop ends.
        if net.node(m).seal(&s, &chunk).is_err() {
            break;
        }
        net.run();
        offset += CHUNK as u64;
    }
    assert!(net
        .disconnects
        .contains(&(a, m, "a chunk beyond the window")));
    let held = net.disk[&a].partial.get(&id).map_or(0, |p| p.len()) as u64;
    assert!(held <= MAX_FILE_WINDOW + CHUNK as u64, "held {held}");
}

/// Chunks at another offset than the next expected one (replayed from
/// before a resume, or forged) are not written; one past the end, or one
/// whose tag does not verify, disconnects the peer.
#[test]
fn chunks_at_wrong_offsets_or_with_a_bad_tag_are_not_written() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    let id = [8u8; 16];
    let offer = Inner::FileOffer {
        id,
        name: "x.bin".into(),
        size: 100,
    };
    inject(&mut net, m, &s, offer);
    for offset in [10, 99, u64::MAX] {
        let chunk = Inner::FileChunk {
            id,
            offset,
            data: vec![1; 1],
        };
        inject(&mut net, m, &s, chunk);
    }
    assert!(net.disk[&a].partial[&id].is_empty(), "nothing written");
    assert!(net.disconnects.is_empty(), "ignored, not an error");
    // A genuine chunk whose ciphertext was altered on the way.
    let inner = Inner::FileChunk {
        id,
        offset: 0,
        data: vec![2; 50],
    };
    net.node(m).seal(&s, &inner).unwrap();
    let Some(Output::Send { peer, mut frame }) = net.node(m).poll_output() else {
        panic!("a frame to send");
    };
    assert_eq!(peer, a);
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let now = net.now;
    net.node(a).handle_frame(m, frame, now);
    net.run();
    assert!(net.disk[&a].partial[&id].is_empty(), "nothing written");
    assert!(net
        .disconnects
        .contains(&(a, m, "a message that does not open")));
}

/// A receiver that never acknowledges gets no more than the window, and
/// after `file_stall_ms` the sender cancels with a clear outcome; a sender
/// that stops sending is cancelled on the receiver's side the same way.
#[test]
fn a_peer_that_stops_acking_or_sending_is_cancelled_after_the_stall_time() {
    let mut net = Net::new();
    let config = Config {
        file_window: 1 << 20,
        ack_every: 256 << 10,
        ..Config::default()
    };
    let stall = config.file_stall_ms;
    let (a, _) = net.user_with("alice", config.clone());
    let (b, _) = net.user_with("bob", config);
    net.stuck.insert(a);
    net.connect(a, b);
    let sid = net.open_session(b, a);
    let data = vec![3u8; 8 << 20];
    let file = net
        .node(b)
        .send_file(&sid, "big.bin", data.len() as u64)
        .unwrap();
    net.disk.get_mut(&b).unwrap().sources.insert(file, data);
    net.run();
    // The window (1 MiB) plus the chunk that may start before it is full.
    let reads = net.disk[&b].reads;
    assert!(reads > 0 && reads <= (1 << 20) / CHUNK + 1, "{reads} reads");
    assert!(net.node(b).poll_timeout().unwrap() <= net.now + stall);
    net.now += stall;
    let now = net.now;
    net.node(b).handle_timeout(now);
    net.node(a).handle_timeout(now);
    net.run();
    let failed = |incoming| {
        Event::File(FileEvent::Complete {
            file,
            name: "big.bin".into(),
            incoming,
            ok: false,
        })
    };
    assert!(
        net.events(b).contains(&failed(false)),
        "the sender gives up"
    );
    assert!(
        net.events(a).contains(&failed(true)),
        "the receiver is told"
    );
    assert!(net.disk[&a].partial.is_empty(), "and discards its copy");
    // Nothing more is read.
    assert_eq!(net.disk[&b].reads, reads);

    // A sender that offers, sends a little, and goes silent.
    let id = [9u8; 16];
    let offer = Inner::FileOffer {
        id,
        name: "slow.bin".into(),
        size: 1000,
    };
    inject(&mut net, b, &sid, offer);
    let chunk = Inner::FileChunk {
        id,
        offset: 0,
        data: vec![1; 10],
    };
    inject(&mut net, b, &sid, chunk);
    assert!(net.disk[&a].partial.contains_key(&id));
    net.now += stall;
    let now = net.now;
    net.node(a).handle_timeout(now);
    net.run();
    assert!(!net.disk[&a].partial.contains_key(&id), "discarded");
    // A chunk that was on its way when the receiver gave up is dropped,
    // not held against the sender.
    let late = Inner::FileChunk {
        id,
        offset: 10,
        data: vec![1; 10],
    };
    inject(&mut net, b, &sid, late);
    assert!(!net.disk[&a].partial.contains_key(&id));
    assert!(net.disconnects.is_empty(), "{:?}", net.disconnects);
    assert!(net.events(a).contains(&Event::File(FileEvent::Complete {
        file: id,
        name: "slow.bin".into(),
        incoming: true,
        ok: false
    })));
}

fn group_messages(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Group(GroupEvent::Message { data, .. }) => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn group_newcomer_reads_only_what_follows_and_a_leaver_nothing_after() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    let (c, _) = net.user("carol");
    let (d, _) = net.user("dave");
    let mut sessions = HashMap::new();
    for p in [b, c, d] {
        net.connect(a, p);
        let s = net.open_session(p, a);
        net.run();
        sessions.insert(p, s);
    }
    let g = net
        .node(a)
        .group_create("ops", &[sessions[&b], sessions[&c]])
        .unwrap();
    net.run();
    assert!(net
        .events(b)
        .iter()
        .any(|e| matches!(e, Event::Group(GroupEvent::Invited { title, .. }) if title == "ops")));
    assert!(net.node(d).groups().is_empty(), "not invited, not told");
    // The hello now advertises the group.
    assert_eq!(net.node(a).advertised_groups()[0].title, "ops");
    net.node(b).group_join(&g).unwrap();
    net.node(c).group_join(&g).unwrap();
    net.run();
    net.node(a).group_send(&g, b"one".to_vec()).unwrap();
    net.node(b).group_send(&g, b"two".to_vec()).unwrap();
    net.run();
    assert_eq!(
        group_messages(&net.events(c)),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    // dave joins late.
    net.node(a).group_invite(&g, &sessions[&d]).unwrap();
    net.run();
    net.node(d).group_join(&g).unwrap();
    net.run();
    let joined = net.events(b);
    assert!(joined
        .iter()
        .any(|e| matches!(e, Event::Group(GroupEvent::Joined { name, .. }) if name == "dave")));
    net.node(c).group_send(&g, b"three".to_vec()).unwrap();
    net.run();
    assert_eq!(
        group_messages(&net.events(d)),
        vec![b"three".to_vec()],
        "only what followed the join"
    );
    // carol leaves; the others see it and she gets nothing after.
    net.node(c).group_leave(&g).unwrap();
    net.run();
    assert!(net
        .events(b)
        .iter()
        .any(|e| matches!(e, Event::Group(GroupEvent::Left { name, .. }) if name == "carol")));
    net.events(c);
    net.node(b).group_send(&g, b"four".to_vec()).unwrap();
    net.run();
    assert!(group_messages(&net.events(c)).is_empty());
    assert_eq!(
        group_messages(&net.events(d)),
        vec![b"three".to_vec(), b"four".to_vec()][1..].to_vec()
    );
    let host_saw = group_messages(&net.events(a));
    assert_eq!(
        host_saw,
        vec![b"two".to_vec(), b"three".to_vec(), b"four".to_vec()]
    );
    // A member who left cannot post any more.
    assert!(net.node(c).group_send(&g, b"five".to_vec()).is_err());
}

#[test]
fn an_uninvited_join_is_refused() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    net.run();
    let g = net.node(a).group_create("ops", &[]).unwrap();
    net.run();
    // mallory saw the group advertised and asks to join anyway.
    net.node(m)
        .seal(&s, &Inner::GroupJoin { group: g })
        .unwrap();
    net.run();
    assert_eq!(net.node(a).groups()[0].members, vec!["alice".to_string()]);
}

#[test]
fn hostile_offers_are_cancelled_and_nothing_is_opened() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    for (name, size) in [
        ("../../.bashrc", 10),
        ("/etc/passwd", 10),
        (".hidden", 10),
        ("ok.bin", Config::default().max_file_size + 1),
    ] {
        let id = [name.len() as u8; 16];
        net.node(m)
            .seal(
                &s,
                &Inner::FileOffer {
                    id,
                    name: name.into(),
                    size,
                },
            )
            .unwrap();
        net.run();
        assert!(net.disk[&a].partial.is_empty(), "{name}: nothing opened");
        assert!(
            !net.events(a).iter().any(|e| matches!(e, Event::File(_))),
            "{name}: not offered to the user"
        );
        assert!(
            net.disconnects.is_empty(),
            "{name}: refused, not a protocol error"
        );
    }
    // A chunk past the end of a genuine offer disconnects the sender.
    let id = [9u8; 16];
    net.node(m)
        .seal(
            &s,
            &Inner::FileOffer {
                id,
                name: "x.bin".into(),
                size: 4,
            },
        )
        .unwrap();
    net.run();
    net.node(m)
        .seal(
            &s,
            &Inner::FileChunk {
                id,
                offset: 0,
                data: vec![0; 5],
            },
        )
        .unwrap();
    net.run();
    assert!(net
        .disconnects
        .iter()
        .any(|(p, q, why)| *p == a && *q == m && *why == "a chunk past the end of the file"));
}

#[test]
fn a_member_cannot_speak_as_the_host_of_a_group() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    let (c, _) = net.user("carol");
    net.connect(a, b);
    net.connect(a, c);
    net.connect(b, c);
    let sb = net.open_session(b, a);
    let sc = net.open_session(c, a);
    let g = net.node(a).group_create("ops", &[sb, sc]).unwrap();
    net.run();
    net.node(b).group_join(&g).unwrap();
    net.node(c).group_join(&g).unwrap();
    net.run();
    // carol, over her own session with bob, sends bob a roster and a
    // "delivery" for alice's group as if she hosted it.
    let bc = net.open_session(c, b);
    net.events(b);
    net.node(c)
        .seal(
            &bc,
            &Inner::GroupDeliver {
                group: g,
                from_user: [0; 32],
                from_name: "alice".into(),
                data: b"fake".to_vec(),
            },
        )
        .unwrap();
    net.run();
    assert!(group_messages(&net.events(b)).is_empty());
    assert!(net.disconnects.iter().any(|(p, q, _)| *p == b && *q == c));
}

fn offer_with_a_byte(net: &mut Net, from: PeerId, s: &Id, id: Id, name: &str) {
    let offer = Inner::FileOffer {
        id,
        name: name.into(),
        size: 1000,
    };
    inject(net, from, s, offer);
    inject(net, from, s, chunk(id, 0, b"x"));
}

/// A sender that offers, sends a byte and goes away: the receiver's next
/// timeout is never in the past while the peer is away (no busy loop),
/// the transfer waits for a resume up to `file_resume_ms`, then its slot
/// and partial copy are freed.
#[test]
fn a_sender_gone_away_never_makes_a_past_deadline_and_is_discarded_in_time() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    let ids = [[1u8; 16], [2u8; 16]];
    for (i, id) in ids.iter().enumerate() {
        offer_with_a_byte(&mut net, m, &s, *id, &format!("f{i}.bin"));
    }
    assert_eq!(net.disk[&a].partial.len(), 2);
    net.drop_link(a, m);
    let config = Config::default();
    let start = net.now;
    for step in [1, config.file_stall_ms, config.file_stall_ms * 5] {
        net.now = start + step;
        let now = net.now;
        net.node(a).handle_timeout(now);
        net.run();
        let next = net.node(a).poll_timeout().unwrap();
        assert!(next > now, "a deadline in the past after {step} ms");
        assert_eq!(net.disk[&a].partial.len(), 2, "waits for a resume");
    }
    net.now = start + config.file_resume_ms;
    let now = net.now;
    assert!(net.node(a).poll_timeout().unwrap() <= now, "due now");
    net.node(a).handle_timeout(now);
    net.run();
    assert!(net.disk[&a].partial.is_empty(), "discarded");
    assert!(net.node(a).poll_timeout().unwrap() > now);
    let events = net.events(a);
    for (i, id) in ids.iter().enumerate() {
        assert!(events.contains(&Event::File(FileEvent::Complete {
            file: *id,
            name: format!("f{i}.bin"),
            incoming: true,
            ok: false,
        })));
    }
    // The slots are free again.
    net.connect(a, m);
    offer_with_a_byte(&mut net, m, &s, [3u8; 16], "again.bin");
    assert!(net.disk[&a].partial.contains_key(&[3u8; 16]));
}

/// A transfer resumed within `file_resume_ms` goes on.
#[test]
fn a_sender_back_within_the_resume_bound_goes_on() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.connect(a, m);
    let s = net.open_session(m, a);
    let id = [4u8; 16];
    offer_with_a_byte(&mut net, m, &s, id, "r.bin");
    net.drop_link(a, m);
    net.now += Config::default().file_resume_ms - 1;
    let now = net.now;
    net.node(a).handle_timeout(now);
    net.connect(a, m);
    net.now += 1;
    let now = net.now;
    net.node(a).handle_timeout(now);
    net.run();
    inject(&mut net, m, &s, chunk(id, 1, &[7u8; 999]));
    assert_eq!(net.disk[&a].done["r.bin"].len(), 1000);
}

/// One peer holding its limit of incoming transfers does not block
/// another peer's file.
#[test]
fn a_peer_at_its_limit_of_incoming_files_does_not_block_another_peer() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (b, _) = net.user("bob");
    let (m, _) = net.user("mallory");
    net.connect(a, b);
    net.connect(a, m);
    let sb = net.open_session(b, a);
    let sm = net.open_session(m, a);
    // Two sessions of mallory's count together.
    let sm2 = net.open_session(m, a);
    let slots = Config::default().max_incoming_files as u8;
    for i in 0..slots {
        let s = if i % 2 == 0 { sm } else { sm2 };
        offer_with_a_byte(&mut net, m, &s, [10 + i; 16], &format!("m{i}.bin"));
    }
    assert_eq!(
        net.disk[&a].partial.len(),
        Config::default().max_incoming_files_per_peer
    );
    offer_with_a_byte(&mut net, b, &sb, [99u8; 16], "bob.bin");
    assert!(net.disk[&a].partial.contains_key(&[99u8; 16]), "bob's file");
    assert!(net.disconnects.is_empty());
}

/// A receiver whose disk is stuck, reconnected again and again, holds no
/// more than one window of queued bytes (a resume does not restart the
/// window from bytes not yet written); once the disk catches up the
/// transfer resumes and completes.
#[test]
fn reconnects_with_a_stuck_disk_stay_within_the_window() {
    let mut net = Net::new();
    let config = Config {
        file_window: 1 << 20,
        ack_every: 256 << 10,
        ..Config::default()
    };
    let (a, _) = net.user_with("alice", config.clone());
    let (b, _) = net.user_with("bob", config);
    net.stuck.insert(a);
    net.connect(a, b);
    let sid = net.open_session(b, a);
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i * 3 + i / 7) as u8).collect();
    let file = net
        .node(b)
        .send_file(&sid, "big.bin", data.len() as u64)
        .unwrap();
    net.disk
        .get_mut(&b)
        .unwrap()
        .sources
        .insert(file, data.clone());
    net.run();
    let bound = (1u64 << 20) + CHUNK as u64;
    for _ in 0..5 {
        net.drop_link(a, b);
        net.run();
        net.connect(a, b);
        net.run();
        let held = net.disk[&a].partial[&file].len() as u64;
        assert!(held <= bound, "{held} bytes queued for a stuck disk");
    }
    assert!(net.disconnects.is_empty(), "{:?}", net.disconnects);
    // The disk catches up: the held want goes and the rest follows.
    net.stuck.remove(&a);
    let upto = net.disk[&a].partial[&file].len() as u64;
    net.node(a).file_written(&file, upto);
    net.run();
    assert_eq!(net.disk[&a].done["big.bin"], data);
}

/// A cancel (or the session's close) that races the final check of a file
/// whose every byte arrived does not discard it: the check decides.
#[test]
fn a_cancel_or_close_during_the_check_does_not_discard_the_file() {
    let mut net = Net::new();
    let (a, _) = net.user("alice");
    let (m, _) = net.user("mallory");
    net.hold_checks.insert(a);
    net.connect(a, m);
    let s = net.open_session(m, a);
    for (id, close) in [([1u8; 16], false), ([2u8; 16], true)] {
        let offer = Inner::FileOffer {
            id,
            name: "c.bin".into(),
            size: 4,
        };
        inject(&mut net, m, &s, offer);
        inject(&mut net, m, &s, chunk(id, 0, b"four"));
        assert_eq!(net.held_checks, vec![(a, id)], "checking");
        if close {
            net.node(m).close(&s).unwrap();
            net.run();
        } else {
            inject(&mut net, m, &s, Inner::FileCancel { id });
        }
        assert!(net.disk[&a].partial.contains_key(&id), "not discarded");
        assert!(!completed(&mut net, a, id, "c.bin", false));
        net.held_checks.clear();
        net.node(a).file_checked(&id, true);
        net.run();
        assert!(completed(&mut net, a, id, "c.bin", true));
    }
}
