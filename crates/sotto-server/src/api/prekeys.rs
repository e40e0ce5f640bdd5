//! Prekey pools: claiming bundles (`POST /v1/users/{h}/bundles`), the
//! caller's pool status and refill (`GET`/`POST /v1/prekeys`). Claims are
//! rate-limited per device, per (device, target user) and per address:
//! each claim spends one of the target's one-time prekeys. A claimant the
//! target blocks gets the reserve keys (the store does that, uncounted),
//! so it can neither drain the pool nor tell it is blocked.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use sotto_api::{b64, decode, Bundle, ClaimResponse, PrekeyStatus, Push};
use sotto_store::server::PrekeyCount;

use super::{username_hash, ApiError};
use crate::auth::Caller;
use crate::rate::ClientAddr;
use crate::state::AppState;

/// Below this many one-time prekeys the owner is told to refill.
pub(crate) const LOW_WATER: u32 = 10;

fn status(count: PrekeyCount) -> PrekeyStatus {
    PrekeyStatus {
        one_time: count.one_time,
        reserve_served: count.reserve_served,
    }
}

pub(super) async fn claim(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    Path(hash): Path<String>,
    caller: Caller,
) -> Result<Json<ClaimResponse>, ApiError> {
    let hash = username_hash(&hash)?;
    state.rate(|l| l.claim(caller.device.device, hash, addr))?;
    let devices = decode::claim(&caller.body)?;
    let claimant = caller.device.user;
    let (user, claimed) = state
        .db(move |s| s.claim_prekeys(&hash, &devices, &claimant))
        .await?;
    let mut bundles = Vec::with_capacity(claimed.len());
    for c in claimed {
        // Tell the owner to refill while it still has keys, and again each
        // time its reserve is served.
        if c.reserve || c.pool.one_time < LOW_WATER {
            state
                .hub
                .push(&c.device, || Push::PrekeysLow(status(c.pool)));
        }
        bundles.push(Bundle {
            cert: b64::encode(&c.cert),
            prekey: b64::encode(&c.prekey),
        });
    }
    Ok(Json(ClaimResponse {
        user: hex::encode(user.0),
        bundles,
    }))
}

pub(super) async fn status_get(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PrekeyStatus>, ApiError> {
    let device = caller.device.device;
    Ok(Json(status(
        state.db(move |s| s.prekey_count(&device)).await?,
    )))
}

/// A refill: every prekey id must be new for the device (the store
/// refuses one it published before, so a replayed refill cannot bring
/// back a served key or reset the reserve counter).
pub(super) async fn refill(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PrekeyStatus>, ApiError> {
    let device = caller.device.device;
    let pool = decode::prekey_upload(&device, &caller.body)?;
    let count = state
        .db(move |s| s.add_prekeys(&device, pool.one_time, pool.reserve))
        .await?;
    Ok(Json(status(count)))
}
