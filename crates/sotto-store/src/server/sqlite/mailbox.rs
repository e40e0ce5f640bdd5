//! Datagrams (stored once) and per-device mailbox rows pointing at them.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::super::secret::ServerSecret;
use super::super::*;
use super::directory::blocks_user;

pub(super) fn digest(datagram: &[u8]) -> [u8; 32] {
    Sha256::digest(datagram).into()
}

/// (row id, user row id) of a device.
fn device_ids(c: &Connection, device: &DeviceId) -> Result<(i64, i64)> {
    c.prepare_cached("SELECT id, user_id FROM devices WHERE device = ?1")?
        .query_row([&device.0[..]], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(StoreError::UnknownDevice(*device))
}

/// A recipient device as the send resolves it.
struct Target {
    device: DeviceId,
    row: i64,
    user_row: i64,
    user: UserPublic,
    /// The device's last mailbox sequence number (its next row gets one more).
    last_seq: i64,
    /// Unacknowledged bytes of this device, and of all its user's devices.
    pending: u64,
    user_pending: u64,
}

/// One statement per device (statements, not rows, are what a send costs).
fn target(c: &Connection, device: &DeviceId) -> Result<Target> {
    c.prepare_cached(
        "SELECT d.id, d.user_id, u.user_key, d.pending_bytes,
                (SELECT SUM(pending_bytes) FROM devices WHERE user_id = d.user_id), d.last_seq
         FROM devices d JOIN users u ON u.id = d.user_id WHERE d.device = ?1",
    )?
    .query_row([&device.0[..]], |r| {
        Ok(Target {
            device: *device,
            row: r.get(0)?,
            user_row: r.get(1)?,
            user: UserPublic(r.get(2)?),
            pending: r.get::<_, i64>(3)? as u64,
            user_pending: r.get::<_, i64>(4)? as u64,
            last_seq: r.get(5)?,
        })
    })
    .optional()?
    .ok_or(StoreError::UnknownDevice(*device))
}

/// The sender's (user row, user key).
fn sender_of(c: &Connection, device: &DeviceId) -> Result<(i64, UserPublic)> {
    c.prepare_cached(
        "SELECT d.user_id, u.user_key FROM devices d JOIN users u ON u.id = d.user_id
         WHERE d.device = ?1",
    )?
    .query_row([&device.0[..]], |r| Ok((r.get(0)?, UserPublic(r.get(1)?))))
    .optional()?
    .ok_or(StoreError::UnknownDevice(*device))
}

/// The devices a send adds rows for: every recipient resolved (the send is
/// refused as a whole if one is unknown or has no room), less those whose
/// user blocks the sender (who is not told). Reads only.
fn resolve(
    c: &Connection,
    secret: &ServerSecret,
    sender: &DeviceId,
    recipients: &[DeviceId],
    datagram: &[u8],
    digest: &[u8; 32],
    quota: &MailboxQuota,
) -> Result<Vec<Target>> {
    let from = sender_of(c, sender)?;
    let mut targets: Vec<Target> = Vec::with_capacity(recipients.len());
    for r in recipients {
        if !targets.iter().any(|t| t.device == *r) {
            targets.push(target(c, r)?);
        }
    }
    let mut users: Vec<(i64, UserPublic)> = targets
        .iter()
        .filter(|t| t.user_row != from.0)
        .map(|t| (t.user_row, t.user))
        .collect();
    users.sort_unstable_by_key(|u| u.0);
    users.dedup_by_key(|u| u.0);
    for (row, user) in users {
        if blocks_user(c, secret, &user, &from.1)? {
            targets.retain(|t| t.user_row != row);
        }
    }
    // The quota is checked against every target first (a retry adds rows
    // only for some, so passing for all passes for those); only if that
    // refuses does the datagram's retry state matter.
    let size = datagram.len() as u64;
    if !targets.is_empty() && check_quota(&targets, size, quota).is_err() {
        if let Some(id) = stored(c, digest)? {
            targets = without_rows(c, id, targets)?;
            if targets.is_empty() {
                return Ok(targets);
            }
        }
        check_quota(&targets, size, quota)?;
    }
    Ok(targets)
}

/// Stores a datagram for `recipients` (see [`ServerStore::enqueue`]),
/// remembering `request` (see [`single_use`]) in the same transaction.
///
/// Every refusal (an unknown device, a full mailbox, a replayed request)
/// comes before the first write: a job that fails without writing costs
/// the writer's batch nothing (see `super::super::writer`). A replayed
/// request is told so whatever else would refuse it.
#[allow(clippy::too_many_arguments)]
pub(super) fn enqueue(
    c: &Connection,
    secret: &ServerSecret,
    sender: &DeviceId,
    recipients: &[DeviceId],
    datagram: &[u8],
    digest: [u8; 32],
    now: u64,
    quota: &MailboxQuota,
    request: Option<&RequestId>,
) -> Result<Enqueued> {
    let mut targets = match resolve(c, secret, sender, recipients, datagram, &digest, quota) {
        Ok(targets) => targets,
        Err(e) => match request {
            Some(r) if remembered(c, r)? => return Err(StoreError::Replayed),
            _ => return Err(e),
        },
    };
    if let Some(r) = request {
        single_use(c, &r.id, r.expires_at)?;
    }
    let nothing = Enqueued {
        datagram_id: digest,
        received_at: now,
        deliveries: Vec::new(),
    };
    if targets.is_empty() {
        return Ok(nothing); // all blocked, or all had it (a retry)
    }
    // A new datagram's id comes back from the insert; a resent one (the
    // digest is stored already) adds rows only for devices that have none
    // for it.
    // No RETURNING: SQLite runs it through a temporary table opened and
    // closed for every statement (a tenth of a send's cost in the
    // profile); the writer's connection is the only writer, so the row id
    // and the count of changed rows say the same.
    let added = c
        .prepare_cached(
            "INSERT INTO datagrams (digest, body, received_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (digest) DO NOTHING",
        )?
        .execute(params![&digest[..], datagram, now as i64])?;
    let inserted = (added == 1).then(|| c.last_insert_rowid());
    let datagram_id: i64 = match inserted {
        Some(id) => id,
        None => {
            let id = stored(c, &digest)?.ok_or_else(|| {
                StoreError::Backend("a datagram's digest conflicts but is not stored".into())
            })?;
            targets = without_rows(c, id, targets)?;
            if targets.is_empty() {
                return Ok(nothing); // all had it: a retry
            }
            id
        }
    };
    let size = datagram.len() as i64;
    // The sequence number follows from the target's row as read in this
    // transaction (the writer is the only writer; targets are distinct).
    let mut next_seq = c.prepare_cached(
        "UPDATE devices SET last_seq = ?2, pending_bytes = pending_bytes + ?3 WHERE id = ?1",
    )?;
    let mut insert = c.prepare_cached(
        "INSERT INTO mailbox (device_id, seq, datagram, received_at, size) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut deliveries = Vec::with_capacity(targets.len());
    for t in targets {
        let seq = t.last_seq + 1;
        next_seq.execute(params![t.row, seq, size])?;
        insert.execute(params![t.row, seq, datagram_id, now as i64, size])?;
        deliveries.push(Delivery {
            device: t.device,
            seq: seq as u64,
        });
    }
    Ok(Enqueued {
        datagram_id: digest,
        received_at: now,
        deliveries,
    })
}

/// The row id of the datagram stored under `digest`, if any.
fn stored(c: &Connection, digest: &[u8; 32]) -> Result<Option<i64>> {
    Ok(
        c.prepare_cached("SELECT id FROM datagrams WHERE digest = ?1")?
            .query_row([&digest[..]], |r| r.get(0))
            .optional()?,
    )
}

/// Those of `targets` that have no row for the datagram `id` yet.
fn without_rows(c: &Connection, id: i64, targets: Vec<Target>) -> Result<Vec<Target>> {
    let mut has_row =
        c.prepare_cached("SELECT 1 FROM mailbox WHERE datagram = ?1 AND device_id = ?2")?;
    let mut fresh = Vec::with_capacity(targets.len());
    for t in targets {
        if !has_row.exists([id, t.row])? {
            fresh.push(t);
        }
    }
    Ok(fresh)
}

/// Refuses the send if one more row of `size` bytes would take a target
/// device, or all targets of one user together, past the quota. Called
/// before the send writes anything (the writer relies on a refusal
/// leaving no write to undo).
fn check_quota(targets: &[Target], size: u64, quota: &MailboxQuota) -> Result<()> {
    for t in targets {
        let rows = targets.iter().filter(|o| o.user_row == t.user_row).count() as u64;
        if t.pending.saturating_add(size) > quota.device_bytes
            || t.user_pending.saturating_add(size.saturating_mul(rows)) > quota.user_bytes
        {
            return Err(StoreError::MailboxFull(t.device));
        }
    }
    Ok(())
}

pub(super) fn fetch(
    c: &Connection,
    device: &DeviceId,
    after: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<(Vec<MailboxEntry>, bool)> {
    let (device_id, _) = device_ids(c, device)?;
    let limit = limit.max(1);
    let mut stmt = c.prepare_cached(
        "SELECT m.seq, d.body, m.received_at FROM mailbox m JOIN datagrams d ON d.id = m.datagram
         WHERE m.device_id = ?1 AND m.seq > ?2 AND m.acked_at IS NULL ORDER BY m.seq LIMIT ?3",
    )?;
    let mut rows = stmt.query(params![device_id, after as i64, limit as i64 + 1])?;
    let (mut items, mut bytes, mut more) = (Vec::new(), 0usize, false);
    while let Some(r) = rows.next()? {
        if items.len() as u32 == limit || (!items.is_empty() && bytes >= max_bytes) {
            more = true;
            break;
        }
        let entry = MailboxEntry {
            seq: r.get::<_, i64>(0)? as u64,
            datagram: r.get(1)?,
            received_at: r.get::<_, i64>(2)? as u64,
        };
        bytes += entry.datagram.len();
        items.push(entry);
    }
    Ok((items, more))
}

pub(super) fn ack(
    c: &Connection,
    device: &DeviceId,
    seqs: &[u64],
    now: u64,
    retention_ms: u64,
) -> Result<u32> {
    let (device_id, _) = device_ids(c, device)?;
    let (mut acked, mut freed) = (0u32, 0i64);
    // No RETURNING (see `enqueue`): the row is read by its key, then
    // deleted or marked by the same key; the writer's connection is the
    // only writer, so nothing changes it in between.
    let mut unacked = c.prepare_cached(
        "SELECT datagram, size FROM mailbox WHERE device_id = ?1 AND seq = ?2 AND acked_at IS NULL",
    )?;
    let mut found = |seq: u64| -> Result<Option<(i64, i64)>> {
        Ok(unacked
            .query_row(params![device_id, seq as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    };
    if retention_ms == 0 {
        let mut delete =
            c.prepare_cached("DELETE FROM mailbox WHERE device_id = ?1 AND seq = ?2")?;
        let mut orphan = c.prepare_cached(ORPHAN)?;
        for seq in seqs {
            if let Some((datagram, size)) = found(*seq)? {
                delete.execute(params![device_id, *seq as i64])?;
                orphan.execute([datagram])?;
                acked += 1;
                freed += size;
            }
        }
    } else {
        let mut mark =
            c.prepare_cached("UPDATE mailbox SET acked_at = ?3 WHERE device_id = ?1 AND seq = ?2")?;
        for seq in seqs {
            if let Some((_, size)) = found(*seq)? {
                mark.execute(params![device_id, *seq as i64, now as i64])?;
                acked += 1;
                freed += size;
            }
        }
    }
    if freed > 0 {
        c.prepare_cached("UPDATE devices SET pending_bytes = pending_bytes - ?2 WHERE id = ?1")?
            .execute(params![device_id, freed])?;
    }
    Ok(acked)
}

/// Deletes a datagram no mailbox row points at any more.
const ORPHAN: &str =
    "DELETE FROM datagrams WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM mailbox WHERE datagram = ?1)";

/// Deletes those of `touched` (datagram row ids) no row points at any more.
pub(super) fn delete_orphans(c: &Connection, touched: &mut Vec<i64>) -> Result<u64> {
    touched.sort_unstable();
    touched.dedup();
    let mut orphan = c.prepare_cached(ORPHAN)?;
    let mut deleted = 0;
    for id in touched.iter() {
        deleted += orphan.execute([*id])? as u64;
    }
    Ok(deleted)
}

pub(super) fn datagram_for(
    c: &Connection,
    device: &DeviceId,
    datagram_id: &[u8; 32],
) -> Result<Option<Vec<u8>>> {
    // Any device of a user who owns at least one recipient device: a newly
    // linked device fetches what its user's other devices received (room
    // history recovery; the key comes from a member, not from the server).
    let (_, user_id) = device_ids(c, device)?;
    Ok(c.query_row(
        "SELECT d.body FROM datagrams d JOIN mailbox m ON m.datagram = d.id
         JOIN devices rd ON rd.id = m.device_id
         WHERE d.digest = ?1 AND rd.user_id = ?2 LIMIT 1",
        params![&datagram_id[..], user_id],
        |r| r.get(0),
    )
    .optional()?)
}

pub(super) fn purge(c: &Connection, now: u64, retention_ms: u64, ttl_ms: u64) -> Result<Purged> {
    let cutoff = now.saturating_sub(retention_ms) as i64;
    let mut stmt = c.prepare_cached(
        "DELETE FROM mailbox WHERE acked_at IS NOT NULL AND acked_at <= ?1 RETURNING datagram",
    )?;
    let mut touched = stmt
        .query_map([cutoff], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mailbox_rows = touched.len() as u64;
    // Unacknowledged past their time to live: their devices get the room
    // back.
    let expired_before = now.saturating_sub(ttl_ms) as i64;
    let mut stmt = c.prepare_cached(
        "DELETE FROM mailbox WHERE acked_at IS NULL AND received_at <= ?1
         RETURNING device_id, datagram, size",
    )?;
    let expired_rows = stmt
        .query_map([expired_before], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut freed =
        c.prepare_cached("UPDATE devices SET pending_bytes = pending_bytes - ?2 WHERE id = ?1")?;
    for (device_id, datagram, size) in &expired_rows {
        freed.execute(params![device_id, size])?;
        touched.push(*datagram);
    }
    let datagrams = delete_orphans(c, &mut touched)?;
    let links = c.execute("DELETE FROM links WHERE expires_at <= ?1", [now as i64])? as u64;
    let requests = c.execute("DELETE FROM requests WHERE expires_at <= ?1", [now as i64])? as u64;
    Ok(Purged {
        mailbox_rows,
        expired: expired_rows.len() as u64,
        datagrams,
        links,
        requests,
    })
}

/// Whether a request id is remembered.
fn remembered(c: &Connection, r: &RequestId) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM requests WHERE expires_at = ?2 AND id = ?1")?
            .exists(params![&r.id[..], r.expires_at as i64])?,
    )
}

/// Remembers a request id; refuses one remembered already.
pub(super) fn single_use(c: &Connection, id: &[u8; 32], expires_at: u64) -> Result<()> {
    let fresh = c
        .prepare_cached(
            "INSERT INTO requests (expires_at, id) VALUES (?2, ?1) ON CONFLICT DO NOTHING",
        )?
        .execute(params![&id[..], expires_at as i64])?;
    if fresh == 0 {
        return Err(StoreError::Replayed);
    }
    Ok(())
}
