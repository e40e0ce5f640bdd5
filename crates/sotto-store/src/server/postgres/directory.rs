//! Users, devices, prekey pools, block lists and pending links (as
//! `sqlite/directory.rs`, with the row locks several nodes need).

use tokio_postgres::error::SqlState;

use super::super::secret::ServerSecret;
use super::super::*;
use super::pool::Conn;
use super::{int, key32};

/// A unique constraint refused an insert another node raced us to.
fn taken(e: StoreError) -> StoreError {
    if let StoreError::Postgres(pg) = &e {
        if pg.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let constraint = pg.as_db_error().and_then(|d| d.constraint());
            return match constraint {
                Some("users_name_key") => StoreError::UsernameTaken,
                _ => StoreError::AlreadyRegistered,
            };
        }
    }
    e
}

pub(super) async fn register(
    c: &mut Conn,
    name_key: &[u8; 32],
    sealed: &[u8; 32],
    user: &UserPublic,
    device: &NewDevice,
    now: u64,
) -> Result<()> {
    if c.opt("SELECT 1 FROM users WHERE name_key = $1", &[&&name_key[..]])
        .await?
        .is_some()
    {
        return Err(StoreError::UsernameTaken);
    }
    if c.opt("SELECT 1 FROM users WHERE user_key = $1", &[&&user.0[..]])
        .await?
        .is_some()
    {
        return Err(StoreError::AlreadyRegistered);
    }
    let id: i64 = c
        .one(
            "INSERT INTO users (name_key, sealed_name, user_key, created_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&&name_key[..], &&sealed[..], &&user.0[..], &int(now)],
        )
        .await
        .map_err(taken)?
        .get(0);
    insert_device(c, id, device, now).await
}

async fn insert_device(c: &mut Conn, user_id: i64, d: &NewDevice, now: u64) -> Result<()> {
    if c.opt(
        "SELECT 1 FROM devices WHERE device = $1",
        &[&&d.device.0[..]],
    )
    .await?
    .is_some()
    {
        return Err(StoreError::AlreadyRegistered);
    }
    let ids: Vec<u32> = d.prekeys.iter().map(|p| p.0).collect();
    let max = new_prekey_ids(&d.device, 0, &ids, Some(d.reserve_id))?;
    let id: i64 = c
        .one(
            "INSERT INTO devices (device, user_id, cert, reserve, created_at, max_prekey_id)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &&d.device.0[..],
                &user_id,
                &d.cert,
                &d.reserve,
                &int(now),
                &i64::from(max),
            ],
        )
        .await
        .map_err(taken)?
        .get(0);
    insert_prekeys(c, id, &d.prekeys).await
}

/// As the SQLite backend's: every id above `published`, none repeated.
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

/// All of an upload in one statement (claim order: the order given).
async fn insert_prekeys(c: &mut Conn, device_id: i64, prekeys: &[(u32, Vec<u8>)]) -> Result<()> {
    if prekeys.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = prekeys.iter().map(|p| i64::from(p.0)).collect();
    let keys: Vec<&[u8]> = prekeys.iter().map(|p| p.1.as_slice()).collect();
    c.exec(
        "INSERT INTO prekeys (device_id, prekey_id, prekey)
         SELECT $1::bigint, k.id, k.prekey FROM unnest($2::bigint[], $3::bytea[]) WITH ORDINALITY AS k(id, prekey, n)
         ORDER BY k.n",
        &[&device_id, &ids, &keys],
    )
    .await?;
    Ok(())
}

/// The user whose name key (`by_name`) or user key is `key`.
pub(super) async fn user_where(
    c: &mut Conn,
    by_name: bool,
    key: [u8; 32],
) -> Result<Option<UserRecord>> {
    let rows = if by_name {
        c.query(
            "SELECT u.user_key, d.device, d.cert FROM users u
             LEFT JOIN devices d ON d.user_id = u.id WHERE u.name_key = $1 ORDER BY d.id",
            &[&&key[..]],
        )
        .await?
    } else {
        c.query(
            "SELECT u.user_key, d.device, d.cert FROM users u
             LEFT JOIN devices d ON d.user_id = u.id WHERE u.user_key = $1 ORDER BY d.id",
            &[&&key[..]],
        )
        .await?
    };
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let user = UserPublic(key32(first.get(0))?);
    let mut devices = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(device) = r.get::<_, Option<Vec<u8>>>(1) {
            devices.push(DeviceRecord {
                device: DeviceId(key32(device)?),
                user,
                cert: r.get(2),
            });
        }
    }
    Ok(Some(UserRecord { user, devices }))
}

pub(super) async fn device(c: &mut Conn, device: DeviceId) -> Result<Option<DeviceRecord>> {
    let row = c
        .opt(
            "SELECT u.user_key, d.cert FROM devices d JOIN users u ON u.id = d.user_id
             WHERE d.device = $1",
            &[&&device.0[..]],
        )
        .await?;
    row.map(|r| {
        Ok(DeviceRecord {
            device,
            user: UserPublic(key32(r.get(0))?),
            cert: r.get(1),
        })
    })
    .transpose()
}

async fn count(c: &mut Conn, device_id: i64) -> Result<PrekeyCount> {
    let r = c
        .one(
            "SELECT (SELECT COUNT(*) FROM prekeys WHERE device_id = $1), reserve_served
             FROM devices WHERE id = $1",
            &[&device_id],
        )
        .await?;
    Ok(PrekeyCount {
        one_time: r.get::<_, i64>(0) as u32,
        reserve_served: r.get::<_, i64>(1) as u32,
    })
}

pub(super) async fn prekey_count(c: &mut Conn, device: DeviceId) -> Result<PrekeyCount> {
    let row = c
        .opt(
            "SELECT id FROM devices WHERE device = $1",
            &[&&device.0[..]],
        )
        .await?
        .ok_or(StoreError::UnknownDevice(device))?;
    count(c, row.get(0)).await
}

pub(super) async fn claim(
    c: &mut Conn,
    secret: &ServerSecret,
    name_key: &[u8; 32],
    wanted: &[DeviceId],
    claimant: &UserPublic,
) -> Result<(UserPublic, Vec<ClaimedPrekey>)> {
    let row = c
        .opt(
            "SELECT id, user_key FROM users WHERE name_key = $1",
            &[&&name_key[..]],
        )
        .await?
        .ok_or(StoreError::UnknownUser)?;
    let user_id: i64 = row.get(0);
    let user = UserPublic(key32(row.get(1))?);
    let blocked = blocks_user(c, secret, &user, claimant).await?;
    let mut all = Vec::new();
    for r in c
        .query(
            "SELECT id, device, cert, reserve FROM devices WHERE user_id = $1 ORDER BY id",
            &[&user_id],
        )
        .await?
    {
        let device = DeviceId(key32(r.get(1))?);
        all.push((
            r.get::<_, i64>(0),
            device,
            r.get::<_, Vec<u8>>(2),
            r.get::<_, Vec<u8>>(3),
        ));
    }
    let chosen: Vec<_> = if wanted.is_empty() {
        all
    } else {
        let mut chosen: Vec<(i64, DeviceId, Vec<u8>, Vec<u8>)> = Vec::with_capacity(wanted.len());
        for w in wanted {
            let row = all
                .iter()
                .find(|d| d.1 == *w)
                .ok_or(StoreError::UnknownDevice(*w))?;
            if !chosen.iter().any(|d| d.1 == *w) {
                chosen.push(row.clone());
            }
        }
        chosen
    };
    let mut out = Vec::with_capacity(chosen.len());
    for (device_id, device, cert, reserve) in chosen {
        // Blocked: the reserve, uncounted (as with SQLite).
        if blocked {
            out.push(ClaimedPrekey {
                device,
                cert,
                prekey: reserve,
                reserve: true,
                pool: count(c, device_id).await?,
            });
            continue;
        }
        // The oldest key not being handed out by another transaction right
        // now, deleted by this one: two nodes racing for the last key never
        // both get it (the loser skips the locked row and serves the
        // reserve).
        let one = c
            .opt(
                "DELETE FROM prekeys WHERE id = (
                     SELECT id FROM prekeys WHERE device_id = $1 ORDER BY id LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING prekey",
                &[&device_id],
            )
            .await?;
        // The reserve as it is now (a refill may have replaced it).
        let (prekey, is_reserve) = match one {
            Some(r) => (r.get(0), false),
            None => {
                let r = c
                    .one(
                        "UPDATE devices SET reserve_served = reserve_served + 1 WHERE id = $1
                         RETURNING reserve",
                        &[&device_id],
                    )
                    .await?;
                (r.get(0), true)
            }
        };
        out.push(ClaimedPrekey {
            device,
            cert,
            prekey,
            reserve: is_reserve,
            pool: count(c, device_id).await?,
        });
    }
    Ok((user, out))
}

pub(super) async fn add_prekeys(
    c: &mut Conn,
    device: &DeviceId,
    prekeys: &[(u32, Vec<u8>)],
    reserve: Option<&(u32, Vec<u8>)>,
) -> Result<PrekeyCount> {
    // Locked: two uploads at once must not both pass the id check.
    let row = c
        .opt(
            "SELECT id, max_prekey_id FROM devices WHERE device = $1 FOR UPDATE",
            &[&&device.0[..]],
        )
        .await?
        .ok_or(StoreError::UnknownDevice(*device))?;
    let (device_id, published): (i64, i64) = (row.get(0), row.get(1));
    let ids: Vec<u32> = prekeys.iter().map(|p| p.0).collect();
    let max = new_prekey_ids(device, published as u32, &ids, reserve.map(|r| r.0))?;
    insert_prekeys(c, device_id, prekeys).await?;
    let changed = !prekeys.is_empty() || reserve.is_some();
    c.exec(
        "UPDATE devices SET max_prekey_id = $2,
             reserve = COALESCE($3, reserve),
             reserve_served = CASE WHEN $4 THEN 0 ELSE reserve_served END
         WHERE id = $1",
        &[
            &device_id,
            &i64::from(max),
            &reserve.map(|r| r.1.as_slice()),
            &changed,
        ],
    )
    .await?;
    count(c, device_id).await
}

/// Whether the user `blocker` blocks the user `sender`.
pub(super) async fn blocks_user(
    c: &mut Conn,
    secret: &ServerSecret,
    blocker: &UserPublic,
    sender: &UserPublic,
) -> Result<bool> {
    let pair = secret.block_pair(blocker, sender);
    Ok(
        c.opt("SELECT 1 FROM block_list WHERE pair = $1", &[&&pair[..]])
            .await?
            .is_some(),
    )
}

async fn user_exists(c: &mut Conn, user: &UserPublic) -> Result<()> {
    c.opt("SELECT 1 FROM users WHERE user_key = $1", &[&&user.0[..]])
        .await?
        .map(|_| ())
        .ok_or(StoreError::UnknownUser)
}

/// (user key, username hash) of the user whose name key is `name_key`.
async fn user_named(
    c: &mut Conn,
    secret: &ServerSecret,
    name_key: &[u8; 32],
) -> Result<Option<(UserPublic, UsernameHash)>> {
    let Some(r) = c
        .opt(
            "SELECT user_key, sealed_name FROM users WHERE name_key = $1",
            &[&&name_key[..]],
        )
        .await?
    else {
        return Ok(None);
    };
    let sealed = key32(r.get(1))?;
    Ok(Some((
        UserPublic(key32(r.get(0))?),
        secret.seal_name(name_key, &sealed),
    )))
}

/// Adds (`on`) or removes `blocker`'s block of the user named by
/// `blocked_key`; both users must exist.
pub(super) async fn block(
    c: &mut Conn,
    secret: &ServerSecret,
    blocker: UserPublic,
    blocked_key: [u8; 32],
    on: bool,
) -> Result<()> {
    user_exists(c, &blocker).await?;
    let (blocked, hash) = user_named(c, secret, &blocked_key)
        .await?
        .ok_or(StoreError::UnknownUser)?;
    let pair = secret.block_pair(&blocker, &blocked);
    if on {
        c.exec(
            "INSERT INTO block_list (pair, owner, sealed) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[
                &&pair[..],
                &&secret.block_owner(&blocker)[..],
                &&secret.seal_blocked(&pair, &hash)[..],
            ],
        )
        .await?;
    } else {
        c.exec("DELETE FROM block_list WHERE pair = $1", &[&&pair[..]])
            .await?;
    }
    Ok(())
}

pub(super) async fn is_blocked(
    c: &mut Conn,
    secret: &ServerSecret,
    blocker_key: [u8; 32],
    blocked: UserPublic,
) -> Result<bool> {
    match user_named(c, secret, &blocker_key).await? {
        Some((blocker, _)) => blocks_user(c, secret, &blocker, &blocked).await,
        None => Ok(false),
    }
}

pub(super) async fn blocks(
    c: &mut Conn,
    secret: &ServerSecret,
    blocker: UserPublic,
) -> Result<Vec<UsernameHash>> {
    user_exists(c, &blocker).await?;
    let owner = secret.block_owner(&blocker);
    let rows = c
        .query(
            "SELECT pair, sealed FROM block_list WHERE owner = $1 ORDER BY sealed",
            &[&&owner[..]],
        )
        .await?;
    rows.into_iter()
        .map(|r| Ok(secret.seal_blocked(&key32(r.get(0))?, &key32(r.get(1))?)))
        .collect()
}

/// Removes a device of `owner` with its prekeys and mailbox.
pub(super) async fn remove_device(c: &mut Conn, owner: UserPublic, device: DeviceId) -> Result<()> {
    let device_id: i64 = c
        .opt(
            "SELECT d.id FROM devices d JOIN users u ON u.id = d.user_id
             WHERE d.device = $1 AND u.user_key = $2 FOR UPDATE OF d",
            &[&&device.0[..], &&owner.0[..]],
        )
        .await?
        .ok_or_else(|| StoreError::UnknownDevice(device))?
        .get(0);
    c.exec("DELETE FROM prekeys WHERE device_id = $1", &[&device_id])
        .await?;
    let touched: Vec<i64> = c
        .query(
            "DELETE FROM mailbox WHERE device_id = $1 RETURNING datagram",
            &[&device_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    super::mailbox::delete_orphans(c, touched).await?;
    c.exec("DELETE FROM devices WHERE id = $1", &[&device_id])
        .await?;
    Ok(())
}

pub(super) async fn create_link(
    c: &mut Conn,
    link_id: &str,
    device: &DeviceId,
    request: &[u8],
    now: u64,
) -> Result<()> {
    if c.opt("SELECT 1 FROM devices WHERE device = $1", &[&&device.0[..]])
        .await?
        .is_some()
    {
        return Err(StoreError::AlreadyRegistered);
    }
    c.exec(
        "INSERT INTO links (link_id, device, request, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &link_id,
            &&device.0[..],
            &request,
            &int(now),
            &int(now.saturating_add(LINK_TTL_MS)),
        ],
    )
    .await?;
    Ok(())
}

/// A live link and, once approved, (name key, sealed name) of its user.
#[allow(clippy::type_complexity)]
pub(super) async fn link(
    c: &mut Conn,
    link_id: &str,
    now: u64,
) -> Result<Option<(PendingLink, Option<([u8; 32], [u8; 32])>)>> {
    let Some(r) = c
        .opt(
            "SELECT l.device, l.request, l.created_at, l.cert, u.name_key, u.sealed_name, d.cert
             FROM links l LEFT JOIN users u ON u.id = l.user_id
             LEFT JOIN devices d ON d.device = l.device
             WHERE l.link_id = $1 AND l.expires_at > $2",
            &[&link_id, &int(now)],
        )
        .await?
    else {
        return Ok(None);
    };
    // `links.cert` holds the sealed approval; the certificate is the
    // device's row.
    let approval: Option<Vec<u8>> = r.get(3);
    let cert: Option<Vec<u8>> = r.get(6);
    let user = match (
        r.get::<_, Option<Vec<u8>>>(4),
        r.get::<_, Option<Vec<u8>>>(5),
    ) {
        (Some(k), Some(s)) => Some((key32(k)?, key32(s)?)),
        _ => None,
    };
    let approved = approval
        .zip(user)
        .map(|(approval, (_, sealed))| ApprovedLink {
            cert: cert.unwrap_or_default(),
            approval,
            username_hash: sealed,
        });
    let link = PendingLink {
        link_id: link_id.to_owned(),
        device: DeviceId(key32(r.get(0))?),
        request: r.get(1),
        created_at: r.get::<_, i64>(2) as u64,
        approved,
    };
    Ok(Some((link, user)))
}

pub(super) async fn approve_link(
    c: &mut Conn,
    link_id: &str,
    approver: &UserPublic,
    device: &NewDevice,
    approval: &[u8],
    now: u64,
) -> Result<()> {
    // Locked: approving the same link twice at once registers it once.
    let r = c
        .opt(
            "SELECT device, cert FROM links WHERE link_id = $1 AND expires_at > $2 FOR UPDATE",
            &[&link_id, &int(now)],
        )
        .await?
        .ok_or(StoreError::UnknownLink)?;
    if r.get::<_, Option<Vec<u8>>>(1).is_some() {
        return Err(StoreError::LinkApproved);
    }
    if DeviceId(key32(r.get(0))?) != device.device {
        return Err(StoreError::UnknownDevice(device.device));
    }
    let user_id: i64 = c
        .opt(
            "SELECT id FROM users WHERE user_key = $1",
            &[&&approver.0[..]],
        )
        .await?
        .ok_or(StoreError::UnknownUser)?
        .get(0);
    insert_device(c, user_id, device, now).await?;
    c.exec(
        "UPDATE links SET cert = $1, user_id = $2 WHERE link_id = $3",
        &[&approval, &user_id, &link_id],
    )
    .await?;
    Ok(())
}
