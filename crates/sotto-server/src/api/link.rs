//! Device linking. The new device posts its keys and waits
//! (`POST /v1/link`, polls `GET /v1/link/{id}/status`); an existing device
//! of the user reads the request (`GET /v1/link/{id}`) and approves it with
//! a certificate signed by the user key and an approval sealed under the
//! link code's secret (`POST /v1/link/{id}/approve`), which registers the
//! device and its prekeys in one transaction. The server never sees the
//! code's secret: it cannot check the request's proof nor open or forge
//! the approval; the devices do (docs/protocol.md, "Linking a device").
//! Requests are rate-limited: creation per client address (no account
//! yet), reading and approving per device (link ids must not be found by
//! trying), status polls per address.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use rand_core::{OsRng, RngCore};
use sotto_api::{b64, decode, LinkCreated, LinkRequest, LinkStatus};

use super::{empty, register::new_device, ApiError};
use crate::auth::{Caller, Signed};
use crate::rate::ClientAddr;
use crate::state::{now_ms, AppState};

/// Link ids are short enough to type: 10 characters, 50 bits, from an
/// alphabet without look-alikes (and without '-', which the client uses to
/// append a check of the device keys).
fn new_link_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 10];
    OsRng.fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[(*b & 31) as usize] as char)
        .collect()
}

fn check_link_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::not_found("unknown or expired link"));
    }
    Ok(())
}

pub(super) async fn create(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    signed: Signed,
) -> Result<Json<LinkCreated>, ApiError> {
    state.rate(|l| l.account(addr))?;
    let link = decode::link(&signed.body)?;
    let device = link.device;
    if device != signed.device {
        return Err(ApiError::unauthorized(
            "the request is not signed by the new device",
        ));
    }
    decode::link_pool(&link)?;
    let body = signed.body.to_vec();
    let link_id = new_link_id();
    let id = link_id.clone();
    state
        .db(move |s| s.create_link(&id, &device, body, now_ms()))
        .await?;
    Ok(Json(LinkCreated { link_id }))
}

pub(super) async fn read(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
    caller: Caller,
) -> Result<Json<LinkRequest>, ApiError> {
    state.rate(|l| l.link_read(caller.device.device))?;
    check_link_id(&link_id)?;
    let link = state.db(move |s| s.link(&link_id, now_ms())).await?;
    let link = link
        .filter(|l| l.approved.is_none())
        .ok_or_else(|| ApiError::not_found("unknown or expired link"))?;
    Ok(Json(decode::link(&link.request)?.request))
}

pub(super) async fn approve(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.rate(|l| l.link_read(caller.device.device))?;
    check_link_id(&link_id)?;
    let decode::Approve {
        cert,
        cert_bytes,
        approval,
    } = decode::link_approve(&caller.body)?;
    if cert.user != caller.device.user {
        return Err(ApiError::forbidden(
            "the certificate is not signed by the approving device's user",
        ));
    }
    let id = link_id.clone();
    let link = state
        .db(move |s| s.link(&id, now_ms()))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown or expired link"))?;
    let waiting = decode::link(&link.request)?;
    if cert.device != waiting.device || cert.dh != waiting.dh {
        return Err(ApiError::bad_request(
            "the certificate is not for the waiting device's keys",
        ));
    }
    let new = new_device(&cert, cert_bytes, decode::link_pool(&waiting)?);
    let user = caller.device.user;
    state
        .db(move |s| s.approve_link(&link_id, &user, new, approval, now_ms()))
        .await?;
    Ok(empty())
}

pub(super) async fn status(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    Path(link_id): Path<String>,
) -> Result<Json<LinkStatus>, ApiError> {
    state.rate(|l| l.link_poll(addr))?;
    check_link_id(&link_id)?;
    let link = state
        .db(move |s| s.link(&link_id, now_ms()))
        .await?
        .ok_or_else(|| ApiError::not_found("unknown or expired link"))?;
    Ok(Json(match link.approved {
        None => LinkStatus {
            approved: false,
            cert: None,
            username_hash: None,
            approval: None,
        },
        Some(a) => LinkStatus {
            approved: true,
            cert: Some(b64::encode(&a.cert)),
            username_hash: Some(hex::encode(a.username_hash)),
            approval: Some(b64::encode(&a.approval)),
        },
    }))
}
