//! `sotto_api::decode::link_approve` (the body of
//! `POST /v1/link/{id}/approve`: certificate and sealed approval) on
//! arbitrary bytes.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(a) = decode::link_approve(data) {
        assert!(a.cert.verify().is_ok());
        assert_eq!(a.cert.encode(), a.cert_bytes);
        assert!(!a.approval.is_empty());
        assert!(a.approval.len() <= sotto_proto::link::MAX_SEALED_APPROVAL);
    }
}
