//! `sotto_api::decode::block` (the body of `POST /v1/blocks`) on arbitrary
//! bytes.

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    let _ = sotto_api::decode::block(data);
}
