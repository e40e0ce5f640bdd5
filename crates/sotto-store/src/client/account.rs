//! The account row (who this device is, its keys, its server, its clock
//! offset) and the device's protocol state (prekey secrets and sessions).

use rusqlite::{params, OptionalExtension, Transaction};
use zeroize::Zeroizing;

use super::{Account, ClientStore, Result, StoreError};

/// Copies a secret column into a fixed-size, zeroized array.
fn secret<const N: usize>(v: Vec<u8>, what: &str) -> Result<Zeroizing<[u8; N]>> {
    let v = Zeroizing::new(v);
    if v.len() != N {
        return Err(StoreError::Corrupt(format!("{what} has the wrong length")));
    }
    let mut k = Zeroizing::new([0u8; N]);
    k.copy_from_slice(&v);
    Ok(k)
}

/// Inserts or replaces the account inside a transaction.
pub(super) fn write_account(tx: &Transaction<'_>, a: &Account) -> Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO account (id, username, user_key, device_key, device_cert, server_url, \
         server_fingerprint, cursor, next_prekey_id, clock_offset_ms) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            a.username,
            a.user_key.as_ref().map(|k| &k[..]),
            &a.device_key[..],
            a.device_cert,
            a.server_url,
            a.server_fingerprint,
            a.cursor as i64,
            a.next_prekey_id as i64,
            a.clock_offset_ms
        ],
    )?;
    Ok(())
}

impl ClientStore {
    /// The account, if this device was registered or linked.
    pub fn account(&self) -> Result<Option<Account>> {
        let db = self.db();
        let row = db
            .query_row(
                "SELECT username, user_key, device_key, device_cert, server_url, server_fingerprint, cursor, \
                 next_prekey_id, clock_offset_ms FROM account WHERE id = 1",
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
                        r.get::<_, i64>(8)?,
                    ))
                },
            )
            .optional()?;
        let Some((
            username,
            user_key,
            device_key,
            device_cert,
            server_url,
            fp,
            cursor,
            next,
            offset,
        )) = row
        else {
            return Ok(None);
        };
        Ok(Some(Account {
            username,
            user_key: user_key.map(|k| secret(k, "user key")).transpose()?,
            device_key: secret(device_key, "device key")?,
            device_cert,
            server_url,
            server_fingerprint: fp,
            cursor: cursor as u64,
            next_prekey_id: next as u32,
            clock_offset_ms: offset,
        }))
    }

    /// Records a new pinned server certificate fingerprint (the shell's
    /// business: the device core never reads it).
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
}
