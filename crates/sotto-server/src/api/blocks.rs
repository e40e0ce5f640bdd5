//! The caller's user's block list: datagrams from a blocked user to any of
//! the user's devices are refused (403 `blocked`, nothing stored).

use axum::extract::{Path, State};
use axum::Json;
use sotto_api::{Block, Blocks};

use super::{empty, json, username_hash, ApiError};
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
    let block: Block = json(&caller.body)?;
    let hash = username_hash(&block.username_hash)?;
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
