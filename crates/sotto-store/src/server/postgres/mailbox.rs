//! Datagrams (stored once) and per-device mailbox rows (as
//! `sqlite/mailbox.rs`). A send and an acknowledgement are one call each
//! of a function of the schema (version 5), whatever the number of
//! recipients: one round trip, in autocommit.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::super::secret::ServerSecret;
use super::super::*;
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

/// What a node remembers of a device's user, to compute the block pairs
/// of a send without a lookup: neither ever changes for a device row (a
/// device's user is fixed, a user's key too). The send function checks
/// what the node assumed against the database (see schema version 5), so
/// a stale entry (the device removed, its id registered again under
/// another user) costs one more try, never a skipped block.
#[derive(Clone, Copy)]
pub(super) struct Known {
    pub user_row: i64,
    user: UserPublic,
}

/// Most devices a node remembers (a few MB); past it, it starts over.
const REMEMBERED: usize = 200_000;

/// The devices a node has looked up, shared by its connections.
#[derive(Default)]
pub(super) struct Devices(Mutex<HashMap<DeviceId, Known>>);

impl Devices {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceId, Known>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn forget(&self, device: &DeviceId) {
        self.map().remove(device);
    }
}

/// The SQLSTATE of the send function's refusals (schema version 5).
const UNKNOWN: &str = "SO001";
const FULL: &str = "SO002";
const REPLAYED: &str = "SO003";
/// The node's idea of a device's user was stale: look up again and retry.
pub(super) const STALE: &str = "SO004";
/// The datagram was deleted (its last row acknowledged) under each of the
/// function's tries to point rows at it.
const DELETED: &str = "SO005";

/// The code and detail of an error the send or ack function raised.
fn raised(e: &tokio_postgres::Error) -> Option<(&str, Option<i64>)> {
    let db = e.as_db_error()?;
    let code = db.code().code();
    code.starts_with("SO")
        .then(|| (code, db.detail().and_then(|d| d.parse().ok())))
}

/// The device a refusal of the send function names (its DETAIL): -1 the
/// sender, else an index in `recipients`. A DETAIL missing or out of range
/// names none (never the sender by default).
fn named(detail: Option<i64>, sender: &DeviceId, recipients: &[DeviceId]) -> Option<DeviceId> {
    match detail? {
        -1 => Some(*sender),
        i => usize::try_from(i)
            .ok()
            .and_then(|i| recipients.get(i))
            .copied(),
    }
}

/// Stores one send: one call of `sotto_send` (one round trip), after a
/// lookup of the devices the node does not know yet. Runs as a statement
/// of its own (autocommit) or inside a caller's transaction.
pub(super) async fn enqueue(
    c: &mut Conn,
    secret: &ServerSecret,
    known: &Devices,
    s: &Outgoing,
    request: Option<&RequestId>,
) -> Result<Enqueued> {
    let recipients = distinct(&s.recipients);
    let users = resolve(c, known, std::iter::once(&s.sender).chain(&recipients)).await?;
    // Devices unknown here are passed on all the same: the function names
    // the first one, after the request id check, as a transaction would.
    let from = users.get(&s.sender);
    let (block_users, block_pairs) = block_pairs(secret, &users, &s.sender, &recipients);
    let keys: Vec<&[u8]> = recipients.iter().map(|d| &d.0[..]).collect();
    let (request_id, request_expires) = match request {
        Some(r) => (Some(&r.id[..]), Some(int(r.expires_at))),
        None => (None, None),
    };
    let rows = c
        .query(
            "SELECT o_at, o_seq FROM sotto_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &&s.sender.0[..],
                &from.map_or(0, |f| f.user_row),
                &keys,
                &block_users,
                &block_pairs,
                &&s.digest[..],
                &s.datagram,
                &int(s.now),
                &int(s.quota.device_bytes),
                &int(s.quota.user_bytes),
                &request_id,
                &request_expires,
            ],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(StoreError::Postgres(e)) => {
            let at = |i: Option<i64>, refused: fn(DeviceId) -> StoreError| {
                named(i, &s.sender, &recipients)
                    .map(refused)
                    .unwrap_or_else(|| {
                        StoreError::Backend(format!(
                            "the send function refused the send naming no device: {e}"
                        ))
                    })
            };
            return Err(match raised(&e) {
                Some((UNKNOWN, i)) => {
                    // Removed (perhaps through another node): not a device
                    // to remember.
                    if let Some(d) = named(i, &s.sender, &recipients) {
                        known.forget(&d);
                    }
                    at(i, StoreError::UnknownDevice)
                }
                Some((FULL, i)) => at(i, StoreError::MailboxFull),
                Some((REPLAYED, _)) => StoreError::Replayed,
                Some((DELETED, _)) => StoreError::Backend(
                    "the datagram kept being deleted under this send; send it again".into(),
                ),
                Some((STALE, _)) => {
                    // Looked up again on the next try (which `retryable`
                    // grants).
                    let mut map = known.map();
                    for d in std::iter::once(&s.sender).chain(&recipients) {
                        map.remove(d);
                    }
                    StoreError::Postgres(e)
                }
                _ => StoreError::Postgres(e),
            });
        }
        Err(e) => return Err(e),
    };
    let deliveries = rows
        .iter()
        .map(|r| {
            let (at, seq): (i64, i64) = (r.get(0), r.get(1));
            let device = usize::try_from(at)
                .ok()
                .and_then(|at| recipients.get(at))
                .copied()
                .ok_or_else(|| {
                    StoreError::Backend("the send function named no recipient of the send".into())
                })?;
            Ok(Delivery {
                device,
                seq: seq as u64,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Enqueued {
        datagram_id: s.digest,
        received_at: s.now,
        deliveries,
    })
}
/// `recipients` without repeats, in their order.
pub(super) fn distinct(recipients: &[DeviceId]) -> Vec<DeviceId> {
    let mut seen = HashSet::with_capacity(recipients.len());
    recipients
        .iter()
        .copied()
        .filter(|d| seen.insert(*d))
        .collect()
}

/// The block pairs of a send: every recipient user other than the
/// sender's, with the pair under which that user would block the sender
/// (none if the node does not know the sender).
pub(super) fn block_pairs(
    secret: &ServerSecret,
    users: &HashMap<DeviceId, Known>,
    sender: &DeviceId,
    recipients: &[DeviceId],
) -> (Vec<i64>, Vec<Vec<u8>>) {
    let (mut block_users, mut pairs) = (Vec::new(), Vec::new());
    let Some(from) = users.get(sender) else {
        return (block_users, pairs);
    };
    // (A set: a send may name thousands of devices of many users.)
    let mut paired = HashSet::new();
    for d in recipients {
        if let Some(k) = users.get(d) {
            if k.user_row != from.user_row && paired.insert(k.user_row) {
                block_users.push(k.user_row);
                pairs.push(secret.block_pair(&k.user, &from.user).to_vec());
            }
        }
    }
    (block_users, pairs)
}

/// What the node knows of the users of `devices`, looking up (in one
/// statement) those it does not remember. Devices not found are left out.
pub(super) async fn resolve(
    c: &mut Conn,
    known: &Devices,
    devices: impl Iterator<Item = &DeviceId>,
) -> Result<HashMap<DeviceId, Known>> {
    let mut found = HashMap::new();
    let mut missing: Vec<&[u8]> = Vec::new();
    {
        let map = known.map();
        for d in devices {
            match map.get(d) {
                Some(k) => {
                    found.insert(*d, *k);
                }
                None => missing.push(&d.0[..]),
            }
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }
    let rows = c
        .query(
            "SELECT d.device, d.user_id, u.user_key FROM devices d
             JOIN users u ON u.id = d.user_id WHERE d.device = ANY($1)",
            &[&missing],
        )
        .await?;
    let mut map = known.map();
    if map.len() + rows.len() > REMEMBERED {
        map.clear();
    }
    for r in rows {
        let device = DeviceId(key32(r.get(0))?);
        let k = Known {
            user_row: r.get(1),
            user: UserPublic(key32(r.get(2))?),
        };
        map.insert(device, k);
        found.insert(device, k);
    }
    Ok(found)
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

/// Acknowledges `seqs` of `device`: one call of `sotto_ack`, in
/// autocommit. `relaxed`: the commit does not wait for the WAL flush (a
/// lost ack is a redelivery, which devices drop by message id; as the
/// SQLite writer's relaxed acks).
pub(super) async fn ack(
    c: &mut Conn,
    device: DeviceId,
    seqs: &[i64],
    now: u64,
    retention_ms: u64,
    relaxed: bool,
) -> Result<u32> {
    let acked = c
        .one(
            "SELECT sotto_ack($1, $2, $3, $4, $5)",
            &[
                &&device.0[..],
                &seqs,
                &int(now),
                &(retention_ms != 0),
                &relaxed,
            ],
        )
        .await;
    match acked {
        Ok(r) => Ok(r.get::<_, i64>(0) as u32),
        Err(StoreError::Postgres(e)) if raised(&e).is_some_and(|(c, _)| c == UNKNOWN) => {
            Err(StoreError::UnknownDevice(device))
        }
        Err(e) => Err(e),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_sender_only_when_it_says_so() {
        let (sender, r) = (DeviceId([1; 32]), [DeviceId([2; 32]), DeviceId([3; 32])]);
        assert_eq!(named(Some(-1), &sender, &r), Some(sender));
        assert_eq!(named(Some(1), &sender, &r), Some(r[1]));
        assert_eq!(named(None, &sender, &r), None);
        assert_eq!(named(Some(2), &sender, &r), None);
        assert_eq!(named(Some(-2), &sender, &r), None);
    }
}
