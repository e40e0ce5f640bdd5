//! `sotto_api::decode::ack` (`POST /v1/mailbox/ack` and WebSocket ack
//! frames) on arbitrary bytes.

use sotto_api::decode;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(seqs) = decode::ack(data) {
        assert!(seqs.len() <= decode::MAX_ACK);
    }
}
