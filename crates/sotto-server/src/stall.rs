//! A write timeout for a whole connection: [`StallGuard`] wraps the TCP
//! stream under TLS and fails a write that makes no progress for
//! [`crate::Limits::write_timeout`] (the peer stopped reading and the
//! kernel's buffers are full). Every layer above (TLS, HTTP responses,
//! WebSocket pushes and pings) then sees an error and drops the connection
//! with what it held. Reads are not timed here: an idle WebSocket is
//! normal, and HTTP reads have their own timeouts (headers in hyper,
//! bodies in the router).
//!
//! It also gathers what is written between two flushes into one write
//! ([`COALESCE`]): a burst of WebSocket frames (the answers to a group
//! commit's sends, queued pushes) is one TLS record each but one syscall and
//! one TCP segment for all, instead of one each. TLS (handshake, close),
//! hyper and the WebSocket all flush after what they write; the buffer is
//! given back at every flush, so an idle connection holds none. What is
//! written and never flushed (tokio-rustls writes the alert for a failed
//! handshake or a bad record and then only returns the error) is written
//! once more, without waiting, when the guard is dropped.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub(crate) struct StallGuard<S: AsyncWrite + Unpin> {
    inner: S,
    timeout: Duration,
    /// Running while a write is pending; reset by any progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
    /// Written, not yet handed to `inner` (empty, unallocated, after a
    /// flush).
    pending: Vec<u8>,
}

/// Most bytes gathered before they go out without waiting for a flush;
/// a write at least this large goes out directly.
const COALESCE: usize = 16 * 1024;

impl<S: AsyncWrite + Unpin> StallGuard<S> {
    pub fn new(inner: S, timeout: Duration) -> StallGuard<S> {
        StallGuard {
            inner,
            timeout,
            stalled_since: None,
            pending: Vec::new(),
        }
    }

    /// Called when a write is pending: arms the timer (once) and reports
    /// whether it ran out.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let sleep = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        sleep.as_mut().poll(cx).is_ready()
    }

    fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
            ready => {
                self.stalled_since = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for StallGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> StallGuard<S> {
    /// Hands everything gathered to `inner`, then gives the buffer back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let polled = Pin::new(&mut self.inner).poll_write(cx, &self.pending);
            match ready!(self.guard(cx, polled))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => drop(self.pending.drain(..n)),
            }
        }
        self.pending = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> Drop for StallGuard<S> {
    /// A last write of what was never flushed, if the socket takes it at
    /// once (a TLS alert is a few bytes: it does); never waits.
    fn drop(&mut self) {
        write_without_waiting(&mut self.inner, &self.pending);
    }
}

/// Writes as much of `bytes` as `io` takes at once, never waiting (for a
/// drop, where nothing can wait); how much it took.
pub(crate) fn write_without_waiting(io: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> usize {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut at = 0;
    while at < bytes.len() {
        match Pin::new(&mut *io).poll_write(&mut cx, &bytes[at..]) {
            Poll::Ready(Ok(n)) if n > 0 => at += n,
            _ => break,
        }
    }
    at
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() + buf.len() > COALESCE {
            ready!(self.poll_drain(cx))?;
            if buf.len() >= COALESCE {
                let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
                return self.guard(cx, polled);
            }
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.pending.len() + len > COALESCE {
            ready!(self.poll_drain(cx))?;
            if len >= COALESCE {
                let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
                return self.guard(cx, polled);
            }
        }
        for b in bufs {
            self.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_write_the_peer_never_reads_fails_after_the_timeout() {
        // A pipe with a tiny buffer whose other end is never read.
        let (a, _b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(200));
        let started = std::time::Instant::now();
        // Gathered until the flush, which cannot go out.
        guarded.write_all(&[0u8; 4096]).await.unwrap();
        let err = guarded.flush().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn what_was_never_flushed_goes_out_when_the_guard_is_dropped() {
        // As a TLS alert tokio-rustls writes before it returns an error.
        let (a, mut b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_secs(1));
        guarded.write_all(b"alert").await.unwrap();
        drop(guarded);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got)
            .await
            .unwrap();
        assert_eq!(got, b"alert");
    }

    /// Counts the writes that reach it.
    struct Counting {
        writes: Vec<usize>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_between_flushes_go_out_as_one_and_the_buffer_is_given_back() {
        let mut guarded = StallGuard::new(Counting { writes: Vec::new() }, Duration::from_secs(1));
        for _ in 0..10 {
            guarded.write_all(&[1u8; 100]).await.unwrap();
        }
        assert!(
            guarded.inner.writes.is_empty(),
            "nothing goes out before the flush"
        );
        guarded.flush().await.unwrap();
        assert_eq!(guarded.inner.writes, [1000]);
        assert_eq!(
            guarded.pending.capacity(),
            0,
            "an idle connection holds no buffer"
        );
        // Past the bound, what was gathered goes out first, and a large
        // write goes out directly.
        guarded.write_all(&[1u8; 100]).await.unwrap();
        guarded.write_all(&vec![2u8; COALESCE]).await.unwrap();
        assert_eq!(guarded.inner.writes, [1000, 100, COALESCE]);
        guarded.write_all(&[3u8; 10]).await.unwrap();
        guarded.shutdown().await.unwrap();
        assert_eq!(guarded.inner.writes, [1000, 100, COALESCE, 10]);
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(a, Duration::from_millis(300));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 2048 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut b, &mut buf)
                    .await
                    .unwrap();
            }
        });
        guarded.write_all(&[0u8; 2048]).await.unwrap();
        guarded.flush().await.unwrap();
        reader.await.unwrap();
    }
}
