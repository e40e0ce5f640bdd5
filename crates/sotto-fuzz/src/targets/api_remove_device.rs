//! `sotto_api::decode::remove_device` (the body of
//! `DELETE /v1/devices/{id}`) on arbitrary bytes, and the user-key check the
//! server runs on what it accepts: total, and only the genuine signature
//! verifies.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok((time, signature)) = decode::remove_device(data) {
        let f = super::api_fixture::fixture();
        let verified = f
            .user
            .public()
            .verify_removal(&f.device.id(), time, &signature);
        if verified.is_ok() {
            assert_eq!(
                signature,
                f.user.sign_removal(&f.device.id(), time),
                "Ed25519 signatures are deterministic"
            );
        }
    }
}
