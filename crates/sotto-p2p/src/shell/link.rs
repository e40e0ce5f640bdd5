//! One link: the `/sotto/p2p/2` stream to a peer, split into a reader that
//! cuts length-prefixed frames (refusing a length over [`MAX_FRAME`] before
//! it allocates, and a peer that stays silent mid-frame) and a writer fed
//! by a bounded queue.

use std::time::Duration;

use futures_util::io::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio::sync::mpsc;

use crate::wire::MAX_FRAME;

/// Frames queued for one peer before the link is considered stuck and the
/// peer is disconnected. A file sender keeps at most `file_window` bytes
/// (128 chunks by default) in flight, so only a peer that stops reading
/// fills it.
pub(crate) const SEND_QUEUE: usize = 1024;

/// A frame that started must finish within this time (a slow-loris peer
/// cannot hold a half-read frame forever).
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// What a link's reader reports to the shell's loop.
pub(crate) enum LinkMsg {
    Frame {
        peer: PeerId,
        link: u64,
        bytes: Vec<u8>,
    },
    Closed {
        peer: PeerId,
        link: u64,
    },
}

/// The shell's side of a link.
pub(crate) struct Link {
    pub id: u64,
    pub tx: mpsc::Sender<Vec<u8>>,
}

/// Starts the reader and writer tasks of a new link.
pub(crate) fn start(peer: PeerId, id: u64, stream: Stream, to_loop: mpsc::Sender<LinkMsg>) -> Link {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    let (mut reader, mut writer) = stream.split();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let mut ok = write_frame(&mut writer, &frame).await;
            // Batch what is already queued before one flush.
            while ok {
                match rx.try_recv() {
                    Ok(f) => ok = write_frame(&mut writer, &f).await,
                    Err(_) => break,
                }
            }
            if !ok || writer.flush().await.is_err() {
                break;
            }
        }
        let _ = writer.close().await;
    });
    tokio::spawn(async move {
        loop {
            let mut len = [0u8; 4];
            if reader.read_exact(&mut len).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes(len) as usize;
            if len > MAX_FRAME {
                tracing::info!(%peer, len, "frame over the limit; closing the link");
                break;
            }
            let mut bytes = vec![0u8; len];
            match tokio::time::timeout(FRAME_TIMEOUT, reader.read_exact(&mut bytes)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
            if to_loop
                .send(LinkMsg::Frame {
                    peer,
                    link: id,
                    bytes,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = to_loop.send(LinkMsg::Closed { peer, link: id }).await;
    });
    Link { id, tx }
}

async fn write_frame<W: futures_util::io::AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> bool {
    w.write_all(&(frame.len() as u32).to_be_bytes())
        .await
        .is_ok()
        && w.write_all(frame).await.is_ok()
}
