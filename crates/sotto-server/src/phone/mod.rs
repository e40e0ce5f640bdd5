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
    /// Certificates (PEM) trusted for outgoing HTTPS besides the public
    /// roots (`--outgoing-ca`): a webhook behind a private CA.
    pub outgoing_ca: Option<PathBuf>,
}

impl Default for PhoneConfig {
    fn default() -> PhoneConfig {
        PhoneConfig {
            sms: sms::SmsConfig::None,
            otp_ttl: DEFAULT_OTP_TTL,
            hold_key_file: None,
            public_url: None,
            outgoing_ca: None,
        }
    }
}

/// What the phone features share.
pub(crate) struct Phone {
    /// `None` on a node whose hold key is not the database's (it could
    /// open nothing the other nodes held): every phone call is then
    /// refused with 503.
    pub store: Option<Arc<dyn PhoneStore>>,
    pub vault: Vault,
    pub sms: Option<Arc<dyn SmsGateway>>,
    pub otp_ttl: Duration,
    pub public_url: String,
    /// Outgoing posts to webhooks (the SMS provider has its own client,
    /// without `--outgoing-ca`).
    pub http: reqwest::Client,
    /// One sender's device state is loaded, changed and saved by one task
    /// at a time (sessions advance): in this process by these locks, across
    /// nodes by the store's ([`PhoneStore::lock_sender`]).
    locks: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Store locks this node holds at once: on PostgreSQL each keeps a
    /// pooled connection while the work under it needs others, so a few
    /// only, never the whole pool.
    store_locks: Arc<tokio::sync::Semaphore>,
}

/// Senders whose device state one node changes at the same time.
const STORE_LOCKS: usize = 4;

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
        http: reqwest::Client,
    ) -> Phone {
        Phone {
            store,
            vault,
            sms,
            otp_ttl,
            public_url,
            http,
            locks: Mutex::new(HashMap::new()),
            store_locks: Arc::new(tokio::sync::Semaphore::new(STORE_LOCKS)),
        }
    }

    /// Takes the lock of one sender's device state: this process's first
    /// (so one task per node waits on the store's), then the store's.
    pub async fn lock_sender(&self, sender_id: i64) -> Result<SenderGuard, crate::api::ApiError> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sender_id)
            .or_default()
            .clone();
        let local = lock.lock_owned().await;
        let permit = self
            .store_locks
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| crate::api::ApiError::internal("sender locks closed"))?;
        let store = self.db(move |s| s.lock_sender(sender_id)).await?;
        Ok(SenderGuard {
            _store: store,
            _permit: permit,
            _local: local,
        })
    }
}

/// Both locks of a sender's device state; the store's is released first.
pub(crate) struct SenderGuard {
    _store: sotto_store::server::phone::SenderLock,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _local: tokio::sync::OwnedMutexGuard<()>,
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
                "delivery to phone numbers is off on this node: its hold key is not the other nodes' (see its log)",
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

/// How long one webhook post may take.
pub(crate) const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request to the SMS provider may take.
pub(crate) const SMS_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP client of outgoing posts: rustls with ring, as the rest of the
/// server, trusting the public web roots compiled in (`webpki-roots`,
/// Mozilla's list) plus `extra_ca`. Webhooks get the certificates of
/// `--outgoing-ca` (a private CA of a sender's webhook; tests' stand-ins);
/// the SMS provider gets a client of its own with none (only the public
/// roots: a sender's CA cannot pose as the provider and read OTPs).
/// A certificate that chains to none of them is refused: the post fails
/// and stays queued (retried with backoff, logged), never sent in clear
/// or to an unverified peer.
pub(crate) fn http_client(
    extra_ca: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_ca {
        roots
            .add(cert.clone())
            .map_err(|e| format!("not a CA certificate: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// The certificates of a PEM file (`--outgoing-ca`).
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| crate::error::io_reason(&e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE in it".into());
    }
    Ok(certs)
}

/// An error with its causes ("error sending request: ...: invalid peer
/// certificate: UnknownIssuer"): the log says why a post failed.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
