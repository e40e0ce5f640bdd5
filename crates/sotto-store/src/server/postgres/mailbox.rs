//! Datagrams (stored once) and per-device mailbox rows (as
//! `sqlite/mailbox.rs`). A send resolves all its recipients in one
//! statement and writes all their rows in two, whatever their number.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::super::secret::ServerSecret;
use super::super::*;
use super::directory::blocks_user;
use super::pool::Conn;
use super::{int, key32};

pub(super) fn digest(datagram: &[u8]) -> [u8; 32] {
    Sha256::digest(datagram).into()
}

/// One send, as handed to [`enqueue`] (shared by its tries).
pub(super) struct Outgoing {
    pub digest: [u8; 32],
    pub sender: DeviceId,
    pub recipients: Vec<DeviceId>,
    pub datagram: Vec<u8>,
    pub now: u64,
    pub quota: MailboxQuota,
}

struct Target {
    device: DeviceId,
    row: i64,
    user_row: i64,
    user: UserPublic,
}

pub(super) async fn enqueue(c: &mut Conn, secret: &ServerSecret, s: &Outgoing) -> Result<Enqueued> {
    let sender = c
        .opt(
            "SELECT d.user_id, u.user_key FROM devices d JOIN users u ON u.id = d.user_id
             WHERE d.device = $1",
            &[&&s.sender.0[..]],
        )
        .await?
        .ok_or(StoreError::UnknownDevice(s.sender))?;
    let (from_row, from): (i64, UserPublic) = (sender.get(0), UserPublic(key32(sender.get(1))?));
    let keys: Vec<&[u8]> = s.recipients.iter().map(|d| &d.0[..]).collect();
    let mut found: HashMap<DeviceId, Target> = HashMap::with_capacity(keys.len());
    for r in c
        .query(
            "SELECT d.device, d.id, d.user_id, u.user_key FROM devices d
             JOIN users u ON u.id = d.user_id WHERE d.device = ANY($1)",
            &[&keys],
        )
        .await?
    {
        let device = DeviceId(key32(r.get(0))?);
        let user = UserPublic(key32(r.get(3))?);
        found.insert(
            device,
            Target {
                device,
                row: r.get(1),
                user_row: r.get(2),
                user,
            },
        );
    }
    // Refused as a whole, naming the first unknown recipient.
    let mut targets: Vec<Target> = Vec::with_capacity(found.len());
    for d in &s.recipients {
        match found.remove(d) {
            Some(t) => targets.push(t),
            None if targets.iter().any(|t| t.device == *d) => {}
            None => return Err(StoreError::UnknownDevice(*d)),
        }
    }
    // Users that block the sender get nothing, and the sender is not told.
    let mut users: Vec<(i64, UserPublic)> = targets
        .iter()
        .filter(|t| t.user_row != from_row)
        .map(|t| (t.user_row, t.user))
        .collect();
    users.sort_unstable_by_key(|u| u.0);
    users.dedup_by_key(|u| u.0);
    for (row, user) in users {
        if blocks_user(c, secret, &user, &from).await? {
            targets.retain(|t| t.user_row != row);
        }
    }
    let nothing = Enqueued {
        datagram_id: s.digest,
        received_at: s.now,
        deliveries: Vec::new(),
    };
    if targets.is_empty() {
        return Ok(nothing);
    }
    // The quota reads what every device of each recipient user holds:
    // those users are locked (in id order, so concurrent sends cannot
    // deadlock) until the commit, so two nodes cannot both fill the last
    // room of one mailbox.
    let mut user_rows: Vec<i64> = targets.iter().map(|t| t.user_row).collect();
    user_rows.sort_unstable();
    user_rows.dedup();
    c.query(
        "SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        &[&user_rows],
    )
    .await?;
    let mut pending: HashMap<i64, (i64, i64)> = HashMap::new(); // device row -> (user row, bytes)
    for r in c
        .query(
            "SELECT id, user_id, pending_bytes FROM devices WHERE user_id = ANY($1)",
            &[&user_rows],
        )
        .await?
    {
        pending.insert(r.get(0), (r.get(1), r.get(2)));
    }
    let size = s.datagram.len() as i64;
    let mut tries = 0;
    let datagram_row = loop {
        tries += 1;
        if tries > 3 {
            return Err(StoreError::Backend(
                "the datagram kept being deleted under this send".into(),
            ));
        }
        let inserted = c
            .opt(
                "INSERT INTO datagrams (digest, body, received_at) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO NOTHING RETURNING id",
                &[&&s.digest[..], &s.datagram, &int(s.now)],
            )
            .await?;
        if let Some(r) = inserted {
            break r.get::<_, i64>(0);
        }
        // Stored already (a retry, or the same datagram resent): rows only
        // for devices that have none for it. If it went in between (its
        // last row acknowledged), insert it again.
        if let Some(r) = c
            .opt(
                "SELECT id FROM datagrams WHERE digest = $1",
                &[&&s.digest[..]],
            )
            .await?
        {
            let id: i64 = r.get(0);
            let rows: Vec<i64> = targets.iter().map(|t| t.row).collect();
            let has: Vec<i64> = c
                .query(
                    "SELECT device_id FROM mailbox WHERE datagram = $1 AND device_id = ANY($2)",
                    &[&id, &rows],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            targets.retain(|t| !has.contains(&t.row));
            if targets.is_empty() {
                return Ok(nothing);
            }
            break id;
        }
    };
    // Quota: one more row per target device, and per user the sum.
    let user_bytes = |user: i64| -> i64 {
        pending
            .values()
            .filter(|(u, _)| *u == user)
            .map(|(_, b)| *b)
            .sum()
    };
    for t in &targets {
        let rows = targets.iter().filter(|o| o.user_row == t.user_row).count() as u64;
        let mine = pending.get(&t.row).map(|p| p.1).unwrap_or(0) as u64;
        let all = user_bytes(t.user_row) as u64;
        if mine.saturating_add(size as u64) > s.quota.device_bytes
            || all.saturating_add((size as u64).saturating_mul(rows)) > s.quota.user_bytes
        {
            return Err(StoreError::MailboxFull(t.device));
        }
    }
    targets.sort_unstable_by_key(|t| t.row);
    let rows: Vec<i64> = targets.iter().map(|t| t.row).collect();
    let seqs = c
        .query(
            "UPDATE devices SET last_seq = last_seq + 1, pending_bytes = pending_bytes + $2
             WHERE id = ANY($1) RETURNING id, last_seq",
            &[&rows, &size],
        )
        .await?;
    let seq_of: HashMap<i64, i64> = seqs.iter().map(|r| (r.get(0), r.get(1))).collect();
    let seq_list: Vec<i64> = rows
        .iter()
        .map(|r| seq_of.get(r).copied().unwrap_or(0))
        .collect();
    c.exec(
        "INSERT INTO mailbox (device_id, seq, datagram, received_at, size)
         SELECT d, s, $3::bigint, $4::bigint, $5::bigint FROM unnest($1::bigint[], $2::bigint[]) AS t(d, s)",
        &[&rows, &seq_list, &datagram_row, &int(s.now), &size],
    )
    .await?;
    Ok(Enqueued {
        datagram_id: s.digest,
        received_at: s.now,
        deliveries: targets
            .iter()
            .zip(&seq_list)
            .map(|(t, seq)| Delivery {
                device: t.device,
                seq: *seq as u64,
            })
            .collect(),
    })
}

async fn device_row(c: &mut Conn, device: &DeviceId) -> Result<(i64, i64)> {
    let r = c
        .opt(
            "SELECT id, user_id FROM devices WHERE device = $1",
            &[&&device.0[..]],
        )
        .await?
        .ok_or(StoreError::UnknownDevice(*device))?;
    Ok((r.get(0), r.get(1)))
}

pub(super) async fn fetch(
    c: &mut Conn,
    device: DeviceId,
    after: u64,
    limit: u32,
    max_bytes: usize,
) -> Result<(Vec<MailboxEntry>, bool)> {
    let (device_id, _) = device_row(c, &device).await?;
    let limit = limit.max(1);
    let rows = c
        .query(
            "SELECT m.seq, d.body, m.received_at FROM mailbox m JOIN datagrams d ON d.id = m.datagram
             WHERE m.device_id = $1 AND m.seq > $2 AND m.acked_at IS NULL ORDER BY m.seq LIMIT $3",
            &[&device_id, &int(after), &(i64::from(limit) + 1)],
        )
        .await?;
    let (mut items, mut bytes, mut more) = (Vec::new(), 0usize, false);
    for r in rows {
        if items.len() as u32 == limit || (!items.is_empty() && bytes >= max_bytes) {
            more = true;
            break;
        }
        let entry = MailboxEntry {
            seq: r.get::<_, i64>(0) as u64,
            datagram: r.get(1),
            received_at: r.get::<_, i64>(2) as u64,
        };
        bytes += entry.datagram.len();
        items.push(entry);
    }
    Ok((items, more))
}

pub(super) async fn ack(
    c: &mut Conn,
    device: DeviceId,
    seqs: &[i64],
    now: u64,
    retention_ms: u64,
) -> Result<u32> {
    // Locked: the pending byte count changes below.
    let device_id: i64 = c
        .opt(
            "SELECT id FROM devices WHERE device = $1 FOR NO KEY UPDATE",
            &[&&device.0[..]],
        )
        .await?
        .ok_or(StoreError::UnknownDevice(device))?
        .get(0);
    let (acked, freed) = if retention_ms == 0 {
        let gone = c
            .query(
                "DELETE FROM mailbox WHERE device_id = $1 AND seq = ANY($2) AND acked_at IS NULL
                 RETURNING datagram, size",
                &[&device_id, &seqs],
            )
            .await?;
        let freed: i64 = gone.iter().map(|r| r.get::<_, i64>(1)).sum();
        let touched: Vec<i64> = gone.iter().map(|r| r.get(0)).collect();
        delete_orphans(c, touched).await?;
        (gone.len(), freed)
    } else {
        let marked = c
            .query(
                "UPDATE mailbox SET acked_at = $3 WHERE device_id = $1 AND seq = ANY($2)
                 AND acked_at IS NULL RETURNING size",
                &[&device_id, &seqs, &int(now)],
            )
            .await?;
        (
            marked.len(),
            marked.iter().map(|r| r.get::<_, i64>(0)).sum(),
        )
    };
    if freed > 0 {
        c.exec(
            "UPDATE devices SET pending_bytes = pending_bytes - $2 WHERE id = $1",
            &[&device_id, &freed],
        )
        .await?;
    }
    Ok(acked as u32)
}

/// Deletes those of `touched` (datagram row ids) no row points at any more.
pub(super) async fn delete_orphans(c: &mut Conn, mut touched: Vec<i64>) -> Result<u64> {
    if touched.is_empty() {
        return Ok(0);
    }
    touched.sort_unstable();
    touched.dedup();
    c.exec(
        "DELETE FROM datagrams d WHERE d.id = ANY($1)
         AND NOT EXISTS (SELECT 1 FROM mailbox m WHERE m.datagram = d.id)",
        &[&touched],
    )
    .await
}

pub(super) async fn datagram_for(
    c: &mut Conn,
    device: DeviceId,
    datagram_id: [u8; 32],
) -> Result<Option<Vec<u8>>> {
    // Any device of a user who owns a recipient device (history recovery
    // of a newly linked device; see the SQLite backend).
    let (_, user_id) = device_row(c, &device).await?;
    Ok(c.opt(
        "SELECT d.body FROM datagrams d JOIN mailbox m ON m.datagram = d.id
             JOIN devices rd ON rd.id = m.device_id
             WHERE d.digest = $1 AND rd.user_id = $2 LIMIT 1",
        &[&&datagram_id[..], &user_id],
    )
    .await?
    .map(|r| r.get(0)))
}

pub(super) async fn purge(
    c: &mut Conn,
    now: u64,
    retention_ms: u64,
    ttl_ms: u64,
) -> Result<Purged> {
    let cutoff = int(now.saturating_sub(retention_ms));
    let mut touched: Vec<i64> = c
        .query(
            "DELETE FROM mailbox WHERE acked_at IS NOT NULL AND acked_at <= $1 RETURNING datagram",
            &[&cutoff],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mailbox_rows = touched.len() as u64;
    let expired_before = int(now.saturating_sub(ttl_ms));
    let expired = c
        .query(
            "DELETE FROM mailbox WHERE acked_at IS NULL AND received_at <= $1
             RETURNING device_id, datagram, size",
            &[&expired_before],
        )
        .await?;
    let mut freed: HashMap<i64, i64> = HashMap::new();
    for r in &expired {
        *freed.entry(r.get(0)).or_default() += r.get::<_, i64>(2);
        touched.push(r.get(1));
    }
    let mut devices: Vec<(i64, i64)> = freed.into_iter().collect();
    devices.sort_unstable();
    for (device_id, bytes) in devices {
        c.exec(
            "UPDATE devices SET pending_bytes = pending_bytes - $2 WHERE id = $1",
            &[&device_id, &bytes],
        )
        .await?;
    }
    let datagrams = delete_orphans(c, touched).await?;
    let links = c
        .exec("DELETE FROM links WHERE expires_at <= $1", &[&int(now)])
        .await?;
    let requests = c
        .exec("DELETE FROM requests WHERE expires_at <= $1", &[&int(now)])
        .await?;
    Ok(Purged {
        mailbox_rows,
        expired: expired.len() as u64,
        datagrams,
        links,
        requests,
    })
}

/// Remembers a request id; refuses one remembered already (by any node).
pub(super) async fn single_use(c: &mut Conn, id: &[u8; 32], expires_at: u64) -> Result<()> {
    let fresh = c
        .exec(
            "INSERT INTO requests (id, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&&id[..], &int(expires_at)],
        )
        .await?;
    if fresh == 0 {
        return Err(StoreError::Replayed);
    }
    Ok(())
}
