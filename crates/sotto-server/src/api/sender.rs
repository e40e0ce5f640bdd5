//! The sender API (`Authorization: Bearer <api key>`): an organisation
//! sends a message to a phone number and reads its status. The key is
//! checked before the body is read: a call without a valid key is 401 and
//! leaves nothing behind (its body is never read, stored or logged).

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use sha2::{Digest, Sha256};
use sotto_api::phone::{SenderMessage, SenderMessageCreated, SenderMessageState};
use sotto_store::server::phone::SenderRecord;

use super::ApiError;
use crate::auth::read_body;
use crate::phone::deliver;
use crate::rate::ClientAddr;
use crate::state::AppState;

/// The sender an `Authorization: Bearer` key belongs to (not revoked).
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    addr: ClientAddr,
) -> Result<SenderRecord, ApiError> {
    state.rate(|l| l.sender_address(addr))?;
    let denied = || {
        ApiError::unauthorized("missing, unknown or revoked API key (Authorization: Bearer <key>)")
    };
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 128)
        .ok_or_else(denied)?;
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    let phone = state.phone.clone();
    let sender = phone
        .db(move |s| s.sender_by_key(&hash))
        .await?
        .ok_or_else(denied)?;
    state.rate(|l| l.sender_key(hash))?;
    Ok(sender)
}

/// `POST /v1/sender/messages`: 202 `{"id", "status": "held" | "sent"}`.
pub(super) async fn send(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    req: Request,
) -> Result<(StatusCode, Json<SenderMessageCreated>), ApiError> {
    let sender = authorize(&state, req.headers(), addr).await?;
    let body = read_body(req, &state).await?;
    let msg: SenderMessage = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let ttl = deliver::check(&msg)?;
    let phone = state.phone.clone();
    let created = deliver::send(&state, &phone, &sender, msg, ttl).await?;
    Ok((StatusCode::ACCEPTED, Json(created)))
}

/// `GET /v1/sender/messages/{id}`: a message of the calling sender.
pub(super) async fn status(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<SenderMessageState>, ApiError> {
    let sender = authorize(&state, &headers, addr).await?;
    if id.len() > 64 {
        return Err(ApiError::not_found("no such message"));
    }
    let sid = sender.id;
    let m = state
        .phone
        .db(move |s| s.message(sid, &id))
        .await?
        .ok_or_else(|| ApiError::not_found("no such message"))?;
    Ok(Json(SenderMessageState {
        id: m.id,
        status: m.status.as_str().to_string(),
        created_at: m.created_at,
        expires_at: m.expires_at,
        updated_at: m.updated_at,
    }))
}
