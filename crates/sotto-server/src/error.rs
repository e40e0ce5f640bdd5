//! The errors `start` and `Running::wait` report: one line a user can act on.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("cannot open the data directory {dir}: {reason}")]
    DataDir { dir: PathBuf, reason: String },
    #[error("cannot open the database: {0}")]
    Database(String),
    #[error("TLS certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("server stopped: {0}")]
    Fatal(String),
}

/// A short, lowercase description of an I/O error ("address in use").
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        AddrInUse => "address in use".into(),
        AddrNotAvailable => "address not available on this machine".into(),
        PermissionDenied => "permission denied".into(),
        NotFound => "not found".into(),
        _ => e.to_string(),
    }
}
