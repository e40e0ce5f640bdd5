//! The server certificate: generated once into the data directory (so the
//! fingerprint clients pinned stays valid across restarts) or loaded from
//! PEM files, and the rustls configuration built from it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::{ServerError, Tls};

pub(crate) const CERT_FILE: &str = "cert.pem";
pub(crate) const KEY_FILE: &str = "key.pem";

pub(crate) struct Loaded {
    pub config: Arc<rustls::ServerConfig>,
    /// Lowercase hex SHA-256 of the leaf certificate (DER).
    pub fingerprint: String,
}

fn cert_error(path: &Path, reason: impl ToString) -> ServerError {
    ServerError::Certificate {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads (or on first start generates) the certificate. Blocking file I/O:
/// called before the server serves anything.
pub(crate) fn load(tls: &Tls, data_dir: &Path) -> Result<Loaded, ServerError> {
    let (cert_path, key_path) = match tls {
        Tls::Files { cert, key } => (cert.clone(), key.clone()),
        Tls::SelfSigned => {
            let (cert, key) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
            if !cert.exists() || !key.exists() {
                generate(&cert, &key)?;
            }
            (cert, key)
        }
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = hex::encode(Sha256::digest(certs[0].as_ref()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(&cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            cert_error(
                &cert_path,
                format!("does not match the key in {}: {e}", key_path.display()),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint,
    })
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = fs::read(path).map_err(|e| cert_error(path, crate::error::io_reason(&e)))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(path, format!("not a PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(cert_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn read_key(path: &PathBuf) -> Result<PrivateKeyDer<'static>, ServerError> {
    let pem = fs::read(path).map_err(|e| cert_error(path, crate::error::io_reason(&e)))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| cert_error(path, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| cert_error(path, "no private key in the file"))
}

/// A self-signed certificate for localhost. The key is written first, with
/// mode 0600, and each file atomically, so a crash never leaves a
/// certificate without its key.
fn generate(cert_path: &Path, key_path: &Path) -> Result<(), ServerError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let made = rcgen::generate_simple_self_signed(names).map_err(|e| cert_error(cert_path, e))?;
    write_atomic(key_path, made.key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(cert_path, made.cert.pem().as_bytes(), 0o644)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ServerError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut f = options.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    let _ = mode;
    write().map_err(|e| cert_error(path, crate::error::io_reason(&e)))
}
