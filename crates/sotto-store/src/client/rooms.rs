//! Rooms in the client store: each room's log records (signed entries in
//! resolved order, with the local meta beside them), its stored head, the
//! content of its messages, and the usernames learned for username hashes.
//! All of it lives in the same encrypted database as the rest.

use rusqlite::{params, OptionalExtension};

use super::{arr, ClientStore, Result};

pub(super) const ROOM_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rooms (
    group_id BLOB PRIMARY KEY,
    title TEXT NOT NULL,
    head BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS room_entries (
    group_id BLOB NOT NULL,
    pos INTEGER NOT NULL,
    hash BLOB NOT NULL,
    bytes BLOB NOT NULL,
    message_key BLOB,
    datagram_id BLOB,
    purged INTEGER NOT NULL DEFAULT 0,
    pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, pos)
);
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

/// One stored log record (`sotto_proto::room::LogRecord`, flattened).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    pub hash: [u8; 32],
    pub bytes: Vec<u8>,
    pub message_key: Option<[u8; 32]>,
    pub datagram_id: Option<[u8; 32]>,
    pub purged: bool,
    /// Held for missing parents (after the resolved records).
    pub pending: bool,
}

/// A room message's content, kept beside its log entry until its TTL
/// passes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessageRow {
    /// The entry hash.
    pub entry: [u8; 32],
    pub group: [u8; 32],
    /// The sender's user key.
    pub sender: [u8; 32],
    /// Master-clock ms (the entry's timestamp).
    pub sent_at: u64,
    pub content_type: u8,
    pub salt: [u8; 16],
    pub body: Vec<u8>,
}

fn opt_arr(v: Option<Vec<u8>>, what: &str) -> Result<Option<[u8; 32]>> {
    v.map(|v| arr(v, what)).transpose()
}

impl ClientStore {
    /// Replaces a room's stored log (records in order) and head, its title
    /// for lookups, and when its next message expires (master-clock ms,
    /// `None`: nothing to expire), in one transaction.
    pub fn save_room(
        &mut self,
        group: &[u8; 32],
        title: &str,
        head: &[u8; 32],
        records: &[RoomRecord],
        next_expiry: Option<u64>,
    ) -> Result<()> {
        let tx = self.transaction()?;
        match next_expiry {
            Some(t) => tx.tx.execute(
                "INSERT OR REPLACE INTO room_expiry (group_id, next) VALUES (?1, ?2)",
                params![&group[..], t.min(i64::MAX as u64) as i64],
            )?,
            None => tx
                .tx
                .execute("DELETE FROM room_expiry WHERE group_id = ?1", [&group[..]])?,
        };
        tx.tx.execute(
            "INSERT OR REPLACE INTO rooms (group_id, title, head) VALUES (?1, ?2, ?3)",
            params![&group[..], title, &head[..]],
        )?;
        tx.tx
            .execute("DELETE FROM room_entries WHERE group_id = ?1", [&group[..]])?;
        {
            let mut stmt = tx.tx.prepare(
                "INSERT INTO room_entries (group_id, pos, hash, bytes, message_key, datagram_id, purged, pending) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for (i, r) in records.iter().enumerate() {
                stmt.execute(params![
                    &group[..],
                    i as i64,
                    &r.hash[..],
                    r.bytes,
                    r.message_key.as_ref().map(|k| &k[..]),
                    r.datagram_id.as_ref().map(|k| &k[..]),
                    r.purged,
                    r.pending
                ])?;
            }
        }
        tx.commit()
    }

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

    /// A room's log records in stored order.
    pub fn room_records(&self, group: &[u8; 32]) -> Result<Vec<RoomRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT hash, bytes, message_key, datagram_id, purged, pending FROM room_entries \
             WHERE group_id = ?1 ORDER BY pos",
        )?;
        let rows = stmt.query_map([&group[..]], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<Vec<u8>>>(2)?,
                r.get::<_, Option<Vec<u8>>>(3)?,
                r.get::<_, bool>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (hash, bytes, key, dg, purged, pending) = r?;
            out.push(RoomRecord {
                hash: arr(hash, "entry hash")?,
                bytes,
                message_key: opt_arr(key, "message key")?,
                datagram_id: opt_arr(dg, "datagram id")?,
                purged,
                pending,
            });
        }
        Ok(out)
    }

    /// Stores a room message's content (once per entry).
    pub fn put_room_message(&self, m: &RoomMessageRow) -> Result<bool> {
        let db = self.db();
        let n = db.execute(
            "INSERT OR IGNORE INTO room_messages (entry, group_id, sender, sent_at, content_type, salt, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                &m.entry[..],
                &m.group[..],
                &m.sender[..],
                m.sent_at as i64,
                m.content_type as i64,
                &m.salt[..],
                m.body
            ],
        )?;
        Ok(n == 1)
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

    /// Erases a room message's content (its TTL passed).
    pub fn delete_room_message(&self, entry: &[u8; 32]) -> Result<bool> {
        let db = self.db();
        Ok(db.execute("DELETE FROM room_messages WHERE entry = ?1", [&entry[..]])? == 1)
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

    /// Remembers the username behind a username hash (self-checking: the
    /// caller passes `username_hash(username)`).
    pub fn put_room_name(&self, hash: &[u8; 32], username: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "INSERT OR REPLACE INTO room_names (name_hash, username) VALUES (?1, ?2)",
            params![&hash[..], username],
        )?;
        Ok(())
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
    /// (the database is encrypted, so tests cannot edit the file).
    #[doc(hidden)]
    pub fn tamper_room_record(&self, group: &[u8; 32], pos: usize, bytes: &[u8]) -> Result<bool> {
        let db = self.db();
        Ok(db.execute(
            "UPDATE room_entries SET bytes = ?3 WHERE group_id = ?1 AND pos = ?2",
            params![&group[..], pos as i64, bytes],
        )? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "a passphrase";

    fn record(n: u8, pending: bool) -> RoomRecord {
        RoomRecord {
            hash: [n; 32],
            bytes: vec![n; 10],
            message_key: (n % 2 == 0).then_some([9; 32]),
            datagram_id: Some([n ^ 0xff; 32]),
            purged: n == 3,
            pending,
        }
    }

    #[test]
    fn rooms_round_trip_expire_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = ClientStore::create(dir.path(), PW).unwrap();
        let g = [1u8; 32];
        let records = vec![record(1, false), record(2, false), record(3, true)];
        s.save_room(&g, "Launch", &[7; 32], &records, Some(5_000))
            .unwrap();
        assert_eq!(s.rooms().unwrap(), vec![(g, "Launch".to_string())]);
        assert_eq!(s.room_head(&g).unwrap(), Some([7; 32]));
        assert_eq!(s.room_records(&g).unwrap(), records);
        assert!(s.rooms_due(4_999).unwrap().is_empty());
        assert_eq!(s.rooms_due(5_000).unwrap(), vec![g]);
        // Saving again replaces the records; no expiry left clears it.
        s.save_room(&g, "Launch 2", &[8; 32], &records[..1], None)
            .unwrap();
        assert_eq!(s.room_records(&g).unwrap().len(), 1);
        assert!(s.rooms_due(u64::MAX).unwrap().is_empty());

        let m = RoomMessageRow {
            entry: [2; 32],
            group: g,
            sender: [3; 32],
            sent_at: 10,
            content_type: 1,
            salt: [4; 16],
            body: b"hello".to_vec(),
        };
        assert!(s.put_room_message(&m).unwrap());
        assert!(!s.put_room_message(&m).unwrap(), "once per entry");
        assert_eq!(s.room_message_by_entry(&[2; 32]).unwrap(), Some(m.clone()));
        assert_eq!(s.room_messages(&g).unwrap(), vec![m]);
        assert!(s.delete_room_message(&[2; 32]).unwrap());
        assert!(s.room_messages(&g).unwrap().is_empty());

        s.put_room_name(&[5; 32], "bob").unwrap();
        assert_eq!(s.name_for_hash(&[5; 32]).unwrap().as_deref(), Some("bob"));
        assert_eq!(s.name_for_hash(&[6; 32]).unwrap(), None);

        assert!(s.tamper_room_record(&g, 0, b"changed").unwrap());
        assert_eq!(s.room_records(&g).unwrap()[0].bytes, b"changed");
        assert!(!s.tamper_room_record(&g, 5, b"x").unwrap());
    }
}
