//! `sotto_api::decode::link_approve` (the body of
//! `POST /v1/link/{id}/approve`) on arbitrary bytes.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok((cert, bytes)) = decode::link_approve(data) {
        assert!(cert.verify().is_ok());
        assert_eq!(cert.encode(), bytes);
    }
}
