//! `POST /v1/register`: a new user with its first device. Signed by the
//! device the certificate names; the whole chain (user key -> device
//! certificate -> prekeys) is verified before anything is stored.
//! Rate-limited per client address (accounts cost storage).

use axum::extract::State;
use axum::{Extension, Json};
use sotto_api::decode;
use sotto_store::server::{NewDevice, NewUser};

use super::{empty, ApiError};
use crate::auth::Signed;
use crate::rate::ClientAddr;
use crate::state::{now_ms, AppState};

/// The store's form of a verified device with its pool.
pub(super) fn new_device(
    cert: &sotto_proto::DeviceCert,
    cert_bytes: Vec<u8>,
    pool: decode::Pool,
) -> NewDevice {
    let (reserve_id, reserve) = pool.reserve.unwrap_or_default();
    NewDevice {
        device: cert.device,
        cert: cert_bytes,
        prekeys: pool.one_time,
        reserve,
        reserve_id,
    }
}

pub(super) async fn post(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    signed: Signed,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.rate(|l| l.account(addr))?;
    let req = decode::register(&signed.body)?;
    if req.cert.device != signed.device {
        return Err(ApiError::unauthorized(
            "the request is not signed by the certificate's device",
        ));
    }
    let user = NewUser {
        username_hash: req.username_hash,
        user: req.cert.user,
        device: new_device(&req.cert, req.cert_bytes, req.pool),
    };
    state.db(move |s| s.register(user, now_ms())).await?;
    Ok(empty())
}
