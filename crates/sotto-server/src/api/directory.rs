//! The directory: a user's key and device certificates, by username hash
//! (`GET /v1/users/{h}`) or for the caller's own user (`GET /v1/devices`).
//! Lookups by hash are rate-limited per device and per address: guessing
//! names must be slow.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use sotto_api::{b64, UserDevices};
use sotto_store::server::UserRecord;

use super::{username_hash, ApiError};
use crate::auth::Caller;
use crate::rate::ClientAddr;
use crate::state::AppState;

fn answer(user: UserRecord, organisation: Option<String>) -> Json<UserDevices> {
    Json(UserDevices {
        user: hex::encode(user.user.0),
        devices: user.devices.iter().map(|d| b64::encode(&d.cert)).collect(),
        organisation,
    })
}

pub(super) async fn user(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    Path(hash): Path<String>,
    caller: Caller,
) -> Result<Json<UserDevices>, ApiError> {
    state.rate(|l| l.lookup(caller.device.device, addr))?;
    let hash = username_hash(&hash)?;
    let user = state
        .db(move |s| s.user(&hash))
        .await?
        .ok_or(sotto_store::server::StoreError::UnknownUser)?;
    let key = user.user;
    // No sender accounts on a node without phone delivery (PostgreSQL).
    let organisation = if state.phone.available() {
        state
            .phone
            .db(move |s| s.sender_by_user(&key))
            .await?
            .map(|s| s.name)
    } else {
        None
    };
    Ok(answer(user, organisation))
}

pub(super) async fn own(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserDevices>, ApiError> {
    let key = caller.device.user;
    let user = state
        .db(move |s| s.user_by_key(&key))
        .await?
        .ok_or(sotto_store::server::StoreError::UnknownUser)?;
    Ok(answer(user, None))
}
