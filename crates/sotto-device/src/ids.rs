//! Names and ids: usernames as users type them, conversation ids, fresh
//! message ids.

use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use sotto_proto::{normalize_username, UserPublic};

use crate::body::MAX_USERNAME;
use crate::{Error, Result};

/// The conversation id of two users: SHA-256 over a label and both user
/// keys in ascending order.
pub fn conversation_id(a: &UserPublic, b: &UserPublic) -> [u8; 32] {
    let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(b"sotto/v1/conversation\0");
    h.update(lo.0);
    h.update(hi.0);
    h.finalize().into()
}

/// Checks a username: 1-64 bytes of ASCII letters, digits, `.`, `_`, `-`.
/// Returns it lowercased.
pub fn check_username(name: &str) -> Result<String> {
    let n = normalize_username(name);
    let ok = !n.is_empty()
        && n.len() <= MAX_USERNAME
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(n)
    } else {
        Err(Error::BadUsername(name.to_string()))
    }
}

/// [`check_username`] for a name of another user: a malformed name is an
/// unknown user.
pub(crate) fn peer_name(username: &str) -> Result<String> {
    check_username(username).map_err(|_| Error::UnknownUser(username.to_string()))
}

/// A fresh message id.
pub(crate) fn random_id(rng: &mut dyn CryptoRngCore) -> [u8; 16] {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    id
}
