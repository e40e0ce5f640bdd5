//! The SQLite schema and connection settings.

use rusqlite::Connection;

use super::super::Result;

/// Schema version in `PRAGMA user_version`.
pub(super) const VERSION: i64 = 5;

const SCHEMA_V1: &str = "
CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name_key    BLOB NOT NULL UNIQUE,   -- HMAC(server_secret, username_hash)
    sealed_name BLOB NOT NULL,          -- username_hash XOR a pad from the secret
    user_key    BLOB NOT NULL UNIQUE,   -- Ed25519 user public key
    created_at  INTEGER NOT NULL
);
CREATE TABLE devices (
    id             INTEGER PRIMARY KEY,
    device         BLOB NOT NULL UNIQUE, -- Ed25519 device public key
    user_id        INTEGER NOT NULL REFERENCES users(id),
    cert           BLOB NOT NULL,
    reserve        BLOB NOT NULL,
    reserve_served INTEGER NOT NULL DEFAULT 0,
    last_seq       INTEGER NOT NULL DEFAULT 0, -- mailbox sequence, from the DB
    created_at     INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);
CREATE TABLE prekeys (
    id        INTEGER PRIMARY KEY,     -- claim order: oldest first
    device_id INTEGER NOT NULL REFERENCES devices(id),
    prekey_id INTEGER NOT NULL,
    prekey    BLOB NOT NULL,
    UNIQUE (device_id, prekey_id)
);
CREATE TABLE datagrams (
    id          INTEGER PRIMARY KEY,
    digest      BLOB NOT NULL UNIQUE,  -- SHA-256 of body: the datagram id
    body        BLOB NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE mailbox (
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    seq         INTEGER NOT NULL,
    datagram    INTEGER NOT NULL REFERENCES datagrams(id),
    received_at INTEGER NOT NULL,
    acked_at    INTEGER,
    PRIMARY KEY (device_id, seq)
);
CREATE UNIQUE INDEX mailbox_datagram ON mailbox(datagram, device_id);
CREATE INDEX mailbox_acked ON mailbox(acked_at) WHERE acked_at IS NOT NULL;
-- Fetch skips retained (acked) rows without scanning them.
CREATE INDEX mailbox_pending ON mailbox(device_id, seq) WHERE acked_at IS NULL;
CREATE TABLE blocks (
    blocker INTEGER NOT NULL REFERENCES users(id),
    blocked INTEGER NOT NULL REFERENCES users(id),
    PRIMARY KEY (blocker, blocked)
);
CREATE TABLE links (
    link_id     TEXT PRIMARY KEY,
    device      BLOB NOT NULL,
    request     BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    cert        BLOB,                  -- the sealed approval, set on approval
    user_id     INTEGER REFERENCES users(id)
);
";

/// Version 2: mailbox quotas (bytes pending per device, the size of each
/// row), the age index the unacknowledged-item TTL purges by, the prekey id
/// high-water mark, single-use request ids, the block list keyed with the
/// server secret (filled from `blocks` by [`super::migrate_v2`], which
/// then drops it) and the server secret's check value.
pub(super) const SCHEMA_V2: &str = "
ALTER TABLE devices ADD COLUMN pending_bytes INTEGER NOT NULL DEFAULT 0; -- unacked bytes in its mailbox
ALTER TABLE devices ADD COLUMN max_prekey_id INTEGER NOT NULL DEFAULT 0; -- highest prekey id ever published
ALTER TABLE mailbox ADD COLUMN size INTEGER NOT NULL DEFAULT 0;          -- the datagram's size
UPDATE mailbox SET size = (SELECT length(body) FROM datagrams WHERE id = mailbox.datagram);
UPDATE devices SET pending_bytes = COALESCE(
    (SELECT SUM(size) FROM mailbox WHERE device_id = devices.id AND acked_at IS NULL), 0);
UPDATE devices SET max_prekey_id = COALESCE(
    (SELECT MAX(prekey_id) FROM prekeys WHERE device_id = devices.id), 0);
-- The TTL of unacknowledged items purges by age.
CREATE INDEX mailbox_unacked_age ON mailbox(received_at) WHERE acked_at IS NULL;
-- Keyed by expiry first: a request's expiry follows from its signed time,
-- so inserts land at the end of the tree and the purge cuts its start.
CREATE TABLE requests (
    expires_at INTEGER NOT NULL,
    id         BLOB NOT NULL,          -- SHA-256 of a signed request
    PRIMARY KEY (expires_at, id)
) WITHOUT ROWID;
CREATE TABLE block_list (
    pair   BLOB PRIMARY KEY,           -- HMAC(secret, blocker user key, blocked user key)
    owner  BLOB NOT NULL,              -- HMAC(secret, blocker user key)
    sealed BLOB NOT NULL               -- blocked username_hash XOR a pad from the secret
) WITHOUT ROWID;
CREATE INDEX block_list_owner ON block_list(owner);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
";

/// Version 3: delivery to phone numbers (see `server::phone`). Numbers
/// appear only as `HMAC(secret, number)`; bodies, sender secrets and
/// queued posts only as blobs sealed under the hold key (not in the
/// database).
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE senders (
    id         INTEGER PRIMARY KEY,
    handle     TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    webhook    TEXT NOT NULL,
    user_id    INTEGER NOT NULL UNIQUE REFERENCES users(id),
    device     BLOB NOT NULL,
    cert       BLOB NOT NULL,
    secrets    BLOB NOT NULL,          -- sealed: device key, prekey secrets, webhook secret
    created_at INTEGER NOT NULL
);
CREATE TABLE sender_keys (
    key_hash   BLOB PRIMARY KEY,       -- SHA-256 of the API key
    sender_id  INTEGER NOT NULL REFERENCES senders(id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) WITHOUT ROWID;
CREATE TABLE sender_sessions (
    sender_id INTEGER NOT NULL REFERENCES senders(id),
    session   BLOB NOT NULL,
    peer      BLOB NOT NULL,
    sealed    BLOB NOT NULL,
    PRIMARY KEY (sender_id, session)
) WITHOUT ROWID;
CREATE INDEX sender_sessions_peer ON sender_sessions(sender_id, peer);
CREATE TABLE sender_messages (
    id         TEXT PRIMARY KEY,
    sender_id  INTEGER NOT NULL REFERENCES senders(id),
    number_key BLOB,                   -- HMAC(secret, number) while held
    sealed     BLOB,                   -- number and body under a per-message key, while held
    status     TEXT NOT NULL,
    digest     BLOB,                   -- the datagram, once sent
    recipients INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX sender_messages_held ON sender_messages(number_key) WHERE status = 'held';
CREATE INDEX sender_messages_status ON sender_messages(status, expires_at);
CREATE TABLE sender_invites (
    sender_id  INTEGER NOT NULL REFERENCES senders(id),
    number_key BLOB NOT NULL,
    PRIMARY KEY (sender_id, number_key)
) WITHOUT ROWID;
-- The last message a sender sent each user: what a reply answers.
CREATE TABLE sender_threads (
    sender_id  INTEGER NOT NULL REFERENCES senders(id),
    user_key   BLOB NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (sender_id, user_key)
) WITHOUT ROWID;
CREATE TABLE phone_users (
    number_key BLOB NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    username   TEXT NOT NULL,
    PRIMARY KEY (number_key, user_id)
) WITHOUT ROWID;
CREATE TABLE otps (
    number_key BLOB NOT NULL,
    kind       TEXT NOT NULL,          -- server | app
    otp_hash   BLOB NOT NULL,          -- HMAC(secret, number, code)
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    used       INTEGER NOT NULL DEFAULT 0,
    confirmed  INTEGER NOT NULL DEFAULT 0, -- app-made: its SMS arrived
    PRIMARY KEY (number_key, kind)
) WITHOUT ROWID;
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,          -- webhook | sms
    sender_id  INTEGER NOT NULL,
    sealed     BLOB NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX outbox_due ON outbox(kind, next_at);
";

/// Version 4: a held message's claim names its owner (a random token of
/// the delivery), so only the claimer delivers or releases it; an outbox post's lease
/// names its owner, so only the leaseholder posts it.
pub(super) const SCHEMA_V4: &str = "
ALTER TABLE sender_messages ADD COLUMN claim_owner BLOB;
ALTER TABLE outbox ADD COLUMN lease_owner BLOB;
-- OTPs asked per number in the current window (shared by all callers).
CREATE TABLE otp_requests (
    number_key   BLOB PRIMARY KEY,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 5: the mailbox without a row id, its rows kept in the order of
/// its primary key (device, seq). Before, a row lived in the row-id tree and
/// again in the primary key's index: every send inserted into both and
/// every acknowledgement looked the row up through both. Rebuilt with its
/// rows (SQLite cannot change a table's key in place), and its indexes
/// made again.
pub(super) const SCHEMA_V5: &str = "
CREATE TABLE mailbox_v5 (
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    seq         INTEGER NOT NULL,
    datagram    INTEGER NOT NULL REFERENCES datagrams(id),
    received_at INTEGER NOT NULL,
    acked_at    INTEGER,
    size        INTEGER NOT NULL DEFAULT 0,  -- the datagram's size
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
INSERT INTO mailbox_v5 (device_id, seq, datagram, received_at, acked_at, size)
    SELECT device_id, seq, datagram, received_at, acked_at, size FROM mailbox;
DROP TABLE mailbox;
ALTER TABLE mailbox_v5 RENAME TO mailbox;
CREATE UNIQUE INDEX mailbox_datagram ON mailbox(datagram, device_id);
CREATE INDEX mailbox_acked ON mailbox(acked_at) WHERE acked_at IS NOT NULL;
-- Fetch skips retained (acked) rows without scanning them.
CREATE INDEX mailbox_pending ON mailbox(device_id, seq) WHERE acked_at IS NULL;
-- The TTL of unacknowledged items purges by age.
CREATE INDEX mailbox_unacked_age ON mailbox(received_at) WHERE acked_at IS NULL;
";

/// Settings of every connection. `synchronous=FULL` in WAL mode fsyncs the
/// log at each commit: a send is durable before it is acknowledged.
pub(super) fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // secure_delete=FAST zeroes deleted rows in the pages a write touches
    // anyway: an erased held message leaves no readable copy in the file.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA secure_delete = FAST;",
    )?;
    Ok(())
}

/// Switches to WAL and returns the schema version (0: a new database).
pub(super) fn open_version(conn: &Connection) -> Result<i64> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(super::super::StoreError::Backend(format!(
            "cannot switch the database to WAL (mode {mode})"
        )));
    }
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(super::super::StoreError::Backend(format!(
            "database schema version {version} is newer than this server ({VERSION}); upgrade sotto"
        )));
    }
    Ok(version)
}

/// Creates version 1 in a new database (version 2 is applied on top by
/// [`super::migrate_v2`], the one path old and new databases take).
pub(super) fn create_v1(conn: &Connection) -> Result<()> {
    conn.execute_batch(&format!(
        "BEGIN; {SCHEMA_V1} PRAGMA user_version = 1; COMMIT;"
    ))?;
    Ok(())
}
