//! `GET /v1/ws`: push to a connected device, and sends from it. The
//! upgrade request carries the usual signature headers (single-use, as a
//! state-changing request: the socket can acknowledge and send). The server
//! sends `Push` JSON text frames; the device may send `Ack` text frames and
//! binary send frames ([`sotto_api::frame`]), each answered by a
//! `send_result` frame once the datagram is committed (or refused), in any
//! order. Anything else (bad JSON, an unknown or short binary frame,
//! oversized frames) closes that socket only. On connect the device fetches
//! what is pending over HTTP; push covers what arrives afterwards. What a
//! socket may hold is bounded (`Limits`: sockets in all and per device,
//! queued bytes per socket, the write timeout of every connection; sends
//! in flight by count and bytes, below).
//!
//! A send frame is checked and stored as `POST /v1/messages` is (the same
//! [`super::messages::store`]), with the socket's device as the caller:
//! the device must still be registered (read per send, through the device
//! cache), and the datagram must name it, with its registered certificate,
//! as sender. Where the HTTP route makes each signed request single-use,
//! the socket makes each `req` single-use: it must be greater than every
//! `req` before it on the socket, so a frame replayed on the socket is
//! refused (`replayed`) without a store write and with one `u64` of state.

use axum::body::Bytes;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use sotto_api::decode::{self, BodyError};
use sotto_api::frame::{self, DeviceFrame, FrameError};
use sotto_api::{codes, ErrorBody, Push, SendResponse, SendResult};
use sotto_proto::DeviceId;
use tokio::sync::OwnedSemaphorePermit;

use super::mailbox::submit_ack;
use super::messages::store;
use super::ApiError;
use crate::auth::{registered_device, Caller};
use crate::hub::Beat;
use crate::state::{AppState, Pending};

/// Largest WebSocket frame a device may send, and largest text message (an
/// `Ack` of many sequence numbers). A binary send message may be as large
/// as a datagram (`Limits::max_datagram`) plus [`frame::HEADER`], split
/// into frames of at most this (RFC 6455 continuation frames). The frame
/// cap matters because tungstenite reserves room for a whole frame as soon
/// as its 14-byte header arrives: with frames as large as a datagram, a
/// stranger's header alone would make every socket reserve megabytes.
const MAX_FRAME: usize = 256 * 1024;
/// Sends taken from one socket and not yet answered. Past this many the
/// session stops reading the socket until one is answered (TCP then slows
/// the device down). 64 is what keeps the writer's group commits full from
/// a few busy devices (a commit takes a few ms; 4 sockets x 64 is more
/// than a batch), while a device holds at most 64 store jobs and
/// spawned tasks, as many as 64 concurrent HTTP sends would.
const SENDS_IN_FLIGHT: usize = 64;
/// Frame bytes of the sends in flight on one socket: past this the session
/// stops reading too (it always takes one send, so a socket holds at most
/// this plus one largest frame).
const SEND_BYTES_IN_FLIGHT: usize = 4 << 20;
/// Acks handed to the store and not yet committed, per connection: pushes
/// go on while they commit (they share the writer's batches); at this
/// many, the session stops reading the socket until one commits (sends
/// and pushes go on meanwhile).
const ACKS_IN_FLIGHT: usize = 64;
/// Bytes of outgoing frames buffered before a write reaches the socket: 0,
/// each frame goes to TLS as it is fed (and the TLS records of a burst are
/// gathered into one write below TLS, by [`crate::stall::StallGuard`],
/// whose buffer is given back at each flush). A 16 KiB buffer (one TLS write per
/// burst of pushes) was measured on the relay (docs/PERFORMANCE.md, "Server
/// CPU per message") with no gain beyond noise, and tungstenite keeps its
/// write buffer's capacity, so every socket that once had a burst would
/// hold 16 KiB more while idle (the idle-memory goal is 10 kB a socket).
const WRITE_BUFFER: usize = 0;
/// Push frames fed before one flush.
const BURST_BYTES: usize = 16 * 1024;
/// Most outgoing bytes buffered for a connection whose peer does not read.
const MAX_WRITE_BUFFER: usize = 1 << 20;
/// What tungstenite allocates to read into, and reads at most at a time:
/// an `Ack` of a few sequence numbers or a pong fits. A longer frame gets
/// room for all of it once its header is read (up to the frame limit
/// above, which stays the limit), but is still read 256 bytes per read
/// call (tungstenite's `in_buf_max_read`): a 64 KiB send frame is some
/// 256 reads out of TLS's plaintext buffer (copies and polls, mostly not
/// syscalls, as rustls holds whole records). The price is paid for the
/// memory an idle socket holds (1 KiB before: 0.75 kB a socket, against
/// a goal of 10 kB). tungstenite's default is 128 KiB.
const READ_BUFFER: usize = 256;

pub(super) async fn upgrade(
    State(state): State<AppState>,
    upgrade: WebSocketUpgrade,
    caller: Caller,
) -> Response {
    let device = caller.device.device;
    let max_message = MAX_FRAME.max(state.limits.max_datagram.saturating_add(frame::HEADER));
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
        .max_message_size(max_message)
        .max_frame_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
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
    mut socket: WebSocket,
    slot: OwnedSemaphorePermit,
) {
    // What an idle socket holds is kept small (docs/PERFORMANCE.md, "Memory
    // per idle connected device"): the socket is not split (one task reads
    // and writes it), the ping timer and the shutdown signal are the hub's
    // `Beat` (one timer for all sockets, a watch per ping group), and the
    // sets of sends and acks in flight exist only while the socket sends
    // or acks.
    let _open = crate::metrics::Open::new(&state.metrics.sockets);
    let (id, mut pushes) = state.hub.connect(device);
    let mut beats = state.hub.beats(id);
    let mut acks: Option<FuturesUnordered<Pending<u32>>> = None;
    let mut sends = Sends::default();
    // Pings sent since the peer last sent a frame (of any kind).
    let mut unanswered = 0u8;
    // A device removed between the upgrade's authentication and `connect`
    // was missed by the removal's `disconnect_all`: look again now that
    // the hub knows the socket.
    let removed = match registered_device(&state, device).await {
        Ok(_) => None,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            Some((close_code::POLICY, "device not registered"))
        }
        Err(_) => Some((close_code::ERROR, "try again later")),
    };
    // Why the session ends: the close frame to send, if any.
    let shut = *beats.borrow() == Beat::Close;
    let end = match (shut, removed) {
        (true, _) => Some((close_code::AWAY, "server shutting down")),
        (_, Some(removed)) => Some(removed),
        _ => loop {
            // Reads stop while the sends or the acks of this socket are at
            // their bounds (TCP then slows the device down); what is in
            // flight is driven on meanwhile, pushes still go out.
            let reading = sends.has_room() && acks.as_ref().map_or(0, |a| a.len()) < ACKS_IN_FLIGHT;
            tokio::select! {
                Some(sent) = next_of(&mut sends.running), if sends.in_flight() > 0 => {
                    // A group commit answers many sends at once: write every
                    // answer that is ready, then flush once.
                    let mut next = Some(sent);
                    let mut failed = false;
                    while let Some((req, len, result)) = next.take() {
                        sends.bytes -= len;
                        if socket.feed(Message::Text(result_frame(req, result).into())).await.is_err() {
                            failed = true;
                            break;
                        }
                        next = next_of(&mut sends.running).now_or_never().flatten();
                    }
                    if failed || socket.flush().await.is_err() {
                        break None;
                    }
                }
                // A refused or failed ack closes the connection, as before.
                Some(done) = next_of(&mut acks), if acks.as_ref().is_some_and(|a| !a.is_empty()) => {
                    if !matches!(done, Ok(Ok(_))) {
                        break Some((close_code::POLICY, "ack refused"));
                    }
                }
                push = pushes.recv() => match push {
                    // Every frame queued by now goes out in one flush (one TLS
                    // write instead of one per frame under load).
                    Some(frame) => {
                        if write_burst(&mut socket, frame, &mut pushes).await.is_err() {
                            break None;
                        }
                    }
                    // The hub dropped us: we fell too far behind.
                    None => break Some((close_code::AGAIN, "too slow; reconnect and fetch")),
                },
                frame = socket.recv(), if reading => {
                    if matches!(frame, Some(Ok(_))) {
                        unanswered = 0;
                    }
                    match frame {
                        // The socket's limit is a datagram's; text stays small.
                        Some(Ok(Message::Text(text))) if text.len() > MAX_FRAME => {
                            break Some((close_code::SIZE, "frame too large"));
                        }
                        Some(Ok(Message::Text(text))) => match decode::ack(text.as_bytes()) {
                            // Past `ACKS_IN_FLIGHT` reads stop until one commits.
                            Ok(seqs) => acks
                                .get_or_insert_with(FuturesUnordered::new)
                                .push(submit_ack(&state, device, seqs)),
                            Err(BodyError::Json(_)) => {
                                break Some((close_code::INVALID, "expected an Ack JSON frame"));
                            }
                            Err(_) => break Some((close_code::POLICY, "ack refused")),
                        },
                        Some(Ok(Message::Binary(bytes))) => match sends.take(&state, device, bytes) {
                            Ok(None) => {}
                            Ok(Some(refused)) => {
                                if socket.send(Message::Text(refused.into())).await.is_err() {
                                    break None;
                                }
                            }
                            Err(e) => {
                                let code = match e {
                                    FrameError::UnknownType(_) => close_code::UNSUPPORTED,
                                    FrameError::Short(_) => close_code::INVALID,
                                };
                                tracing::debug!(device = %hex::encode(device.0), error = %e, "bad send frame");
                                break Some((code, "expected a send frame (see docs/api.md)"));
                            }
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Err(e)) => {
                            break match read_error(e) {
                                ReadError::TooLarge => Some((close_code::SIZE, "frame too large")),
                                ReadError::NotUtf8 => Some((close_code::INVALID, "text frame not UTF-8")),
                                ReadError::Broken => None,
                            };
                        }
                        Some(Ok(Message::Close(_))) | None => break None,
                    }
                }
                // A dropped sender (the hub is gone) is a close too.
                changed = beats.changed() => match changed.map(|_| *beats.borrow_and_update()) {
                    // This socket's group's ping round.
                    Ok(Beat::Ping(_)) => {
                        // Idle since the last ping: give the sets back.
                        if sends.running.as_ref().is_some_and(|r| r.is_empty()) {
                            sends.running = None;
                        }
                        if acks.as_ref().is_some_and(|a| a.is_empty()) {
                            acks = None;
                        }
                        // Silent through two pings while we were reading:
                        // the peer is gone (or will not answer). While reads
                        // are stopped its pong may be waiting unread.
                        if reading {
                            if unanswered >= 2 {
                                tracing::debug!(device = %hex::encode(device.0), "no answer to two pings");
                                break Some((close_code::AWAY, "no answer to pings"));
                            }
                            unanswered += 1;
                        }
                        if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                            break None;
                        }
                    }
                    Ok(Beat::Close) | Err(_) => break Some((close_code::AWAY, "server shutting down")),
                },
            }
        },
    };
    state.hub.disconnect(&device, id);
    // Sends still in flight are committed or about to be: their pushes
    // must still go out (as the HTTP route's own task does for a caller
    // that hangs up), only their answers have nowhere to go. They go on at
    // once (not after the close frame, which may wait for the write
    // timeout), and keep the socket's slot until they end, so that the
    // server's socket bound also bounds this detached work.
    if let Some(running) = sends.running.take().filter(|r| !r.is_empty()) {
        tokio::spawn(async move {
            running.for_each(|_| async {}).await;
            drop(slot);
        });
    }
    if let Some((code, reason)) = end {
        close(&mut socket, code, reason).await;
    }
}

/// The next output of a set that may not exist yet (`None` then, as for an
/// empty set).
async fn next_of<F: std::future::Future>(
    set: &mut Option<FuturesUnordered<F>>,
) -> Option<F::Output> {
    match set {
        Some(set) => set.next().await,
        None => None,
    }
}

/// Writes `first` and every push frame queued behind it (up to
/// [`BURST_BYTES`]), then flushes once.
async fn write_burst(
    sink: &mut (impl SinkExt<Message> + Unpin),
    first: String,
    pushes: &mut crate::hub::Pushes,
) -> Result<(), ()> {
    let mut bytes = first.len();
    sink.feed(Message::Text(first.into())).await.map_err(drop)?;
    while bytes < BURST_BYTES {
        let Some(frame) = pushes.try_recv() else {
            break;
        };
        bytes += frame.len();
        sink.feed(Message::Text(frame.into())).await.map_err(drop)?;
    }
    sink.flush().await.map_err(drop)
}

/// What a sent datagram comes to: its `req`, its frame's length, and the
/// answer.
type Sent = (u64, usize, Result<SendResponse, ApiError>);

/// The sends of one socket that are not answered yet.
#[derive(Default)]
struct Sends {
    /// Created on the first send, given back at a ping round when empty.
    running: Option<FuturesUnordered<BoxFuture<'static, Sent>>>,
    /// Frame bytes of `running`.
    bytes: usize,
    /// The greatest `req` taken on this socket.
    last_req: Option<u64>,
}

impl Sends {
    fn in_flight(&self) -> usize {
        self.running.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn has_room(&self) -> bool {
        self.in_flight() < SENDS_IN_FLIGHT && self.bytes < SEND_BYTES_IN_FLIGHT
    }

    /// Starts the send in a binary frame; a frame to answer at once when
    /// it is refused before reaching the store (a `req` used before), an
    /// error when the frame is not a send frame.
    fn take(
        &mut self,
        state: &AppState,
        device: DeviceId,
        bytes: Bytes,
    ) -> Result<Option<String>, FrameError> {
        let DeviceFrame::Send { req, .. } = frame::decode(&bytes)?;
        if self.last_req.is_some_and(|last| req <= last) {
            let replayed = ApiError::new(
                StatusCode::CONFLICT,
                codes::REPLAYED,
                format!("req {req} is not greater than every req before it on this socket"),
            );
            return Ok(Some(result_frame(req, Err(replayed))));
        }
        self.last_req = Some(req);
        let len = bytes.len();
        // As the HTTP route's body limit (the frame limit may be larger:
        // text frames may be 256 KiB).
        if len - frame::HEADER > state.limits.max_datagram {
            let too_large = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::TOO_LARGE,
                "the datagram is larger than the server accepts",
            );
            return Ok(Some(result_frame(req, Err(too_large))));
        }
        let body = bytes.slice(frame::HEADER..);
        let state = state.clone();
        self.bytes += len;
        self.running.get_or_insert_with(FuturesUnordered::new).push(
            async move {
                // Removed since the upgrade: refused like its HTTP request.
                // Stored and pushed in this future, not a task of its own
                // (as the HTTP route's): the session drives what is left
                // of it to the end if the socket goes.
                let result = match registered_device(&state, device).await {
                    Ok(record) => match store(state.clone(), &record, body, None) {
                        Ok(stored) => stored.await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                if result.is_ok() {
                    state.metrics.ws_sends.inc();
                }
                (req, len, result)
            }
            .boxed(),
        );
        Ok(None)
    }
}

/// The `send_result` frame for `req`.
fn result_frame(req: u64, result: Result<SendResponse, ApiError>) -> String {
    let (ok, error) = match result {
        Ok(ok) => (Some(ok), None),
        Err(e) => (None, Some(ErrorBody::from(e))),
    };
    serde_json::to_string(&Push::SendResult(SendResult { req, ok, error }))
        .unwrap_or_else(|_| String::from("{}"))
}

/// Why reading a socket failed, for its close code. The server's own
/// `tungstenite` must be the version axum uses (both pinned in Cargo.toml),
/// or nothing downcasts and every failure reads as `Broken`.
enum ReadError {
    /// Over the frame or message limit: 1009.
    TooLarge,
    /// A text frame that is not UTF-8: 1007.
    NotUtf8,
    /// The connection broke: no close frame to send.
    Broken,
}

fn read_error(e: axum::Error) -> ReadError {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => ReadError::TooLarge,
        Some(tungstenite::Error::Utf8(_)) => ReadError::NotUtf8,
        _ => ReadError::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> BoxFuture<'static, Sent> {
        futures_util::future::pending().boxed()
    }

    #[tokio::test]
    async fn a_burst_of_queued_pushes_is_written_in_order_up_to_its_byte_budget() {
        let limits = crate::limits::Limits::default();
        let hub = crate::hub::Hub::new(&limits, Default::default());
        let dev = DeviceId([5; 32]);
        let (_, mut pushes) = hub.connect(dev);
        let big = "x".repeat(BURST_BYTES / 2);
        for f in ["b", &big, &big, "after"] {
            hub.deliver(&dev, f.to_string());
        }
        let mut sink: Vec<Message> = Vec::new();
        write_burst(&mut sink, "a".into(), &mut pushes)
            .await
            .unwrap();
        let texts = |sink: &Vec<Message>| -> Vec<String> {
            sink.iter()
                .map(|m| match m {
                    Message::Text(t) => t.to_string(),
                    other => panic!("not text: {other:?}"),
                })
                .collect()
        };
        // Past the budget the burst ends; the rest waits for the next one.
        assert_eq!(texts(&sink), ["a", "b", big.as_str(), big.as_str()]);
        sink.clear();
        let first = pushes.try_recv().unwrap();
        write_burst(&mut sink, first, &mut pushes).await.unwrap();
        assert_eq!(texts(&sink), ["after"]);
    }

    #[test]
    fn a_socket_stops_taking_sends_at_its_count_and_byte_budgets() {
        let mut sends = Sends::default();
        for _ in 0..SENDS_IN_FLIGHT {
            assert!(sends.has_room());
            sends
                .running
                .get_or_insert_with(FuturesUnordered::new)
                .push(held());
        }
        assert!(!sends.has_room(), "more than {SENDS_IN_FLIGHT} in flight");
        let mut sends = Sends {
            running: Some([held()].into_iter().collect()),
            bytes: SEND_BYTES_IN_FLIGHT,
            ..Sends::default()
        };
        assert!(!sends.has_room(), "more than the byte budget in flight");
        sends.bytes -= 1;
        assert!(sends.has_room());
    }
}
