//! The message history.

use rusqlite::{params, OptionalExtension};

use super::{arr, normalize, ClientStore, HistoryQuery, Message, Result};

impl ClientStore {
    pub fn has_message(&self, id: &[u8; 16]) -> Result<bool> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT 1 FROM messages WHERE id = ?1",
                [&id[..]],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Messages oldest first.
    pub fn history(&self, q: &HistoryQuery) -> Result<Vec<Message>> {
        let db = self.db();
        let limit = q.limit.map(|l| l as i64).unwrap_or(-1);
        let sql = "SELECT id, conversation, sender, recipient, sent_at, received_at, body, ttl, outgoing FROM \
                   (SELECT * FROM messages WHERE (?1 IS NULL OR conversation = ?1) AND (?3 IS NULL OR sender = ?3 OR recipient = ?3) ORDER BY sent_at DESC, seq DESC \
                   LIMIT ?2) ORDER BY sent_at, seq";
        let mut stmt = db.prepare(sql)?;
        let conv = q.conversation.map(|c| c.to_vec());
        let peer = q.peer.as_deref().map(normalize);
        let rows = stmt.query_map(params![conv, limit, peer], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, bool>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, conv, from, to, sent_at, received_at, body, ttl, outgoing) = r?;
            out.push(Message {
                id: arr(id, "message id")?,
                conversation: arr(conv, "conversation id")?,
                from,
                to,
                sent_at: sent_at as u64,
                received_at: received_at as u64,
                body,
                ttl: ttl as u32,
                outgoing,
            });
        }
        Ok(out)
    }
}
