//! Contacts (users this device knows, with their keys and devices) and
//! the users it blocks.

use rusqlite::{params, Connection, OptionalExtension};

use super::{arr, normalize, ClientStore, Contact, Result, StoreError};

/// The columns [`contact_row`] reads.
const CONTACT_SELECT: &str =
    "SELECT username, username_hash, user_key, verified, devices FROM contacts";

/// Inserts or replaces a contact (by username).
pub(super) fn write_contact(db: &Connection, c: &Contact) -> Result<()> {
    db.execute(
        "INSERT OR REPLACE INTO contacts (username, username_hash, user_key, verified, devices) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            normalize(&c.username),
            &c.username_hash[..],
            &c.user_key[..],
            c.verified,
            encode_list(&c.devices)
        ],
    )?;
    Ok(())
}

impl ClientStore {
    pub fn contact(&self, username: &str) -> Result<Option<Contact>> {
        let db = self.db();
        db.query_row(
            &format!("{CONTACT_SELECT} WHERE username = ?1"),
            [normalize(username)],
            contact_row,
        )
        .optional()?
        .transpose()
    }

    pub fn contact_by_hash(&self, username_hash: &[u8; 32]) -> Result<Option<Contact>> {
        let db = self.db();
        db.query_row(
            &format!("{CONTACT_SELECT} WHERE username_hash = ?1"),
            [&username_hash[..]],
            contact_row,
        )
        .optional()?
        .transpose()
    }

    pub fn contacts(&self) -> Result<Vec<Contact>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!("{CONTACT_SELECT} ORDER BY username"))?;
        let rows = stmt.query_map([], contact_row)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    /// Test hook: inserts or replaces a contact outside any change set
    /// (e.g. another key for a user, as a lying directory would cause).
    #[cfg(any(test, feature = "testing"))]
    pub fn put_contact(&self, c: &Contact) -> Result<()> {
        write_contact(&self.db(), c)
    }

    pub fn is_blocked(&self, username: &str) -> Result<bool> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT 1 FROM blocked WHERE username = ?1",
                [normalize(username)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn blocked(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT username FROM blocked ORDER BY username")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| r.map_err(Into::into)).collect()
    }
}

fn contact_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Contact>> {
    let username: String = r.get(0)?;
    let hash: Vec<u8> = r.get(1)?;
    let key: Vec<u8> = r.get(2)?;
    let verified: bool = r.get(3)?;
    let devices: Vec<u8> = r.get(4)?;
    Ok((|| {
        Ok(Contact {
            username,
            username_hash: arr(hash, "username hash")?,
            user_key: arr(key, "user key")?,
            verified,
            devices: decode_list(&devices)?,
        })
    })())
}

/// u16 count, then u16 length + bytes per item.
fn encode_list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(items.len() as u16).to_be_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u16).to_be_bytes());
        out.extend_from_slice(i);
    }
    out
}

fn decode_list(mut b: &[u8]) -> Result<Vec<Vec<u8>>> {
    let bad = || StoreError::Corrupt("device list".into());
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        if b.len() < n {
            return Err(bad());
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Ok(h.to_vec())
    };
    let n = u16::from_be_bytes(arr(take(&mut b, 2)?, "count")?) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = u16::from_be_bytes(arr(take(&mut b, 2)?, "length")?) as usize;
        out.push(take(&mut b, len)?);
    }
    Ok(out)
}
