//! A phone registration waiting for its code, and the organisations
//! (sender accounts) this device has heard from.

use rusqlite::{params, OptionalExtension};

use super::{ClientStore, Result};

/// `register-phone` ran; `verify-phone` finishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPhone {
    pub number: String,
    pub server_url: String,
    pub server_fingerprint: String,
    /// The app-made code (`--by-sms`), `None` for a server-made one.
    pub otp: Option<String>,
}

impl ClientStore {
    pub fn set_pending_phone(&self, p: &PendingPhone) -> Result<()> {
        self.db().execute(
            "INSERT OR REPLACE INTO pending_phone (id, number, server_url, server_fingerprint, otp)
             VALUES (1, ?1, ?2, ?3, ?4)",
            params![p.number, p.server_url, p.server_fingerprint, p.otp],
        )?;
        Ok(())
    }

    pub fn pending_phone(&self) -> Result<Option<PendingPhone>> {
        Ok(self
            .db()
            .query_row(
                "SELECT number, server_url, server_fingerprint, otp FROM pending_phone WHERE id = 1",
                [],
                |r| {
                    Ok(PendingPhone {
                        number: r.get(0)?,
                        server_url: r.get(1)?,
                        server_fingerprint: r.get(2)?,
                        otp: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn clear_pending_phone(&self) -> Result<()> {
        self.db().execute("DELETE FROM pending_phone", [])?;
        Ok(())
    }

    /// (username, display name) of every organisation heard from.
    pub fn organisations(&self) -> Result<Vec<(String, String)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT username, name FROM organisations ORDER BY username")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}
