//! Usernames as the protocol carries them: never in clear to the server,
//! only as a hash (the directory key, and a room entry's `sender_name`).

use sha2::{Digest, Sha256};

/// Usernames are case-insensitive and trimmed, as their hash is.
pub fn normalize_username(username: &str) -> String {
    username.trim().to_lowercase()
}

/// The hash under which the server knows a username: SHA-256 over a domain
/// label and the username lowercased. The server never receives the name.
/// (A short name can still be found by guessing; the server additionally
/// keys what it stores with a secret of its own, see docs/api.md.)
pub fn username_hash(username: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"sotto/v1/username\0");
    h.update(normalize_username(username).as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_hash_ignores_case_and_outer_space() {
        assert_eq!(username_hash("Alice"), username_hash(" alice "));
        assert_ne!(username_hash("alice"), username_hash("alicf"));
        assert_eq!(normalize_username(" Bob "), "bob");
    }
}
