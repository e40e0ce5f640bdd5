//! Writing a change set: everything in it in one SQLite transaction, in
//! the order [`ChangeSet`] documents (within a kind, inserts before
//! deletes), so that it is stored whole or not at all.

use rusqlite::{params, Transaction, TransactionBehavior};

use super::account::write_account;
use super::contacts::write_contact;
use super::{normalize, ChangeSet, ClientStore, Message, Result, RoomSave};

impl ClientStore {
    /// Writes `changes` in one transaction.
    pub fn commit(&self, changes: ChangeSet) -> Result<()> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        apply(&tx, changes)?;
        tx.commit()?;
        Ok(())
    }
}

/// Writes `c` inside `tx` (the caller commits).
pub(super) fn apply(tx: &Transaction<'_>, c: ChangeSet) -> Result<()> {
    if let Some(a) = &c.account {
        write_account(tx, a)?;
    }
    let account = |column: &str, value: &dyn rusqlite::ToSql| -> Result<()> {
        tx.execute(
            &format!("UPDATE account SET {column} = ?1 WHERE id = 1"),
            [value],
        )?;
        Ok(())
    };
    if let Some(u) = &c.username {
        account("username", u)?;
    }
    if let Some(f) = &c.server_fingerprint {
        account("server_fingerprint", f)?;
    }
    if let Some(o) = c.clock_offset_ms {
        account("clock_offset_ms", &o)?;
    }
    if let Some(n) = c.next_prekey_id {
        account("next_prekey_id", &(n as i64))?;
    }
    if let Some(cur) = c.cursor {
        // Never back.
        tx.execute(
            "UPDATE account SET cursor = max(cursor, ?1) WHERE id = 1",
            [cur as i64],
        )?;
    }
    for (id, bytes) in &c.sessions {
        match bytes {
            Some(b) => tx.execute(
                "INSERT OR REPLACE INTO sessions (id, state) VALUES (?1, ?2)",
                params![&id[..], &b[..]],
            )?,
            None => tx.execute("DELETE FROM sessions WHERE id = ?1", [&id[..]])?,
        };
    }
    for (id, bytes) in &c.prekeys {
        match bytes {
            Some(b) => tx.execute(
                "INSERT OR REPLACE INTO prekeys (id, secret) VALUES (?1, ?2)",
                params![*id as i64, &b[..]],
            )?,
            None => tx.execute("DELETE FROM prekeys WHERE id = ?1", [*id as i64])?,
        };
    }
    for m in &c.messages {
        insert_message(tx, m)?;
    }
    for id in &c.messages_deleted {
        tx.execute("DELETE FROM messages WHERE id = ?1", [&id[..]])?;
    }
    if let Some(now) = c.expire_messages_at {
        tx.execute(
            "DELETE FROM messages WHERE ttl > 0 AND sent_at + ttl * 1000 <= ?1",
            [now.min(i64::MAX as u64) as i64],
        )?;
    }
    for (username, name) in &c.organisations {
        tx.execute(
            "INSERT OR REPLACE INTO organisations (username, name) VALUES (?1, ?2)",
            rusqlite::params![super::normalize(username), name],
        )?;
    }
    for contact in &c.contacts {
        write_contact(tx, contact)?;
    }
    for (name, block) in &c.blocks {
        let sql = if *block {
            "INSERT OR IGNORE INTO blocked (username) VALUES (?1)"
        } else {
            "DELETE FROM blocked WHERE username = ?1"
        };
        tx.execute(sql, [normalize(name)])?;
    }
    for r in &c.rooms {
        save_room(tx, r)?;
    }
    for m in &c.room_messages {
        tx.execute(
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
    }
    for e in &c.room_messages_deleted {
        tx.execute("DELETE FROM room_messages WHERE entry = ?1", [&e[..]])?;
    }
    for (hash, name) in &c.room_names {
        tx.execute(
            "INSERT OR REPLACE INTO room_names (name_hash, username) VALUES (?1, ?2)",
            params![&hash[..], name],
        )?;
    }
    Ok(())
}

/// Adds a message to the history unless one with its id is there.
fn insert_message(tx: &Transaction<'_>, m: &Message) -> Result<()> {
    tx.execute(
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
    Ok(())
}

/// Writes what changed in a room's log (records inserted or replaced by
/// hash, removed ones deleted), its head, its title for lookups, and when
/// its next message expires.
fn save_room(tx: &Transaction<'_>, r: &RoomSave) -> Result<()> {
    let group = &r.group[..];
    match r.next_expiry {
        Some(t) => tx.execute(
            "INSERT OR REPLACE INTO room_expiry (group_id, next) VALUES (?1, ?2)",
            params![group, t.min(i64::MAX as u64) as i64],
        )?,
        None => tx.execute("DELETE FROM room_expiry WHERE group_id = ?1", [group])?,
    };
    tx.execute(
        "INSERT OR REPLACE INTO rooms (group_id, title, head) VALUES (?1, ?2, ?3)",
        params![group, r.title, &r.head[..]],
    )?;
    let mut stmt = tx.prepare(
        "INSERT OR REPLACE INTO room_records \
         (group_id, hash, pending, time, height, bytes, message_key, datagram_id, purged) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for rec in &r.records {
        stmt.execute(params![
            group,
            &rec.hash[..],
            rec.pending,
            &rec.time.to_be_bytes()[..],
            rec.height as i64,
            rec.bytes,
            rec.message_key.as_ref().map(|k| &k[..]),
            rec.datagram_id.as_ref().map(|k| &k[..]),
            rec.purged,
        ])?;
    }
    let mut del = tx.prepare("DELETE FROM room_records WHERE group_id = ?1 AND hash = ?2")?;
    for h in &r.removed {
        del.execute(params![group, &h[..]])?;
    }
    Ok(())
}
