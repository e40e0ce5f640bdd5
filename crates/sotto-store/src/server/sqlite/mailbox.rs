//! Datagrams (stored once) and per-device mailbox rows pointing at them.

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::super::*;

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

pub(super) fn enqueue(
    c: &Connection,
    sender: &DeviceId,
    recipients: &[DeviceId],
    datagram: &[u8],
    digest: [u8; 32],
    now: u64,
) -> Result<Enqueued> {
    let (_, sender_user) = device_ids(c, sender)?;
    // Resolve every recipient before writing anything: the send is refused
    // as a whole if one is unknown or blocks the sender.
    let mut targets: Vec<(DeviceId, i64, i64)> = Vec::with_capacity(recipients.len());
    for r in recipients {
        if targets.iter().any(|t| t.0 == *r) {
            continue;
        }
        let (device_id, user_id) = device_ids(c, r)?;
        targets.push((*r, device_id, user_id));
    }
    let mut users: Vec<i64> = targets
        .iter()
        .map(|t| t.2)
        .filter(|u| *u != sender_user)
        .collect();
    users.sort_unstable();
    users.dedup();
    let mut blocked =
        c.prepare_cached("SELECT 1 FROM blocks WHERE blocker = ?1 AND blocked = ?2")?;
    for u in users {
        if blocked.exists([u, sender_user])? {
            return Err(StoreError::Blocked);
        }
    }

    // A new datagram's id comes back from the insert; a resent one (the
    // digest is stored already) inserts nothing and is looked up.
    let inserted: Option<i64> = c
        .prepare_cached(
            "INSERT INTO datagrams (digest, body, received_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (digest) DO NOTHING RETURNING id",
        )?
        .query_row(params![&digest[..], datagram, now as i64], |r| r.get(0))
        .optional()?;
    let datagram_id: i64 = match inserted {
        Some(id) => id,
        None => c
            .prepare_cached("SELECT id FROM datagrams WHERE digest = ?1")?
            .query_row([&digest[..]], |r| r.get(0))?,
    };
    let mut has_row =
        c.prepare_cached("SELECT 1 FROM mailbox WHERE datagram = ?1 AND device_id = ?2")?;
    let mut next_seq = c.prepare_cached(
        "UPDATE devices SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
    )?;
    let mut insert = c.prepare_cached(
        "INSERT INTO mailbox (device_id, seq, datagram, received_at) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut deliveries = Vec::with_capacity(targets.len());
    for (device, device_id, _) in targets {
        if has_row.exists([datagram_id, device_id])? {
            continue; // a retried send: this device has it already
        }
        let seq: i64 = next_seq.query_row([device_id], |r| r.get(0))?;
        insert.execute(params![device_id, seq, datagram_id, now as i64])?;
        deliveries.push(Delivery {
            device,
            seq: seq as u64,
        });
    }
    Ok(Enqueued {
        datagram_id: digest,
        received_at: now,
        deliveries,
    })
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
    let mut acked = 0;
    if retention_ms == 0 {
        let mut delete = c.prepare_cached(
            "DELETE FROM mailbox WHERE device_id = ?1 AND seq = ?2 AND acked_at IS NULL RETURNING datagram",
        )?;
        let mut orphan =
            c.prepare_cached("DELETE FROM datagrams WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM mailbox WHERE datagram = ?1)")?;
        for seq in seqs {
            let gone: Option<i64> = delete
                .query_row(params![device_id, *seq as i64], |r| r.get(0))
                .optional()?;
            if let Some(datagram) = gone {
                orphan.execute([datagram])?;
                acked += 1;
            }
        }
    } else {
        let mut mark =
            c.prepare_cached("UPDATE mailbox SET acked_at = ?3 WHERE device_id = ?1 AND seq = ?2 AND acked_at IS NULL")?;
        for seq in seqs {
            acked += mark.execute(params![device_id, *seq as i64, now as i64])? as u32;
        }
    }
    Ok(acked)
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

pub(super) fn purge(c: &Connection, now: u64, retention_ms: u64) -> Result<Purged> {
    let cutoff = now.saturating_sub(retention_ms) as i64;
    let mut stmt = c.prepare_cached(
        "DELETE FROM mailbox WHERE acked_at IS NOT NULL AND acked_at <= ?1 RETURNING datagram",
    )?;
    let mut touched = stmt
        .query_map([cutoff], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mailbox_rows = touched.len() as u64;
    touched.sort_unstable();
    touched.dedup();
    let mut orphan =
        c.prepare_cached("DELETE FROM datagrams WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM mailbox WHERE datagram = ?1)")?;
    let mut datagrams = 0;
    for id in touched {
        datagrams += orphan.execute([id])? as u64;
    }
    let links = c.execute("DELETE FROM links WHERE expires_at <= ?1", [now as i64])? as u64;
    Ok(Purged {
        mailbox_rows,
        datagrams,
        links,
    })
}
