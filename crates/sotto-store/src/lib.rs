//! # sotto-store
//!
//! Storage for sotto, behind small traits with separate backends:
//! - [`server`]: the security platform's store (directory, prekey pools,
//!   mailboxes, retention), SQLite in the data directory by default;
//! - [`client`]: one device's encrypted store (SQLCipher, key from the
//!   passphrase with Argon2id): keys, sessions, contacts, history.

pub mod client;
pub mod server;
