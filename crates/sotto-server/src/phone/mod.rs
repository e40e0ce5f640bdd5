//! Delivery to phone numbers (S1-S10; docs/protocol.md, "Delivery to a
//! phone number"): sender accounts ([`agent`], [`admin`]), the hold key
//! ([`vault`]), sealing and holding messages ([`deliver`]), the SMS
//! gateway ([`sms`]) and the background work ([`worker`]: the outbox of
//! webhook posts and SMS, replies, expiry, delivery status).

pub mod admin;
pub(crate) mod agent;
pub(crate) mod deliver;
pub mod sms;
pub mod vault;
pub(crate) mod webhook;
pub(crate) mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_store::server::phone::PhoneStore;

use self::sms::SmsGateway;
use self::vault::Vault;

/// Default lifetime of a one-time password.
pub const DEFAULT_OTP_TTL: Duration = Duration::from_secs(10 * 60);
/// Attempts allowed on one one-time password.
pub const OTP_ATTEMPTS: u32 = 5;

/// How the phone-number features run (`sotto server` flags).
#[derive(Clone, Debug)]
pub struct PhoneConfig {
    /// Where SMS go.
    pub sms: sms::SmsConfig,
    /// Lifetime of a one-time password (`--otp-ttl`).
    pub otp_ttl: Duration,
    /// The hold key's file (`--hold-key-file`); default `hold_key` in the
    /// data directory. `SOTTO_HOLD_KEY` (hex) overrides both.
    pub hold_key_file: Option<PathBuf>,
    /// The URL handsets are told to register at (in the invitation SMS);
    /// default `https://<listen address>`.
    pub public_url: Option<String>,
}

impl Default for PhoneConfig {
    fn default() -> PhoneConfig {
        PhoneConfig {
            sms: sms::SmsConfig::None,
            otp_ttl: DEFAULT_OTP_TTL,
            hold_key_file: None,
            public_url: None,
        }
    }
}

/// What the phone features share.
pub(crate) struct Phone {
    /// `None` on a PostgreSQL-backed node (no phone tables there yet):
    /// every phone call is then refused with 503.
    pub store: Option<Arc<dyn PhoneStore>>,
    pub vault: Vault,
    pub sms: Option<Arc<dyn SmsGateway>>,
    pub otp_ttl: Duration,
    pub public_url: String,
    /// One sender's device state is loaded, changed and saved by one task
    /// at a time (sessions advance).
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises the delivery of held messages.
    pub held_lock: tokio::sync::Mutex<()>,
}

impl Phone {
    /// Whether this node can deliver to phone numbers.
    pub fn available(&self) -> bool {
        self.store.is_some()
    }

    pub fn new(
        store: Option<Arc<dyn PhoneStore>>,
        vault: Vault,
        sms: Option<Arc<dyn SmsGateway>>,
        otp_ttl: Duration,
        public_url: String,
    ) -> Phone {
        Phone {
            store,
            vault,
            sms,
            otp_ttl,
            public_url,
            locks: Mutex::new(HashMap::new()),
            held_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The lock of one sender's device state.
    pub fn sender_lock(&self, sender_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sender_id)
            .or_default()
            .clone()
    }
}

/// Where the hold key is for `data_dir`.
pub(crate) fn hold_key_path(data_dir: &std::path::Path, file: Option<&std::path::Path>) -> PathBuf {
    file.map(PathBuf::from)
        .unwrap_or_else(|| data_dir.join(vault::HOLD_KEY_FILE))
}

impl Phone {
    /// Runs a phone-store call on the blocking pool.
    pub async fn db<T, F>(&self, f: F) -> Result<T, crate::api::ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn PhoneStore) -> sotto_store::server::Result<T> + Send + 'static,
    {
        let Some(store) = self.store.clone() else {
            return Err(crate::api::ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "phone_unavailable",
                "delivery to phone numbers is not available on a server with a PostgreSQL database yet",
            ));
        };
        match tokio::task::spawn_blocking(move || f(&*store)).await {
            Ok(result) => result.map_err(crate::api::ApiError::from),
            Err(_) => Err(crate::api::ApiError::internal("a store call failed")),
        }
    }

    /// A sender's secrets, opened from their sealed form.
    pub fn secrets(
        &self,
        sender: &sotto_store::server::phone::SenderRecord,
    ) -> Result<agent::SenderSecrets, crate::api::ApiError> {
        let plain = self
            .vault
            .open(&context("sender", &sender.handle), &sender.sealed_secrets)
            .map_err(|e| {
                tracing::error!(sender = %sender.handle, error = %e, "sender secrets do not open");
                crate::api::ApiError::internal("sender keys unavailable")
            })?;
        agent::SenderSecrets::decode(&plain)
            .ok_or_else(|| crate::api::ApiError::internal("sender keys unreadable"))
    }

    /// Queues an SMS (sealed: the number is in it).
    pub async fn queue_sms(&self, to: &str, text: &str) -> Result<(), crate::api::ApiError> {
        let plain = serde_json::json!({"to": to, "text": text}).to_string();
        let sealed = self.vault.seal(OUTBOX_SMS, plain.as_bytes());
        let now = crate::state::now_ms();
        self.db(move |s| s.queue(sotto_store::server::phone::OutboxKind::Sms, 0, sealed, now))
            .await
    }

    /// Queues a webhook event for a sender (sealed: a reply's text is in it).
    pub async fn queue_webhook(
        &self,
        sender_id: i64,
        event: serde_json::Value,
    ) -> Result<(), crate::api::ApiError> {
        let sealed = self
            .vault
            .seal(OUTBOX_WEBHOOK, event.to_string().as_bytes());
        let now = crate::state::now_ms();
        self.db(move |s| {
            s.queue(
                sotto_store::server::phone::OutboxKind::Webhook,
                sender_id,
                sealed,
                now,
            )
        })
        .await
    }
}

pub(crate) const OUTBOX_SMS: &[u8] = b"sotto/outbox/sms";
pub(crate) const OUTBOX_WEBHOOK: &[u8] = b"sotto/outbox/webhook";

/// The vault context of an item: its kind and id.
pub(crate) fn context(kind: &str, id: &str) -> Vec<u8> {
    format!("sotto/{kind}/{id}").into_bytes()
}

/// The HTTP client of outgoing posts (webhooks, the SMS provider): rustls
/// with ring, as the rest of the server. No root store is bundled yet, so
/// `https://` targets need a certificate added to this store (see
/// docs/protocol.md, "Known limits of delivery to numbers").
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    let mut builder = reqwest::Client::builder().timeout(timeout);
    if let Ok(tls) = tls {
        builder = builder.use_preconfigured_tls(tls);
    }
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the HTTP client for webhooks and SMS");
        reqwest::Client::new()
    })
}
