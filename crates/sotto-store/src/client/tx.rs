//! One write transaction: what a received message changes (protocol
//! state, history row, mailbox cursor, contacts) commits together.

use rusqlite::{params, Transaction};
use sotto_proto::{Changes, Device};

use super::account::write_username;
use super::contacts::write_contact;
use super::{ClientStore, Contact, Result, StoredMessage};

impl ClientStore {
    /// Starts a transaction; nothing is written until [`Tx::commit`].
    pub fn transaction(&mut self) -> Result<Tx<'_>> {
        Ok(Tx {
            tx: self
                .conn
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?,
        })
    }
}

/// One write transaction.
pub struct Tx<'a> {
    pub(super) tx: Transaction<'a>,
}

impl Tx<'_> {
    /// Writes what [`Device::take_changes`] reported, and the device's next
    /// prekey id.
    pub fn apply_device_changes(&self, device: &Device, changes: &Changes) -> Result<()> {
        for id in &changes.sessions_upserted {
            match device.session_bytes(id) {
                Some(bytes) => {
                    self.tx.execute(
                        "INSERT OR REPLACE INTO sessions (id, state) VALUES (?1, ?2)",
                        params![&id.0[..], &bytes[..]],
                    )?;
                }
                None => {
                    self.tx
                        .execute("DELETE FROM sessions WHERE id = ?1", [&id.0[..]])?;
                }
            }
        }
        for id in &changes.sessions_removed {
            self.tx
                .execute("DELETE FROM sessions WHERE id = ?1", [&id.0[..]])?;
        }
        for id in &changes.prekeys_added {
            if let Some(bytes) = device.prekey_bytes(*id) {
                self.tx.execute(
                    "INSERT OR REPLACE INTO prekeys (id, secret) VALUES (?1, ?2)",
                    params![*id as i64, &bytes[..]],
                )?;
            }
        }
        for id in &changes.prekeys_removed {
            self.tx
                .execute("DELETE FROM prekeys WHERE id = ?1", [*id as i64])?;
        }
        self.tx.execute(
            "UPDATE account SET next_prekey_id = ?1 WHERE id = 1",
            [device.next_prekey_id() as i64],
        )?;
        Ok(())
    }

    /// Adds a message to the history; false (and nothing written) when a
    /// message with the same id is already there.
    pub fn insert_message(&self, m: &StoredMessage) -> Result<bool> {
        let n = self.tx.execute(
            "INSERT OR IGNORE INTO messages (id, conversation, sender, recipient, sent_at, received_at, body, ttl, \
             outgoing) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                &m.id[..],
                &m.conversation[..],
                m.from,
                m.to,
                m.sent_at as i64,
                m.received_at as i64,
                m.body,
                m.ttl as i64,
                m.outgoing
            ],
        )?;
        Ok(n == 1)
    }

    /// Moves the mailbox cursor forward (never back).
    pub fn set_cursor(&self, cursor: u64) -> Result<()> {
        self.tx.execute(
            "UPDATE account SET cursor = max(cursor, ?1) WHERE id = 1",
            [cursor as i64],
        )?;
        Ok(())
    }

    /// Inserts or replaces a contact inside this transaction.
    pub fn put_contact(&self, c: &Contact) -> Result<()> {
        write_contact(&self.tx, c)
    }

    /// Sets the account's username inside this transaction.
    pub fn set_username(&self, username: &str) -> Result<()> {
        write_username(&self.tx, username)
    }

    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}
