//! Devices authenticate every request with their Ed25519 device key: no
//! passwords, no bearer tokens. The server checks the signature, that the
//! device is registered (or, on registration and linking, the key in the
//! body), and that the time is within [`CLOCK_SKEW_MS`] of its clock.

use sha2::{Digest, Sha256};

/// Header names carried by every authenticated request (and by the
/// WebSocket upgrade request).
pub struct AuthHeaders;

impl AuthHeaders {
    /// Hex device id (the device's Ed25519 public key).
    pub const DEVICE: &'static str = "x-sotto-device";
    /// Milliseconds since the Unix epoch, by the client's estimate of the
    /// server clock.
    pub const TIME: &'static str = "x-sotto-time";
    /// Hex Ed25519 signature over [`request_signing_bytes`].
    pub const SIGNATURE: &'static str = "x-sotto-signature";
}

/// How far a request's time may be from the server's clock.
pub const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// The bytes a device signs for one request: method, path with query, time
/// and the SHA-256 of the body.
pub fn request_signing_bytes(
    method: &str,
    path_and_query: &str,
    time_ms: u64,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = Sha256::digest(body);
    let mut out = Vec::with_capacity(64 + path_and_query.len());
    out.extend_from_slice(b"sotto/v1/request\n");
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(path_and_query.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(time_ms.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(hex::encode(body_hash).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_bytes_cover_every_part() {
        let base = request_signing_bytes("POST", "/v1/x", 1, b"body");
        assert_ne!(base, request_signing_bytes("GET", "/v1/x", 1, b"body"));
        assert_ne!(base, request_signing_bytes("POST", "/v1/y", 1, b"body"));
        assert_ne!(base, request_signing_bytes("POST", "/v1/x", 2, b"body"));
        assert_ne!(base, request_signing_bytes("POST", "/v1/x", 1, b"bodz"));
    }
}
