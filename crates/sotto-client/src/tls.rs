//! TLS with a pinned server certificate: the verifier shared with the load
//! generator ([`sotto_api::pin`]), and its errors in this crate's terms.

use std::sync::{Arc, Mutex};

use rustls::ClientConfig;
pub use sotto_api::pin::fingerprint;
pub(crate) use sotto_api::pin::PinState;

use crate::error::{Error, Result};

/// Checks and normalizes a user-supplied fingerprint (colons allowed).
pub fn parse_fingerprint(s: &str) -> Result<String> {
    sotto_api::pin::parse_fingerprint(s).ok_or_else(|| Error::BadFingerprint(s.to_string()))
}

/// A rustls client configuration pinning `expected`, or the first
/// certificate seen when `expected` is `None`.
pub(crate) fn pinned_config(
    expected: Option<String>,
) -> Result<(ClientConfig, Arc<Mutex<PinState>>)> {
    sotto_api::pin::pinned_config(expected)
        .map_err(|e| Error::BadResponse(format!("TLS setup: {e}")))
}
