//! `POST /v1/sms/inbound`: an SMS the gateway received, in the provider's
//! webhook form (`application/x-www-form-urlencoded`, `From`, `Body`).
//! With a real provider its signature is verified first and anything
//! unsigned or mis-signed is refused (403); with the development sink it
//! is accepted unsigned. A code in the text confirms the app-made OTP of
//! the sending number.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use sotto_api::codes;
use sotto_store::server::phone::OtpCheck;

use super::ApiError;
use crate::phone::OTP_ATTEMPTS;
use crate::rate::ClientAddr;
use crate::state::{now_ms, AppState};

/// Most form fields read from one inbound SMS post.
const MAX_FIELDS: usize = 64;

pub(super) async fn inbound(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.rate(|l| l.sms_inbound(addr))?;
    let Some(sms) = state.phone.sms.clone() else {
        return Err(ApiError::not_found("this server has no SMS gateway"));
    };
    let params: Vec<(String, String)> = form_urlencoded::parse(&body)
        .take(MAX_FIELDS)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    if !sms.verify_inbound(signature, &params) {
        tracing::warn!(peer = %addr.key(), "inbound SMS with a missing or wrong signature refused");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            codes::UNAUTHORIZED,
            "missing or wrong provider signature",
        ));
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(from), Some(text)) = (field("From"), field("Body")) else {
        return Err(ApiError::bad_request("an inbound SMS needs From and Body"));
    };
    if !sotto_api::phone::is_e164(from) {
        return Err(ApiError::bad_request("From is not an E.164 number"));
    }
    let Some(otp) = sotto_api::phone::otp_in_sms(text) else {
        // Not a code: nothing to do (the text is not kept).
        return Ok(Json(serde_json::json!({"matched": false})));
    };
    let (from, otp) = (from.to_owned(), otp.to_owned());
    let check = state
        .phone
        .db(move |s| s.confirm_sms_otp(&from, &otp, now_ms(), OTP_ATTEMPTS))
        .await?;
    Ok(Json(
        serde_json::json!({"matched": check == OtpCheck::Accepted}),
    ))
}
