//! API errors: every failure is `ErrorBody` JSON with a stable code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sotto_api::{codes, ErrorBody};
use sotto_store::server::StoreError;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
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
            StoreError::Blocked => ApiError::new(
                StatusCode::FORBIDDEN,
                codes::BLOCKED,
                "a recipient does not accept datagrams from you",
            ),
            StoreError::UnknownLink => ApiError::not_found("unknown or expired link"),
            StoreError::LinkApproved => ApiError::new(
                StatusCode::CONFLICT,
                codes::ALREADY_REGISTERED,
                "the link was already approved",
            ),
            other => {
                // Details go to the operator's log, not to the client.
                eprintln!("sotto-server: store error: {other}");
                ApiError::internal("storage error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
                code: self.code.to_string(),
            }),
        )
            .into_response()
    }
}
