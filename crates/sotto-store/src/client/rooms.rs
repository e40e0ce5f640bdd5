//! Rooms in the client store: each room's log records (signed entries with
//! the local meta beside them, keyed by hash and read back in resolved
//! order: time as 8 big-endian bytes, height, hash), its stored head, the
//! content of its messages, and the usernames learned for username hashes.
//! A save writes only the records that changed. All of it lives in the
//! same encrypted database as the rest.

use rusqlite::OptionalExtension;

use super::{arr, ClientStore, Result, RoomMessageRow, RoomRecord, StoreError};

pub(super) const ROOM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rooms (
    group_id BLOB PRIMARY KEY,
    title TEXT NOT NULL,
    head BLOB NOT NULL
);
DROP TABLE IF EXISTS room_entries;
CREATE TABLE IF NOT EXISTS room_records (
    group_id BLOB NOT NULL,
    hash BLOB NOT NULL,
    pending INTEGER NOT NULL DEFAULT 0,
    time BLOB NOT NULL,
    height INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    message_key BLOB,
    datagram_id BLOB,
    purged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, hash)
);
CREATE INDEX IF NOT EXISTS room_records_order
    ON room_records (group_id, pending, time, height, hash);
CREATE TABLE IF NOT EXISTS room_messages (
    entry BLOB PRIMARY KEY,
    group_id BLOB NOT NULL,
    sender BLOB NOT NULL,
    sent_at INTEGER NOT NULL,
    content_type INTEGER NOT NULL,
    salt BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS room_messages_group ON room_messages (group_id, sent_at);
CREATE TABLE IF NOT EXISTS room_names (name_hash BLOB PRIMARY KEY, username TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS room_expiry (group_id BLOB PRIMARY KEY, next INTEGER NOT NULL);
";

fn opt_arr(v: Option<Vec<u8>>, what: &str) -> Result<Option<[u8; 32]>> {
    v.map(|v| arr(v, what)).transpose()
}

impl ClientStore {
    /// The rooms this device holds: group id and title.
    pub fn rooms(&self) -> Result<Vec<([u8; 32], String)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT group_id, title FROM rooms ORDER BY title, group_id")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (g, t) = r?;
            out.push((arr(g, "group id")?, t));
        }
        Ok(out)
    }

    /// The rooms with a message that expires at or before `now_ms`.
    pub fn rooms_due(&self, now_ms: u64) -> Result<Vec<[u8; 32]>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT group_id FROM room_expiry WHERE next <= ?1")?;
        let rows = stmt.query_map([now_ms.min(i64::MAX as u64) as i64], |r| {
            r.get::<_, Vec<u8>>(0)
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(arr(r?, "group id")?);
        }
        Ok(out)
    }

    /// The stored head of a room's log, `None` for an unknown room.
    pub fn room_head(&self, group: &[u8; 32]) -> Result<Option<[u8; 32]>> {
        let db = self.db();
        db.query_row(
            "SELECT head FROM rooms WHERE group_id = ?1",
            [&group[..]],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .optional()?
        .map(|h| arr(h, "room head"))
        .transpose()
    }

    /// A room's log records in resolved order, then the pending ones.
    pub fn room_records(&self, group: &[u8; 32]) -> Result<Vec<RoomRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT hash, bytes, message_key, datagram_id, purged, pending, time, height \
             FROM room_records WHERE group_id = ?1 ORDER BY pending, time, height, hash",
        )?;
        let rows = stmt.query_map([&group[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (hash, bytes, key, dg, purged, pending, time, height) = r?;
            let time: [u8; 8] = arr(time, "room record time")?;
            out.push(RoomRecord {
                hash: arr(hash, "entry hash")?,
                bytes,
                message_key: opt_arr(key, "message key")?,
                datagram_id: opt_arr(dg, "datagram id")?,
                purged,
                pending,
                time: u64::from_be_bytes(time),
                height: u32::try_from(height).map_err(|_| {
                    StoreError::Corrupt("room record height is out of range".into())
                })?,
            });
        }
        Ok(out)
    }

    /// One stored room message by entry hash.
    pub fn room_message_by_entry(&self, entry: &[u8; 32]) -> Result<Option<RoomMessageRow>> {
        let db = self.db();
        let row = db
            .query_row(
                "SELECT group_id, sender, sent_at, content_type, salt, body FROM room_messages WHERE entry = ?1",
                [&entry[..]],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((group, sender, sent_at, ct, salt, body)) = row else {
            return Ok(None);
        };
        Ok(Some(RoomMessageRow {
            entry: *entry,
            group: arr(group, "group id")?,
            sender: arr(sender, "sender")?,
            sent_at: sent_at as u64,
            content_type: ct as u8,
            salt: arr(salt, "salt")?,
            body,
        }))
    }

    /// The content of every stored message of a room, oldest first.
    pub fn room_messages(&self, group: &[u8; 32]) -> Result<Vec<RoomMessageRow>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT entry, group_id, sender, sent_at, content_type, salt, body FROM room_messages \
             WHERE group_id = ?1 ORDER BY sent_at, entry",
        )?;
        let rows = stmt.query_map([&group[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, Vec<u8>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (entry, group, sender, sent_at, ct, salt, body) = r?;
            let salt: [u8; 16] = arr(salt, "salt")?;
            out.push(RoomMessageRow {
                entry: arr(entry, "entry hash")?,
                group: arr(group, "group id")?,
                sender: arr(sender, "sender")?,
                sent_at: sent_at as u64,
                content_type: ct as u8,
                salt,
                body,
            });
        }
        Ok(out)
    }

    /// The username learned for a username hash (room names, then contacts).
    pub fn name_for_hash(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        let found = {
            let db = self.db();
            db.query_row(
                "SELECT username FROM room_names WHERE name_hash = ?1",
                [&hash[..]],
                |r| r.get::<_, String>(0),
            )
            .optional()?
        };
        match found {
            Some(n) => Ok(Some(n)),
            None => Ok(self.contact_by_hash(hash)?.map(|c| c.username)),
        }
    }

    /// Test hook: overwrites the bytes of the stored log record at `pos`
    /// in the order [`ClientStore::room_records`] gives (the database is
    /// encrypted, so tests cannot edit the file).
    #[cfg(any(test, feature = "testing"))]
    pub fn tamper_room_record(&self, group: &[u8; 32], pos: usize, bytes: &[u8]) -> Result<bool> {
        let db = self.db();
        Ok(db.execute(
            "UPDATE room_records SET bytes = ?3 WHERE group_id = ?1 AND hash = \
             (SELECT hash FROM room_records WHERE group_id = ?1 \
              ORDER BY pending, time, height, hash LIMIT 1 OFFSET ?2)",
            rusqlite::params![&group[..], pos as i64, bytes],
        )? == 1)
    }
}
