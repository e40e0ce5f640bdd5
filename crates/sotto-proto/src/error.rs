//! Every way the core can refuse input. Each failure has its own variant so
//! callers (and tests) can tell a tampered signature from a replay.

use core::fmt;

/// Errors returned by the protocol core. Decoding never panics; it returns one
/// of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input ended before a field it declares.
    Truncated,
    /// Bytes follow the end of a structure.
    TrailingBytes,
    /// A length or count is over the bound for `what`.
    TooLarge { what: &'static str },
    /// A structure with a version this build does not speak.
    UnknownVersion(u8),
    /// A cipher suite this build does not speak.
    UnknownSuite(u8),
    /// A field holds a value outside its domain (e.g. an unknown flag).
    Malformed { what: &'static str },
    /// A public key is not a valid point, or an X25519 agreement was not
    /// contributory (low-order point).
    BadKey,
    /// The device certificate is not signed by the user key it names, or is
    /// signed by a user key other than the one expected.
    BadCertificate,
    /// A prekey is not signed by the device it is published for.
    BadPrekeySignature,
    /// The datagram signature does not verify under the sender's device key.
    BadSignature,
    /// The datagram carries no entry for this device.
    NotForThisDevice,
    /// The datagram names a prekey this device does not hold (already used,
    /// or never issued).
    UnknownPrekey(u32),
    /// The datagram names a session this device does not hold.
    UnknownSession,
    /// The session named belongs to a different peer device.
    SessionPeerMismatch,
    /// This message was already opened (or its key was erased as too old).
    Replay,
    /// The message counter jumps further ahead than the skipped-key bound.
    TooFarAhead,
    /// This device has no session with the named recipient device.
    NoSession,
    /// The wrapped message key for this device does not decrypt: the header
    /// entry was altered or was not made for this device.
    WrapDecrypt,
    /// The payload does not decrypt under the message key.
    PayloadDecrypt,
    /// The payload names a sender other than the certificate's user.
    SenderMismatch,
    /// Sealing needs at least one recipient.
    NoRecipients,
    /// A link request proof or approval was not made with this link code
    /// (or for another link or other device keys).
    LinkMismatch,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "input is truncated"),
            Error::TrailingBytes => write!(f, "unexpected bytes after the end of the structure"),
            Error::TooLarge { what } => write!(f, "{what} is larger than allowed"),
            Error::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            Error::UnknownSuite(s) => write!(f, "unknown cipher suite {s}"),
            Error::Malformed { what } => write!(f, "malformed {what}"),
            Error::BadKey => write!(f, "invalid public key"),
            Error::BadCertificate => write!(f, "device certificate is not signed by the user key"),
            Error::BadPrekeySignature => write!(f, "prekey is not signed by its device"),
            Error::BadSignature => write!(f, "datagram signature does not verify"),
            Error::NotForThisDevice => write!(f, "datagram has no entry for this device"),
            Error::UnknownPrekey(id) => write!(f, "prekey {id} is unknown or already used"),
            Error::UnknownSession => write!(f, "unknown session"),
            Error::SessionPeerMismatch => write!(f, "session belongs to another device"),
            Error::Replay => write!(f, "message was already opened (replay)"),
            Error::TooFarAhead => write!(f, "message counter is too far ahead"),
            Error::NoSession => write!(f, "no session with the recipient device"),
            Error::WrapDecrypt => write!(f, "wrapped message key does not decrypt"),
            Error::PayloadDecrypt => write!(f, "payload does not decrypt"),
            Error::SenderMismatch => write!(f, "payload sender does not match the certificate"),
            Error::NoRecipients => write!(f, "no recipients"),
            Error::LinkMismatch => write!(f, "not made with this link code"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
