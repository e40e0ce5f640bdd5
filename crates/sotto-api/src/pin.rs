//! TLS with a pinned server certificate, for every program that talks to a
//! sotto server (the client and the load generator; feature `pinned-tls`).
//!
//! The server's certificate is not checked against a CA: it is pinned by the
//! SHA-256 of its DER encoding (lowercase hex). Without a fingerprint the
//! first certificate presented is pinned (trust on first use) for the life
//! of the configuration; every later connection must present the same one.
//! The handshake signatures are still checked (ring provider).

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Checks and normalizes a fingerprint typed by a person: 64 hex digits,
/// any case, colons, spaces or dashes between them, an optional `sha256:`
/// prefix. `None` when it is not one.
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let s = s.trim();
    let s = s
        .strip_prefix("sha256:")
        .or_else(|| s.strip_prefix("SHA256:"))
        .unwrap_or(s);
    let clean: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | ' ' | '-'))
        .collect::<String>()
        .to_lowercase();
    (clean.len() == 64 && clean.bytes().all(|b| b.is_ascii_hexdigit())).then_some(clean)
}

/// What the verifier saw, shared with the code that explains failures.
#[derive(Debug, Default)]
pub struct PinState {
    /// The fingerprint required; `None` until first contact (TOFU).
    pub expected: Option<String>,
    /// The fingerprint of the last certificate presented.
    pub seen: Option<String>,
    /// Set when a presented certificate did not match `expected`.
    pub mismatch: Option<String>,
}

#[derive(Debug)]
struct PinVerifier {
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
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity.as_ref());
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.seen = Some(fp.clone());
        match &st.expected {
            Some(expected) if *expected != fp => {
                let message =
                    format!("server certificate fingerprint {fp} is not the pinned {expected}");
                st.mismatch = Some(fp);
                Err(rustls::Error::General(message))
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
/// pinning the first certificate seen when `expected` is `None`; and the
/// state its verifier records.
pub fn pinned_config(
    expected: Option<String>,
) -> Result<(ClientConfig, Arc<Mutex<PinState>>), rustls::Error> {
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
        .with_safe_default_protocol_versions()?
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
        assert_eq!(parse_fingerprint(&format!("sha256:{fp}")).unwrap(), fp);
        assert!(parse_fingerprint("abc").is_none());
        assert!(parse_fingerprint(&"g".repeat(64)).is_none());
    }

    #[test]
    fn a_mismatch_is_refused_and_recorded() {
        let (_, state) = pinned_config(Some("00".repeat(32))).unwrap();
        let verifier = PinVerifier {
            state: state.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let cert = CertificateDer::from(b"not the pinned one".to_vec());
        let name = ServerName::try_from("localhost").unwrap();
        assert!(verifier
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_err());
        assert_eq!(
            state.lock().unwrap().mismatch.as_deref(),
            Some(fingerprint(b"not the pinned one").as_str())
        );
        // TOFU pins the first certificate and refuses another.
        let (_, tofu) = pinned_config(None).unwrap();
        let v = PinVerifier {
            state: tofu.clone(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        assert!(v
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_ok());
        let other = CertificateDer::from(b"another".to_vec());
        assert!(v
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .is_err());
    }
}
