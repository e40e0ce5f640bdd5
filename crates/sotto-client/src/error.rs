//! The one error type of the client. Every variant's `Display` is one line
//! that says what happened and what the user can do about it.

use std::path::PathBuf;

use sotto_store::client::StoreError;

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wrong passphrase: the local store in this home could not be decrypted")]
    WrongPassphrase,
    #[error("no sotto account in {0}: run `sotto register` or `sotto link` first")]
    NotRegistered(PathBuf),
    #[error("{0} already holds a sotto account: use another --home")]
    AlreadyRegistered(PathBuf),
    #[error("unknown user {0:?}: check the name, or ask them to register")]
    UnknownUser(String),
    #[error("{0} has no other device that could receive the message")]
    NoDevices(String),
    #[error("the username {0:?} is taken: choose another")]
    UsernameTaken(String),
    #[error("invalid username {0:?}: use 1-64 letters, digits, '.', '_' or '-'")]
    BadUsername(String),
    #[error(
        "cannot reach the server at {url} ({reason}): check the address and that the server runs"
    )]
    ServerUnreachable { url: String, reason: String },
    #[error(
        "SERVER CERTIFICATE CHANGED: pinned {pinned}, the server presented {presented}; someone may be \
         intercepting the connection. Refusing to connect. If the operator really replaced the certificate, \
         confirm the new fingerprint with them and pin it with --fingerprint"
    )]
    CertificateChanged { pinned: String, presented: String },
    #[error("invalid fingerprint {0:?}: expected the 64 hex characters printed by `sotto server`")]
    BadFingerprint(String),
    #[error("invalid server URL {0:?}: expected https://host:port")]
    BadServerUrl(String),
    #[error("{0} does not accept messages from you (blocked)")]
    Blocked(String),
    #[error("you blocked {0}: run `sotto unblock {0}` to write to them")]
    YouBlocked(String),
    #[error(
        "{username}'s key changed since you last talked: someone may be impersonating them, or they \
         re-registered. Refusing to send. `sotto verify {username}` shows the new safety number: compare it \
         with {username} out of band, then accept the key with `sotto verify --accept {username}`"
    )]
    KeyChanged { username: String },
    #[error("this device does not hold the user key: approve (or remove) devices from the device you registered with")]
    NoUserKey,
    #[error("no device {0:?} in this account: `sotto devices` lists their ids")]
    UnknownDevice(String),
    #[error("invalid link code {0:?}: type the whole code printed by `sotto link`")]
    BadLinkCode(String),
    #[error("the link code does not match the waiting device's key: do not approve, the request may have been replaced")]
    LinkCodeMismatch,
    #[error("the link request is unknown or expired: run `sotto link` again on the new device")]
    LinkExpired,
    #[error(
        "this device is linked but has not yet received its account data from the approving device: \
         run `sotto inbox` once that device is online"
    )]
    LinkIncomplete,
    #[error("{0} is in use by another sotto process that did not finish in time: try again")]
    HomeBusy(PathBuf),
    #[error(
        "no room {0:?} on this device: see `sotto rooms` (a room is named by its title or its id)"
    )]
    UnknownRoom(String),
    #[error("{title:?} names several rooms; use the room id instead: {}", ids.join(", "))]
    AmbiguousRoom { title: String, ids: Vec<String> },
    #[error("{0}")]
    RoomRefused(String),
    #[error("the message is too large")]
    TooLarge,
    #[error("the server refused the request ({status} {code}): {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server sent an unexpected answer: {0}")]
    BadResponse(String),
    #[error("protocol error: {0}")]
    Protocol(#[from] sotto_proto::Error),
    #[error("local store: {0}")]
    Store(StoreError),
    #[error("file error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongPassphrase => Error::WrongPassphrase,
            StoreError::NotInitialized(p) => Error::NotRegistered(p),
            StoreError::AlreadyExists(p) => Error::AlreadyRegistered(p),
            other => Error::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
