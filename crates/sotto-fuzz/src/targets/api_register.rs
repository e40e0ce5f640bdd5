//! `sotto_api::decode::register` (the body of `POST /v1/register`) on
//! arbitrary bytes: must return, never panic; what it accepts is verified.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(r) = decode::register(data) {
        assert!(r.cert.verify().is_ok());
        assert!(r.pool.one_time.len() <= decode::MAX_UPLOAD);
        assert!(r.pool.reserve.is_some());
    }
}
