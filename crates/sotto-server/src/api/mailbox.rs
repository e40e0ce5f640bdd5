//! The caller's mailbox: fetch pending items (`GET /v1/mailbox`),
//! acknowledge them (`POST /v1/mailbox/ack`), and fetch a retained datagram
//! again by id (`GET /v1/datagrams/{id}`, for history recovery).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use sotto_api::{b64, decode, MailboxBatch, MailboxItem};

use super::{empty, ApiError};
use crate::auth::Caller;
use crate::state::{answer, now_ms, AppState, Pending};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;
/// A batch stops after this many bytes of datagrams (at least one item).
const MAX_BATCH_BYTES: usize = 8 << 20;

#[derive(Deserialize)]
struct FetchQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
}

pub(super) async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MailboxBatch>, ApiError> {
    let Query(q) = Query::<FetchQuery>::try_from_uri(&caller.uri)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let device = caller.device.device;
    let (items, more) = state
        .db(move |s| s.fetch(&device, q.after, limit, MAX_BATCH_BYTES))
        .await?;
    let items = items
        .into_iter()
        .map(|e| MailboxItem {
            seq: e.seq,
            datagram: b64::encode(&e.datagram),
            received_at: e.received_at,
        })
        .collect();
    Ok(Json(MailboxBatch { items, more }))
}

/// Hands an acknowledgement to the store (also used by the WebSocket,
/// which does not wait for it before pushing on); the answer comes once it
/// is committed.
pub(crate) fn submit_ack(
    state: &AppState,
    device: sotto_proto::DeviceId,
    seqs: Vec<u64>,
) -> Pending<u32> {
    let retention = state.retention_ms;
    let acks = state.metrics.acks.clone();
    state.submit(move |s, reply| {
        s.ack_with(
            &device,
            &seqs,
            now_ms(),
            retention,
            Box::new(move |answer| {
                if let Ok(n) = &answer {
                    acks.inc_by(u64::from(*n));
                }
                reply(answer)
            }),
        )
    })
}

pub(super) async fn ack(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let seqs = decode::ack(&caller.body)?;
    answer(submit_ack(&state, caller.device.device, seqs)).await?;
    Ok(empty())
}

pub(super) async fn datagram(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = sotto_api::hex32(&id)
        .ok_or_else(|| ApiError::bad_request("datagram id must be 64 hex characters"))?;
    let device = caller.device.device;
    let bytes = state
        .db(move |s| s.datagram_for(&device, &id))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "no such datagram for this device (never addressed to a device of its user, or expired)",
            )
        })?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .expect("static headers are valid"))
}
