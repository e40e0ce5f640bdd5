//! Registering a phone number by one-time password (S4-S6), both ways:
//! `POST /v1/phone/register` without `otp` makes a code and texts it to
//! the number; with `otp` (made by the app) the server waits for the
//! handset to text that code (`POST /v1/sms/inbound`). `POST
//! /v1/phone/verify`, signed by the new device, checks the code and
//! registers a new user for the number, then delivers what was held.

use axum::extract::State;
use axum::{Extension, Json};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use sotto_api::phone::{is_e164, is_otp, PhoneStart, PhoneStarted, PhoneVerified, PhoneVerify};
use sotto_api::{codes, decode};
use sotto_store::server::phone::{OtpCheck, OtpKind, OtpLimit};
use sotto_store::server::NewUser;

use super::ApiError;
use crate::auth::Signed;
use crate::phone::{deliver, OTP_ATTEMPTS};
use crate::rate::ClientAddr;
use crate::state::{now_ms, AppState};

/// Digits of a server-made OTP.
const OTP_DIGITS: u32 = 6;

fn number(n: &str) -> Result<(), ApiError> {
    if is_e164(n) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "\"number\" must be an E.164 number: + and 8 to 15 digits, e.g. +15551234567",
        ))
    }
}

/// A uniformly random code of [`OTP_DIGITS`] digits from the OS.
fn new_otp() -> String {
    let bound = 10u32.pow(OTP_DIGITS);
    // Rejection sampling: no modulo bias.
    let zone = u32::MAX - u32::MAX % bound;
    loop {
        let v = OsRng.next_u32();
        if v < zone {
            return format!("{:0width$}", v % bound, width = OTP_DIGITS as usize);
        }
    }
}

pub(super) async fn register(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    body: axum::body::Bytes,
) -> Result<Json<PhoneStarted>, ApiError> {
    let req: PhoneStart = decode::json(&body)?;
    number(&req.number)?;
    let key: [u8; 32] = Sha256::digest(req.number.as_bytes()).into();
    state.rate(|l| l.otp(key, addr))?;
    let phone = state.phone.clone();
    let sms = phone.sms.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "this server has no SMS gateway configured",
        )
    })?;
    let ttl = phone.otp_ttl.as_millis() as u64;
    let now = now_ms();
    let expires = now.saturating_add(ttl);
    let n = req.number.clone();
    match req.otp {
        None => {
            let otp = new_otp();
            let code = otp.clone();
            phone
                .db(move |s| s.put_otp(&n, OtpKind::Server, &code, now, expires, OTP_LIMIT))
                .await?
                .then_some(())
                .ok_or_else(too_many_otps)?;
            let text = format!(
                "Your sotto code is {otp}. It expires in {} minutes.",
                ttl.div_ceil(60_000)
            );
            phone.queue_sms(&req.number, &text).await?;
            Ok(Json(PhoneStarted {
                expires_in: ttl / 1000,
                sms_to: None,
                sms_text: None,
            }))
        }
        Some(otp) => {
            if !is_otp(&otp) {
                return Err(ApiError::bad_request("\"otp\" must be 6 to 10 digits"));
            }
            let code = otp.clone();
            phone
                .db(move |s| s.put_otp(&n, OtpKind::App, &code, now, expires, OTP_LIMIT))
                .await?
                .then_some(())
                .ok_or_else(too_many_otps)?;
            Ok(Json(PhoneStarted {
                expires_in: ttl / 1000,
                sms_to: Some(sms.number()),
                sms_text: Some(sotto_api::phone::sms_otp_text(&otp)),
            }))
        }
    }
}

/// OTPs one number may ask for, across every node (the store counts
/// them): with [`OTP_ATTEMPTS`] each, at most 50 guesses an hour whatever
/// the number of nodes (besides each node's own rate limits).
const OTP_LIMIT: OtpLimit = OtpLimit {
    per_window: 10,
    window_ms: 60 * 60 * 1000,
};

fn too_many_otps() -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        codes::RATE_LIMITED,
        "too many codes were asked for this number; try again in an hour",
    );
    e.retry_after = Some(OTP_LIMIT.window_ms / 1000);
    e
}

/// The user-facing refusal of an OTP check.
fn refused(check: OtpCheck) -> ApiError {
    let (status, code, message) = match check {
        OtpCheck::Accepted => unreachable!("only refusals"),
        OtpCheck::Wrong { attempts_left } => (
            401,
            "otp_wrong",
            format!("wrong code; {attempts_left} attempts left"),
        ),
        OtpCheck::Expired => (
            401,
            "otp_expired",
            "the code expired; ask for a new one".to_string(),
        ),
        OtpCheck::Used => (
            401,
            "otp_used",
            "the code was used already; ask for a new one".into(),
        ),
        OtpCheck::TooManyAttempts => (
            429,
            "otp_attempts",
            "too many wrong attempts for this code; ask for a new one".into(),
        ),
        OtpCheck::Missing => (
            401,
            "otp_missing",
            "no code was asked for this number".into(),
        ),
        OtpCheck::AwaitingSms => (
            409,
            "sms_pending",
            "the SMS with the code has not arrived yet".into(),
        ),
    };
    ApiError::new(
        axum::http::StatusCode::from_u16(status).expect("valid status"),
        code,
        message,
    )
}

pub(super) async fn verify(
    State(state): State<AppState>,
    Extension(addr): Extension<ClientAddr>,
    signed: Signed,
) -> Result<Json<PhoneVerified>, ApiError> {
    let req: PhoneVerify = decode::json(&signed.body)?;
    number(&req.number)?;
    if !is_otp(&req.otp) {
        return Err(ApiError::bad_request("\"otp\" must be 6 to 10 digits"));
    }
    let username = sotto_device::check_username(&req.username)
        .map_err(|_| ApiError::bad_request("\"username\" is not a valid username"))?;
    let reg = decode::register(&serde_json::to_vec(&req.registration).unwrap_or_default())?;
    if reg.cert.device != signed.device {
        return Err(ApiError::unauthorized(
            "the request is not signed by the certificate's device",
        ));
    }
    if reg.username_hash != sotto_proto::username_hash(&username) {
        return Err(ApiError::bad_request(
            "\"username\" does not hash to the registration's",
        ));
    }
    let kind = if req.by_sms {
        OtpKind::App
    } else {
        OtpKind::Server
    };
    if kind == OtpKind::Server {
        state.rate(|l| l.verify(addr))?;
    } else {
        // A device waiting for its SMS polls: limited like link polls.
        state.rate(|l| l.link_poll(addr))?;
    }
    let phone = state.phone.clone();
    let (n, otp) = (req.number.clone(), req.otp.clone());
    let check = phone
        .db(move |s| s.check_otp(&n, kind, &otp, now_ms(), OTP_ATTEMPTS))
        .await?;
    if check != OtpCheck::Accepted {
        return Err(refused(check));
    }
    let user = NewUser {
        username_hash: reg.username_hash,
        user: reg.cert.user,
        device: super::register::new_device(&reg.cert, reg.cert_bytes, reg.pool),
    };
    let n = req.number.clone();
    phone
        .db(move |s| s.register_phone(&n, &username, user, now_ms()))
        .await?;
    tracing::info!("a phone number registered a device");
    let delivered = deliver::deliver_held(&state, &req.number).await?;
    Ok(Json(PhoneVerified { delivered }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn otps_are_six_digits_and_vary() {
        let a: Vec<String> = (0..50).map(|_| super::new_otp()).collect();
        assert!(a
            .iter()
            .all(|o| o.len() == 6 && o.bytes().all(|b| b.is_ascii_digit())));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 40);
    }
}
