//! `POST /v1/register`: a new user with its first device. Signed by the
//! device the certificate names; the whole chain (user key -> device
//! certificate -> prekeys) is verified before anything is stored.

use axum::extract::State;
use axum::Json;
use sotto_api::{b64, RegisterRequest};
use sotto_proto::DeviceCert;
use sotto_store::server::{NewDevice, NewUser};

use super::{empty, json, prekeys::parse_pool, username_hash, ApiError};
use crate::auth::Signed;
use crate::state::{now_ms, AppState};

/// A certificate from b64, with its user signature checked.
pub(super) fn parse_cert(s: &str) -> Result<(DeviceCert, Vec<u8>), ApiError> {
    let bytes = b64::decode(s).ok_or_else(|| ApiError::bad_request("certificate is not base64"))?;
    let cert = DeviceCert::decode(&bytes)
        .map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
    cert.verify()
        .map_err(|e| ApiError::bad_request(format!("certificate: {e}")))?;
    Ok((cert, bytes))
}

pub(super) async fn post(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let req: RegisterRequest = json(&signed.body)?;
    let hash = username_hash(&req.username_hash)?;
    let (cert, cert_bytes) = parse_cert(&req.cert)?;
    if cert.device != signed.device {
        return Err(ApiError::unauthorized(
            "the request is not signed by the certificate's device",
        ));
    }
    let (prekeys, reserve) = parse_pool(&cert.device, &req.prekeys, Some(&req.reserve))?;
    let user = NewUser {
        username_hash: hash,
        user: cert.user,
        device: NewDevice {
            device: cert.device,
            cert: cert_bytes,
            prekeys,
            reserve: reserve.unwrap_or_default(),
        },
    };
    state.db(move |s| s.register(user, now_ms())).await?;
    Ok(empty())
}
