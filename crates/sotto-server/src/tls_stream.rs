//! TLS for one accepted connection, with buffers that exist only while they
//! hold bytes.
//!
//! tokio-rustls drives rustls's buffered `ServerConnection`, whose record
//! buffer is resized to 4 KiB before every read and kept for the life of the
//! connection: 4.1 kB of every idle WebSocket, the largest part of what an
//! idle device costs the node (docs/PERFORMANCE.md, "Memory per idle
//! connected device"). [`TlsStream`] drives rustls's unbuffered API
//! ([`UnbufferedServerConnection`]) instead. rustls still does all of TLS
//! (handshake, records, alerts, key updates, close_notify); this file only
//! owns the bytes on either side of it:
//! - `incoming`: TLS bytes read and not yet processed (a record, or a
//!   handshake message, not yet whole). A read goes to a buffer on the stack
//!   and only what arrived is kept. Records are processed from an offset
//!   (`incoming_at`); the rest moves to the front once, when rustls stops,
//!   not after every record.
//! - `plain`: decrypted bytes the reader has not taken yet.
//! - `outgoing`: TLS records made and not yet handed to the socket.
//!
//! Each is given back (an empty, unallocated `Vec`) when it empties, so an
//! idle connection holds none of them.
//!
//! Reads are bounded: at most [`MAX_INCOMING`] TLS bytes wait for the rest
//! of a record (rustls itself refuses a record longer than TLS allows and a
//! handshake message over 64 KiB); `plain` holds at most what one read
//! decrypted. Writes are bounded: records made by one write wait for the
//! socket before the next write is taken.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read from the socket at once (on the stack): a whole record of
/// the largest size TLS allows.
const READ_CHUNK: usize = 16 * 1024 + 2048 + 5;

/// The most TLS bytes held waiting for the rest of a record or handshake
/// message: a 64 KiB handshake message (rustls's own limit) split over
/// records, plus one read. A message split into much smaller records
/// (each with its 5-byte header) is refused at this bound.
const MAX_INCOMING: usize = 0xffff + 2 * READ_CHUNK;

/// The most plaintext turned into records by one write (four full
/// records); the rest of a longer buffer is taken by the next write.
const MAX_WRITE: usize = 4 * 16 * 1024;

/// A server-side TLS connection over `io`.
///
/// One task reads and writes it (hyper's connection, then the WebSocket
/// session): a read may also write (the answer to a key update) with the
/// reader's waker, which is the writer's too.
pub(crate) struct TlsStream<IO: AsyncWrite + Unpin> {
    io: IO,
    conn: UnbufferedServerConnection,
    incoming: Vec<u8>,
    /// How much of `incoming` rustls has processed (what its `discard`
    /// counts add up to since the last [`TlsStream::compact`]).
    incoming_at: usize,
    plain: Vec<u8>,
    /// How much of `plain` the reader has taken.
    plain_at: usize,
    outgoing: Vec<u8>,
    /// How much of `outgoing` the socket has taken.
    outgoing_at: usize,
    /// The peer sent close_notify, or closed the socket between records:
    /// reads return end of file.
    read_closed: bool,
    /// close_notify is queued: nothing more is written.
    write_closed: bool,
    /// rustls refused what the peer sent (or the handshake); every later
    /// call fails too, as the connection's state is gone.
    failed: bool,
}

/// What [`TlsStream::drive`] does once rustls may send application data.
#[derive(Clone, Copy)]
enum Then<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where rustls stopped.
enum Settled {
    /// The handshake needs more bytes from the peer.
    Handshaking,
    /// Application data may be sent; no whole record is waiting.
    Open,
    /// Both sides sent close_notify.
    Closed,
}

/// Accepts a TLS connection on `io`: the handshake, and whatever records
/// rustls makes right after it (session tickets) handed to the socket.
/// The caller bounds its time.
pub(crate) async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        incoming_at: 0,
        plain: Vec::new(),
        plain_at: 0,
        outgoing: Vec::new(),
        outgoing_at: 0,
        read_closed: false,
        write_closed: false,
        failed: false,
    };
    loop {
        let settled = tls.drive(Then::Nothing);
        // What rustls made (the server's flight, tickets, or the alert
        // that ends a failed handshake) goes out before anything waits.
        poll_fn(|cx| tls.poll_send(cx)).await?;
        poll_fn(|cx| Pin::new(&mut tls.io).poll_flush(cx)).await?;
        match settled? {
            Settled::Open => return Ok(tls),
            Settled::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            Settled::Handshaking => {
                if !poll_fn(|cx| tls.poll_fill(cx)).await? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the socket during the TLS handshake",
                    ));
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> Drop for TlsStream<IO> {
    /// Records made and not yet handed to the socket (an alert, the last
    /// write of a connection dropped without a flush) are handed to it once,
    /// without waiting; the `StallGuard` below then writes them on its own
    /// drop.
    fn drop(&mut self) {
        let rest = &self.outgoing[self.outgoing_at..];
        crate::stall::write_without_waiting(&mut self.io, rest);
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Runs rustls over `incoming` until the handshake needs more bytes or
    /// application data may be sent, and then does `then`. Decrypted
    /// application data goes to `plain`, records rustls makes to
    /// `outgoing`.
    fn drive(&mut self, then: Then<'_>) -> io::Result<Settled> {
        if self.failed {
            return Err(failed_earlier());
        }
        let driven = self.run_until_settled(then);
        if driven.is_err() {
            self.failed = true;
        }
        self.compact();
        driven
    }

    fn run_until_settled(&mut self, then: Then<'_>) -> io::Result<Settled> {
        loop {
            // Giving rustls the buffer from `incoming_at` on is the discard
            // it asks for: what it processed is no longer in what it sees.
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[self.incoming_at..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.incoming_at += discard;
                    self.queue_alert();
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let settled = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                self.plain.extend_from_slice(record.payload);
                            }
                            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    append(&mut self.outgoing, 512, |out| {
                        data.encode(out).map_err(Room::from)
                    })?;
                    None
                }
                // The records stay in `outgoing` in order; they go out
                // before the next read waits (the handshake) or with the
                // next write or flush.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Settled::Handshaking),
                ConnectionState::PeerClosed => {
                    self.read_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    self.read_closed = true;
                    Some(Settled::Closed)
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    match then {
                        Then::Nothing => {}
                        Then::Encrypt(data) => {
                            let guess = data.len() + (data.len() / (16 * 1024) + 1) * 64;
                            append(&mut self.outgoing, guess, |out| {
                                traffic.encrypt(data, out).map_err(Room::from)
                            })?;
                        }
                        Then::CloseNotify => {
                            append(&mut self.outgoing, 64, |out| {
                                traffic.queue_close_notify(out).map_err(Room::from)
                            })?;
                        }
                    }
                    Some(Settled::Open)
                }
                // Early data is never enabled in the config, so rustls
                // never reports it; any state a later rustls adds is
                // refused rather than guessed at.
                _ => return Err(io::Error::other("unexpected TLS connection state")),
            };
            self.incoming_at += discard;
            if let Some(settled) = settled {
                return Ok(settled);
            }
        }
    }

    /// Drops what rustls has processed from the front of `incoming`, once
    /// it has stopped (one copy per read, not one per record). What is left
    /// (part of the next record) moves to an allocation of its own size, so
    /// a peer that ends each burst with a few bytes of a record does not
    /// keep the largest read's buffer alive.
    fn compact(&mut self) {
        if self.incoming_at == 0 {
            return;
        }
        self.incoming = match self.incoming.get(self.incoming_at..) {
            Some(rest) if !rest.is_empty() => rest.to_vec(),
            _ => Vec::new(),
        };
        self.incoming_at = 0;
    }

    /// Puts the alert rustls queued on an error (bad record, failed
    /// handshake) into `outgoing`. rustls is given the same buffer again
    /// (it keeps offsets into it: an empty one would be out of its
    /// bounds); with an alert queued that comes out first, and nothing else
    /// taken from the buffer matters any more.
    fn queue_alert(&mut self) {
        // Plaintext decrypted before the bad record comes first; it is
        // dropped (the connection is failing).
        for _ in 0..4 {
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[self.incoming_at..]);
            let discard = status.discard;
            match status.state {
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(Ok(_)) = traffic.next_record() {}
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    let _ = append(&mut self.outgoing, 64, |out| {
                        data.encode(out).map_err(Room::from)
                    });
                    return;
                }
                _ => return,
            }
            self.incoming_at += discard;
        }
    }

    /// Hands `outgoing` to the socket (not flushed), then gives it back.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_at < self.outgoing.len() {
            let rest = &self.outgoing[self.outgoing_at..];
            match ready!(Pin::new(&mut self.io).poll_write(cx, rest))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.outgoing_at += n,
            }
        }
        self.outgoing = Vec::new();
        self.outgoing_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has into `incoming`; false at end of file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.incoming.len() >= MAX_INCOMING {
            // rustls bounds a record and a joined handshake message, not
            // the raw bytes of a message split into tiny records (6 bytes
            // of header for each byte): this is the bound for those.
            self.failed = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TLS record or handshake message longer than allowed",
            )));
        }
        let mut storage = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut storage);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(false));
        }
        self.incoming.extend_from_slice(buf.filled());
        Poll::Ready(Ok(true))
    }
}

/// What every call on a connection that failed answers.
fn failed_earlier() -> io::Error {
    io::Error::other("the TLS connection failed earlier")
}

/// Why rustls did not write into the space it was given.
enum Room {
    /// It needs this many bytes.
    Needs(usize),
    Failed(io::Error),
}

impl From<EncodeError> for Room {
    fn from(e: EncodeError) -> Room {
        match e {
            EncodeError::InsufficientSize(size) => Room::Needs(size.required_size),
            other => Room::Failed(io::Error::other(other)),
        }
    }
}

impl From<EncryptError> for Room {
    fn from(e: EncryptError) -> Room {
        match e {
            EncryptError::InsufficientSize(size) => Room::Needs(size.required_size),
            other => Room::Failed(io::Error::other(other)),
        }
    }
}

/// Appends what `make` writes to `out`, giving it `guess` bytes of room
/// first and as much as it asks for after.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut make: impl FnMut(&mut [u8]) -> Result<usize, Room>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        let made = make(&mut out[start..]);
        match made {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Room::Needs(required)) if required > room => room = required,
            Err(Room::Needs(required)) => {
                out.truncate(start);
                return Err(io::Error::other(format!(
                    "rustls asked for {required} bytes of room and had {room}"
                )));
            }
            Err(Room::Failed(e)) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.failed {
                return Poll::Ready(Err(failed_earlier()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let settled = this.drive(Then::Nothing);
            // What rustls made while reading (the answer to a key update,
            // an alert) goes out now; a socket that cannot take it yet does
            // not hold up the read (the next write or flush retries).
            if this.outgoing_at < this.outgoing.len() {
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                let _ = Pin::new(&mut this.io).poll_flush(cx);
            }
            // Data authenticated before a bad record is read first; the
            // next read gets the error (`failed` is set).
            if settled.is_err() && this.plain_at < this.plain.len() {
                continue;
            }
            // Closed sets `read_closed`: the loop's top answers both.
            settled?;
            if this.plain_at < this.plain.len() || this.read_closed {
                continue;
            }
            // End of file without close_notify, between records, reads as
            // end of file (as a TCP close does): HTTP and WebSocket frames
            // carry their own lengths, so what it cut short is seen there.
            // In the middle of a record it is an error, now and after.
            if !ready!(this.poll_fill(cx))? {
                if !this.incoming.is_empty() {
                    this.failed = true;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the socket in the middle of a TLS record",
                    )));
                }
                this.read_closed = true;
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // The records of the last write go first: at most one write's
        // records wait here.
        ready!(this.poll_send(cx))?;
        let take = data.len().min(MAX_WRITE);
        match this.drive(Then::Encrypt(&data[..take]))? {
            Settled::Open => {}
            Settled::Handshaking => {
                return Poll::Ready(Err(io::Error::other("the TLS handshake is not complete")))
            }
            Settled::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        // Taken: the records go to the socket now if it takes them, else
        // with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        if this.failed {
            // What was sent was the alert; the caller learns the
            // connection is gone.
            return Poll::Ready(Err(failed_earlier()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            if !this.failed {
                this.drive(Then::CloseNotify)?;
            }
        }
        ready!(this.poll_send(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::client::TlsStream as ClientTls;

    use super::*;

    /// The server's config and the certificate a client pins.
    fn server_config(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, CertificateDer<'static>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(made.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        (Arc::new(config), cert)
    }

    /// The client's side of the wire: it can deliver its writes one byte
    /// at a time, flip a bit of the next write once armed, and add raw
    /// bytes to the end of the next write.
    struct Wire {
        inner: DuplexStream,
        drip: bool,
        tamper: Arc<AtomicBool>,
        append_next: Vec<u8>,
        /// Bytes read from the server so far.
        read: Arc<AtomicUsize>,
    }

    impl AsyncRead for Wire {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            self.read
                .fetch_add(buf.filled().len() - before, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let take = if self.drip {
                1.min(data.len())
            } else {
                data.len()
            };
            if !self.append_next.is_empty() {
                let both = [&data[..take], &self.append_next[..]].concat();
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &both))?;
                assert_eq!(n, both.len(), "the test's duplex takes small writes whole");
                self.append_next.clear();
                return Poll::Ready(Ok(take));
            }
            if self.tamper.swap(false, Ordering::SeqCst) {
                let mut bad = data[..take].to_vec();
                *bad.last_mut().unwrap() ^= 1;
                return Pin::new(&mut self.inner).poll_write(cx, &bad);
            }
            Pin::new(&mut self.inner).poll_write(cx, &data[..take])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    struct Pair {
        client: ClientTls<Wire>,
        server: TlsStream<DuplexStream>,
        tamper: Arc<AtomicBool>,
    }

    async fn connect_with(
        versions: &[&'static rustls::SupportedProtocolVersion],
        drip: bool,
    ) -> Pair {
        let (config, cert) = server_config(versions);
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(accept(server_end, config));
        // The client offers both versions; the server's config picks.
        let fingerprint = sotto_api::pin::fingerprint(cert.as_ref());
        let (client_config, _) = sotto_api::pin::pinned_config(Some(fingerprint)).unwrap();
        let tamper = Arc::new(AtomicBool::new(false));
        let wire = Wire {
            inner: client_end,
            drip,
            tamper: tamper.clone(),
            append_next: Vec::new(),
            read: Arc::new(AtomicUsize::new(0)),
        };
        let client = tokio_rustls::TlsConnector::from(Arc::new(client_config))
            .connect(ServerName::try_from("localhost").unwrap(), wire)
            .await
            .expect("the client completes the handshake");
        assert_eq!(
            client.get_ref().1.protocol_version(),
            Some(versions[0].version)
        );
        let server = server
            .await
            .unwrap()
            .expect("the server completes the handshake");
        Pair {
            client,
            server,
            tamper,
        }
    }

    async fn connect() -> Pair {
        connect_with(&[&rustls::version::TLS13], false).await
    }

    fn holds_no_buffers(tls: &TlsStream<DuplexStream>) -> bool {
        tls.incoming.capacity() == 0 && tls.plain.capacity() == 0 && tls.outgoing.capacity() == 0
    }

    /// Both directions, in both TLS versions the server allows, with
    /// writes larger than a record and writes of one byte; then
    /// close_notify each way is a clean end of file.
    #[tokio::test]
    async fn data_crosses_both_ways_and_close_notify_ends_it() {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let Pair {
                mut client,
                mut server,
                ..
            } = connect_with(versions, false).await;
            let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let sent = big.clone();
            let writer = tokio::spawn(async move {
                client.write_all(&sent).await.unwrap();
                for b in b"tail" {
                    client.write_all(&[*b]).await.unwrap();
                }
                client.flush().await.unwrap();
                client
            });
            let mut got = vec![0; big.len() + 4];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(&got[..big.len()], &big[..]);
            assert_eq!(&got[big.len()..], b"tail");
            let mut client = writer.await.unwrap();

            let echo = tokio::spawn(async move {
                server.write_all(&got).await.unwrap();
                server.shutdown().await.unwrap();
                server
            });
            let mut back = Vec::new();
            client
                .read_to_end(&mut back)
                .await
                .expect("close_notify is a clean end of file");
            assert_eq!(back.len(), big.len() + 4);
            assert_eq!(&back[..big.len()], &big[..]);
            let mut server = echo.await.unwrap();

            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
    }

    /// What the memory of an idle socket relies on: between exchanges the
    /// connection holds no buffer of its own.
    #[tokio::test]
    async fn an_idle_connection_holds_no_buffers() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect().await;
        assert!(holds_no_buffers(&server), "after the handshake");
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        assert!(holds_no_buffers(&server), "after a read and a write");
    }

    /// A handshake whose bytes arrive one at a time still completes (the
    /// partial records wait in `incoming`).
    #[tokio::test]
    async fn a_handshake_delivered_a_byte_at_a_time_completes() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect_with(&[&rustls::version::TLS13], true).await;
        client.write_all(b"slow").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"slow");
    }

    /// The peer asks for new keys (TLS 1.3 KeyUpdate, update requested):
    /// the server answers with its own KeyUpdate record ahead of its next
    /// data, and data keeps flowing both ways under the new keys.
    #[tokio::test]
    async fn a_key_update_from_the_peer_is_answered() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect().await;
        // One record of 6 bytes of data, for the size of the answer below
        // (after a first one, which the session tickets come with).
        let mut back = [0; 6];
        server.write_all(b"warmup").await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut back).await.unwrap();
        server.write_all(b"before").await.unwrap();
        server.flush().await.unwrap();
        let read = client.get_ref().0.read.clone();
        let start = read.load(Ordering::SeqCst);
        client.read_exact(&mut back).await.unwrap();
        let one_record = read.load(Ordering::SeqCst) - start;

        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"rekeyed").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 7];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"rekeyed");
        let start = read.load(Ordering::SeqCst);
        server.write_all(b"answer").await.unwrap();
        server.flush().await.unwrap();
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"answer");
        let answered = read.load(Ordering::SeqCst) - start;
        assert!(
            answered > one_record + 20,
            "no KeyUpdate record before the data: {answered} bytes against {one_record} for the data alone"
        );
    }

    /// Many records in one read (a burst of one-byte writes): every byte
    /// arrives, in order.
    #[tokio::test]
    async fn a_burst_of_tiny_records_arrives_whole_and_in_order() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect().await;
        let bytes: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            for b in sent {
                client.write_all(&[b]).await.unwrap();
            }
            client.flush().await.unwrap();
            client
        });
        let mut got = vec![0; bytes.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes);
        drop(writer.await.unwrap());
    }

    /// An attacker on the path flips a bit of a record: the read fails
    /// (nothing forged reaches the reader), every later call fails too, and
    /// the client is told why with an alert.
    #[tokio::test]
    async fn a_tampered_record_fails_the_read_and_is_answered_with_an_alert() {
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            tampered_record(versions).await;
        }
    }

    async fn tampered_record(versions: &[&'static rustls::SupportedProtocolVersion]) {
        let Pair {
            mut client,
            mut server,
            tamper,
        } = connect_with(versions, false).await;
        // Data before the bad record is read first, then the error.
        client.write_all(b"good").await.unwrap();
        client.flush().await.unwrap();
        tamper.store(true, Ordering::SeqCst);
        client.write_all(b"forged?").await.unwrap();
        client.flush().await.unwrap();
        let mut good = [0; 4];
        server.read_exact(&mut good).await.unwrap();
        assert_eq!(&good, b"good");
        let mut got = [0; 7];
        let err = server
            .read_exact(&mut got)
            .await
            .expect_err("a tampered record is refused");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::Other
            ),
            "{err}"
        );
        server.flush().await.unwrap_err();
        let err = server
            .write_all(b"more")
            .await
            .expect_err("the connection stays failed");
        assert!(err.to_string().contains("failed earlier"), "{err}");
        let mut back = [0; 1];
        let err = client
            .read_exact(&mut back)
            .await
            .expect_err("the client gets an alert");
        assert!(err.to_string().contains("alert"), "{err}");
    }

    /// What is not TLS, or TLS with a record longer than allowed, ends the
    /// handshake with an error (no panic, no waiting for more).
    #[tokio::test]
    async fn what_is_not_tls_fails_the_handshake() {
        let (config, _) = server_config(&[&rustls::version::TLS13]);
        for garbage in [
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            [&[0x16, 0x03, 0x01, 0xff, 0xff][..], &[0u8; 100][..]].concat(),
            vec![0x17; 40],
            // A handshake message longer than rustls allows (64 KiB),
            // refused on its header.
            vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x01, 0x00, 0x00],
            // Part of a handshake message, then another kind of record.
            vec![
                0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00, 0x15, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00,
            ],
        ] {
            let (mut peer, server_end) = tokio::io::duplex(64 * 1024);
            peer.write_all(&garbage).await.unwrap();
            let err = accept(server_end, config.clone())
                .await
                .err()
                .expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        }
        // The peer that hangs up in the middle of its hello.
        let (mut peer, server_end) = tokio::io::duplex(64 * 1024);
        peer.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01])
            .await
            .unwrap();
        drop(peer);
        let err = accept(server_end, config).await.err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    /// After the handshake too: part of a handshake message, then
    /// application data, is refused without a panic (the data before it
    /// is read first).
    #[tokio::test]
    async fn a_handshake_fragment_after_the_handshake_is_refused() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect().await;
        client.get_mut().0.append_next = vec![0x16, 0x03, 0x03, 0x00, 0x02, 0x04, 0x00];
        client.write_all(b"x").await.unwrap();
        client.flush().await.unwrap();
        client.write_all(b"y").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 1];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
        let err = server.read_exact(&mut got).await.expect_err("refused");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::Other
            ),
            "{err}"
        );
    }

    /// A peer that ends a burst with the first bytes of the next record
    /// leaves only those bytes held, not the read's buffer.
    #[tokio::test]
    async fn a_partial_record_left_over_holds_only_its_own_bytes() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect().await;
        client.get_mut().0.append_next = vec![0x17, 0x03];
        client.write_all(b"x").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 1];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
        assert_eq!(server.incoming, [0x17, 0x03]);
        assert_eq!(server.incoming.capacity(), 2);
    }

    /// The socket closed in the middle of a record is an error, and stays
    /// one (not a clean end of file on the next read).
    #[tokio::test]
    async fn a_close_in_the_middle_of_a_record_is_an_error() {
        let Pair {
            mut client,
            mut server,
            ..
        } = connect().await;
        let wire = &mut client.get_mut().0.inner;
        wire.write_all(&[0x17, 0x03, 0x03, 0x00, 0x40, 1, 2, 3])
            .await
            .unwrap();
        wire.shutdown().await.unwrap();
        let mut got = [0; 1];
        for _ in 0..2 {
            let err = server.read(&mut got).await.expect_err("cut short");
            assert!(
                matches!(
                    err.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
                ),
                "{err}"
            );
        }
    }

    /// A peer that stops reading: writes wait once one write's records
    /// are held, so what the connection holds stays bounded.
    #[tokio::test]
    async fn a_peer_that_stops_reading_holds_at_most_one_write() {
        let Pair {
            client, mut server, ..
        } = connect().await;
        let chunk = vec![7u8; 1 << 20];
        let wrote =
            tokio::time::timeout(Duration::from_millis(300), server.write_all(&chunk)).await;
        assert!(wrote.is_err(), "the write waits for the peer");
        assert!(
            server.outgoing.len() <= MAX_WRITE + 1024,
            "{}",
            server.outgoing.len()
        );
        drop(client);
    }
}
