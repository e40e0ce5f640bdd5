//! [`PhoneStore`] on PostgreSQL (tables of schema version 3), safe with
//! several nodes on one database: what must happen once is one statement
//! the database serialises (row locks; `UPDATE ... RETURNING` of rows
//! still in their old state; `FOR UPDATE SKIP LOCKED` leases), and a
//! sender device's state is guarded by an advisory lock (see
//! `server::phone`, "Several nodes").

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tokio_postgres::Row;

use super::super::phone::*;
use super::super::secret::ServerSecret;
use super::super::*;
use super::pool::{Conn, Pooled};
use super::{directory, int, key32, mailbox, PostgresStore};

/// The class of the advisory locks of sender devices (the second key is
/// the sender's id).
const SENDER_LOCK_CLASS: i32 = 0x736e_6472; // "sndr"
/// Longest wait for a sender's lock.
const SENDER_LOCK_WAIT: &str = "SET LOCAL lock_timeout = '30s'";

macro_rules! sender_select {
    () => {
        "SELECT s.id, s.handle, s.name, s.webhook, u.user_key, s.device, s.cert, s.secrets, \
         s.created_at FROM senders s JOIN users u ON u.id = s.user_id "
    };
}

fn sender_row(r: &Row) -> Result<SenderRecord> {
    Ok(SenderRecord {
        id: r.get(0),
        handle: r.get(1),
        name: r.get(2),
        webhook: r.get(3),
        user: UserPublic(key32(r.get(4))?),
        device: DeviceId(key32(r.get(5))?),
        cert: r.get(6),
        sealed_secrets: r.get(7),
        created_at: r.get::<_, i64>(8) as u64,
    })
}

fn sender_opt(row: Option<Row>) -> Result<Option<SenderRecord>> {
    row.as_ref().map(sender_row).transpose()
}

/// Columns of a [`MessageRecord`] from `sender_messages m JOIN senders s`.
macro_rules! message_columns {
    () => {
        "m.id, m.sender_id, s.handle, m.status, m.created_at, m.expires_at, m.updated_at"
    };
}

fn message_row(r: &Row) -> MessageRecord {
    let status: String = r.get(3);
    MessageRecord {
        id: r.get(0),
        sender_id: r.get(1),
        sender: r.get(2),
        status: MessageStatus::parse(&status).unwrap_or(MessageStatus::Expired),
        created_at: r.get::<_, i64>(4) as u64,
        expires_at: r.get::<_, i64>(5) as u64,
        updated_at: r.get::<_, i64>(6) as u64,
    }
}

/// Claimed held messages (`id, sender_id, sealed, created_at`), oldest
/// first.
fn held_rows(rows: &[Row]) -> Vec<HeldMessage> {
    let mut claimed: Vec<(i64, HeldMessage)> = rows
        .iter()
        .map(|r| {
            (
                r.get(3),
                HeldMessage {
                    id: r.get(0),
                    sender_id: r.get(1),
                    sealed: r.get(2),
                },
            )
        })
        .collect();
    claimed.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    claimed.into_iter().map(|(_, h)| h).collect()
}

fn sorted(mut v: Vec<MessageRecord>) -> Vec<MessageRecord> {
    v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    v
}

/// A unique constraint that a racing node won: the handle is taken.
fn handle_taken(e: StoreError) -> StoreError {
    if let StoreError::Postgres(pg) = &e {
        let constraint = pg.as_db_error().and_then(|d| d.constraint());
        if constraint == Some("senders_handle") {
            return StoreError::UsernameTaken;
        }
    }
    e
}

/// Counts an attempt on the OTP row (locked until the transaction ends,
/// so attempts on two nodes are counted one after the other) and judges
/// `otp` against it.
#[allow(clippy::too_many_arguments)]
async fn judge_otp(
    c: &mut Conn,
    secret: &ServerSecret,
    number_key: &[u8; 32],
    kind: OtpKind,
    otp: &str,
    now: u64,
    max_attempts: u32,
    confirming: bool,
) -> Result<OtpCheck> {
    let Some(row) = c
        .opt(
            "SELECT otp_hash, expires_at, attempts, used, confirmed FROM otps
             WHERE number_key = $1 AND kind = $2 FOR UPDATE",
            &[&&number_key[..], &kind.as_str()],
        )
        .await?
    else {
        return Ok(OtpCheck::Missing);
    };
    let (hash, expires_at, attempts, used, confirmed): (Vec<u8>, i64, i64, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    if used {
        return Ok(OtpCheck::Used);
    }
    if attempts >= max_attempts {
        return Ok(OtpCheck::TooManyAttempts);
    }
    if now >= expires_at as u64 {
        return Ok(OtpCheck::Expired);
    }
    if kind == OtpKind::App && !confirming && !confirmed {
        // Polling while the SMS is on its way costs no attempt.
        return Ok(OtpCheck::AwaitingSms);
    }
    c.exec(
        "UPDATE otps SET attempts = attempts + 1 WHERE number_key = $1 AND kind = $2",
        &[&&number_key[..], &kind.as_str()],
    )
    .await?;
    let candidate = secret.otp_hash(number_key, otp);
    if !bool::from(candidate[..].ct_eq(&hash[..])) {
        return Ok(OtpCheck::Wrong {
            attempts_left: max_attempts.saturating_sub(attempts + 1),
        });
    }
    if confirming {
        c.exec(
            "UPDATE otps SET confirmed = true, attempts = 0 WHERE number_key = $1 AND kind = $2",
            &[&&number_key[..], &kind.as_str()],
        )
        .await?;
    } else {
        c.exec(
            "UPDATE otps SET used = true WHERE number_key = $1 AND kind = $2",
            &[&&number_key[..], &kind.as_str()],
        )
        .await?;
    }
    Ok(OtpCheck::Accepted)
}

/// A sender's advisory lock: a connection of the lock pool inside a
/// transaction that holds `pg_advisory_xact_lock`. Dropping it rolls the transaction
/// back on the store's runtime (releasing the lock); if that cannot run,
/// the connection is closed, which releases it too.
struct PgSenderLock {
    conn: Option<Pooled>,
    rt: tokio::runtime::Handle,
}

impl Drop for PgSenderLock {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            self.rt.spawn(async move {
                if conn.batch("ROLLBACK").await.is_ok() {
                    conn.in_tx = false;
                }
            });
        }
    }
}

impl PhoneStore for PostgresStore {
    fn bind_hold_key(&self, check: &[u8; 32]) -> Result<HoldKeyCheck> {
        let check = *check;
        self.tx(move |c, _| {
            Box::pin(async move {
                let bound = c
                    .exec(
                        "INSERT INTO meta (key, value) VALUES ('hold_key_check', $1)
                         ON CONFLICT DO NOTHING",
                        &[&&check[..]],
                    )
                    .await?;
                if bound > 0 {
                    return Ok(HoldKeyCheck::Bound);
                }
                let stored: Vec<u8> = c
                    .one("SELECT value FROM meta WHERE key = 'hold_key_check'", &[])
                    .await?
                    .get(0);
                Ok(if bool::from(stored.ct_eq(&check[..])) {
                    HoldKeyCheck::Same
                } else {
                    HoldKeyCheck::Different
                })
            })
        })
    }

    fn lock_sender(&self, sender_id: i64) -> Result<SenderLock> {
        let inner = self.inner.clone();
        let key = i32::try_from(sender_id)
            .map_err(|_| StoreError::Backend(format!("sender id {sender_id} out of range")))?;
        let conn = self.rt().block_on(async move {
            // From the lock pool, never the call pool: the holder's own
            // calls take call-pool connections while it holds this one.
            let mut conn = inner.lock_pool.get().await?;
            conn.in_tx = true;
            conn.batch("BEGIN").await?;
            conn.batch(SENDER_LOCK_WAIT).await?;
            match conn
                .exec(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    &[&SENDER_LOCK_CLASS, &key],
                )
                .await
            {
                Err(StoreError::Postgres(e))
                    if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
                {
                    Err(StoreError::Busy(format!(
                        "the device state of sender {sender_id} is held by another node for too long"
                    )))
                }
                Err(e) => Err(e),
                Ok(_) => Ok::<_, StoreError>(conn),
            }
        })?;
        Ok(SenderLock::holding(Box::new(PgSenderLock {
            conn: Some(conn),
            rt: self.rt().handle().clone(),
        })))
    }

    fn add_sender(&self, s: NewSender, now_ms: u64) -> Result<SenderRecord> {
        let name_key = self.name_key(&s.user.username_hash);
        let sealed = self
            .inner
            .secret
            .seal_name(&name_key, &s.user.username_hash);
        let s = Arc::new(s);
        self.tx(move |c, _| {
            let s = s.clone();
            Box::pin(async move {
                if c.opt("SELECT 1 FROM senders WHERE handle = $1", &[&s.handle])
                    .await?
                    .is_some()
                {
                    return Err(StoreError::UsernameTaken);
                }
                let d = &s.user.device;
                directory::register(c, &name_key, &sealed, &s.user.user, d, now_ms).await?;
                let id: i64 = c
                    .one(
                        "INSERT INTO senders (handle, name, webhook, user_id, device, cert, secrets, created_at)
                         SELECT $1, $2, $3, id, $5, $6, $7, $8 FROM users WHERE user_key = $4
                         RETURNING id",
                        &[
                            &s.handle,
                            &s.name,
                            &s.webhook,
                            &&s.user.user.0[..],
                            &&d.device.0[..],
                            &d.cert,
                            &s.sealed_secrets,
                            &int(now_ms),
                        ],
                    )
                    .await
                    .map_err(handle_taken)?
                    .get(0);
                c.exec(
                    "INSERT INTO sender_keys (key_hash, sender_id, created_at) VALUES ($1, $2, $3)",
                    &[&&s.api_key_hash[..], &id, &int(now_ms)],
                )
                .await?;
                let row = c
                    .opt(concat!(sender_select!(), "WHERE s.id = $1"), &[&id])
                    .await?;
                sender_opt(row)?.ok_or(StoreError::UnknownUser)
            })
        })
    }

    fn sender(&self, handle: &str) -> Result<Option<SenderRecord>> {
        let handle = Arc::new(handle.to_owned());
        self.read(move |c, _| {
            let handle = handle.clone();
            Box::pin(async move {
                sender_opt(
                    c.opt(
                        concat!(sender_select!(), "WHERE s.handle = $1"),
                        &[&*handle],
                    )
                    .await?,
                )
            })
        })
    }

    fn sender_by_id(&self, id: i64) -> Result<Option<SenderRecord>> {
        self.read(move |c, _| {
            Box::pin(async move {
                sender_opt(
                    c.opt(concat!(sender_select!(), "WHERE s.id = $1"), &[&id])
                        .await?,
                )
            })
        })
    }

    fn sender_by_user(&self, user: &UserPublic) -> Result<Option<SenderRecord>> {
        let user = *user;
        self.read(move |c, _| {
            Box::pin(async move {
                sender_opt(
                    c.opt(
                        concat!(sender_select!(), "WHERE u.user_key = $1"),
                        &[&&user.0[..]],
                    )
                    .await?,
                )
            })
        })
    }

    fn sender_by_key(&self, key_hash: &[u8; 32]) -> Result<Option<SenderRecord>> {
        let key = *key_hash;
        self.read(move |c, _| {
            Box::pin(async move {
                sender_opt(
                    c.opt(
                        concat!(
                            sender_select!(),
                            "WHERE s.id = (SELECT sender_id FROM sender_keys
                             WHERE key_hash = $1 AND revoked_at IS NULL)"
                        ),
                        &[&&key[..]],
                    )
                    .await?,
                )
            })
        })
    }

    fn senders(&self) -> Result<Vec<SenderRecord>> {
        self.read(move |c, _| {
            Box::pin(async move {
                c.query(concat!(sender_select!(), "ORDER BY s.handle"), &[])
                    .await?
                    .iter()
                    .map(sender_row)
                    .collect()
            })
        })
    }

    fn add_api_key(&self, handle: &str, key_hash: &[u8; 32], now_ms: u64) -> Result<()> {
        let (handle, key) = (Arc::new(handle.to_owned()), *key_hash);
        self.tx(move |c, _| {
            let handle = handle.clone();
            Box::pin(async move {
                let n = c
                    .exec(
                        "INSERT INTO sender_keys (key_hash, sender_id, created_at)
                         SELECT $1, id, $3 FROM senders WHERE handle = $2",
                        &[&&key[..], &*handle, &int(now_ms)],
                    )
                    .await?;
                if n == 0 {
                    return Err(StoreError::UnknownUser);
                }
                Ok(())
            })
        })
    }

    fn revoke_api_key(&self, handle: &str, key_hash: &[u8; 32], now_ms: u64) -> Result<bool> {
        let (handle, key) = (Arc::new(handle.to_owned()), *key_hash);
        self.tx(move |c, _| {
            let handle = handle.clone();
            Box::pin(async move {
                let n = c
                    .exec(
                        "UPDATE sender_keys SET revoked_at = $3
                         WHERE key_hash = $1 AND revoked_at IS NULL
                         AND sender_id = (SELECT id FROM senders WHERE handle = $2)",
                        &[&&key[..], &*handle, &int(now_ms)],
                    )
                    .await?;
                Ok(n > 0)
            })
        })
    }

    fn sender_sessions(&self, sender_id: i64, peers: &[DeviceId]) -> Result<Vec<Vec<u8>>> {
        let peers: Arc<Vec<Vec<u8>>> = Arc::new(peers.iter().map(|p| p.0.to_vec()).collect());
        self.read(move |c, _| {
            let peers = peers.clone();
            Box::pin(async move {
                Ok(c.query(
                    "SELECT sealed FROM sender_sessions WHERE sender_id = $1 AND peer = ANY($2)",
                    &[&sender_id, &*peers],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
            })
        })
    }

    fn sender_session(&self, sender_id: i64, session: &[u8; 16]) -> Result<Option<Vec<u8>>> {
        let session = *session;
        self.read(move |c, _| {
            Box::pin(async move {
                Ok(c.opt(
                    "SELECT sealed FROM sender_sessions WHERE sender_id = $1 AND session = $2",
                    &[&sender_id, &&session[..]],
                )
                .await?
                .map(|r| r.get(0)))
            })
        })
    }

    fn save_sender_sessions(
        &self,
        sender_id: i64,
        upserted: Vec<([u8; 16], DeviceId, Vec<u8>)>,
        removed: Vec<[u8; 16]>,
    ) -> Result<()> {
        let change = Arc::new((upserted, removed));
        self.tx(move |c, _| {
            let change = change.clone();
            Box::pin(async move {
                for (id, peer, sealed) in &change.0 {
                    c.exec(
                        "INSERT INTO sender_sessions (sender_id, session, peer, sealed)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (sender_id, session)
                         DO UPDATE SET peer = EXCLUDED.peer, sealed = EXCLUDED.sealed",
                        &[&sender_id, &&id[..], &&peer.0[..], sealed],
                    )
                    .await?;
                }
                for id in &change.1 {
                    c.exec(
                        "DELETE FROM sender_sessions WHERE sender_id = $1 AND session = $2",
                        &[&sender_id, &&id[..]],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn note_thread(&self, sender_id: i64, users: &[UserPublic], message_id: &str) -> Result<()> {
        let (users, message_id) = (Arc::new(users.to_vec()), Arc::new(message_id.to_owned()));
        self.tx(move |c, _| {
            let (users, message_id) = (users.clone(), message_id.clone());
            Box::pin(async move {
                for u in users.iter() {
                    c.exec(
                        "INSERT INTO sender_threads (sender_id, user_key, message_id)
                         VALUES ($1, $2, $3) ON CONFLICT (sender_id, user_key)
                         DO UPDATE SET message_id = EXCLUDED.message_id",
                        &[&sender_id, &&u.0[..], &*message_id],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn thread(&self, sender_id: i64, user: &UserPublic) -> Result<Option<String>> {
        let user = *user;
        self.read(move |c, _| {
            Box::pin(async move {
                Ok(c.opt(
                    "SELECT message_id FROM sender_threads WHERE sender_id = $1 AND user_key = $2",
                    &[&sender_id, &&user.0[..]],
                )
                .await?
                .map(|r| r.get(0)))
            })
        })
    }

    fn phone_users(&self, number: &str) -> Result<Vec<PhoneUser>> {
        let key = self.inner.secret.number_key(number);
        self.read(move |c, _| {
            Box::pin(async move {
                c.query(
                    "SELECT u.user_key, p.username FROM phone_users p JOIN users u ON u.id = p.user_id
                     WHERE p.number_key = $1 ORDER BY u.id",
                    &[&&key[..]],
                )
                .await?
                .iter()
                .map(|r| {
                    Ok(PhoneUser {
                        user: UserPublic(key32(r.get(0))?),
                        username: r.get(1),
                    })
                })
                .collect()
            })
        })
    }

    fn register_phone(
        &self,
        number: &str,
        username: &str,
        user: NewUser,
        now_ms: u64,
    ) -> Result<()> {
        let number_key = self.inner.secret.number_key(number);
        let name_key = self.name_key(&user.username_hash);
        let sealed = self.inner.secret.seal_name(&name_key, &user.username_hash);
        let (user, username) = (Arc::new(user), Arc::new(username.to_owned()));
        self.tx(move |c, _| {
            let (user, username) = (user.clone(), username.clone());
            Box::pin(async move {
                directory::register(c, &name_key, &sealed, &user.user, &user.device, now_ms)
                    .await?;
                c.exec(
                    "INSERT INTO phone_users (number_key, user_id, username)
                     SELECT $1, id, $2 FROM users WHERE user_key = $3",
                    &[&&number_key[..], &*username, &&user.user.0[..]],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn claim_for_user(
        &self,
        user: &UserPublic,
        claimant: &UserPublic,
    ) -> Result<Vec<ClaimedPrekey>> {
        let (user, claimant) = (*user, *claimant);
        self.tx(move |c, secret| {
            Box::pin(async move {
                let name_key = key32(
                    c.opt(
                        "SELECT name_key FROM users WHERE user_key = $1",
                        &[&&user.0[..]],
                    )
                    .await?
                    .ok_or(StoreError::UnknownUser)?
                    .get(0),
                )?;
                Ok(directory::claim(c, secret, &name_key, &[], &claimant)
                    .await?
                    .1)
            })
        })
    }

    fn hold(&self, m: NewHeld, now_ms: u64) -> Result<bool> {
        let number_key = self.inner.secret.number_key(&m.number);
        let m = Arc::new(m);
        self.tx(move |c, _| {
            let m = m.clone();
            Box::pin(async move {
                c.exec(
                    "INSERT INTO sender_messages (id, sender_id, number_key, sealed, status, created_at, expires_at, updated_at)
                     VALUES ($1, $2, $3, $4, 'held', $5, $6, $5)",
                    &[&m.id, &m.sender_id, &&number_key[..], &m.sealed, &int(now_ms), &int(m.expires_at)],
                )
                .await?;
                // Two nodes holding the first two messages at once: the
                // second insert waits for the first and then does nothing.
                let first = c
                    .exec(
                        "INSERT INTO sender_invites (sender_id, number_key) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING",
                        &[&m.sender_id, &&number_key[..]],
                    )
                    .await?;
                Ok(first > 0)
            })
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
        let (id, digest) = (Arc::new(id.to_owned()), *digest);
        self.tx(move |c, _| {
            let id = id.clone();
            Box::pin(async move {
                c.exec(
                    "INSERT INTO sender_messages (id, sender_id, status, digest, recipients, created_at, expires_at, updated_at)
                     VALUES ($1, $2, 'sent', $3, $4, $5, $5, $5)",
                    &[&*id, &sender_id, &&digest[..], &i64::from(recipients), &int(now_ms)],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn claim_held(
        &self,
        number: &str,
        owner: &[u8; 16],
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Vec<HeldMessage>> {
        let key = self.inner.secret.number_key(number);
        let (owner, stale) = (*owner, int(now_ms.saturating_sub(lease_ms)));
        self.tx(move |c, _| {
            Box::pin(async move {
                // A racing claim waits on the rows this one updates, then
                // re-reads them: `sending` and fresh, they are left out.
                let rows = c
                    .query(
                        "UPDATE sender_messages SET status = 'sending', claim_owner = $4, updated_at = $2
                         WHERE number_key = $1 AND sealed IS NOT NULL
                         AND (status = 'held' OR (status = 'sending' AND updated_at <= $3))
                         RETURNING id, sender_id, sealed, created_at",
                        &[&&key[..], &int(now_ms), &stale, &&owner[..]],
                    )
                    .await?;
                Ok(held_rows(&rows))
            })
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
        let stale = int(now_ms.saturating_sub(lease_ms));
        let rested = int(now_ms.saturating_sub(retry_ms));
        self.tx(move |c, _| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "UPDATE sender_messages SET status = 'sending', claim_owner = $1, updated_at = $2
                         WHERE id IN (SELECT id FROM sender_messages WHERE sealed IS NOT NULL
                             AND ((status = 'held' AND updated_at <= $4
                                   AND number_key IN (SELECT number_key FROM phone_users))
                                  OR (status = 'sending' AND updated_at <= $3))
                             ORDER BY created_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
                         RETURNING id, sender_id, sealed, created_at",
                        &[&&owner[..], &int(now_ms), &stale, &rested, &i64::from(limit)],
                    )
                    .await?;
                Ok(held_rows(&rows))
            })
        })
    }

    fn send_held(&self, send: HeldSend) -> Result<Option<Vec<Enqueued>>> {
        let outgoing: Vec<mailbox::Outgoing> = send
            .datagrams
            .iter()
            .map(|(to, datagram)| mailbox::Outgoing {
                digest: mailbox::digest(datagram),
                sender: send.from,
                recipients: to.clone(),
                datagram: datagram.clone(),
                now: send.now_ms,
                quota: send.quota,
            })
            .collect();
        let Some(first) = outgoing.first() else {
            return Err(StoreError::Backend(format!(
                "held message {}: nothing to send",
                send.id
            )));
        };
        let (digest, recipients) = (first.digest, first.recipients.len() as i64);
        let (outgoing, send) = (Arc::new(outgoing), Arc::new(send));
        let known = self.inner.devices.clone();
        self.tx(move |c, secret| {
            let (outgoing, send, known) = (outgoing.clone(), send.clone(), known.clone());
            Box::pin(async move {
                // The row stays locked to the commit: a claim racing this
                // one re-reads it `sent`.
                let n = c
                    .exec(
                        "UPDATE sender_messages SET status = 'sent', sealed = NULL, number_key = NULL,
                         claim_owner = NULL, digest = $3, recipients = $4, updated_at = $5
                         WHERE id = $1 AND status = 'sending' AND claim_owner = $2",
                        &[&send.id, &&send.claim[..], &&digest[..], &recipients, &int(send.now_ms)],
                    )
                    .await?;
                if n == 0 {
                    return Ok(None);
                }
                let mut enqueued = Vec::with_capacity(outgoing.len());
                for o in outgoing.iter() {
                    enqueued.push(mailbox::enqueue(c, secret, &known, o, None).await?);
                }
                Ok(Some(enqueued))
            })
        })
    }

    fn release_held(&self, ids: &[String], owner: &[u8; 16], now_ms: u64) -> Result<u32> {
        let (ids, owner) = (Arc::new(ids.to_vec()), *owner);
        self.tx(move |c, _| {
            let ids = ids.clone();
            Box::pin(async move {
                let n = c
                    .exec(
                        "UPDATE sender_messages SET status = 'held', claim_owner = NULL, updated_at = $3
                         WHERE id = ANY($1) AND status = 'sending' AND claim_owner = $2",
                        &[&*ids, &&owner[..], &int(now_ms)],
                    )
                    .await?;
                Ok(n as u32)
            })
        })
    }

    fn message(&self, sender_id: i64, id: &str) -> Result<Option<MessageRecord>> {
        let id = Arc::new(id.to_owned());
        self.read(move |c, _| {
            let id = id.clone();
            Box::pin(async move {
                Ok(c.opt(
                    concat!(
                        "SELECT ",
                        message_columns!(),
                        " FROM sender_messages m JOIN senders s ON s.id = m.sender_id
                         WHERE m.sender_id = $1 AND m.id = $2"
                    ),
                    &[&sender_id, &*id],
                )
                .await?
                .as_ref()
                .map(message_row))
            })
        })
    }

    fn held(&self) -> Result<Vec<MessageRecord>> {
        self.read(move |c, _| {
            Box::pin(async move {
                Ok(sorted(
                    c.query(
                        concat!(
                            "SELECT ",
                            message_columns!(),
                            " FROM sender_messages m JOIN senders s ON s.id = m.sender_id
                             WHERE m.status IN ('held', 'sending')"
                        ),
                        &[],
                    )
                    .await?
                    .iter()
                    .map(message_row)
                    .collect(),
                ))
            })
        })
    }

    fn expire_held(&self, now_ms: u64) -> Result<Vec<MessageRecord>> {
        self.tx(move |c, _| {
            Box::pin(async move {
                // Each row is updated by one node: another one waiting on
                // it re-reads it `expired` and leaves it out.
                Ok(sorted(
                    c.query(
                        concat!(
                            "UPDATE sender_messages m SET status = 'expired', sealed = NULL,
                             number_key = NULL, updated_at = $1 FROM senders s
                             WHERE s.id = m.sender_id AND m.status = 'held'
                             AND m.expires_at <= $1 RETURNING ",
                            message_columns!()
                        ),
                        &[&int(now_ms)],
                    )
                    .await?
                    .iter()
                    .map(message_row)
                    .collect(),
                ))
            })
        })
    }

    fn mark_delivered(&self, now_ms: u64) -> Result<Vec<MessageRecord>> {
        self.tx(move |c, _| {
            Box::pin(async move {
                // Delivered: fewer unacknowledged mailbox rows than
                // recipients.
                Ok(sorted(
                    c.query(
                        concat!(
                            "UPDATE sender_messages m SET status = 'delivered', updated_at = $1
                             FROM senders s WHERE s.id = m.sender_id AND m.status = 'sent'
                             AND m.recipients > (SELECT COUNT(*) FROM mailbox x
                                 JOIN datagrams d ON d.id = x.datagram
                                 WHERE d.digest = m.digest AND x.acked_at IS NULL)
                             RETURNING ",
                            message_columns!()
                        ),
                        &[&int(now_ms)],
                    )
                    .await?
                    .iter()
                    .map(message_row)
                    .collect(),
                ))
            })
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
        let key = self.inner.secret.number_key(number);
        let hash = self.inner.secret.otp_hash(&key, otp);
        let window_from = int(now_ms.saturating_sub(limit.window_ms));
        self.tx(move |c, _| {
            Box::pin(async move {
                // The row is locked to the commit: requests on two nodes
                // are counted one after the other.
                let count: i64 = c
                    .one(
                        "INSERT INTO otp_requests (number_key, window_start, count) VALUES ($1, $2, 1)
                         ON CONFLICT (number_key) DO UPDATE SET
                         count = CASE WHEN otp_requests.window_start <= $3 THEN 1
                                      ELSE otp_requests.count + 1 END,
                         window_start = CASE WHEN otp_requests.window_start <= $3 THEN $2
                                      ELSE otp_requests.window_start END
                         RETURNING count",
                        &[&&key[..], &int(now_ms), &window_from],
                    )
                    .await?
                    .get(0);
                if count > i64::from(limit.per_window) {
                    return Ok(false);
                }
                c.exec(
                    "INSERT INTO otps (number_key, kind, otp_hash, expires_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (number_key, kind) DO UPDATE SET otp_hash = EXCLUDED.otp_hash,
                     expires_at = EXCLUDED.expires_at, attempts = 0, used = false, confirmed = false",
                    &[&&key[..], &kind.as_str(), &&hash[..], &int(expires_at)],
                )
                .await?;
                Ok(true)
            })
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
        let key = self.inner.secret.number_key(number);
        let otp = Arc::new(zeroize::Zeroizing::new(otp.to_owned()));
        self.tx(move |c, secret| {
            let otp = otp.clone();
            Box::pin(async move {
                judge_otp(c, secret, &key, kind, &otp, now_ms, max_attempts, false).await
            })
        })
    }

    fn confirm_sms_otp(
        &self,
        number: &str,
        otp: &str,
        now_ms: u64,
        max_attempts: u32,
    ) -> Result<OtpCheck> {
        let key = self.inner.secret.number_key(number);
        let otp = Arc::new(zeroize::Zeroizing::new(otp.to_owned()));
        self.tx(move |c, secret| {
            let otp = otp.clone();
            Box::pin(async move {
                judge_otp(
                    c,
                    secret,
                    &key,
                    OtpKind::App,
                    &otp,
                    now_ms,
                    max_attempts,
                    true,
                )
                .await
            })
        })
    }

    fn queue(&self, kind: OutboxKind, sender_id: i64, sealed: Vec<u8>, now_ms: u64) -> Result<()> {
        let sealed = Arc::new(sealed);
        self.tx(move |c, _| {
            let sealed = sealed.clone();
            Box::pin(async move {
                c.exec(
                    "INSERT INTO outbox (kind, sender_id, sealed, next_at, created_at)
                     VALUES ($1, $2, $3, $4, $4)",
                    &[&kind.as_str(), &sender_id, &*sealed, &int(now_ms)],
                )
                .await?;
                Ok(())
            })
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
        let (owner, until) = (*owner, int(now_ms.saturating_add(lease_ms)));
        self.tx(move |c, _| {
            Box::pin(async move {
                // Rows another node is leasing right now are skipped, and
                // once it commits they are not due any more.
                let mut items: Vec<(i64, OutboxItem)> = c
                    .query(
                        "UPDATE outbox SET next_at = $3, lease_owner = $5 WHERE id IN (
                             SELECT id FROM outbox WHERE kind = $1 AND next_at <= $2
                             ORDER BY next_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
                         RETURNING id, sender_id, sealed, attempts, created_at",
                        &[
                            &kind.as_str(),
                            &int(now_ms),
                            &until,
                            &i64::from(limit),
                            &&owner[..],
                        ],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        (
                            r.get(4),
                            OutboxItem {
                                id: r.get(0),
                                sender_id: r.get(1),
                                sealed: r.get(2),
                                attempts: u32::try_from(r.get::<_, i64>(3)).unwrap_or(u32::MAX),
                            },
                        )
                    })
                    .collect();
                items.sort_by_key(|(created, item)| (*created, item.id));
                Ok(items.into_iter().map(|(_, i)| i).collect())
            })
        })
    }

    fn renew_lease(&self, id: i64, owner: &[u8; 16], now_ms: u64, lease_ms: u64) -> Result<bool> {
        let (owner, until) = (*owner, int(now_ms.saturating_add(lease_ms)));
        self.tx(move |c, _| {
            Box::pin(async move {
                let n = c
                    .exec(
                        "UPDATE outbox SET next_at = $3 WHERE id = $1 AND lease_owner = $2",
                        &[&id, &&owner[..], &until],
                    )
                    .await?;
                Ok(n > 0)
            })
        })
    }

    fn posted(&self, id: i64, owner: &[u8; 16]) -> Result<bool> {
        let owner = *owner;
        self.tx(move |c, _| {
            Box::pin(async move {
                let n = c
                    .exec(
                        "DELETE FROM outbox WHERE id = $1 AND lease_owner = $2",
                        &[&id, &&owner[..]],
                    )
                    .await?;
                Ok(n > 0)
            })
        })
    }

    fn retry_at(&self, id: i64, owner: &[u8; 16], next_at: u64) -> Result<bool> {
        let owner = *owner;
        self.tx(move |c, _| {
            Box::pin(async move {
                let n = c
                    .exec(
                        "UPDATE outbox SET attempts = attempts + 1, next_at = $3, lease_owner = NULL
                         WHERE id = $1 AND lease_owner = $2",
                        &[&id, &&owner[..], &int(next_at)],
                    )
                    .await?;
                Ok(n > 0)
            })
        })
    }
}
