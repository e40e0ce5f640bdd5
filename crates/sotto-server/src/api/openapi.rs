//! `GET /openapi.json`: the hand-written OpenAPI 3 document of this API.

use axum::http::header;
use axum::response::IntoResponse;

pub(super) const DOCUMENT: &str = include_str!("openapi.json");

pub(super) async fn get() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
