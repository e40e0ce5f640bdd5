//! Device linking. The new device posts its keys and waits
//! (`POST /v1/link`, polls `GET /v1/link/{id}/status`); an existing device
//! of the user reads the request (`GET /v1/link/{id}`) and approves it with
//! a certificate signed by the user key (`POST /v1/link/{id}/approve`),
//! which registers the device and its prekeys in one transaction.

use axum::extract::{Path, State};
use axum::Json;
use rand_core::{OsRng, RngCore};
use sotto_api::{b64, hex32, LinkApprove, LinkCreated, LinkRequest, LinkStatus};
use sotto_proto::DeviceId;
use sotto_store::server::NewDevice;

use super::{empty, json, prekeys::parse_pool, register::parse_cert, ApiError};
use crate::auth::{Caller, Signed};
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

fn parse_request(bytes: &[u8]) -> Result<(LinkRequest, DeviceId, [u8; 32]), ApiError> {
    let req: LinkRequest = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let device =
        DeviceId(hex32(&req.device).ok_or_else(|| ApiError::bad_request("device must be hex"))?);
    let dh = hex32(&req.dh).ok_or_else(|| ApiError::bad_request("dh must be hex"))?;
    Ok((req, device, dh))
}

pub(super) async fn create(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<LinkCreated>, ApiError> {
    let (req, device, _) = parse_request(&signed.body)?;
    if device != signed.device {
        return Err(ApiError::unauthorized(
            "the request is not signed by the new device",
        ));
    }
    parse_pool(&device, &req.prekeys, Some(&req.reserve))?;
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
    _caller: Caller,
) -> Result<Json<LinkRequest>, ApiError> {
    check_link_id(&link_id)?;
    let link = state.db(move |s| s.link(&link_id, now_ms())).await?;
    let link = link
        .filter(|l| l.approved.is_none())
        .ok_or_else(|| ApiError::not_found("unknown or expired link"))?;
    Ok(Json(parse_request(&link.request)?.0))
}

pub(super) async fn approve(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_link_id(&link_id)?;
    let approve: LinkApprove = json(&caller.body)?;
    let (cert, cert_bytes) = parse_cert(&approve.cert)?;
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
    let (req, device, dh) = parse_request(&link.request)?;
    if cert.device != device || cert.dh != dh {
        return Err(ApiError::bad_request(
            "the certificate is not for the waiting device's keys",
        ));
    }
    let (prekeys, reserve) = parse_pool(&device, &req.prekeys, Some(&req.reserve))?;
    let new = NewDevice {
        device,
        cert: cert_bytes,
        prekeys,
        reserve: reserve.unwrap_or_default(),
    };
    let user = caller.device.user;
    state
        .db(move |s| s.approve_link(&link_id, &user, new, now_ms()))
        .await?;
    Ok(empty())
}

pub(super) async fn status(
    State(state): State<AppState>,
    Path(link_id): Path<String>,
) -> Result<Json<LinkStatus>, ApiError> {
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
        },
        Some(a) => LinkStatus {
            approved: true,
            cert: Some(b64::encode(&a.cert)),
            username_hash: Some(hex::encode(a.username_hash)),
        },
    }))
}
