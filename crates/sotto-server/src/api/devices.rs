//! `DELETE /v1/devices/{device_id}`: removes a device of the caller's user
//! (a lost or stolen one). Besides the usual request signature, the body
//! carries the user key's signature over the device id and a time: only
//! the device that holds the user key can remove devices, as only it can
//! add them. The device leaves the directory (other users' clients resolve
//! devices on every send, so they stop encrypting to it), its requests are
//! refused from then on, and its mailbox and prekeys are deleted.

use axum::extract::{Path, State};
use axum::Json;
use sotto_api::{decode, CLOCK_SKEW_MS};
use sotto_proto::DeviceId;

use super::{empty, ApiError};
use crate::auth::Caller;
use crate::state::{now_ms, AppState};

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = DeviceId(decode::hex_id("device id", &id)?);
    let (time, signature) = decode::remove_device(&caller.body)?;
    if now_ms().abs_diff(time) > CLOCK_SKEW_MS {
        return Err(ApiError::bad_request(
            "the removal's time is more than 5 minutes from the server clock (see GET /v1/clock)",
        ));
    }
    let user = caller.device.user;
    user.verify_removal(&target, time, &signature)
        .map_err(|_| {
            ApiError::forbidden(
                "the removal is not signed by this user's key: only the device that holds it can remove devices",
            )
        })?;
    if target == caller.device.device {
        return Err(ApiError::bad_request(
            "a device cannot remove itself (it holds the user key)",
        ));
    }
    state.db(move |s| s.remove_device(&user, &target)).await?;
    // Refused here at once (other nodes: within their cache's lifetime).
    state.forget_device(&target);
    state.hub.disconnect_all(&target);
    tracing::info!(device = %hex::encode(&target.0[..8]), "device removed");
    Ok(empty())
}
