//! [`PhoneStore`] on SQLite (tables of schema version 3).

use rusqlite::{params, Connection, OptionalExtension, Row};
use subtle::ConstantTimeEq;

use super::super::phone::*;
use super::super::secret::ServerSecret;
use super::super::*;
use super::{directory, mailbox, SqliteStore};

const SENDER_SELECT: &str = "SELECT s.id, s.handle, s.name, s.webhook, u.user_key, s.device, \
     s.cert, s.secrets, s.created_at FROM senders s JOIN users u ON u.id = s.user_id";

fn sender_row(r: &Row<'_>) -> rusqlite::Result<SenderRecord> {
    Ok(SenderRecord {
        id: r.get(0)?,
        handle: r.get(1)?,
        name: r.get(2)?,
        webhook: r.get(3)?,
        user: UserPublic(r.get(4)?),
        device: DeviceId(r.get(5)?),
        cert: r.get(6)?,
        sealed_secrets: r.get(7)?,
        created_at: r.get::<_, i64>(8)? as u64,
    })
}

fn sender_where(
    c: &Connection,
    clause: &str,
    key: &dyn rusqlite::ToSql,
) -> Result<Option<SenderRecord>> {
    Ok(c.query_row(
        &format!("{SENDER_SELECT} WHERE {clause}"),
        [key],
        sender_row,
    )
    .optional()?)
}

const MESSAGE_SELECT: &str = "SELECT m.id, m.sender_id, s.handle, m.status, m.created_at, \
     m.expires_at, m.updated_at FROM sender_messages m JOIN senders s ON s.id = m.sender_id";

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let status: String = r.get(3)?;
    Ok(MessageRecord {
        id: r.get(0)?,
        sender_id: r.get(1)?,
        sender: r.get(2)?,
        status: MessageStatus::parse(&status).unwrap_or(MessageStatus::Expired),
        created_at: r.get::<_, i64>(4)? as u64,
        expires_at: r.get::<_, i64>(5)? as u64,
        updated_at: r.get::<_, i64>(6)? as u64,
    })
}

fn messages_where(
    c: &Connection,
    clause: &str,
    p: &[&dyn rusqlite::ToSql],
) -> Result<Vec<MessageRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "{MESSAGE_SELECT} WHERE {clause} ORDER BY m.created_at, m.id"
    ))?;
    let rows = stmt.query_map(p, message_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn held_row(r: &Row<'_>) -> rusqlite::Result<(i64, HeldMessage)> {
    Ok((
        r.get(3)?,
        HeldMessage {
            id: r.get(0)?,
            sender_id: r.get(1)?,
            sealed: r.get(2)?,
        },
    ))
}

/// Claimed held messages, oldest first.
fn held_sorted(mut claimed: Vec<(i64, HeldMessage)>) -> Result<Vec<HeldMessage>> {
    claimed.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    Ok(claimed.into_iter().map(|(_, h)| h).collect())
}

/// Counts an attempt on the OTP row and judges `otp` against it.
#[allow(clippy::too_many_arguments)]
fn judge_otp(
    c: &Connection,
    secret: &ServerSecret,
    number_key: &[u8; 32],
    kind: OtpKind,
    otp: &str,
    now: u64,
    max_attempts: u32,
    confirming: bool,
) -> Result<OtpCheck> {
    let row: Option<(Vec<u8>, i64, i64, bool, bool)> = c
        .query_row(
            "SELECT otp_hash, expires_at, attempts, used, confirmed FROM otps
             WHERE number_key = ?1 AND kind = ?2",
            params![&number_key[..], kind.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((hash, expires_at, attempts, used, confirmed)) = row else {
        return Ok(OtpCheck::Missing);
    };
    if used {
        return Ok(OtpCheck::Used);
    }
    if attempts as u32 >= max_attempts {
        return Ok(OtpCheck::TooManyAttempts);
    }
    if now >= expires_at as u64 {
        return Ok(OtpCheck::Expired);
    }
    if kind == OtpKind::App && !confirming && !confirmed {
        // Polling while the SMS is on its way costs no attempt.
        return Ok(OtpCheck::AwaitingSms);
    }
    c.execute(
        "UPDATE otps SET attempts = attempts + 1 WHERE number_key = ?1 AND kind = ?2",
        params![&number_key[..], kind.as_str()],
    )?;
    let candidate = secret.otp_hash(number_key, otp);
    if !bool::from(candidate[..].ct_eq(&hash[..])) {
        return Ok(OtpCheck::Wrong {
            attempts_left: max_attempts.saturating_sub(attempts as u32 + 1),
        });
    }
    let set = if confirming {
        "confirmed = 1, attempts = 0"
    } else {
        "used = 1"
    };
    c.execute(
        &format!("UPDATE otps SET {set} WHERE number_key = ?1 AND kind = ?2"),
        params![&number_key[..], kind.as_str()],
    )?;
    Ok(OtpCheck::Accepted)
}

impl PhoneStore for SqliteStore {
    fn bind_hold_key(&self, check: &[u8; 32]) -> Result<HoldKeyCheck> {
        let check = *check;
        self.writer.write(move |c| {
            let bound = c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('hold_key_check', ?1)",
                [&check[..]],
            )?;
            if bound > 0 {
                return Ok(HoldKeyCheck::Bound);
            }
            let stored: Vec<u8> = c.query_row(
                "SELECT value FROM meta WHERE key = 'hold_key_check'",
                [],
                |r| r.get(0),
            )?;
            Ok(if bool::from(stored.ct_eq(&check[..])) {
                HoldKeyCheck::Same
            } else {
                HoldKeyCheck::Different
            })
        })
    }

    fn lock_sender(&self, _sender_id: i64) -> Result<SenderLock> {
        // One process owns the database: the server's in-process lock is
        // the whole story.
        Ok(SenderLock::local())
    }

    fn add_sender(&self, s: NewSender, now_ms: u64) -> Result<SenderRecord> {
        let name_key = self.name_key(&s.user.username_hash);
        let sealed = self.secret.seal_name(&name_key, &s.user.username_hash);
        self.writer.write(move |c| {
            let taken: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM senders WHERE handle = ?1)",
                [&s.handle],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::UsernameTaken);
            }
            let d = &s.user.device;
            directory::register(c, &name_key, &sealed, &s.user.user, d, now_ms)?;
            let user_id: i64 = c.query_row(
                "SELECT id FROM users WHERE user_key = ?1",
                [&s.user.user.0[..]],
                |r| r.get(0),
            )?;
            c.execute(
                "INSERT INTO senders (handle, name, webhook, user_id, device, cert, secrets, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![s.handle, s.name, s.webhook, user_id, &d.device.0[..], d.cert, s.sealed_secrets, now_ms as i64],
            )?;
            let id = c.last_insert_rowid();
            c.execute(
                "INSERT INTO sender_keys (key_hash, sender_id, created_at) VALUES (?1, ?2, ?3)",
                params![&s.api_key_hash[..], id, now_ms as i64],
            )?;
            sender_where(c, "s.id = ?1", &id)?.ok_or(StoreError::UnknownUser)
        })
    }

    fn sender(&self, handle: &str) -> Result<Option<SenderRecord>> {
        self.read(|c| sender_where(c, "s.handle = ?1", &handle))
    }

    fn sender_by_id(&self, id: i64) -> Result<Option<SenderRecord>> {
        self.read(|c| sender_where(c, "s.id = ?1", &id))
    }

    fn sender_by_user(&self, user: &UserPublic) -> Result<Option<SenderRecord>> {
        self.read(|c| sender_where(c, "u.user_key = ?1", &&user.0[..]))
    }

    fn sender_by_key(&self, key_hash: &[u8; 32]) -> Result<Option<SenderRecord>> {
        self.read(|c| {
            sender_where(
                c,
                "s.id = (SELECT sender_id FROM sender_keys WHERE key_hash = ?1 AND revoked_at IS NULL)",
                &&key_hash[..],
            )
        })
    }

    fn senders(&self) -> Result<Vec<SenderRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("{SENDER_SELECT} ORDER BY s.handle"))?;
            let rows = stmt.query_map([], sender_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn add_api_key(&self, handle: &str, key_hash: &[u8; 32], now_ms: u64) -> Result<()> {
        let (handle, key_hash) = (handle.to_owned(), *key_hash);
        self.writer.write(move |c| {
            let id: i64 = c
                .query_row("SELECT id FROM senders WHERE handle = ?1", [&handle], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or(StoreError::UnknownUser)?;
            c.execute(
                "INSERT INTO sender_keys (key_hash, sender_id, created_at) VALUES (?1, ?2, ?3)",
                params![&key_hash[..], id, now_ms as i64],
            )?;
            Ok(())
        })
    }

    fn revoke_api_key(&self, handle: &str, key_hash: &[u8; 32], now_ms: u64) -> Result<bool> {
        let (handle, key_hash) = (handle.to_owned(), *key_hash);
        self.writer.write(move |c| {
            let n = c.execute(
                "UPDATE sender_keys SET revoked_at = ?3 WHERE key_hash = ?1 AND revoked_at IS NULL
                 AND sender_id = (SELECT id FROM senders WHERE handle = ?2)",
                params![&key_hash[..], handle, now_ms as i64],
            )?;
            Ok(n > 0)
        })
    }

    fn sender_sessions(&self, sender_id: i64, peers: &[DeviceId]) -> Result<Vec<Vec<u8>>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT sealed FROM sender_sessions WHERE sender_id = ?1 AND peer = ?2",
            )?;
            let mut out = Vec::new();
            for p in peers {
                let rows = stmt.query_map(params![sender_id, &p.0[..]], |r| r.get(0))?;
                for r in rows {
                    out.push(r?);
                }
            }
            Ok(out)
        })
    }

    fn sender_session(&self, sender_id: i64, session: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT sealed FROM sender_sessions WHERE sender_id = ?1 AND session = ?2",
                params![sender_id, &session[..]],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn save_sender_sessions(
        &self,
        sender_id: i64,
        upserted: Vec<([u8; 16], DeviceId, Vec<u8>)>,
        removed: Vec<[u8; 16]>,
    ) -> Result<()> {
        self.writer.write(move |c| {
            let mut up = c.prepare_cached(
                "INSERT OR REPLACE INTO sender_sessions (sender_id, session, peer, sealed)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (id, peer, sealed) in &upserted {
                up.execute(params![sender_id, &id[..], &peer.0[..], sealed])?;
            }
            let mut rm = c.prepare_cached(
                "DELETE FROM sender_sessions WHERE sender_id = ?1 AND session = ?2",
            )?;
            for id in &removed {
                rm.execute(params![sender_id, &id[..]])?;
            }
            Ok(())
        })
    }

    fn note_thread(&self, sender_id: i64, users: &[UserPublic], message_id: &str) -> Result<()> {
        let (users, message_id) = (users.to_vec(), message_id.to_owned());
        self.writer.write(move |c| {
            let mut stmt = c.prepare_cached(
                "INSERT OR REPLACE INTO sender_threads (sender_id, user_key, message_id) VALUES (?1, ?2, ?3)",
            )?;
            for u in &users {
                stmt.execute(params![sender_id, &u.0[..], message_id])?;
            }
            Ok(())
        })
    }

    fn thread(&self, sender_id: i64, user: &UserPublic) -> Result<Option<String>> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT message_id FROM sender_threads WHERE sender_id = ?1 AND user_key = ?2",
                params![sender_id, &user.0[..]],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    fn phone_users(&self, number: &str) -> Result<Vec<PhoneUser>> {
        let key = self.secret.number_key(number);
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT u.user_key, p.username FROM phone_users p JOIN users u ON u.id = p.user_id
                 WHERE p.number_key = ?1 ORDER BY u.id",
            )?;
            let rows = stmt.query_map([&key[..]], |r| {
                Ok(PhoneUser {
                    user: UserPublic(r.get(0)?),
                    username: r.get(1)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn register_phone(
        &self,
        number: &str,
        username: &str,
        user: NewUser,
        now_ms: u64,
    ) -> Result<()> {
        let number_key = self.secret.number_key(number);
        let name_key = self.name_key(&user.username_hash);
        let sealed = self.secret.seal_name(&name_key, &user.username_hash);
        let username = username.to_owned();
        self.writer.write(move |c| {
            directory::register(c, &name_key, &sealed, &user.user, &user.device, now_ms)?;
            c.execute(
                "INSERT INTO phone_users (number_key, user_id, username)
                 SELECT ?1, id, ?2 FROM users WHERE user_key = ?3",
                params![&number_key[..], username, &user.user.0[..]],
            )?;
            Ok(())
        })
    }

    fn claim_for_user(
        &self,
        user: &UserPublic,
        claimant: &UserPublic,
    ) -> Result<Vec<ClaimedPrekey>> {
        let (user, claimant, secret) = (*user, *claimant, self.secret.clone());
        self.writer.write(move |c| {
            let name_key: [u8; 32] = c
                .query_row(
                    "SELECT name_key FROM users WHERE user_key = ?1",
                    [&user.0[..]],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::UnknownUser)?;
            Ok(directory::claim(c, &secret, &name_key, &[], &claimant)?.1)
        })
    }

    fn hold(&self, m: NewHeld, now_ms: u64) -> Result<bool> {
        let number_key = self.secret.number_key(&m.number);
        self.writer.write(move |c| {
            c.execute(
                "INSERT INTO sender_messages (id, sender_id, number_key, sealed, status, created_at, expires_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'held', ?5, ?6, ?5)",
                params![m.id, m.sender_id, &number_key[..], m.sealed, now_ms as i64, m.expires_at as i64],
            )?;
            let first = c.execute(
                "INSERT OR IGNORE INTO sender_invites (sender_id, number_key) VALUES (?1, ?2)",
                params![m.sender_id, &number_key[..]],
            )?;
            Ok(first > 0)
        })
    }

    fn record_sent(
        &self,
        id: &str,
        sender_id: i64,
        digest: &[u8; 32],
        recipients: u32,
        now_ms: u64,
    ) -> Result<()> {
        let (id, digest) = (id.to_owned(), *digest);
        self.writer.write(move |c| {
            c.execute(
                "INSERT INTO sender_messages (id, sender_id, status, digest, recipients, created_at, expires_at, updated_at)
                 VALUES (?1, ?2, 'sent', ?3, ?4, ?5, ?5, ?5)",
                params![id, sender_id, &digest[..], recipients, now_ms as i64],
            )?;
            Ok(())
        })
    }

    fn claim_held(
        &self,
        number: &str,
        owner: &[u8; 16],
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<HeldMessage>> {
        let (key, owner) = (self.secret.number_key(number), *owner);
        self.writer.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE sender_messages SET status = 'sending', claim_owner = ?4, updated_at = ?2
                 WHERE number_key = ?1 AND sealed IS NOT NULL
                 AND (status = 'held' OR (status = 'sending' AND updated_at <= ?3))
                 RETURNING id, sender_id, sealed, created_at",
            )?;
            let stale = now_ms.saturating_sub(lease_ms) as i64;
            let rows = stmt.query_map(
                params![&key[..], now_ms as i64, stale, &owner[..]],
                held_row,
            )?;
            held_sorted(rows.collect::<Result<_, _>>()?)
        })
    }

    fn claim_registered(
        &self,
        owner: &[u8; 16],
        now_ms: u64,
        lease_ms: u64,
        retry_ms: u64,
        limit: u32,
    ) -> Result<Vec<HeldMessage>> {
        let owner = *owner;
        self.writer.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE sender_messages SET status = 'sending', claim_owner = ?1, updated_at = ?2
                 WHERE id IN (SELECT id FROM sender_messages WHERE sealed IS NOT NULL
                     AND ((status = 'held' AND updated_at <= ?4
                           AND number_key IN (SELECT number_key FROM phone_users))
                          OR (status = 'sending' AND updated_at <= ?3))
                     ORDER BY created_at, id LIMIT ?5)
                 RETURNING id, sender_id, sealed, created_at",
            )?;
            let stale = now_ms.saturating_sub(lease_ms) as i64;
            let rested = now_ms.saturating_sub(retry_ms) as i64;
            let rows = stmt.query_map(
                params![&owner[..], now_ms as i64, stale, rested, limit],
                held_row,
            )?;
            held_sorted(rows.collect::<Result<_, _>>()?)
        })
    }

    fn send_held(&self, send: HeldSend) -> Result<Option<Vec<Enqueued>>> {
        let Some((first_to, first)) = send.datagrams.first() else {
            return Err(StoreError::Backend(format!(
                "held message {}: nothing to send",
                send.id
            )));
        };
        let (digest, recipients) = (mailbox::digest(first), first_to.len() as i64);
        let secret = self.secret.clone();
        self.writer.write(move |c| {
            // One job of the writer: all of it or nothing (its savepoint).
            let n = c.execute(
                "UPDATE sender_messages SET status = 'sent', sealed = NULL, number_key = NULL,
                 claim_owner = NULL, digest = ?3, recipients = ?4, updated_at = ?5
                 WHERE id = ?1 AND status = 'sending' AND claim_owner = ?2",
                params![
                    send.id,
                    &send.claim[..],
                    &digest[..],
                    recipients,
                    send.now_ms as i64
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let mut enqueued = Vec::with_capacity(send.datagrams.len());
            for (to, datagram) in &send.datagrams {
                enqueued.push(mailbox::enqueue(
                    c,
                    &secret,
                    &send.from,
                    to,
                    datagram,
                    mailbox::digest(datagram),
                    send.now_ms,
                    &send.quota,
                    None,
                )?);
            }
            Ok(Some(enqueued))
        })
    }

    fn release_held(&self, ids: &[String], owner: &[u8; 16], now_ms: u64) -> Result<u32> {
        let (ids, owner) = (ids.to_vec(), *owner);
        self.writer.write(move |c| {
            let mut stmt = c.prepare_cached(
                "UPDATE sender_messages SET status = 'held', claim_owner = NULL, updated_at = ?3
                 WHERE id = ?1 AND status = 'sending' AND claim_owner = ?2",
            )?;
            let mut n = 0;
            for id in &ids {
                n += stmt.execute(params![id, &owner[..], now_ms as i64])? as u32;
            }
            Ok(n)
        })
    }

    fn message(&self, sender_id: i64, id: &str) -> Result<Option<MessageRecord>> {
        self.read(|c| {
            Ok(messages_where(c, "m.sender_id = ?1 AND m.id = ?2", &[&sender_id, &id])?.pop())
        })
    }

    fn held(&self) -> Result<Vec<MessageRecord>> {
        self.read(|c| messages_where(c, "m.status IN ('held', 'sending')", &[]))
    }

    fn expire_held(&self, now_ms: u64) -> Result<Vec<MessageRecord>> {
        self.writer.write(move |c| {
            let gone = messages_where(
                c,
                "m.status = 'held' AND m.expires_at <= ?1",
                &[&(now_ms as i64)],
            )?;
            c.execute(
                "UPDATE sender_messages SET status = 'expired', sealed = NULL, number_key = NULL,
                 updated_at = ?1 WHERE status = 'held' AND expires_at <= ?1",
                [now_ms as i64],
            )?;
            Ok(gone
                .into_iter()
                .map(|m| MessageRecord {
                    status: MessageStatus::Expired,
                    updated_at: now_ms,
                    ..m
                })
                .collect())
        })
    }

    fn mark_delivered(&self, now_ms: u64) -> Result<Vec<MessageRecord>> {
        self.writer.write(move |c| {
            // Delivered: fewer unacknowledged mailbox rows than recipients.
            const ACKED: &str = "m.status = 'sent' AND m.recipients > (SELECT COUNT(*) FROM mailbox x
                 JOIN datagrams d ON d.id = x.datagram WHERE d.digest = m.digest AND x.acked_at IS NULL)";
            let done = messages_where(c, ACKED, &[])?;
            let mut stmt = c.prepare_cached(
                "UPDATE sender_messages SET status = 'delivered', updated_at = ?2 WHERE id = ?1",
            )?;
            for m in &done {
                stmt.execute(params![m.id, now_ms as i64])?;
            }
            Ok(done
                .into_iter()
                .map(|m| MessageRecord { status: MessageStatus::Delivered, updated_at: now_ms, ..m })
                .collect())
        })
    }

    fn put_otp(
        &self,
        number: &str,
        kind: OtpKind,
        otp: &str,
        now_ms: u64,
        expires_at: u64,
        limit: OtpLimit,
    ) -> Result<bool> {
        let key = self.secret.number_key(number);
        let hash = self.secret.otp_hash(&key, otp);
        let window_from = now_ms.saturating_sub(limit.window_ms) as i64;
        self.writer.write(move |c| {
            let count: i64 = c.query_row(
                "INSERT INTO otp_requests (number_key, window_start, count) VALUES (?1, ?2, 1)
                 ON CONFLICT (number_key) DO UPDATE SET
                 count = CASE WHEN window_start <= ?3 THEN 1 ELSE count + 1 END,
                 window_start = CASE WHEN window_start <= ?3 THEN ?2 ELSE window_start END
                 RETURNING count",
                params![&key[..], now_ms as i64, window_from],
                |r| r.get(0),
            )?;
            if count > i64::from(limit.per_window) {
                return Ok(false);
            }
            c.execute(
                "INSERT OR REPLACE INTO otps (number_key, kind, otp_hash, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![&key[..], kind.as_str(), &hash[..], expires_at as i64],
            )?;
            Ok(true)
        })
    }

    fn check_otp(
        &self,
        number: &str,
        kind: OtpKind,
        otp: &str,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<OtpCheck> {
        let key = self.secret.number_key(number);
        let (otp, secret) = (otp.to_owned(), self.secret.clone());
        self.writer
            .write(move |c| judge_otp(c, &secret, &key, kind, &otp, now_ms, max_attempts, false))
    }

    fn confirm_sms_otp(
        &self,
        number: &str,
        otp: &str,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<OtpCheck> {
        let key = self.secret.number_key(number);
        let (otp, secret) = (otp.to_owned(), self.secret.clone());
        self.writer.write(move |c| {
            judge_otp(
                c,
                &secret,
                &key,
                OtpKind::App,
                &otp,
                now_ms,
                max_attempts,
                true,
            )
        })
    }

    fn queue(&self, kind: OutboxKind, sender_id: i64, sealed: Vec<u8>, now_ms: u64) -> Result<()> {
        self.writer.write(move |c| {
            c.execute(
                "INSERT INTO outbox (kind, sender_id, sealed, next_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![kind.as_str(), sender_id, sealed, now_ms as i64],
            )?;
            Ok(())
        })
    }

    fn due(
        &self,
        kind: OutboxKind,
        owner: &[u8; 16],
        now_ms: u64,
        limit: u32,
        lease_ms: u64,
    ) -> Result<Vec<OutboxItem>> {
        let owner = *owner;
        self.writer.write(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, sender_id, sealed, attempts FROM outbox WHERE kind = ?1 AND next_at <= ?2
                 ORDER BY next_at, id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![kind.as_str(), now_ms as i64, limit], |r| {
                Ok(OutboxItem { id: r.get(0)?, sender_id: r.get(1)?, sealed: r.get(2)?, attempts: r.get(3)? })
            })?;
            let items: Vec<OutboxItem> = rows.collect::<Result<_, _>>()?;
            let mut lease =
                c.prepare_cached("UPDATE outbox SET next_at = ?2, lease_owner = ?3 WHERE id = ?1")?;
            let until = now_ms.saturating_add(lease_ms) as i64;
            for item in &items {
                lease.execute(params![item.id, until, &owner[..]])?;
            }
            Ok(items)
        })
    }

    fn renew_lease(&self, id: i64, owner: &[u8; 16], now_ms: u64, lease_ms: u64) -> Result<bool> {
        let (owner, until) = (*owner, now_ms.saturating_add(lease_ms) as i64);
        self.writer.write(move |c| {
            let n = c.execute(
                "UPDATE outbox SET next_at = ?3 WHERE id = ?1 AND lease_owner = ?2",
                params![id, &owner[..], until],
            )?;
            Ok(n > 0)
        })
    }

    fn posted(&self, id: i64, owner: &[u8; 16]) -> Result<bool> {
        let owner = *owner;
        self.writer.write(move |c| {
            let n = c.execute(
                "DELETE FROM outbox WHERE id = ?1 AND lease_owner = ?2",
                params![id, &owner[..]],
            )?;
            Ok(n > 0)
        })
    }

    fn retry_at(&self, id: i64, owner: &[u8; 16], next_at: u64) -> Result<bool> {
        let owner = *owner;
        self.writer.write(move |c| {
            let n = c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?3, lease_owner = NULL
                 WHERE id = ?1 AND lease_owner = ?2",
                params![id, &owner[..], next_at as i64],
            )?;
            Ok(n > 0)
        })
    }
}
