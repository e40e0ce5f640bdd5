//! TLS with a pinned server certificate.
//!
//! The server's certificate is not checked against a CA: it is pinned by the
//! SHA-256 of its DER encoding (lowercase hex). The first contact with a
//! server records the fingerprint (trust on first use) unless the user gave
//! one; every later connection must present the same certificate.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Checks and normalizes a user-supplied fingerprint (colons allowed).
pub fn parse_fingerprint(s: &str) -> Result<String> {
    let clean: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    if clean.len() == 64 && clean.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(clean)
    } else {
        Err(Error::BadFingerprint(s.to_string()))
    }
}

/// What the verifier saw, shared with the code that maps errors.
#[derive(Debug, Default)]
pub(crate) struct PinState {
    /// The fingerprint required; `None` until first contact (TOFU).
    pub expected: Option<String>,
    /// The fingerprint of the last certificate presented.
    pub seen: Option<String>,
    /// Set when a presented certificate did not match `expected`.
    pub mismatch: Option<String>,
}

#[derive(Debug)]
pub(crate) struct PinVerifier {
    state: Arc<Mutex<PinState>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity.as_ref());
        let mut st = self.state.lock().expect("pin state");
        st.seen = Some(fp.clone());
        match &st.expected {
            Some(expected) if *expected != fp => {
                st.mismatch = Some(fp);
                Err(rustls::Error::General(
                    "server certificate does not match the pinned fingerprint".into(),
                ))
            }
            Some(_) => Ok(ServerCertVerified::assertion()),
            None => {
                // First contact: pin what we see for the rest of this process.
                st.expected = Some(fp);
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration (ring provider) pinning `expected`, or
/// pinning the first certificate seen when `expected` is `None`.
pub(crate) fn pinned_config(
    expected: Option<String>,
) -> Result<(ClientConfig, Arc<Mutex<PinState>>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let state = Arc::new(Mutex::new(PinState {
        expected,
        ..PinState::default()
    }));
    let verifier = PinVerifier {
        state: state.clone(),
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::BadResponse(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_normalized() {
        let fp = fingerprint(b"cert");
        assert_eq!(fp.len(), 64);
        assert_eq!(parse_fingerprint(&fp.to_uppercase()).unwrap(), fp);
        let colons: Vec<String> = fp
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), fp);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"g".repeat(64)).is_err());
    }
}
