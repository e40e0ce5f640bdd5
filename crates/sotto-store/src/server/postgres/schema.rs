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
const MIGRATIONS: &[(i64, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];

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

/// Version 5: a send and an acknowledgement each as one call of a
/// function (`mailbox.rs`), so that each is one round trip, run in
/// autocommit (the call is its own transaction), instead of about ten
/// statements inside a transaction.
///
/// The block check needs HMACs under the server secret, which the database
/// never sees: the node computes the block pair of every recipient user
/// before the call, from what it knows of the recipient devices' users
/// (which it may remember: a device row's user never changes). The
/// function resolves the devices itself, and refuses the call (`SO004`)
/// if a recipient's user is not among the users the node computed pairs
/// for, or the sender's user is not the one it assumed: a node that
/// remembers wrongly (a device removed and its id registered again under
/// another user) looks up again, and a block is never skipped. A removed
/// device is simply not found.
///
/// Refusals are errors with codes of their own (`SO001` unknown device,
/// `SO002` mailbox full, `SO003` request replayed, `SO004` as above;
/// DETAIL the 0-based index of the recipient, -1 the sender; `SO005` the
/// datagram deleted under the send on every try), so nothing of a refused
/// send is committed.
const V5: &str = r#"
CREATE FUNCTION sotto_send(
    p_sender bytea,             -- the sender's device id
    p_sender_user bigint,       -- its user's row, as the node knows it
    p_devices bytea[],          -- recipient device ids, in order, distinct
    p_block_users bigint[],     -- every recipient user other than the sender's...
    p_block_pairs bytea[],      -- ...and its block pair (that user blocks the sender)
    p_digest bytea,
    p_body bytea,
    p_now bigint,
    p_device_quota bigint,
    p_user_quota bigint,
    p_request bytea,            -- a request id to use once, or NULL
    p_request_expires bigint
) RETURNS TABLE (o_at bigint, o_seq bigint)
LANGUAGE plpgsql AS $f$
DECLARE
    v_size bigint := octet_length(p_body);
    v_from bigint;
    v_at bigint;
    v_datagram bigint;
    v_ords bigint[];
    v_rows bigint[];
    v_users bigint[];
    v_locked bigint[];
    v_done bigint[];
    v_seqs bigint[];
BEGIN
    IF p_request IS NOT NULL THEN
        INSERT INTO requests (id, expires_at) VALUES (p_request, p_request_expires)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'SO003', MESSAGE = 'request replayed';
        END IF;
    END IF;
    SELECT user_id INTO v_from FROM devices WHERE device = p_sender;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SO001', MESSAGE = 'unknown device', DETAIL = '-1';
    END IF;
    SELECT array_agg(t.ord ORDER BY t.ord), array_agg(d.id ORDER BY t.ord),
           array_agg(d.user_id ORDER BY t.ord)
        INTO v_ords, v_rows, v_users
        FROM unnest(p_devices) WITH ORDINALITY AS t(key, ord) JOIN devices d ON d.device = t.key;
    IF coalesce(cardinality(v_rows), 0) < cardinality(p_devices) THEN
        SELECT min(t.ord) - 1 INTO v_at FROM unnest(p_devices) WITH ORDINALITY AS t(key, ord)
            WHERE t.ord NOT IN (SELECT unnest(v_ords));
        RAISE EXCEPTION USING ERRCODE = 'SO001', MESSAGE = 'unknown device', DETAIL = v_at::text;
    END IF;
    -- (`x NOT IN (SELECT unnest(...))` runs as a hashed subplan: one hash
    -- lookup per row, where `NOT (x = ANY(array))` scans the array.)
    IF v_from <> p_sender_user OR EXISTS (
        SELECT 1 FROM unnest(v_users) AS u(id)
        WHERE u.id <> v_from AND u.id NOT IN (SELECT unnest(p_block_users))
    ) THEN
        RAISE EXCEPTION USING ERRCODE = 'SO004', MESSAGE = 'the node looked up stale device users';
    END IF;
    -- Users that block the sender get nothing, and the sender is not told.
    SELECT array_agg(t.o ORDER BY t.o), array_agg(t.r ORDER BY t.o), array_agg(t.u ORDER BY t.o)
        INTO v_ords, v_rows, v_users
        FROM unnest(v_ords, v_rows, v_users) AS t(o, r, u)
        WHERE t.u NOT IN (
            SELECT b.u FROM unnest(p_block_users, p_block_pairs) AS b(u, pair)
            JOIN block_list l ON l.pair = b.pair);
    IF v_rows IS NULL THEN
        RETURN;
    END IF;
    -- The quota reads what every device of each recipient user holds:
    -- those users stay locked (in id order, so concurrent sends cannot
    -- deadlock) until the commit, so two nodes cannot both fill the last
    -- room of one mailbox.
    v_locked := ARRAY(SELECT DISTINCT u FROM unnest(v_users) AS u ORDER BY u);
    PERFORM 1 FROM users WHERE id = ANY(v_locked) ORDER BY id FOR NO KEY UPDATE;
    FOR i IN 1..3 LOOP
        INSERT INTO datagrams (digest, body, received_at) VALUES (p_digest, p_body, p_now)
            ON CONFLICT (digest) DO NOTHING RETURNING id INTO v_datagram;
        EXIT WHEN v_datagram IS NOT NULL;
        -- Stored already (a retry, or the same datagram resent): rows only
        -- for devices that have none for it. If it went in between (its
        -- last row acknowledged), insert it again.
        SELECT id INTO v_datagram FROM datagrams WHERE digest = p_digest;
        IF v_datagram IS NOT NULL THEN
            SELECT array_agg(t.o ORDER BY t.o), array_agg(t.r ORDER BY t.o),
                   array_agg(t.u ORDER BY t.o)
                INTO v_ords, v_rows, v_users
                FROM unnest(v_ords, v_rows, v_users) AS t(o, r, u)
                WHERE NOT EXISTS (SELECT 1 FROM mailbox m
                                  WHERE m.datagram = v_datagram AND m.device_id = t.r);
            IF v_rows IS NULL THEN
                RETURN;
            END IF;
            EXIT;
        END IF;
    END LOOP;
    IF v_datagram IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO005',
            MESSAGE = 'the datagram kept being deleted under this send';
    END IF;
    -- Quota: one more row per target device, and per user the sum of its
    -- devices' bytes and one more row per target device of it (counted
    -- once per user: a send may name thousands of devices). The first
    -- target over either names the send's refusal.
    SELECT least(
        (SELECT min(t.o) FROM unnest(v_ords, v_rows) AS t(o, r) JOIN devices d ON d.id = t.r
            WHERE d.pending_bytes::numeric + v_size > p_device_quota),
        (SELECT min(p.first) FROM (
            SELECT t.u, count(*) AS n, min(t.o) AS first
                FROM unnest(v_ords, v_users) AS t(o, u) GROUP BY t.u) AS p
            WHERE (SELECT sum(a.pending_bytes) FROM devices a WHERE a.user_id = p.u)
                + v_size::numeric * p.n > p_user_quota)
    ) - 1 INTO v_at;
    IF v_at IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO002', MESSAGE = 'mailbox full', DETAIL = v_at::text;
    END IF;
    WITH s AS (
        UPDATE devices SET last_seq = last_seq + 1, pending_bytes = pending_bytes + v_size
        WHERE id = ANY(v_rows) RETURNING id, last_seq
    )
    SELECT array_agg(s.id ORDER BY s.id), array_agg(s.last_seq ORDER BY s.id)
        INTO v_done, v_seqs FROM s;
    -- A device removed since it was looked up (its removal committed first).
    IF coalesce(cardinality(v_done), 0) < cardinality(v_rows) THEN
        SELECT min(t.o) - 1 INTO v_at FROM unnest(v_ords, v_rows) AS t(o, r)
            WHERE t.r NOT IN (SELECT unnest(v_done));
        RAISE EXCEPTION USING ERRCODE = 'SO001', MESSAGE = 'unknown device', DETAIL = v_at::text;
    END IF;
    INSERT INTO mailbox (device_id, seq, datagram, received_at, size)
        SELECT t.r, t.s, v_datagram, p_now, v_size FROM unnest(v_done, v_seqs) AS t(r, s);
    -- Each recipient's index in p_devices and sequence number, in row
    -- order: v_done holds the rows of v_rows (as many, distinct) sorted, so
    -- the recipients sorted by row line up with it, no join needed.
    RETURN QUERY SELECT q.o - 1, q.s FROM unnest(
            ARRAY(SELECT t.o FROM unnest(v_ords, v_rows) AS t(o, r) ORDER BY t.r), v_seqs
        ) WITH ORDINALITY AS q(o, s, n) ORDER BY q.n;
END
$f$;

CREATE FUNCTION sotto_ack(
    p_device bytea,
    p_seqs bigint[],
    p_now bigint,
    p_retain boolean,           -- mark acknowledged (kept until purged) rather than delete
    p_relaxed boolean           -- commit without waiting for the WAL flush
) RETURNS bigint
LANGUAGE plpgsql AS $f$
DECLARE
    v_id bigint;
    v_n bigint;
    v_freed bigint;
    v_touched bigint[];
BEGIN
    IF p_relaxed THEN
        -- Until the end of this call's transaction, i.e. its commit.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- Locked: the pending byte count changes below.
    SELECT id INTO v_id FROM devices WHERE device = p_device FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SO001', MESSAGE = 'unknown device', DETAIL = '-1';
    END IF;
    IF p_retain THEN
        WITH m AS (
            UPDATE mailbox SET acked_at = p_now
            WHERE device_id = v_id AND seq = ANY(p_seqs) AND acked_at IS NULL RETURNING size
        )
        SELECT count(*), coalesce(sum(m.size), 0) INTO v_n, v_freed FROM m;
    ELSE
        WITH m AS (
            DELETE FROM mailbox
            WHERE device_id = v_id AND seq = ANY(p_seqs) AND acked_at IS NULL
            RETURNING datagram, size
        )
        SELECT count(*), coalesce(sum(m.size), 0), array_agg(DISTINCT m.datagram)
            INTO v_n, v_freed, v_touched FROM m;
        -- Datagrams no row points at any more.
        DELETE FROM datagrams d WHERE d.id = ANY(v_touched)
            AND NOT EXISTS (SELECT 1 FROM mailbox x WHERE x.datagram = d.id);
    END IF;
    IF v_freed > 0 THEN
        UPDATE devices SET pending_bytes = pending_bytes - v_freed WHERE id = v_id;
    END IF;
    RETURN v_n;
END
$f$;
"#;

/// Version 6: sends and relaxed acknowledgements in groups, one call each
/// (`group.rs`; what each function takes and when it declines is in the
/// file).
const V6: &str = include_str!("v6.sql");

/// Brings the database to [`VERSION`]; (version before, version after).
pub(super) async fn migrate(conn: &mut Conn) -> Result<(i64, i64)> {
    migrate_to(conn, VERSION).await
}

/// Applies the migrations up to `target` (tests start a database at an
/// older version with it).
pub(crate) async fn migrate_to(conn: &mut Conn, target: i64) -> Result<(i64, i64)> {
    conn.in_tx = true;
    conn.batch("BEGIN").await?;
    let result = async {
        conn.exec("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
        // Created under the lock: two nodes creating it at once (even with
        // IF NOT EXISTS) can collide on the catalog.
        conn.batch(
            "CREATE TABLE IF NOT EXISTS sotto_schema (
                 version    bigint PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
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
