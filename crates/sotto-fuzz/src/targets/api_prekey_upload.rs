//! `sotto_api::decode::prekey_upload` (the body of `POST /v1/prekeys`) on
//! arbitrary bytes, for the fixture's device: whatever it accepts is signed
//! by that device and of the right kind.

use sotto_api::decode;
use sotto_proto::{PrekeyKind, SignedPrekey};

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    let device = super::api_fixture::device();
    if let Ok(pool) = decode::prekey_upload(&device, data) {
        assert!(pool.one_time.len() <= decode::MAX_UPLOAD);
        for (id, bytes) in &pool.one_time {
            let p = SignedPrekey::decode(bytes).expect("accepted prekeys decode");
            assert_eq!((p.id, p.kind), (*id, PrekeyKind::OneTime));
            assert!(p.verify(&device).is_ok());
        }
        if let Some((id, bytes)) = &pool.reserve {
            let p = SignedPrekey::decode(bytes).expect("accepted prekeys decode");
            assert_eq!((p.id, p.kind), (*id, PrekeyKind::Reserve));
        }
    }
}
