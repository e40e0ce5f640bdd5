//! The one error type of the client shell: the device core's errors, and
//! what only the shell meets (the server, TLS, the home directory). Each
//! `Display` is one plain line; it names no command or flag (the CLI says
//! what to run next).

use std::path::PathBuf;

use sotto_store::client::StoreError;

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What the device core refused or could not do.
    #[error(transparent)]
    Device(#[from] sotto_device::Error),
    #[error("wrong passphrase: the local store in this home could not be decrypted")]
    WrongPassphrase,
    #[error("no sotto account in {0}")]
    NotRegistered(PathBuf),
    #[error("{0} already holds a sotto account")]
    AlreadyRegistered(PathBuf),
    #[error("the passphrase is too short: use at least {min} characters (anyone holding a copy of the store can try passphrases offline, and a short one is soon found)")]
    WeakPassphrase { min: usize },
    #[error("invalid phone number {0:?}: use the international form, + and 8 to 15 digits, e.g. +15551234567")]
    BadNumber(String),
    #[error("no phone registration is waiting in this home")]
    NoPendingPhone,
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
    #[error("this device is not registered with a server")]
    NoServer,
    #[error("cannot reach the server at {url} ({reason})")]
    ServerUnreachable { url: String, reason: String },
    #[error("SERVER CERTIFICATE CHANGED: pinned {pinned}, the server presented {presented}; someone may be intercepting the connection")]
    CertificateChanged { pinned: String, presented: String },
    #[error("invalid fingerprint {0:?}: expected 64 hex characters (SHA-256)")]
    BadFingerprint(String),
    #[error("invalid server URL {0:?}: expected https://host:port")]
    BadServerUrl(String),
    #[error("{0} is in use by another sotto process that did not finish in time")]
    HomeBusy(PathBuf),
    #[error("the server refused the request ({status} {code}): {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the server sent an unexpected answer: {0}")]
    BadResponse(String),
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
            StoreError::WeakPassphrase { min } => Error::WeakPassphrase { min },
            other => Error::Store(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
