//! `sotto_api::decode::claim` (the body of `POST /v1/users/{h}/bundles`) on
//! arbitrary bytes.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(devices) = decode::claim(data) {
        assert!(devices.len() <= decode::MAX_CLAIM_DEVICES);
    }
}
