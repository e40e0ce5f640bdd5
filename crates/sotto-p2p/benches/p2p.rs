//! Peer-to-peer benchmarks on loopback (a bench binary: real sockets and
//! tasks do not fit criterion's sampling of a closure):
//!
//! - session set-up: request -> accept (by a task) -> opened on both sides;
//! - messages inside a session: one-way throughput and echo latency;
//! - file throughput against a plain TCP copy of the same file, same run.
//!
//! `cargo bench -p sotto-p2p --bench p2p [--features bench-quic] [-- --file-mb N] [--window-mb N]`; figures and the
//! machine in docs/PERFORMANCE.md.

use std::io::Write;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use sotto_p2p::node::FileEvent;
use sotto_p2p::{spawn, Event, Handle, Identity, ShellConfig, ShellEvent};
use sotto_proto::UserKey;
use tokio::sync::mpsc;

fn identity(name: &str) -> Identity {
    Identity::new_device(&mut OsRng, name, &UserKey::generate(&mut OsRng), 1)
}

async fn node(
    name: &str,
    dir: &std::path::Path,
    window_mb: Option<u64>,
) -> (Handle, mpsc::Receiver<ShellEvent>) {
    let mut c = ShellConfig::new(dir.join(name));
    if let Some(w) = window_mb {
        c.node.file_window = w << 20;
    }
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.mdns = false;
    // The bench floods on purpose; the limit guards against strangers.
    c.node.frames_per_second = std::num::NonZeroU32::new(1_000_000).unwrap();
    c.node.requests_per_minute = std::num::NonZeroU32::new(1_000_000).unwrap();
    c.node.request_burst = std::num::NonZeroU32::new(1_000).unwrap();
    spawn(identity(name), c).await.unwrap()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn next_matching<T>(
    rx: &mut mpsc::Receiver<ShellEvent>,
    f: impl Fn(&ShellEvent) -> Option<T>,
) -> T {
    loop {
        let ev = rx.recv().await.expect("node running");
        if let Some(t) = f(&ev) {
            return t;
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file_mb: usize = args
        .iter()
        .position(|a| a == "--file-mb")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // The sender's file window (default: the node's default).
    let window_mb: Option<u64> = args
        .iter()
        .position(|a| a == "--window-mb")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    let dir = tempfile::tempdir().unwrap();
    let (alice, mut alice_rx) = node("alice", dir.path(), window_mb).await;
    let (bob, mut bob_rx) = node("bob", dir.path(), window_mb).await;

    // alice accepts every request and echoes every datagram.
    let a = alice.clone();
    let (opened_tx, mut opened_rx) = mpsc::channel(16);
    let (saved_tx, mut saved_rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(ev) = alice_rx.recv().await {
            match ev {
                ShellEvent::Node(Event::SessionRequested { peer, request, .. }) => {
                    a.accept(peer, request, None).await.unwrap();
                }
                ShellEvent::Node(Event::Datagram { session, data }) if data.first() == Some(&1) => {
                    a.send_datagram(session, data).await.unwrap();
                }
                ShellEvent::Node(Event::Datagram { data, .. }) => {
                    let _ = opened_tx.send(data.len()).await;
                }
                ShellEvent::FileSaved { path, .. } => {
                    let _ = saved_tx.send(path).await;
                }
                _ => {}
            }
        }
    });
    let _ = &mut opened_rx;
    bob.dial(alice.addresses()[0].clone()).await.unwrap();
    let ap = alice.peer_id();
    next_matching(&mut bob_rx, |e| {
        matches!(e, ShellEvent::Node(Event::PeerFound { peer, .. }) if *peer == ap).then_some(())
    })
    .await;

    // 1. Session set-up.
    let mut setup = Vec::new();
    let mut last = [0u8; 16];
    for _ in 0..100 {
        let t = Instant::now();
        bob.request(ap, None).await.unwrap();
        last = next_matching(&mut bob_rx, |e| match e {
            ShellEvent::Node(Event::SessionOpened { session, .. }) => Some(*session),
            _ => None,
        })
        .await;
        setup.push(t.elapsed());
        bob.close(last).await.unwrap();
    }
    println!(
        "session set-up (request, accept, keys on both sides; 100 runs): median {:?}, p90 {:?}",
        pct(&mut setup, 0.5),
        pct(&mut setup, 0.9)
    );
    bob.request(ap, None).await.unwrap();
    let s = next_matching(&mut bob_rx, |e| match e {
        ShellEvent::Node(Event::SessionOpened { session, .. }) => Some(*session),
        _ => None,
    })
    .await;
    let _ = last;

    // 2. Echo latency: 64-byte datagrams, one at a time.
    let mut rtt = Vec::new();
    for _ in 0..2000 {
        let mut msg = vec![1u8; 64];
        OsRng.fill_bytes(&mut msg[1..]);
        let t = Instant::now();
        bob.send_datagram(s, msg).await.unwrap();
        next_matching(&mut bob_rx, |e| {
            matches!(e, ShellEvent::Node(Event::Datagram { .. })).then_some(())
        })
        .await;
        rtt.push(t.elapsed());
    }
    println!(
        "echo round trip, 64-byte datagram (2000): median {:?}, p99 {:?}",
        pct(&mut rtt, 0.5),
        pct(&mut rtt, 0.99)
    );

    // 3. One-way messages/s: 50 000 datagrams of 256 bytes, at most 500
    //    in flight (alice reports each one it received).
    let n = 50_000usize;
    let t = Instant::now();
    let mut received = 0usize;
    for i in 0..n {
        while i - received >= 500 {
            opened_rx.recv().await.unwrap();
            received += 1;
        }
        bob.send_datagram(s, vec![0u8; 256]).await.unwrap();
    }
    while received < n {
        opened_rx.recv().await.unwrap();
        received += 1;
    }
    let el = t.elapsed();
    println!(
        "one-way datagrams (256 bytes, {n}): {:.0} msgs/s ({:?} total)",
        n as f64 / el.as_secs_f64(),
        el
    );

    // 4. File throughput vs a plain TCP copy of the same file.
    let path = dir.path().join("big.bin");
    {
        let mut f = std::fs::File::create(&path).unwrap();
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..file_mb {
            OsRng.fill_bytes(&mut block);
            f.write_all(&block).unwrap();
        }
    }
    let bytes = (file_mb << 20) as f64;
    let mut p2p = Vec::new();
    let mut tcp = Vec::new();
    for _ in 0..3 {
        let c0 = cpu_ms();
        let t = Instant::now();
        let file = bob.send_file(s, path.clone()).await.unwrap();
        let t_offer = t.elapsed();
        let t_last = next_matching(&mut bob_rx, |e| matches!(e, ShellEvent::Node(Event::File(FileEvent::Progress { done, total, .. })) if done == total).then_some(t.elapsed())).await;
        let saved = saved_rx.recv().await.unwrap();
        if std::env::var("P2P_BENCH_PHASES").is_ok() {
            eprintln!(
                "offer after {t_offer:?}, all acked after {t_last:?}, saved after {:?}, cpu {} ms",
                t.elapsed(),
                cpu_ms() - c0
            );
        }
        next_matching(&mut bob_rx, |e| matches!(e, ShellEvent::Node(Event::File(FileEvent::Complete { file: f, ok: true, .. })) if *f == file).then_some(())).await;
        p2p.push(t.elapsed());
        std::fs::remove_file(saved).unwrap();
        let c0 = cpu_ms();
        tcp.push(plain_tcp_copy(&path, &dir.path().join("tcp-copy.bin")).await);
        if std::env::var("P2P_BENCH_PHASES").is_ok() {
            eprintln!("plain TCP copy: cpu {} ms", cpu_ms() - c0);
        }
    }
    let mut raw = Vec::new();
    let mut quic = Vec::new();
    for _ in 0..3 {
        let c0 = cpu_ms();
        raw.push(raw_libp2p_stream(file_mb << 20, false).await);
        let c1 = cpu_ms();
        if cfg!(feature = "bench-quic") {
            quic.push(raw_libp2p_stream(file_mb << 20, true).await);
        }
        if std::env::var("P2P_BENCH_PHASES").is_ok() {
            eprintln!(
                "bare transport: TCP+Noise+Yamux cpu {} ms, QUIC cpu {} ms",
                c1 - c0,
                cpu_ms() - c1
            );
        }
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap();
    println!(
        "the transport alone: {file_mb} MB over one libp2p stream (TCP+Noise+Yamux, memory to memory, best of 3): {:.0} MB/s",
        bytes / 1e6 / best(&raw).as_secs_f64()
    );
    if !quic.is_empty() {
        println!(
            "the same over libp2p QUIC (rustls, one AES-GCM layer; not what sotto-p2p uses), best of 3: {:.0} MB/s",
            bytes / 1e6 / best(&quic).as_secs_f64()
        );
    }
    let (p, t) = (best(&p2p), best(&tcp));
    println!(
        "file {file_mb} MB (best of 3): sotto-p2p {:.0} MB/s ({:?}; offer, chunks read, sealed, opened and written, fsync, rename), plain TCP copy {:.0} MB/s ({:?}); ratio {:.2}",
        bytes / 1e6 / p.as_secs_f64(),
        p,
        bytes / 1e6 / t.as_secs_f64(),
        t,
        t.as_secs_f64() / p.as_secs_f64()
    );
    alice.shutdown().await;
    bob.shutdown().await;
}

/// Reads `src` from disk, sends it over a loopback TCP connection, and
/// writes it to `dst` (synced): the same disk work with no security.
async fn plain_tcp_copy(src: &std::path::Path, dst: &std::path::Path) -> Duration {
    let (src, dst) = (src.to_path_buf(), dst.to_path_buf());
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Instant::now();
        let recv = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut out = std::fs::File::create(&dst).unwrap();
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = sock.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).unwrap();
            }
            out.sync_all().unwrap();
            std::fs::remove_file(&dst).unwrap();
        });
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        let mut f = std::fs::File::open(src).unwrap();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sock.write_all(&buf[..n]).unwrap();
        }
        drop(sock);
        recv.join().unwrap();
        t.elapsed()
    })
    .await
    .unwrap()
}

/// `len` bytes from memory to memory over one `/bench` libp2p stream
/// (TCP + Noise + Yamux, the transport sotto-p2p uses): its ceiling.
async fn raw_libp2p_stream(len: usize, quic: bool) -> Duration {
    use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use futures_util::StreamExt;
    const P: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/bench");
    let swarm = || {
        let b = libp2p::SwarmBuilder::with_new_identity().with_tokio();
        #[cfg(feature = "bench-quic")]
        if quic {
            return b
                .with_quic()
                .with_behaviour(|_| libp2p_stream::Behaviour::new())
                .unwrap()
                .build();
        }
        {
            b.with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .build()
        }
    };
    let (mut a, mut b) = (swarm(), swarm());
    let listen = if quic {
        "/ip4/127.0.0.1/udp/0/quic-v1"
    } else {
        "/ip4/127.0.0.1/tcp/0"
    };
    a.listen_on(listen.parse().unwrap()).unwrap();
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await
        {
            break address;
        }
    };
    let mut incoming = a.behaviour().new_control().accept(P).unwrap();
    let mut control = b.behaviour().new_control();
    let a_id = *a.local_peer_id();
    b.dial(addr.with(libp2p::multiaddr::Protocol::P2p(a_id)))
        .unwrap();
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    let reader = tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < len {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let mut s = control.open_stream(a_id, P).await.unwrap();
    let block = vec![7u8; 256 << 10];
    let t = Instant::now();
    let mut sent = 0;
    while sent < len {
        s.write_all(&block).await.unwrap();
        sent += block.len();
    }
    s.flush().await.unwrap();
    reader.await.unwrap();
    t.elapsed()
}

/// CPU time (user + system) of this process so far, in ms (Linux).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10
}
