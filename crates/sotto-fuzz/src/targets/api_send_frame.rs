//! `sotto_api::frame::decode` (binary WebSocket send frames) on arbitrary
//! bytes: total, and what it returns is the frame.

use sotto_api::frame::{self, DeviceFrame};

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(DeviceFrame::Send { req, datagram }) = frame::decode(data) {
        assert!(!datagram.is_empty());
        assert_eq!(frame::encode_send(req, datagram), data);
    }
}
