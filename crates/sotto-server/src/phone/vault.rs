//! The hold key and what it seals. The hold key (32 random bytes) lives in
//! a file beside the database (`hold_key`, mode 0600; or wherever
//! `--hold-key-file` says) or comes from the environment
//! (`SOTTO_HOLD_KEY`, 64 hex digits); never in the database. Every blob it
//! seals has its own random key: `AES-256-GCM(hold key, item key)` is
//! stored with `AES-256-GCM(item key, plaintext)`, both bound to what the
//! blob is (`context`: e.g. the held message's id). Erasing a blob erases
//! its key with it; a copy of the database alone opens nothing.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// The environment variable that may carry the hold key (hex).
pub const HOLD_KEY_ENV: &str = "SOTTO_HOLD_KEY";
/// The hold key's file in the data directory, unless placed elsewhere.
pub const HOLD_KEY_FILE: &str = "hold_key";

const VERSION: u8 = 1;
const WRAPPED: usize = 12 + 32 + 16;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("hold key {0}")]
    Key(String),
    #[error("a sealed item does not open (wrong hold key or altered data)")]
    Open,
}

pub struct Vault {
    key: Zeroizing<[u8; 32]>,
}

impl Vault {
    /// From `SOTTO_HOLD_KEY` if set, else from `file` (made there if
    /// missing).
    pub fn load(file: &Path) -> Result<Vault, VaultError> {
        if let Ok(hex_key) = std::env::var(HOLD_KEY_ENV) {
            let bytes = Zeroizing::new(
                hex::decode(hex_key.trim())
                    .map_err(|_| VaultError::Key(format!("in {HOLD_KEY_ENV} is not hex")))?,
            );
            let key: [u8; 32] = bytes[..]
                .try_into()
                .map_err(|_| VaultError::Key(format!("in {HOLD_KEY_ENV} is not 32 bytes")))?;
            return Ok(Vault {
                key: Zeroizing::new(key),
            });
        }
        let io = |e: std::io::Error| VaultError::Key(format!("{}: {e}", file.display()));
        let mut key = Zeroizing::new([0u8; 32]);
        match fs::File::open(file) {
            Ok(mut f) => {
                let mut extra = [0u8; 1];
                f.read_exact(&mut key[..]).map_err(io)?;
                if f.read(&mut extra).map_err(io)? != 0 {
                    return Err(VaultError::Key(format!(
                        "{} is not 32 bytes",
                        file.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                OsRng.fill_bytes(&mut key[..]);
                let mut options = OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut f = options.open(file).map_err(io)?;
                f.write_all(&key[..]).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        }
        Ok(Vault { key })
    }

    #[cfg(test)]
    pub fn from_key(key: [u8; 32]) -> Vault {
        Vault {
            key: Zeroizing::new(key),
        }
    }

    /// What the store keeps to tell whether a node holds the same key:
    /// HMAC-SHA-256(key, a fixed label), which reveals nothing of the key.
    pub fn check_value(&self) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key[..]).expect("HMAC takes any key");
        mac.update(b"sotto/hold-key-check/v1");
        mac.finalize().into_bytes().into()
    }

    /// Seals `plaintext` under a fresh item key, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut item = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut item[..]);
        let mut out = Vec::with_capacity(1 + WRAPPED + 12 + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&aead(&self.key, context, &item[..]));
        out.extend_from_slice(&aead(&item, context, plaintext));
        out
    }

    /// Opens what [`Vault::seal`] made for `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if sealed.len() < 1 + WRAPPED + 12 + 16 || sealed[0] != VERSION {
            return Err(VaultError::Open);
        }
        let item = unaead(&self.key, context, &sealed[1..1 + WRAPPED])?;
        let item: [u8; 32] = item[..].try_into().map_err(|_| VaultError::Open)?;
        let item = Zeroizing::new(item);
        unaead(&item, context, &sealed[1 + WRAPPED..])
    }
}

/// nonce || AES-256-GCM(key, nonce, plaintext, aad = context).
fn aead(key: &[u8; 32], context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new_from_slice(&key[..]).expect("a 32-byte key");
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: context,
            },
        )
        .expect("AES-GCM seals any length this server makes");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

fn unaead(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < 12 + 16 {
        return Err(VaultError::Open);
    }
    let cipher = Aes256Gcm::new_from_slice(&key[..]).expect("a 32-byte key");
    cipher
        .decrypt(
            Nonce::from_slice(&sealed[..12]),
            Payload {
                msg: &sealed[12..],
                aad: context,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_items_open_only_under_their_context_and_key() {
        let v = Vault::from_key([7; 32]);
        let s = v.seal(b"held:1", b"+15551234567 hello");
        assert_eq!(&v.open(b"held:1", &s).unwrap()[..], b"+15551234567 hello");
        assert!(v.open(b"held:2", &s).is_err());
        assert!(Vault::from_key([8; 32]).open(b"held:1", &s).is_err());
        let mut bad = s.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(v.open(b"held:1", &bad).is_err());
        assert!(v.open(b"held:1", &s[..10]).is_err());
        assert!(!s.windows(5).any(|w| w == b"hello"));
    }
}
