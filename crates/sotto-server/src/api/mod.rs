//! The HTTP API: one module per area, like mini-redis's one file per
//! command. This file wires the routes, the body limits, and
//! the rule that every error is `ErrorBody` JSON. What a body must hold is
//! checked by the decoders in `sotto_api::decode`, which the fuzz targets
//! call too.

mod blocks;
mod clock;
mod devices;
mod directory;
mod error;
mod link;
mod mailbox;
mod messages;
mod openapi;
mod phone;
mod prekeys;
mod register;
mod sender;
mod sms;
mod ws;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use sotto_api::{codes, ErrorBody};

pub(crate) use error::ApiError;

use crate::state::AppState;

/// Largest JSON body.
pub(crate) const JSON_LIMIT: usize = 1 << 20;

/// Every route path (axum syntax), from `sotto_api::paths`, shared with
/// the client and the load generator; a test checks each is in the OpenAPI
/// document.
use sotto_api::paths;

pub(crate) fn router(state: AppState) -> Router {
    let max_datagram = state.limits.max_datagram;
    let json = Router::new()
        .route(paths::CLOCK, get(clock::get))
        .route(paths::REGISTER, post(register::post))
        .route(paths::USER, get(directory::user))
        .route(paths::DEVICES, get(directory::own))
        .route(paths::DEVICE, delete(devices::remove))
        .route(paths::BUNDLES, post(prekeys::claim))
        .route(
            paths::PREKEYS,
            get(prekeys::status_get).post(prekeys::refill),
        )
        .route(paths::MAILBOX, get(mailbox::fetch))
        .route(paths::MAILBOX_ACK, post(mailbox::ack))
        .route(paths::DATAGRAM, get(mailbox::datagram))
        .route(paths::WS, get(ws::upgrade))
        .route(paths::LINK, post(link::create))
        .route(paths::LINK_READ, get(link::read))
        .route(paths::LINK_APPROVE, post(link::approve))
        .route(paths::LINK_STATUS, get(link::status))
        .route(paths::BLOCKS, get(blocks::list).post(blocks::add))
        .route(paths::BLOCK, delete(blocks::remove))
        .route(paths::SENDER_MESSAGES, post(sender::send))
        .route(paths::SENDER_MESSAGE, get(sender::status))
        .route(paths::PHONE_REGISTER, post(phone::register))
        .route(paths::PHONE_VERIFY, post(phone::verify))
        .route(paths::SMS_INBOUND, post(sms::inbound))
        .route(paths::OPENAPI, get(openapi::get))
        .route(paths::METRICS, get(crate::metrics::get))
        .layer(DefaultBodyLimit::max(JSON_LIMIT));
    // Datagrams are raw bytes and may be far larger than any JSON body.
    let datagrams = Router::new()
        .route(paths::MESSAGES, post(messages::send))
        .layer(DefaultBodyLimit::max(max_datagram));
    json.merge(datagrams)
        .fallback(no_route)
        .layer(map_response(json_errors))
        .with_state(state)
}

/// `{}`, the answer of calls that return nothing.
pub(crate) fn empty() -> Json<serde_json::Value> {
    Json(serde_json::json!({}))
}

/// Parses a hex username hash from a path.
pub(crate) fn username_hash(s: &str) -> Result<[u8; 32], ApiError> {
    Ok(sotto_api::decode::hex_id("username hash", s)?)
}

pub(crate) const NO_ROUTE: &str = "no such endpoint (see /openapi.json)";

async fn no_route() -> ApiError {
    ApiError::not_found(NO_ROUTE)
}

/// Errors produced outside our handlers (axum rejections, 405, a WebSocket
/// upgrade on a plain request) come as plain text: rewrite them as
/// `ErrorBody` so clients can rely on one error shape.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => codes::TOO_LARGE,
        StatusCode::NOT_FOUND => codes::NOT_FOUND,
        StatusCode::UNAUTHORIZED => codes::UNAUTHORIZED,
        s if s.is_server_error() => codes::INTERNAL,
        _ => codes::BAD_REQUEST,
    };
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    (
        status,
        Json(ErrorBody {
            error: message,
            code: code.to_string(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::paths;

    #[test]
    fn every_route_is_in_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(super::openapi::DOCUMENT).unwrap();
        let documented = doc["paths"].as_object().unwrap();
        for path in paths::ALL {
            // axum's `{param}` is OpenAPI's.
            assert!(
                documented.contains_key(*path),
                "{path} is not in openapi.json"
            );
        }
        assert_eq!(
            documented.len(),
            paths::ALL.len(),
            "openapi.json documents a path that is not routed"
        );
    }
}
