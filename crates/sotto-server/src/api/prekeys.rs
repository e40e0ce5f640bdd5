//! Prekey pools: claiming bundles (`POST /v1/users/{h}/bundles`), the
//! caller's pool status and refill (`GET`/`POST /v1/prekeys`).

use axum::extract::{Path, State};
use axum::Json;
use sotto_api::{b64, Bundle, ClaimRequest, ClaimResponse, PrekeyStatus, PrekeyUpload, Push};
use sotto_proto::{DeviceId, PrekeyKind, SignedPrekey};
use sotto_store::server::{PrekeyCount, StoreError};

use super::{json, username_hash, ApiError};
use crate::auth::Caller;
use crate::state::AppState;

/// Below this many one-time prekeys the owner is told to refill.
pub(crate) const LOW_WATER: u32 = 10;
/// Most one-time prekeys accepted in one upload.
const MAX_UPLOAD: usize = 1000;

/// Decodes a b64 prekey of `kind` and checks it is signed by `device`.
fn parse_prekey(device: &DeviceId, s: &str, kind: PrekeyKind) -> Result<(u32, Vec<u8>), ApiError> {
    let bytes = b64::decode(s).ok_or_else(|| ApiError::bad_request("prekey is not base64"))?;
    let prekey =
        SignedPrekey::decode(&bytes).map_err(|e| ApiError::bad_request(format!("prekey: {e}")))?;
    if prekey.kind != kind {
        return Err(ApiError::bad_request(format!(
            "prekey {} has the wrong kind",
            prekey.id
        )));
    }
    prekey
        .verify(device)
        .map_err(|e| ApiError::bad_request(format!("prekey {}: {e}", prekey.id)))?;
    Ok((prekey.id, bytes))
}

/// Verified one-time prekeys and an optional reserve, as the store takes
/// them.
#[allow(clippy::type_complexity)]
pub(super) fn parse_pool(
    device: &DeviceId,
    prekeys: &[String],
    reserve: Option<&str>,
) -> Result<(Vec<(u32, Vec<u8>)>, Option<Vec<u8>>), ApiError> {
    if prekeys.len() > MAX_UPLOAD {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_UPLOAD} prekeys per upload"
        )));
    }
    let one_time = prekeys
        .iter()
        .map(|p| parse_prekey(device, p, PrekeyKind::OneTime))
        .collect::<Result<_, _>>()?;
    let reserve = reserve
        .map(|r| parse_prekey(device, r, PrekeyKind::Reserve))
        .transpose()?
        .map(|(_, b)| b);
    Ok((one_time, reserve))
}

fn status(count: PrekeyCount) -> PrekeyStatus {
    PrekeyStatus {
        one_time: count.one_time,
        reserve_served: count.reserve_served,
    }
}

pub(super) async fn claim(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    caller: Caller,
) -> Result<Json<ClaimResponse>, ApiError> {
    let hash = username_hash(&hash)?;
    let request: ClaimRequest = if caller.body.is_empty() {
        ClaimRequest::default()
    } else {
        json(&caller.body)?
    };
    let devices = request
        .devices
        .iter()
        .map(|d| {
            sotto_api::hex32(d)
                .map(DeviceId)
                .ok_or_else(|| ApiError::bad_request("device id must be hex"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A blocked user cannot even start sessions (nor drain the pool).
    let claimant = caller.device.user;
    if state.db(move |s| s.is_blocked(&hash, &claimant)).await? {
        return Err(StoreError::Blocked.into());
    }
    let (user, claimed) = state.db(move |s| s.claim_prekeys(&hash, &devices)).await?;
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

pub(super) async fn refill(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PrekeyStatus>, ApiError> {
    let upload: PrekeyUpload = json(&caller.body)?;
    let device = caller.device.device;
    let (prekeys, reserve) = parse_pool(&device, &upload.prekeys, upload.reserve.as_deref())?;
    let count = state
        .db(move |s| s.add_prekeys(&device, prekeys, reserve))
        .await?;
    Ok(Json(status(count)))
}
