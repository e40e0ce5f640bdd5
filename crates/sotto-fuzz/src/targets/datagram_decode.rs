//! `Datagram::decode` on arbitrary bytes: must return, never panic, and
//! never allocate on the input's say-so.

use sotto_proto::Datagram;

/// The target: see the module documentation.
pub fn run(data: &[u8]) {
    if let Ok(dg) = Datagram::decode(data) {
        // Whatever decodes must be internally consistent.
        assert!(!dg.entries.is_empty());
        assert!(dg.recipients().count() == dg.entries.len());
        assert!(dg.ciphertext.len() <= data.len());
    }
}
