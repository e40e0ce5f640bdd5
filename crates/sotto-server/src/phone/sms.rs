//! The SMS gateway: a small trait with two adapters. [`Sink`] (development
//! only: `--sms-sink FILE`) appends each SMS as one JSON line
//! `{"to": "+1...", "text": "..."}` and accepts unsigned inbound SMS;
//! [`Twilio`] sends through Twilio's Messages API and verifies the
//! `X-Twilio-Signature` of inbound SMS. Sends are queued durably and
//! retried by the worker, so a gateway failure loses nothing.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Where SMS go.
#[derive(Clone, Debug, Default)]
pub enum SmsConfig {
    /// No gateway: SMS are queued until one is configured; inbound SMS
    /// are refused.
    #[default]
    None,
    /// Development sink: one JSON line per SMS in this file.
    Sink(PathBuf),
    Twilio(TwilioConfig),
}

/// Twilio's Messages API. The auth token comes from the environment
/// (`SOTTO_TWILIO_AUTH_TOKEN`), never from a flag.
#[derive(Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// The number SMS are sent from and handsets text codes to.
    pub from: String,
    /// `https://api.twilio.com` (tests use a local stand-in).
    pub base_url: String,
    /// The public URL of this server's `/v1/sms/inbound`, exactly as
    /// configured at Twilio: the signature covers it.
    pub inbound_url: String,
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("from", &self.from)
            .field("base_url", &self.base_url)
            .field("inbound_url", &self.inbound_url)
            .finish_non_exhaustive()
    }
}

/// Why an SMS was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// Try again later (network, 5xx, 429).
    #[error("SMS gateway unavailable: {0}")]
    Retry(String),
    /// The provider refused this SMS for good (4xx).
    #[error("SMS refused by the gateway: {0}")]
    Refused(String),
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SmsError>> + Send + 'a>>;

pub trait SmsGateway: Send + Sync {
    fn send<'a>(&'a self, to: &'a str, text: &'a str) -> SendFuture<'a>;
    /// Whether an inbound SMS request is authentic: `signature` is the
    /// provider's signature header, `params` the decoded form fields.
    fn verify_inbound(&self, signature: Option<&str>, params: &[(String, String)]) -> bool;
    /// The number handsets text codes to.
    fn number(&self) -> String;
    /// Development only (says so at start).
    fn is_development(&self) -> bool {
        false
    }
}

/// Makes the configured gateway; `http` is the server's outgoing client.
pub fn gateway(
    config: &SmsConfig,
    http: &reqwest::Client,
) -> Option<std::sync::Arc<dyn SmsGateway>> {
    match config {
        SmsConfig::None => None,
        SmsConfig::Sink(path) => Some(std::sync::Arc::new(Sink {
            path: path.clone(),
            lock: Mutex::new(()),
        })),
        SmsConfig::Twilio(t) => Some(std::sync::Arc::new(Twilio {
            config: t.clone(),
            http: http.clone(),
        })),
    }
}

/// The development sink.
pub struct Sink {
    path: PathBuf,
    lock: Mutex<()>,
}

/// The number the sink pretends to receive on.
pub const SINK_NUMBER: &str = "+15550000000";

impl SmsGateway for Sink {
    fn send<'a>(&'a self, to: &'a str, text: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let line = serde_json::json!({"to": to, "text": text}).to_string();
            let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| SmsError::Retry(format!("{}: {e}", self.path.display())))?;
            // One write of the whole line: nodes sharing a sink file
            // (O_APPEND) never interleave within a line.
            f.write_all(format!("{line}\n").as_bytes())
                .map_err(|e| SmsError::Retry(e.to_string()))?;
            f.sync_data().map_err(|e| SmsError::Retry(e.to_string()))
        })
    }

    fn verify_inbound(&self, _signature: Option<&str>, _params: &[(String, String)]) -> bool {
        true
    }

    fn number(&self) -> String {
        SINK_NUMBER.to_string()
    }

    fn is_development(&self) -> bool {
        true
    }
}

pub struct Twilio {
    config: TwilioConfig,
    http: reqwest::Client,
}

/// Twilio's request signature: base64 HMAC-SHA1 (auth token) over the URL
/// followed by every POST field, sorted by name, name then value.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl SmsGateway for Twilio {
    fn send<'a>(&'a self, to: &'a str, text: &'a str) -> SendFuture<'a> {
        Box::pin(async move {
            let c = &self.config;
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                c.base_url.trim_end_matches('/'),
                c.account_sid
            );
            let response = self
                .http
                .post(url)
                .timeout(super::SMS_TIMEOUT)
                .basic_auth(&c.account_sid, Some(&c.auth_token))
                .form(&[("To", to), ("From", c.from.as_str()), ("Body", text)])
                .send()
                .await
                .map_err(|e| SmsError::Retry(super::error_chain(&e)))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else if status.is_server_error() || status.as_u16() == 429 {
                Err(SmsError::Retry(format!("HTTP {status}")))
            } else {
                Err(SmsError::Refused(format!("HTTP {status}")))
            }
        })
    }

    fn verify_inbound(&self, signature: Option<&str>, params: &[(String, String)]) -> bool {
        let Some(given) = signature else {
            return false;
        };
        let expected = twilio_signature(&self.config.auth_token, &self.config.inbound_url, params);
        bool::from(expected.as_bytes().ct_eq(given.trim().as_bytes()))
    }

    fn number(&self) -> String {
        self.config.from.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_signature_matches_the_documented_example() {
        // Twilio's documented example (security docs): token 12345.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
