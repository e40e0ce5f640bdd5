//! API errors: every failure is `ErrorBody` JSON with a stable code.

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sotto_api::{codes, ErrorBody};
use sotto_store::server::StoreError;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429: a rate limit; retry after `wait`.
    pub fn rate_limited(wait: Duration) -> ApiError {
        let secs = crate::rate::retry_after_secs(wait);
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                codes::RATE_LIMITED,
                format!("too many requests of this kind; retry in {secs} s"),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, codes::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
    }
}

impl From<sotto_api::decode::BodyError> for ApiError {
    fn from(e: sotto_api::decode::BodyError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::UsernameTaken => ApiError::new(
                StatusCode::CONFLICT,
                codes::USERNAME_TAKEN,
                "username is taken",
            ),
            StoreError::AlreadyRegistered => ApiError::new(
                StatusCode::CONFLICT,
                codes::ALREADY_REGISTERED,
                "this user key or device is already registered",
            ),
            StoreError::UnknownUser => {
                ApiError::new(StatusCode::NOT_FOUND, codes::UNKNOWN_USER, "unknown user")
            }
            StoreError::UnknownDevice(d) => ApiError::new(
                StatusCode::NOT_FOUND,
                codes::UNKNOWN_DEVICE,
                format!("device {} is not registered", hex::encode(d.0)),
            ),
            StoreError::MailboxFull(d) => ApiError::new(
                StatusCode::CONFLICT,
                codes::MAILBOX_FULL,
                format!(
                    "the mailbox of device {} is full (it has not fetched for a while); \
                     nothing was stored, send again later",
                    hex::encode(d.0)
                ),
            ),
            StoreError::Replayed => ApiError::new(
                StatusCode::CONFLICT,
                codes::REPLAYED,
                "this signed request was already used; sign a new one",
            ),
            StoreError::PrekeyIdReused { prekey_id, .. } => ApiError::new(
                StatusCode::CONFLICT,
                codes::PREKEY_REUSED,
                format!("prekey id {prekey_id} was published before; prekey ids must increase"),
            ),
            StoreError::UnknownLink => ApiError::not_found("unknown or expired link"),
            StoreError::LinkApproved => ApiError::new(
                StatusCode::CONFLICT,
                codes::ALREADY_REGISTERED,
                "the link was already approved",
            ),
            StoreError::Busy(reason) => {
                tracing::warn!(%reason, "store busy");
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    codes::UNAVAILABLE,
                    "the server is busy; try again shortly",
                );
                e.retry_after = Some(1);
                e
            }
            other => {
                // Details go to the operator's log, not to the client.
                tracing::error!(error = %other, "store error");
                ApiError::internal("storage error")
            }
        }
    }
}

impl From<ApiError> for ErrorBody {
    /// The JSON every failure is, over HTTP and in a WebSocket `send_result`.
    fn from(e: ApiError) -> Self {
        ErrorBody {
            error: e.message,
            code: e.code.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        let mut response = (status, Json(ErrorBody::from(self))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}
