//! `sotto_api::decode::link` and `link_pool` (the body of `POST /v1/link`,
//! also read back by the approving device) on arbitrary bytes.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(link) = decode::link(data) {
        if let Ok(pool) = decode::link_pool(&link) {
            assert!(pool.one_time.len() <= decode::MAX_UPLOAD);
            assert!(pool.reserve.is_some());
        }
    }
}
