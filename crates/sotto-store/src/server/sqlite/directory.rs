//! Users, devices, prekey pools, block lists and pending links.

use rusqlite::{params, Connection, OptionalExtension};

use super::super::secret::ServerSecret;
use super::super::*;

fn exists(c: &Connection, sql: &str, key: &[u8]) -> Result<bool> {
    Ok(c.query_row(sql, [key], |_| Ok(())).optional()?.is_some())
}

pub(super) fn register(
    c: &Connection,
    name_key: &[u8; 32],
    sealed: &[u8; 32],
    user: &UserPublic,
    device: &NewDevice,
    now: u64,
) -> Result<()> {
    if exists(c, "SELECT 1 FROM users WHERE name_key = ?1", name_key)? {
        return Err(StoreError::UsernameTaken);
    }
    if exists(c, "SELECT 1 FROM users WHERE user_key = ?1", &user.0)? {
        return Err(StoreError::AlreadyRegistered);
    }
    c.execute(
        "INSERT INTO users (name_key, sealed_name, user_key, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![&name_key[..], &sealed[..], &user.0[..], now as i64],
    )?;
    insert_device(c, c.last_insert_rowid(), device, now)
}

fn insert_device(c: &Connection, user_id: i64, d: &NewDevice, now: u64) -> Result<()> {
    if exists(c, "SELECT 1 FROM devices WHERE device = ?1", &d.device.0)? {
        return Err(StoreError::AlreadyRegistered);
    }
    let ids: Vec<u32> = d.prekeys.iter().map(|p| p.0).collect();
    let max = new_prekey_ids(&d.device, 0, &ids, Some(d.reserve_id))?;
    c.execute(
        "INSERT INTO devices (device, user_id, cert, reserve, created_at, max_prekey_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            &d.device.0[..],
            user_id,
            d.cert,
            d.reserve,
            now as i64,
            max as i64
        ],
    )?;
    insert_prekeys(c, c.last_insert_rowid(), &d.prekeys)
}

/// Checks that every id of an upload is new: above `published` (the
/// highest id the device ever published) and not repeated. Returns the
/// new highest id.
fn new_prekey_ids(
    device: &DeviceId,
    published: u32,
    ids: &[u32],
    reserve: Option<u32>,
) -> Result<u32> {
    let mut all: Vec<u32> = ids.iter().copied().chain(reserve).collect();
    all.sort_unstable();
    for (i, id) in all.iter().enumerate() {
        if *id <= published || (i > 0 && all[i - 1] == *id) {
            return Err(StoreError::PrekeyIdReused {
                device: *device,
                prekey_id: *id,
            });
        }
    }
    Ok(all.last().copied().unwrap_or(published))
}

fn insert_prekeys(c: &Connection, device_id: i64, prekeys: &[(u32, Vec<u8>)]) -> Result<()> {
    let mut stmt =
        c.prepare_cached("INSERT INTO prekeys (device_id, prekey_id, prekey) VALUES (?1, ?2, ?3)")?;
    for (id, bytes) in prekeys {
        stmt.execute(params![device_id, *id as i64, bytes])?;
    }
    Ok(())
}

/// The user whose `column` (`name_key` or `user_key`) is `key`.
pub(super) fn user_where(c: &Connection, column: &str, key: &[u8]) -> Result<Option<UserRecord>> {
    debug_assert!(column == "name_key" || column == "user_key");
    let sql = format!("SELECT id, user_key FROM users WHERE {column} = ?1");
    let found: Option<(i64, [u8; 32])> = c
        .query_row(&sql, [key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((id, user)) = found else {
        return Ok(None);
    };
    let user = UserPublic(user);
    let mut stmt =
        c.prepare_cached("SELECT device, cert FROM devices WHERE user_id = ?1 ORDER BY id")?;
    let devices = stmt
        .query_map([id], |r| {
            Ok(DeviceRecord {
                device: DeviceId(r.get(0)?),
                user,
                cert: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(UserRecord { user, devices }))
}

pub(super) fn device(c: &Connection, device: &DeviceId) -> Result<Option<DeviceRecord>> {
    Ok(c.query_row(
        "SELECT u.user_key, d.cert FROM devices d JOIN users u ON u.id = d.user_id WHERE d.device = ?1",
        [&device.0[..]],
        |r| Ok(DeviceRecord { device: *device, user: UserPublic(r.get(0)?), cert: r.get(1)? }),
    )
    .optional()?)
}

fn device_row(c: &Connection, device: &DeviceId) -> Result<i64> {
    c.query_row(
        "SELECT id FROM devices WHERE device = ?1",
        [&device.0[..]],
        |r| r.get(0),
    )
    .optional()?
    .ok_or(StoreError::UnknownDevice(*device))
}

fn count(c: &Connection, device_id: i64) -> Result<PrekeyCount> {
    let one_time: i64 = c.query_row(
        "SELECT COUNT(*) FROM prekeys WHERE device_id = ?1",
        [device_id],
        |r| r.get(0),
    )?;
    let served: i64 = c.query_row(
        "SELECT reserve_served FROM devices WHERE id = ?1",
        [device_id],
        |r| r.get(0),
    )?;
    Ok(PrekeyCount {
        one_time: one_time as u32,
        reserve_served: served as u32,
    })
}

pub(super) fn claim(
    c: &Connection,
    secret: &ServerSecret,
    name_key: &[u8; 32],
    wanted: &[DeviceId],
    claimant: &UserPublic,
) -> Result<(UserPublic, Vec<ClaimedPrekey>)> {
    let (user_id, user): (i64, [u8; 32]) = c
        .query_row(
            "SELECT id, user_key FROM users WHERE name_key = ?1",
            [&name_key[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(StoreError::UnknownUser)?;
    let user = UserPublic(user);
    let blocked = blocks_user(c, secret, &user, claimant)?;
    let mut stmt = c.prepare_cached(
        "SELECT id, device, cert, reserve FROM devices WHERE user_id = ?1 ORDER BY id",
    )?;
    let all = stmt
        .query_map([user_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                DeviceId(r.get(1)?),
                r.get(2)?,
                r.get(3)?,
            ))
        })?
        .collect::<Result<Vec<(i64, DeviceId, Vec<u8>, Vec<u8>)>, _>>()?;
    let chosen: Vec<_> = if wanted.is_empty() {
        all
    } else {
        let mut chosen = Vec::with_capacity(wanted.len());
        for w in wanted {
            let row = all
                .iter()
                .find(|d| d.1 == *w)
                .ok_or(StoreError::UnknownDevice(*w))?;
            if !chosen
                .iter()
                .any(|d: &(i64, DeviceId, Vec<u8>, Vec<u8>)| d.1 == *w)
            {
                chosen.push(row.clone());
            }
        }
        chosen
    };
    let mut out = Vec::with_capacity(chosen.len());
    for (device_id, device, cert, reserve) in chosen {
        if blocked {
            // The reserve, uncounted: the same answer as an empty pool,
            // and the owner's keys stay untouched.
            out.push(ClaimedPrekey {
                device,
                cert,
                prekey: reserve,
                reserve: true,
                pool: count(c, device_id)?,
            });
            continue;
        }
        let one: Option<(i64, Vec<u8>)> = c
            .query_row(
                "SELECT id, prekey FROM prekeys WHERE device_id = ?1 ORDER BY id LIMIT 1",
                [device_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        // The one-time key is deleted in the transaction that serves it:
        // no two claimers can ever get the same one.
        let (prekey, is_reserve) = match one {
            Some((row, prekey)) => {
                c.execute("DELETE FROM prekeys WHERE id = ?1", [row])?;
                (prekey, false)
            }
            None => {
                c.execute(
                    "UPDATE devices SET reserve_served = reserve_served + 1 WHERE id = ?1",
                    [device_id],
                )?;
                (reserve, true)
            }
        };
        out.push(ClaimedPrekey {
            device,
            cert,
            prekey,
            reserve: is_reserve,
            pool: count(c, device_id)?,
        });
    }
    Ok((user, out))
}

pub(super) fn add_prekeys(
    c: &Connection,
    device: &DeviceId,
    prekeys: &[(u32, Vec<u8>)],
    reserve: Option<&(u32, Vec<u8>)>,
) -> Result<PrekeyCount> {
    let (device_id, published): (i64, i64) = c
        .query_row(
            "SELECT id, max_prekey_id FROM devices WHERE device = ?1",
            [&device.0[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(StoreError::UnknownDevice(*device))?;
    let ids: Vec<u32> = prekeys.iter().map(|p| p.0).collect();
    let max = new_prekey_ids(device, published as u32, &ids, reserve.map(|r| r.0))?;
    insert_prekeys(c, device_id, prekeys)?;
    c.execute(
        "UPDATE devices SET max_prekey_id = ?1 WHERE id = ?2",
        params![max as i64, device_id],
    )?;
    if let Some((_, reserve)) = reserve {
        c.execute(
            "UPDATE devices SET reserve = ?1 WHERE id = ?2",
            params![reserve, device_id],
        )?;
    }
    if !prekeys.is_empty() || reserve.is_some() {
        c.execute(
            "UPDATE devices SET reserve_served = 0 WHERE id = ?1",
            [device_id],
        )?;
    }
    count(c, device_id)
}

pub(super) fn prekey_count(c: &Connection, device: &DeviceId) -> Result<PrekeyCount> {
    count(c, device_row(c, device)?)
}

fn user_row(c: &Connection, column: &str, key: &[u8]) -> Result<i64> {
    let sql = format!("SELECT id FROM users WHERE {column} = ?1");
    c.query_row(&sql, [key], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::UnknownUser)
}

/// Whether the user `blocker` blocks the user `sender`.
pub(super) fn blocks_user(
    c: &Connection,
    secret: &ServerSecret,
    blocker: &UserPublic,
    sender: &UserPublic,
) -> Result<bool> {
    let pair = secret.block_pair(blocker, sender);
    Ok(
        c.prepare_cached("SELECT 1 FROM block_list WHERE pair = ?1")?
            .exists([&pair[..]])?,
    )
}

/// (user key, username hash) of the user whose name key is `name_key`.
fn user_named(
    c: &Connection,
    secret: &ServerSecret,
    name_key: &[u8; 32],
) -> Result<(UserPublic, UsernameHash)> {
    let (key, sealed): ([u8; 32], [u8; 32]) = c
        .query_row(
            "SELECT user_key, sealed_name FROM users WHERE name_key = ?1",
            [&name_key[..]],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or(StoreError::UnknownUser)?;
    Ok((UserPublic(key), secret.seal_name(name_key, &sealed)))
}

/// The key of `blocker`'s block of the user named by `blocked_key`, and
/// that user's username hash; both users must exist.
fn block_of(
    c: &Connection,
    secret: &ServerSecret,
    blocker: &UserPublic,
    blocked_key: &[u8; 32],
) -> Result<([u8; 32], UsernameHash)> {
    user_row(c, "user_key", &blocker.0)?;
    let (blocked, hash) = user_named(c, secret, blocked_key)?;
    Ok((secret.block_pair(blocker, &blocked), hash))
}

pub(super) fn block(
    c: &Connection,
    secret: &ServerSecret,
    blocker: &UserPublic,
    blocked_key: &[u8; 32],
) -> Result<()> {
    let (pair, hash) = block_of(c, secret, blocker, blocked_key)?;
    c.execute(
        "INSERT OR IGNORE INTO block_list (pair, owner, sealed) VALUES (?1, ?2, ?3)",
        params![
            &pair[..],
            &secret.block_owner(blocker)[..],
            &secret.seal_blocked(&pair, &hash)[..]
        ],
    )?;
    Ok(())
}

pub(super) fn unblock(
    c: &Connection,
    secret: &ServerSecret,
    blocker: &UserPublic,
    blocked_key: &[u8; 32],
) -> Result<()> {
    let (pair, _) = block_of(c, secret, blocker, blocked_key)?;
    c.execute("DELETE FROM block_list WHERE pair = ?1", [&pair[..]])?;
    Ok(())
}

pub(super) fn is_blocked(
    c: &Connection,
    secret: &ServerSecret,
    blocker_key: &[u8; 32],
    blocked: &UserPublic,
) -> Result<bool> {
    match user_named(c, secret, blocker_key) {
        Ok((blocker, _)) => blocks_user(c, secret, &blocker, blocked),
        Err(StoreError::UnknownUser) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The username hashes `blocker` blocks.
pub(super) fn blocks(
    c: &Connection,
    secret: &ServerSecret,
    blocker: &UserPublic,
) -> Result<Vec<UsernameHash>> {
    user_row(c, "user_key", &blocker.0)?;
    let owner = secret.block_owner(blocker);
    let mut stmt =
        c.prepare_cached("SELECT pair, sealed FROM block_list WHERE owner = ?1 ORDER BY sealed")?;
    let rows = stmt
        .query_map([&owner[..]], |r| {
            Ok((r.get::<_, [u8; 32]>(0)?, r.get::<_, [u8; 32]>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows
        .iter()
        .map(|(pair, sealed)| secret.seal_blocked(pair, sealed))
        .collect())
}

/// Removes a device of `owner` with its prekeys and mailbox.
pub(super) fn remove_device(c: &Connection, owner: &UserPublic, device: &DeviceId) -> Result<()> {
    let user_id = user_row(c, "user_key", &owner.0)?;
    let device_id: i64 = c
        .query_row(
            "SELECT id FROM devices WHERE device = ?1 AND user_id = ?2",
            params![&device.0[..], user_id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::UnknownDevice(*device))?;
    c.execute("DELETE FROM prekeys WHERE device_id = ?1", [device_id])?;
    let mut stmt = c.prepare("DELETE FROM mailbox WHERE device_id = ?1 RETURNING datagram")?;
    let mut touched = stmt
        .query_map([device_id], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    super::mailbox::delete_orphans(c, &mut touched)?;
    c.execute("DELETE FROM devices WHERE id = ?1", [device_id])?;
    Ok(())
}

pub(super) fn create_link(
    c: &Connection,
    link_id: &str,
    device: &DeviceId,
    request: &[u8],
    now: u64,
) -> Result<()> {
    if exists(c, "SELECT 1 FROM devices WHERE device = ?1", &device.0)? {
        return Err(StoreError::AlreadyRegistered);
    }
    c.execute(
        "INSERT INTO links (link_id, device, request, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![link_id, &device.0[..], request, now as i64, (now + LINK_TTL_MS) as i64],
    )?;
    Ok(())
}

/// A live link and, once approved, (name key, sealed name) of its user.
/// The `cert` column holds the sealed approval (it held the certificate
/// before approvals were sealed); the certificate is the device's.
#[allow(clippy::type_complexity)]
pub(super) fn link(
    c: &Connection,
    link_id: &str,
    now: u64,
) -> Result<Option<(PendingLink, Option<([u8; 32], [u8; 32])>)>> {
    let row = c
        .query_row(
            "SELECT l.device, l.request, l.created_at, l.cert, u.name_key, u.sealed_name, d.cert
             FROM links l LEFT JOIN users u ON u.id = l.user_id
             LEFT JOIN devices d ON d.device = l.device
             WHERE l.link_id = ?1 AND l.expires_at > ?2",
            params![link_id, now as i64],
            |r| {
                Ok((
                    DeviceId(r.get(0)?),
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, Option<[u8; 32]>>(4)?,
                    r.get::<_, Option<[u8; 32]>>(5)?,
                    r.get::<_, Option<Vec<u8>>>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((device, request, created_at, approval, key, sealed, cert)) = row else {
        return Ok(None);
    };
    let user = key.zip(sealed);
    // The caller unseals the username hash; until then it holds the sealed form.
    let approved = approval
        .zip(user)
        .map(|(approval, (_, sealed))| ApprovedLink {
            cert: cert.unwrap_or_default(),
            approval,
            username_hash: sealed,
        });
    let link = PendingLink {
        link_id: link_id.to_owned(),
        device,
        request,
        created_at: created_at as u64,
        approved,
    };
    Ok(Some((link, user)))
}

pub(super) fn approve_link(
    c: &Connection,
    link_id: &str,
    approver: &UserPublic,
    device: &NewDevice,
    approval: &[u8],
    now: u64,
) -> Result<()> {
    let row: Option<(DeviceId, Option<Vec<u8>>)> = c
        .query_row(
            "SELECT device, cert FROM links WHERE link_id = ?1 AND expires_at > ?2",
            params![link_id, now as i64],
            |r| Ok((DeviceId(r.get(0)?), r.get(1)?)),
        )
        .optional()?;
    let (linked, cert) = row.ok_or(StoreError::UnknownLink)?;
    if cert.is_some() {
        return Err(StoreError::LinkApproved);
    }
    if linked != device.device {
        return Err(StoreError::UnknownDevice(device.device));
    }
    let user_id = user_row(c, "user_key", &approver.0)?;
    insert_device(c, user_id, device, now)?;
    c.execute(
        "UPDATE links SET cert = ?1, user_id = ?2 WHERE link_id = ?3",
        params![approval, user_id, link_id],
    )?;
    Ok(())
}
