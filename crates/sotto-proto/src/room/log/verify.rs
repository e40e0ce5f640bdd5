//! Verifying a stored log: every hash, signature, parent link, the order
//! and the head, with the first bad entry reported by position.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use crate::error::Error;
use crate::keys::DeviceCert;

use super::super::entry::{Entry, EntryHash, GroupId};
use super::{LogHead, LogRecord, SortKey};

/// What [`verify_records`] found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The stored hash is not SHA-256 of the stored bytes.
    HashMismatch,
    /// The bytes do not decode.
    Undecodable(Error),
    /// Certificate or signature does not verify, or the entry is invalid on
    /// its own.
    Invalid(Error),
    /// The entry belongs to another room.
    WrongGroup,
    /// A parent is not among the records before it.
    MissingParent(EntryHash),
    /// The entry does not sort after the one before it.
    OutOfOrder,
    /// The recomputed head is not the stored one.
    HeadMismatch,
}

/// The first bad entry or link found by [`verify_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// Index in the records (`records.len()` for a head mismatch).
    pub position: usize,
    pub entry: Option<EntryHash>,
    pub problem: Problem,
}

impl core::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "entry {}: ", self.position)?;
        match &self.problem {
            Problem::HashMismatch => write!(f, "stored hash does not match its bytes"),
            Problem::Undecodable(e) => write!(f, "does not decode: {e}"),
            Problem::Invalid(e) => write!(f, "does not verify: {e}"),
            Problem::WrongGroup => write!(f, "belongs to another room"),
            Problem::MissingParent(p) => write!(f, "parent {p:?} is not before it"),
            Problem::OutOfOrder => write!(f, "out of the resolved order"),
            Problem::HeadMismatch => write!(f, "log head does not match"),
        }
    }
}

/// Walks a stored log (resolved order, as [`RoomLog::records`] gives it)
/// and recomputes everything: each entry's hash, decoding, certificate and
/// signature, group, that each parent comes earlier, that the order is the
/// resolved order, and the head (compared with `expected` if given).
/// Returns the head, or the first failure.
pub fn verify_records(
    group: &GroupId,
    records: &[LogRecord],
    expected: Option<&LogHead>,
) -> Result<LogHead, VerifyFailure> {
    let mut keys: HashMap<EntryHash, SortKey> = HashMap::with_capacity(records.len());
    let mut certs: HashMap<[u8; DeviceCert::LEN], VerifyingKey> = HashMap::new();
    let mut head = LogHead::genesis(group);
    let mut prev: Option<SortKey> = None;
    for (position, r) in records.iter().enumerate() {
        let fail = |problem| VerifyFailure {
            position,
            entry: Some(r.hash),
            problem,
        };
        if EntryHash::of(&r.bytes) != r.hash {
            return Err(fail(Problem::HashMismatch));
        }
        let entry = Entry::decode(&r.bytes).map_err(|e| fail(Problem::Undecodable(e)))?;
        if entry.group != *group {
            return Err(fail(Problem::WrongGroup));
        }
        entry
            .check_standalone()
            .map_err(|e| fail(Problem::Invalid(e)))?;
        let cert_bytes: [u8; DeviceCert::LEN] = entry
            .sender
            .encode()
            .try_into()
            .map_err(|_| fail(Problem::Invalid(Error::BadCertificate)))?;
        let key = match certs.get(&cert_bytes) {
            Some(k) => *k,
            None => {
                entry
                    .sender
                    .verify()
                    .map_err(|e| fail(Problem::Invalid(e)))?;
                let k = VerifyingKey::from_bytes(&entry.sender.device.0)
                    .map_err(|_| fail(Problem::Invalid(Error::BadKey)))?;
                certs.insert(cert_bytes, k);
                k
            }
        };
        entry
            .verify_with(&key, &r.bytes)
            .map_err(|e| fail(Problem::Invalid(e)))?;
        let mut time = entry.timestamp;
        let mut height = 0u32;
        for p in &entry.parents {
            let pk = keys
                .get(p)
                .ok_or_else(|| fail(Problem::MissingParent(*p)))?;
            time = time.max(pk.time);
            height = height.max(pk.height.saturating_add(1));
        }
        let key = SortKey {
            time,
            height,
            hash: r.hash,
        };
        if prev.is_some_and(|p| p >= key) {
            return Err(fail(Problem::OutOfOrder));
        }
        prev = Some(key);
        keys.insert(r.hash, key);
        head = head.next(&r.hash);
    }
    if let Some(e) = expected {
        if *e != head {
            return Err(VerifyFailure {
                position: records.len(),
                entry: None,
                problem: Problem::HeadMismatch,
            });
        }
    }
    Ok(head)
}
