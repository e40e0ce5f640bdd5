//! The account row (who this device is, its keys, its server) and the
//! device's protocol state (prekey secrets and sessions).

use rusqlite::{params, Connection, OptionalExtension};
use sotto_proto::Device;
use zeroize::Zeroizing;

use super::{Account, ClientStore, Result, StoreError};

/// Sets the account's username, on the store's connection or inside a
/// transaction.
pub(super) fn write_username(db: &Connection, username: &str) -> Result<()> {
    db.execute("UPDATE account SET username = ?1 WHERE id = 1", [username])?;
    Ok(())
}

impl ClientStore {
    /// The account, if this device was registered or linked.
    pub fn account(&self) -> Result<Option<Account>> {
        let db = self.db();
        db
            .query_row(
                "SELECT username, user_key, device_key, device_cert, server_url, server_fingerprint, cursor, \
                 next_prekey_id FROM account WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                    ))
                },
            )
            .optional()?
            .map(|(username, user_key, device_key, device_cert, server_url, server_fingerprint, cursor, next)| {
                let user_key = match user_key {
                    Some(v) => {
                        let v = Zeroizing::new(v);
                        if v.len() != 32 {
                            return Err(StoreError::Corrupt("user key has the wrong length".into()));
                        }
                        let mut k = Zeroizing::new([0u8; 32]);
                        k.copy_from_slice(&v);
                        Some(k)
                    }
                    None => None,
                };
                let dk = Zeroizing::new(device_key);
                let mut device_key = Zeroizing::new([0u8; 64]);
                if dk.len() != 64 {
                    return Err(StoreError::Corrupt("device key has the wrong length".into()));
                }
                device_key.copy_from_slice(&dk);
                Ok(Account {
                    username,
                    user_key,
                    device_key,
                    device_cert,
                    server_url,
                    server_fingerprint,
                    cursor: cursor as u64,
                    next_prekey_id: next as u32,
                })
            })
            .transpose()
    }

    /// Writes the account (insert or replace).
    pub fn put_account(&self, a: &Account) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR REPLACE INTO account (id, username, user_key, device_key, device_cert, server_url, \
             server_fingerprint, cursor, next_prekey_id) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                a.username,
                a.user_key.as_ref().map(|k| &k[..]),
                &a.device_key[..],
                a.device_cert,
                a.server_url,
                a.server_fingerprint,
                a.cursor as i64,
                a.next_prekey_id as i64
            ],
        )?;
        Ok(())
    }

    /// Sets the account's username (a linked device learns it by link sync).
    pub fn set_username(&self, username: &str) -> Result<()> {
        write_username(&self.db(), username)
    }

    /// Records a new pinned server certificate fingerprint.
    pub fn set_server_fingerprint(&self, fingerprint: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "UPDATE account SET server_fingerprint = ?1 WHERE id = 1",
            [fingerprint],
        )?;
        Ok(())
    }

    /// Stored prekey secrets (`PrekeySecret::to_bytes`).
    pub fn prekeys(&self) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT secret FROM prekeys ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| r.map(Zeroizing::new).map_err(Into::into))
            .collect()
    }

    /// Stored sessions (`Session::to_bytes`).
    pub fn sessions(&self) -> Result<Vec<Zeroizing<Vec<u8>>>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT state FROM sessions")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| r.map(Zeroizing::new).map_err(Into::into))
            .collect()
    }

    /// Persists a device's pending changes in their own transaction.
    pub fn save_device(&mut self, device: &mut Device) -> Result<()> {
        let changes = device.take_changes();
        let tx = self.transaction()?;
        tx.apply_device_changes(device, &changes)?;
        tx.commit()
    }
}
