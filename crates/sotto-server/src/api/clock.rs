//! `GET /v1/clock`: the master clock clients use for message TTLs (W4, P11)
//! and to time-stamp signed requests.

use axum::Json;
use sotto_api::Clock;

use crate::state::now_ms;

pub(super) async fn get() -> Json<Clock> {
    Json(Clock { now_ms: now_ms() })
}
