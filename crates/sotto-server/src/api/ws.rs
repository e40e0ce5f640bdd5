//! `GET /v1/ws`: push to a connected device. The upgrade request carries
//! the usual signature headers (single-use, as a state-changing request:
//! the socket can acknowledge). The server sends `Push` JSON text frames;
//! the device may send `Ack` text frames. Anything else (binary, bad JSON,
//! oversized frames) closes that socket only. On connect the device fetches
//! what is pending over HTTP; push covers what arrives afterwards. What a
//! socket may hold is bounded (`Limits`: sockets in all and per device,
//! queued bytes per socket, the write timeout of every connection).

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use sotto_api::codes;
use sotto_api::decode::{self, BodyError};
use sotto_proto::DeviceId;
use tokio::sync::OwnedSemaphorePermit;

use super::mailbox::submit_ack;
use super::ApiError;
use crate::auth::Caller;
use crate::state::{AppState, Pending};

/// Largest frame a device may send (an `Ack` of many sequence numbers).
const MAX_FRAME: usize = 256 * 1024;
/// Pings keep idle connections (and NAT mappings) alive and detect dead
/// peers.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Acks handed to the store and not yet committed, per connection: pushes
/// go on while they commit (they share the writer's batches); past this
/// many, the connection waits for the oldest.
const ACKS_IN_FLIGHT: usize = 64;
/// Bytes of outgoing frames buffered before a write reaches the socket.
/// Every push is flushed at once anyway; tungstenite's default (128 KiB)
/// only makes the buffer of a connection that ever had a burst stay large.
const WRITE_BUFFER: usize = 0;
/// Most outgoing bytes buffered for a connection whose peer does not read.
const MAX_WRITE_BUFFER: usize = 1 << 20;

pub(super) async fn upgrade(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    caller: Caller,
) -> Response {
    let device = caller.device.device;
    let Some(slot) = state.hub.socket_slot() else {
        tracing::warn!("WebSocket refused: the server holds its maximum of sockets");
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "the server holds as many push sockets as it allows; retry later or fetch over HTTP",
        );
        e.retry_after = Some(30);
        return e.into_response();
    };
    upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| session(state, device, socket, slot))
}

async fn close(sink: &mut (impl SinkExt<Message> + Unpin), code: u16, reason: &'static str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn session(
    state: AppState,
    device: DeviceId,
    socket: WebSocket,
    _slot: OwnedSemaphorePermit,
) {
    let _open = crate::metrics::Open::new(&state.metrics.sockets);
    let (id, mut pushes) = state.hub.connect(device);
    let (mut sink, mut stream) = socket.split();
    let mut shutdown = state.shutdown.clone();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut acks: FuturesUnordered<Pending<u32>> = FuturesUnordered::new();
    loop {
        tokio::select! {
            // A refused or failed ack closes the connection, as before.
            Some(done) = acks.next(), if !acks.is_empty() => {
                if !matches!(done, Ok(Ok(_))) {
                    close(&mut sink, close_code::POLICY, "ack refused").await;
                    break;
                }
            }
            push = pushes.recv() => match push {
                Some(frame) => {
                    if sink.send(Message::Text(frame)).await.is_err() {
                        break;
                    }
                }
                // The hub dropped us: we fell too far behind.
                None => {
                    close(&mut sink, close_code::AGAIN, "too slow; reconnect and fetch").await;
                    break;
                }
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => match decode::ack(text.as_bytes()) {
                    Ok(seqs) => {
                        acks.push(submit_ack(&state, device, seqs));
                        // Too many in flight: wait for the oldest.
                        let mut refused = false;
                        while acks.len() > ACKS_IN_FLIGHT {
                            if !matches!(acks.next().await, Some(Ok(Ok(_)))) {
                                refused = true;
                                break;
                            }
                        }
                        if refused {
                            close(&mut sink, close_code::POLICY, "ack refused").await;
                            break;
                        }
                    }
                    Err(BodyError::Json(_)) => {
                        close(&mut sink, close_code::INVALID, "expected an Ack JSON frame").await;
                        break;
                    }
                    Err(_) => {
                        close(&mut sink, close_code::POLICY, "ack refused").await;
                        break;
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    close(&mut sink, close_code::UNSUPPORTED, "binary frames are not accepted").await;
                    break;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new())).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => {
                close(&mut sink, close_code::AWAY, "server shutting down").await;
                break;
            }
        }
    }
    state.hub.disconnect(&device, id);
}
