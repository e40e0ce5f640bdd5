//! `POST /v1/messages`: the raw datagram. The server reads only what it
//! needs to route it (sender certificate, recipient device ids; no
//! cryptography), stores it durably in every recipient mailbox (within the
//! mailbox quotas; up to `Limits::max_datagram` bytes), answers, and then
//! pushes it to the recipients that are connected: inline when small, as a
//! notice (id and size) the device fetches when large. A send frame on
//! the device's WebSocket ([`super::ws`]) goes through the same [`accept`].

use std::future::Future;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use sotto_api::{b64, Notice, Push, SendResponse};
use sotto_proto::{Datagram, DeviceId};
use sotto_store::server::{DeviceRecord, RequestId};

use super::ApiError;
use crate::auth::Caller;
use crate::state::{answer, now_ms, AppState};

pub(super) async fn send(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SendResponse>, ApiError> {
    Ok(Json(
        accept(state, &caller.device, caller.body, caller.once).await?,
    ))
}

/// Checks a datagram from `caller` (a registered device), stores it and
/// pushes it: what `POST /v1/messages` does. The answer comes once the
/// datagram is committed. `once` is the request id to remember in the same
/// transaction (the HTTP route's), if any.
pub(super) async fn accept(
    state: AppState,
    caller: &DeviceRecord,
    body: Bytes,
    once: Option<RequestId>,
) -> Result<SendResponse, ApiError> {
    // Store and push in a task of its own: if the sender hangs up while
    // waiting, the datagram is still committed, so it must still be pushed
    // (dropping this handler must not drop the push).
    tokio::spawn(store(state, caller, body, once)?)
        .await
        .map_err(|_| ApiError::internal("send task failed"))?
}

/// Checks a datagram from `caller` and hands it to the store's writer at
/// once; the future answers once it is committed and pushed. Whoever holds
/// it must run it to the end even when nobody waits for the answer any
/// more: the push follows the commit ([`accept`] spawns it; a WebSocket
/// send frame ([`super::ws`]) is run by its session, which runs what is
/// left of its sends when the socket goes).
pub(super) fn store(
    state: AppState,
    caller: &DeviceRecord,
    body: Bytes,
    once: Option<RequestId>,
) -> Result<impl Future<Output = Result<SendResponse, ApiError>> + Send + 'static, ApiError> {
    let (sender, mut recipients) = {
        let dg = Datagram::decode(&body)
            .map_err(|e| ApiError::bad_request(format!("not a datagram: {e}")))?;
        (
            dg.sender,
            dg.recipients().copied().collect::<Vec<DeviceId>>(),
        )
    };
    // The datagram must come from the device that signed the request, with
    // the certificate registered for it: a device cannot send in another's
    // name, even though the server cannot check the datagram's inner
    // signature for it (recipients do).
    if sender.device != caller.device {
        return Err(ApiError::forbidden(
            "the datagram's sender is not the calling device",
        ));
    }
    if sender.encode() != caller.cert {
        return Err(ApiError::forbidden(
            "the datagram carries a certificate other than the registered one",
        ));
    }
    recipients.sort_unstable();
    recipients.dedup();
    // What the sender asked for, whatever blocks dropped: it is not told.
    let delivered_to = recipients.len() as u32;
    let datagram = body.to_vec();
    let device = sender.device;
    let quota = state.limits.quota();
    // The write goes to the store's writer at once; the future only
    // awaits its commit.
    let pending = state.submit(move |s, reply| {
        s.enqueue_with(
            &device,
            &recipients,
            datagram,
            now_ms(),
            &quota,
            once,
            reply,
        )
    });
    Ok(async move {
        let enqueued = answer(pending).await?;
        state.metrics.sends.inc();
        // Durable: now push, encoding the frame once, and only if a
        // recipient is connected. Pushes of concurrent sends may reach a
        // device out of sequence order; the mailbox fetch is ordered.
        let inline = body.len() <= state.hub.inline_bytes(state.limits.push_inline_bytes);
        let mut encoded: Option<String> = None;
        for d in &enqueued.deliveries {
            if !inline {
                state.hub.push(&d.device, || {
                    Push::Notice(Notice {
                        seq: d.seq,
                        datagram_id: hex::encode(enqueued.datagram_id),
                        size: body.len() as u64,
                        received_at: enqueued.received_at,
                    })
                });
                continue;
            }
            state.hub.push_frame(&d.device, || {
                let datagram = encoded.get_or_insert_with(|| b64::encode(&body));
                Some(message_frame(d.seq, datagram, enqueued.received_at))
            });
        }
        Ok(SendResponse {
            datagram_id: hex::encode(enqueued.datagram_id),
            delivered_to,
        })
    })
}

/// The JSON of `Push::Message` for a datagram already in base64, written
/// directly: base64 needs no escaping, and the datagram is copied once
/// (not cloned into a `MailboxItem`, then escaped and copied by serde).
fn message_frame(seq: u64, datagram_b64: &str, received_at: u64) -> String {
    use std::fmt::Write;
    let mut frame = String::with_capacity(datagram_b64.len() + 80);
    let _ = write!(frame, r#"{{"type":"message","seq":{seq},"datagram":""#);
    frame.push_str(datagram_b64);
    let _ = write!(frame, r#"","received_at":{received_at}}}"#);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_api::MailboxItem;

    #[test]
    fn a_message_frame_is_what_serde_writes_for_the_push() {
        for (seq, body, at) in [
            (0u64, &b""[..], 0u64),
            (7, b"\x00\xff/+=\"", u64::MAX),
            (u64::MAX, &[0xab; 300][..], 1_764_000_000_000),
        ] {
            let datagram = b64::encode(body);
            let item = MailboxItem {
                seq,
                datagram: datagram.clone(),
                received_at: at,
            };
            assert_eq!(
                message_frame(seq, &datagram, at),
                serde_json::to_string(&Push::Message(item)).unwrap()
            );
        }
    }
}
