//! # sotto-api
//!
//! The HTTP and WebSocket API between a sotto device and the server: request
//! and response bodies, request authentication, and username hashing. Both
//! the server and the client depend on this crate; neither depends on the
//! other. The API is described in `docs/api.md` and served as OpenAPI at
//! [`OPENAPI_PATH`].
//!
//! Binary fields travel as standard base64 (`b64` below); device ids, user
//! keys and username hashes as lowercase hex.

mod auth;
pub mod decode;
pub mod frame;
pub mod paths;
pub mod phone;
#[cfg(feature = "pinned-tls")]
pub mod pin;
mod types;

pub use auth::{request_signing_bytes, AuthHeaders, CLOCK_SKEW_MS};
pub use sotto_proto::username_hash;
pub use types::*;

/// Where the server serves its OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Base64 helpers used for every binary field.
pub mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    pub fn encode(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        STANDARD.decode(s).ok()
    }
}

/// Parses a 32-byte value from lowercase or uppercase hex.
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
