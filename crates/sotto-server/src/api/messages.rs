//! `POST /v1/messages`: the raw datagram. The server reads only what it
//! needs to route it (sender certificate, recipient device ids; no
//! cryptography), stores it durably in every recipient mailbox, answers,
//! and then pushes it to the recipients that are connected.

use axum::extract::State;
use axum::Json;
use sotto_api::{b64, MailboxItem, Push, SendResponse};
use sotto_proto::{Datagram, DeviceId};

use super::ApiError;
use crate::auth::Caller;
use crate::state::{now_ms, AppState};

pub(super) async fn send(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SendResponse>, ApiError> {
    let body = caller.body;
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
    if sender.device != caller.device.device {
        return Err(ApiError::forbidden(
            "the datagram's sender is not the calling device",
        ));
    }
    if sender.encode() != caller.device.cert {
        return Err(ApiError::forbidden(
            "the datagram carries a certificate other than the registered one",
        ));
    }
    recipients.sort_unstable();
    recipients.dedup();
    let delivered_to = recipients.len() as u32;
    let datagram = body.to_vec();
    let device = sender.device;
    let enqueued = state
        .db(move |s| s.enqueue(&device, &recipients, datagram, now_ms()))
        .await?;
    // Durable: now push. Encode the datagram once for every connected
    // recipient (only if one is connected).
    let mut encoded: Option<String> = None;
    for d in &enqueued.deliveries {
        state.hub.push(&d.device, || {
            let datagram = encoded.get_or_insert_with(|| b64::encode(&body)).clone();
            Push::Message(MailboxItem {
                seq: d.seq,
                datagram,
                received_at: enqueued.received_at,
            })
        });
    }
    Ok(Json(SendResponse {
        datagram_id: hex::encode(enqueued.datagram_id),
        delivered_to,
    }))
}
