//! The server secret: 32 random bytes made on first start, kept in the data
//! directory (mode 0600) or in a file of the operator's choosing
//! (`--secret-file`), never in the database. It keys how usernames and
//! block lists are stored, so the database alone does not allow guessing
//! usernames offline or telling who blocks whom.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{UserPublic, UsernameHash};

pub(crate) struct ServerSecret(Zeroizing<[u8; 32]>);

impl ServerSecret {
    /// Loads the secret from `path`, or creates it there if `create`.
    pub(crate) fn load(path: &Path, create: bool) -> std::io::Result<ServerSecret> {
        match fs::File::open(path) {
            Ok(mut f) => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                let mut extra = [0u8; 1];
                f.read_exact(&mut bytes[..])?;
                if f.read(&mut extra)? != 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} is not a sotto server secret (expected 32 bytes)",
                            path.display()
                        ),
                    ));
                }
                Ok(ServerSecret(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                OsRng.fill_bytes(&mut bytes[..]);
                let mut options = OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut f = options.open(path)?;
                f.write_all(&bytes[..])?;
                // Losing the secret after users registered would orphan
                // every user: make it durable before anything is stored.
                f.sync_all()?;
                if let Some(dir) = path.parent() {
                    fs::File::open(dir)?.sync_all()?;
                }
                Ok(ServerSecret(bytes))
            }
            Err(e) => Err(e),
        }
    }

    fn mac(&self, label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..]).expect("HMAC takes any key length");
        mac.update(label);
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The key a user is stored under.
    pub(crate) fn name_key(&self, username_hash: &UsernameHash) -> [u8; 32] {
        self.mac(b"sotto/server/name-key\0", &[username_hash])
    }

    /// The key a phone number is stored under.
    pub(crate) fn number_key(&self, number: &str) -> [u8; 32] {
        self.mac(b"sotto/server/number-key\0", &[number.as_bytes()])
    }

    /// How a one-time password is stored: keyed, so a copy of the database
    /// does not let anyone try the million codes offline.
    pub(crate) fn otp_hash(&self, number_key: &[u8; 32], otp: &str) -> [u8; 32] {
        self.mac(b"sotto/server/otp\0", &[number_key, otp.as_bytes()])
    }

    /// The username hash XOR-ed with a pad unique to the user (its name
    /// key); [`ServerSecret::seal_name`] is its own inverse.
    pub(crate) fn seal_name(&self, name_key: &[u8; 32], username_hash: &UsernameHash) -> [u8; 32] {
        xor(
            &self.mac(b"sotto/server/name-pad\0", &[name_key]),
            username_hash,
        )
    }

    /// A value stored beside the data it keys, so a server started with
    /// another secret refuses to start instead of losing every user. (An
    /// HMAC output: it reveals nothing of the secret.)
    pub(crate) fn check_value(&self) -> [u8; 32] {
        self.mac(b"sotto/server/secret-check\0", &[])
    }

    /// The key of one block: `blocker` refuses datagrams from `blocked`.
    pub(crate) fn block_pair(&self, blocker: &UserPublic, blocked: &UserPublic) -> [u8; 32] {
        self.mac(b"sotto/server/block-pair\0", &[&blocker.0, &blocked.0])
    }

    /// The key under which `blocker`'s list is found.
    pub(crate) fn block_owner(&self, blocker: &UserPublic) -> [u8; 32] {
        self.mac(b"sotto/server/block-owner\0", &[&blocker.0])
    }

    /// The blocked user's username hash, XOR-ed with a pad of its block
    /// (its own inverse, as [`ServerSecret::seal_name`]).
    pub(crate) fn seal_blocked(&self, pair: &[u8; 32], username_hash: &UsernameHash) -> [u8; 32] {
        xor(
            &self.mac(b"sotto/server/block-pad\0", &[pair]),
            username_hash,
        )
    }
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for i in 0..32 {
        out[i] = a[i] ^ b[i];
    }
    out
}
