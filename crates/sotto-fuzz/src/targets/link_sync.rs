//! `sotto_device::LinkSyncBody::decode` (the account data a new device
//! takes from its approval, or from a datagram of another own device) on
//! arbitrary bytes: it returns, and what decodes encodes back to the same
//! bytes (one encoding per value).

use sotto_device::LinkSyncBody;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Some(sync) = LinkSyncBody::decode(data) {
        assert_eq!(sync.encode(), data);
    }
}
