//! Operator commands on a data directory (`sotto admin --data DIR ...`):
//! sender accounts, their API keys, the held messages. They open the
//! database beside a running server (SQLite allows it; with `--database`,
//! the PostgreSQL database the nodes share) with the same server secret
//! and hold key.

use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use sotto_store::server::phone::{HoldKeyCheck, MessageRecord, NewSender, PhoneStore};
use sotto_store::server::{PostgresStore, SqliteStore, StoreError};

use super::vault::{Vault, VaultError};
use super::{agent, context};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Vault(#[from] VaultError),
    #[error("the handle {0:?} is taken (a user or sender has it)")]
    HandleTaken(String),
    #[error("invalid handle {0:?}: use letters, digits, '.', '_' or '-' (at most 64)")]
    BadHandle(String),
    #[error("no sender {0:?}")]
    UnknownSender(String),
    #[error("the webhook must be an http:// or https:// URL")]
    BadWebhook,
    #[error("this hold key is not the one the database was first used with (every node and `sotto admin` need the same hold key file)")]
    OtherHoldKey,
}

/// What `sender add` and `sender add-key` show once.
#[derive(Clone, Debug)]
pub struct NewKeys {
    pub api_key: String,
    /// Hex webhook signing secret (`sender add` only).
    pub webhook_secret: Option<String>,
}

/// A sender as `sender list` shows it.
#[derive(Clone, Debug)]
pub struct SenderInfo {
    pub handle: String,
    pub name: String,
    pub webhook: String,
    pub created_at: u64,
}

pub struct Admin {
    store: Box<dyn PhoneStore>,
    vault: Vault,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_key() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let key = format!("sk_{}", hex::encode(raw));
    let hash = Sha256::digest(key.as_bytes()).into();
    (key, hash)
}

impl Admin {
    /// Opens the SQLite store of `data_dir`, or the PostgreSQL database
    /// at `database` (the server secret then in `secret_file` or
    /// `data_dir`). Blocking: call it from a plain thread.
    pub fn open(
        data_dir: &Path,
        secret_file: Option<&Path>,
        hold_key_file: Option<&Path>,
        database: Option<&str>,
    ) -> Result<Admin, AdminError> {
        let store: Box<dyn PhoneStore> = match database {
            None => Box::new(SqliteStore::open_with(data_dir, secret_file)?),
            Some(url) => {
                let secret: PathBuf = secret_file
                    .map(PathBuf::from)
                    .unwrap_or_else(|| data_dir.join(sotto_store::server::SECRET_FILE));
                Box::new(PostgresStore::open(url, &secret)?)
            }
        };
        let vault = Vault::load(&super::hold_key_path(data_dir, hold_key_file))?;
        if store.bind_hold_key(&vault.check_value())? == HoldKeyCheck::Different {
            return Err(AdminError::OtherHoldKey);
        }
        Ok(Admin { store, vault })
    }

    /// Adds a sender with its first API key.
    pub fn sender_add(
        &self,
        handle: &str,
        name: &str,
        webhook: &str,
    ) -> Result<NewKeys, AdminError> {
        let handle = sotto_device::check_username(handle)
            .map_err(|_| AdminError::BadHandle(handle.to_string()))?;
        if !(webhook.starts_with("http://") || webhook.starts_with("https://")) {
            return Err(AdminError::BadWebhook);
        }
        let now = now_ms();
        let (user, secrets) = agent::new_identity(&handle, now);
        let (api_key, api_key_hash) = new_key();
        let webhook_secret = hex::encode(&secrets.webhook_secret[..]);
        let sealed_secrets = self
            .vault
            .seal(&context("sender", &handle), &secrets.encode());
        self.store
            .add_sender(
                NewSender {
                    handle: handle.clone(),
                    name: name.to_string(),
                    webhook: webhook.to_string(),
                    user,
                    sealed_secrets,
                    api_key_hash,
                },
                now,
            )
            .map_err(|e| match e {
                StoreError::UsernameTaken | StoreError::AlreadyRegistered => {
                    AdminError::HandleTaken(handle.clone())
                }
                other => AdminError::Store(other),
            })?;
        Ok(NewKeys {
            api_key,
            webhook_secret: Some(webhook_secret),
        })
    }

    pub fn add_key(&self, handle: &str) -> Result<NewKeys, AdminError> {
        let (api_key, hash) = new_key();
        self.store
            .add_api_key(handle, &hash, now_ms())
            .map_err(|e| match e {
                StoreError::UnknownUser => AdminError::UnknownSender(handle.to_string()),
                other => AdminError::Store(other),
            })?;
        Ok(NewKeys {
            api_key,
            webhook_secret: None,
        })
    }

    /// Revokes `key` of `handle`; false if it was no live key of it.
    pub fn revoke_key(&self, handle: &str, key: &str) -> Result<bool, AdminError> {
        if self.store.sender(handle)?.is_none() {
            return Err(AdminError::UnknownSender(handle.to_string()));
        }
        let hash: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        Ok(self.store.revoke_api_key(handle, &hash, now_ms())?)
    }

    pub fn senders(&self) -> Result<Vec<SenderInfo>, AdminError> {
        Ok(self
            .store
            .senders()?
            .into_iter()
            .map(|s| SenderInfo {
                handle: s.handle,
                name: s.name,
                webhook: s.webhook,
                created_at: s.created_at,
            })
            .collect())
    }

    /// Held messages: id, sender, status, times (never body or number).
    pub fn held(&self) -> Result<Vec<MessageRecord>, AdminError> {
        Ok(self.store.held()?)
    }
}
