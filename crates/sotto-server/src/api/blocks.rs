//! The caller's user's block list: datagrams from a blocked user to any of
//! the user's devices are accepted and dropped (nothing stored), so the
//! blocked user is not told. The list is stored keyed with the server
//! secret (see `sotto_store::server`).

use axum::extract::{Path, State};
use axum::Json;
use sotto_api::{decode, Blocks};

use super::{empty, username_hash, ApiError};
use crate::auth::Caller;
use crate::state::AppState;

pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Blocks>, ApiError> {
    let user = caller.device.user;
    let blocked = state.db(move |s| s.blocks(&user)).await?;
    Ok(Json(Blocks {
        blocked: blocked.iter().map(hex::encode).collect(),
    }))
}

pub(super) async fn add(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hash = decode::block(&caller.body)?;
    let user = caller.device.user;
    state.db(move |s| s.block(&user, &hash)).await?;
    Ok(empty())
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hash = username_hash(&hash)?;
    let user = caller.device.user;
    state.db(move |s| s.unblock(&user, &hash)).await?;
    Ok(empty())
}
