//! Peers this device had a peer-to-peer session with, and the address it
//! last reached each at: the peer shell's business (the device core never
//! reads it), kept in the encrypted store so that `p2p up` can dial them
//! again after a restart without writing who one talks to in the clear.

use rusqlite::params;

use super::{ClientStore, Result};

/// At most this many peers are remembered (the least recently seen go).
pub const MAX_REMEMBERED_PEERS: usize = 256;

/// A peer as remembered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RememberedPeer {
    pub name: String,
    /// A multiaddr with no `/p2p/` part (peer ids change every run).
    pub address: String,
    /// Unix ms.
    pub seen_at: u64,
}

impl ClientStore {
    /// Remembers that `name` was reached at `address` at `seen_at` (Unix
    /// ms); forgets the least recently seen beyond
    /// [`MAX_REMEMBERED_PEERS`].
    pub fn remember_peer(&self, name: &str, address: &str, seen_at: u64) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR REPLACE INTO p2p_peers (name, address, seen_at) VALUES (?1, ?2, ?3)",
            params![name, address, seen_at as i64],
        )?;
        db.execute(
            "DELETE FROM p2p_peers WHERE name NOT IN \
             (SELECT name FROM p2p_peers ORDER BY seen_at DESC LIMIT ?1)",
            [MAX_REMEMBERED_PEERS as i64],
        )?;
        Ok(())
    }

    /// The remembered peers, most recently seen first.
    pub fn remembered_peers(&self) -> Result<Vec<RememberedPeer>> {
        let db = self.db();
        let mut stmt =
            db.prepare("SELECT name, address, seen_at FROM p2p_peers ORDER BY seen_at DESC")?;
        let rows = stmt.query_map([], |r| {
            Ok(RememberedPeer {
                name: r.get(0)?,
                address: r.get(1)?,
                seen_at: r.get::<_, i64>(2)? as u64,
            })
        })?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }
}
