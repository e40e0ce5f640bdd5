//! # sotto-proto
//!
//! The protocol core of sotto: user and device identities, signed prekeys,
//! pairwise sessions with a per-message hash ratchet, per-device encrypted
//! datagrams and safety numbers.
//!
//! Sans-IO: no sockets, files, clock or randomness of its own. Callers pass
//! an RNG and times in, and persist what [`Device::take_changes`] reports.
//! The wire format and its test vectors are in `docs/protocol.md`.

pub mod codec;
pub mod datagram;
mod device;
mod error;
pub mod keys;
pub mod link;
mod names;
pub mod room;
pub mod safety;
pub mod session;

pub use datagram::{content, Datagram, Payload};
pub use device::{Changes, Device, Opened, MAX_SESSIONS_PER_PEER};
pub use error::{Error, Result};
pub use keys::{
    verify_device_signature, DeviceCert, DeviceId, DeviceKey, DevicePublicKeys, PrekeyBundle,
    PrekeyKind, PrekeySecret, SignedPrekey, UserKey, UserPublic, VerifiedBundle,
};
pub use link::{LinkApproval, LinkSecret};
pub use names::{normalize_username, username_hash};
pub use safety::{check_contact_key, safety_number, user_fingerprint, ContactKey, SafetyNumber};
pub use session::{Session, SessionId};

/// The wire format version this build writes and reads.
pub const PROTOCOL_VERSION: u8 = 1;
/// Suite 1: X25519, Ed25519 (Ed25519ph for datagrams), AES-256-GCM,
/// HKDF/HMAC-SHA-256. A post-quantum hybrid would be a new suite number.
pub const SUITE_V1: u8 = 1;
