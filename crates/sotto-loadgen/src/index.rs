//! Matching a received datagram to the message it carries: the datagrams
//! are sealed before the timed phase, so a SHA-256 of each one identifies
//! it without opening it.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sotto_api::{b64, MailboxItem};

use crate::setup::{target, Sealed};

/// Datagram hash -> message id, and message id -> target subscriber.
pub struct Index {
    by_hash: HashMap<[u8; 32], u32>,
    target: Vec<u32>,
}

impl Index {
    pub fn build(sealed: &[Sealed], n: usize, nsub: usize) -> Index {
        let mut by_hash = HashMap::with_capacity(n);
        let mut tgt = vec![u32::MAX; n];
        for (p, s) in sealed.iter().enumerate() {
            for (h, id) in &s.hashes {
                by_hash.insert(*h, *id);
            }
            for m in &s.msgs {
                tgt[m.id as usize] = target(m.k, p, nsub) as u32;
            }
        }
        Index {
            by_hash,
            target: tgt,
        }
    }

    /// Matches a received datagram to (message id, target subscriber).
    pub fn lookup(&self, datagram: &[u8]) -> Option<(usize, usize)> {
        let h: [u8; 32] = Sha256::digest(datagram).into();
        let id = *self.by_hash.get(&h)? as usize;
        Some((id, self.target[id] as usize))
    }

    /// Decodes a mailbox item and matches its datagram: (message id, target
    /// subscriber, datagram); `None` for anything not sent by this run.
    pub fn lookup_item(&self, item: &MailboxItem) -> Option<(usize, usize, Vec<u8>)> {
        let d = b64::decode(&item.datagram)?;
        let (id, target) = self.lookup(&d)?;
        Some((id, target, d))
    }
}
