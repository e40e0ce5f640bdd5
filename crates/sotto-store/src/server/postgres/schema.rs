//! The PostgreSQL schema as numbered migrations. Each runs in one
//! transaction under an advisory lock, so nodes starting at the same moment
//! apply it once; `sotto_schema` records what is applied. A database newer
//! than this server is refused.
//!
//! The tables mirror the SQLite schema (see `sqlite/schema.rs` for what
//! each column means); integers are `bigint`, keys and bodies `bytea`.

use super::super::{Result, StoreError};
use super::pool::Conn;

/// Migrations in order; the last one's number is the current version.
/// Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i64, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4)];

/// The schema version this server writes.
pub const VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Any fixed number: the key of the advisory lock migrations hold.
const LOCK: i64 = 0x736f_7474_6f5f_6d67; // "sotto_mg"

const V1: &str = "
CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name_key    bytea NOT NULL CONSTRAINT users_name_key UNIQUE,
    sealed_name bytea NOT NULL,
    user_key    bytea NOT NULL CONSTRAINT users_user_key UNIQUE,
    created_at  bigint NOT NULL
);
CREATE TABLE devices (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device         bytea NOT NULL CONSTRAINT devices_device UNIQUE,
    user_id        bigint NOT NULL REFERENCES users(id),
    cert           bytea NOT NULL,
    reserve        bytea NOT NULL,
    reserve_served bigint NOT NULL DEFAULT 0,
    last_seq       bigint NOT NULL DEFAULT 0,
    pending_bytes  bigint NOT NULL DEFAULT 0,
    max_prekey_id  bigint NOT NULL DEFAULT 0,
    created_at     bigint NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);
CREATE TABLE prekeys (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices(id),
    prekey_id bigint NOT NULL,
    prekey    bytea NOT NULL,
    UNIQUE (device_id, prekey_id)
);
CREATE TABLE datagrams (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest      bytea NOT NULL UNIQUE,
    body        bytea NOT NULL,
    received_at bigint NOT NULL
);
CREATE TABLE mailbox (
    device_id   bigint NOT NULL REFERENCES devices(id),
    seq         bigint NOT NULL,
    datagram    bigint NOT NULL REFERENCES datagrams(id),
    received_at bigint NOT NULL,
    acked_at    bigint,
    size        bigint NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE UNIQUE INDEX mailbox_datagram ON mailbox(datagram, device_id);
CREATE INDEX mailbox_acked ON mailbox(acked_at) WHERE acked_at IS NOT NULL;
CREATE INDEX mailbox_pending ON mailbox(device_id, seq) WHERE acked_at IS NULL;
CREATE INDEX mailbox_unacked_age ON mailbox(received_at) WHERE acked_at IS NULL;
CREATE TABLE block_list (
    pair   bytea PRIMARY KEY,
    owner  bytea NOT NULL,
    sealed bytea NOT NULL
);
CREATE INDEX block_list_owner ON block_list(owner);
CREATE TABLE links (
    link_id    text PRIMARY KEY,
    device     bytea NOT NULL,
    request    bytea NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    cert       bytea,
    user_id    bigint REFERENCES users(id)
);
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
";

/// Version 2: single-use request ids in the database, so that a signed
/// request replayed to another node is refused there too. (Versions 1 and 2
/// first shipped together; they stay two steps so that the upgrade path of
/// a database with data in it is tested from the start.)
const V2: &str = "
CREATE TABLE requests (
    id         bytea PRIMARY KEY,      -- SHA-256 of a signed request
    expires_at bigint NOT NULL
);
CREATE INDEX requests_expiry ON requests(expires_at);
";

/// Version 3: delivery to phone numbers (see `server::phone` and the
/// SQLite schema's version 3, which this mirrors). A held message being
/// delivered is `sending` (claimed by one node; `updated_at` is the
/// claim's time).
const V3: &str = "
CREATE TABLE senders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    handle     text NOT NULL CONSTRAINT senders_handle UNIQUE,
    name       text NOT NULL,
    webhook    text NOT NULL,
    user_id    bigint NOT NULL UNIQUE REFERENCES users(id),
    device     bytea NOT NULL,
    cert       bytea NOT NULL,
    secrets    bytea NOT NULL,
    created_at bigint NOT NULL
);
CREATE TABLE sender_keys (
    key_hash   bytea PRIMARY KEY,
    sender_id  bigint NOT NULL REFERENCES senders(id),
    created_at bigint NOT NULL,
    revoked_at bigint
);
CREATE TABLE sender_sessions (
    sender_id bigint NOT NULL REFERENCES senders(id),
    session   bytea NOT NULL,
    peer      bytea NOT NULL,
    sealed    bytea NOT NULL,
    PRIMARY KEY (sender_id, session)
);
CREATE INDEX sender_sessions_peer ON sender_sessions(sender_id, peer);
CREATE TABLE sender_messages (
    id         text PRIMARY KEY,
    sender_id  bigint NOT NULL REFERENCES senders(id),
    number_key bytea,
    sealed     bytea,
    status     text NOT NULL,
    digest     bytea,
    recipients bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
CREATE INDEX sender_messages_held ON sender_messages(number_key)
    WHERE status IN ('held', 'sending');
CREATE INDEX sender_messages_status ON sender_messages(status, expires_at);
CREATE TABLE sender_invites (
    sender_id  bigint NOT NULL REFERENCES senders(id),
    number_key bytea NOT NULL,
    PRIMARY KEY (sender_id, number_key)
);
CREATE TABLE sender_threads (
    sender_id  bigint NOT NULL REFERENCES senders(id),
    user_key   bytea NOT NULL,
    message_id text NOT NULL,
    PRIMARY KEY (sender_id, user_key)
);
CREATE TABLE phone_users (
    number_key bytea NOT NULL,
    user_id    bigint NOT NULL REFERENCES users(id),
    username   text NOT NULL,
    PRIMARY KEY (number_key, user_id)
);
CREATE TABLE otps (
    number_key bytea NOT NULL,
    kind       text NOT NULL,
    otp_hash   bytea NOT NULL,
    expires_at bigint NOT NULL,
    attempts   bigint NOT NULL DEFAULT 0,
    used       boolean NOT NULL DEFAULT false,
    confirmed  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (number_key, kind)
);
CREATE TABLE outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL,
    sender_id  bigint NOT NULL,
    sealed     bytea NOT NULL,
    attempts   bigint NOT NULL DEFAULT 0,
    next_at    bigint NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX outbox_due ON outbox(kind, next_at);
";

/// Version 4 (as SQLite's): a held message's claim names its owner, so
/// only the claimer delivers or releases it; an outbox post's lease
/// names its owner, so only the leaseholder posts it.
const V4: &str = "
ALTER TABLE sender_messages ADD COLUMN claim_owner bytea;
ALTER TABLE outbox ADD COLUMN lease_owner bytea;
CREATE TABLE otp_requests (
    number_key   bytea PRIMARY KEY,
    window_start bigint NOT NULL,
    count        bigint NOT NULL
);
";

/// Brings the database to [`VERSION`]; (version before, version after).
pub(super) async fn migrate(conn: &mut Conn) -> Result<(i64, i64)> {
    migrate_to(conn, VERSION).await
}

/// Applies the migrations up to `target` (tests start a database at an
/// older version with it).
pub(crate) async fn migrate_to(conn: &mut Conn, target: i64) -> Result<(i64, i64)> {
    conn.batch(
        "CREATE TABLE IF NOT EXISTS sotto_schema (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .or_else(ignore_concurrent_create)?;
    conn.in_tx = true;
    conn.batch("BEGIN").await?;
    let result = async {
        conn.exec("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        let before: i64 = conn
            .one("SELECT COALESCE(MAX(version), 0) FROM sotto_schema", &[])
            .await?
            .get(0);
        if before > VERSION {
            return Err(StoreError::Backend(format!(
                "database schema version {before} is newer than this server ({VERSION}); upgrade sotto"
            )));
        }
        for (version, sql) in MIGRATIONS {
            if *version > before && *version <= target {
                conn.batch(sql).await?;
                conn.exec(
                    "INSERT INTO sotto_schema (version) VALUES ($1)",
                    &[version],
                )
                .await?;
                tracing::info!(version, "database schema migrated");
            }
        }
        Ok((before, before.max(target)))
    }
    .await;
    match &result {
        Ok(_) => conn.batch("COMMIT").await?,
        Err(_) => conn.batch("ROLLBACK").await?,
    };
    conn.in_tx = false;
    result
}

/// Two nodes creating `sotto_schema` at once: one of them gets a unique
/// violation on the catalog, which is as good as success.
fn ignore_concurrent_create(e: tokio_postgres::Error) -> Result<()> {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION || *c == SqlState::DUPLICATE_TABLE => Ok(()),
        _ => Err(e.into()),
    }
}
