-- Version 6: sends and relaxed acknowledgements in groups (`group.rs`).
--
-- `sotto_send_many` stores a group of sends in one call: a constant number
-- of statements however many sends, where `sotto_send` runs about ten per
-- send (PostgreSQL's CPU per statement, not the rows, was the cost). It
-- takes only the common case: when any send of the group needs what only
-- `sotto_send` does (a refusal to name, a request id seen before, a
-- datagram stored already, a stale device user, a device removed since it
-- was looked up, a quota that the group would cross), it raises `SO006`,
-- nothing of the group is committed, and the node sends each on its own.
-- Locks are taken as `sotto_send` takes them, in id order (users, then the
-- devices written), so groups on several nodes cannot deadlock.
CREATE FUNCTION sotto_send_many(
    p_senders bytea[],          -- per send: the sender's device id
    p_sender_users bigint[],    -- per send: its user's row, as the node knows it
    p_digests bytea[],          -- per send: distinct
    p_bodies bytea[],           -- per send
    p_nows bigint[],            -- per send: its time of receipt
    p_device_quotas bigint[],   -- per send
    p_user_quotas bigint[],     -- per send
    p_requests bytea[],         -- per send: a request id to use once, or NULL
    p_request_expires bigint[], -- per send
    p_r_sends int[],            -- per recipient: its send (1-based)
    p_r_devices bytea[],        -- per recipient: its device id, distinct within its send
    p_b_sends int[],            -- per block pair: its send
    p_b_users bigint[],         -- ...a recipient user other than the sender's...
    p_b_pairs bytea[]           -- ...and its block pair (that user blocks the sender)
) RETURNS TABLE (o_recipient bigint, o_seq bigint) -- o_recipient: 1-based in p_r_devices
LANGUAGE plpgsql AS $f$
DECLARE
    v_n bigint;
    v_k bigint[];               -- per stored row: its recipient (index in p_r_devices),
    v_s int[];                  -- its send,
    v_r bigint[];               -- its device row,
    v_u bigint[];               -- its user row
    v_ds int[];                 -- per send with rows: the send...
    v_di bigint[];              -- ...and its datagram row
    v_ids bigint[];             -- per device written: its row...
    v_base bigint[];            -- ...and its last sequence number before this group
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(p_requests) AS q(id) WHERE q.id IS NOT NULL) THEN
        WITH ins AS (
            INSERT INTO requests (id, expires_at)
                SELECT q.id, q.e FROM unnest(p_requests, p_request_expires) AS q(id, e)
                WHERE q.id IS NOT NULL
                ON CONFLICT DO NOTHING RETURNING 1
        )
        SELECT count(*) INTO v_n FROM ins;
        IF v_n < (SELECT count(*) FROM unnest(p_requests) AS q(id) WHERE q.id IS NOT NULL) THEN
            RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a request id was used before';
        END IF;
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_senders, p_sender_users) AS s(dev, u)
               LEFT JOIN devices d ON d.device = s.dev
               WHERE d.user_id IS DISTINCT FROM s.u) THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a sender is unknown or its user stale';
    END IF;
    SELECT array_agg(r.k ORDER BY r.k), array_agg(r.s ORDER BY r.k),
           array_agg(d.id ORDER BY r.k), array_agg(d.user_id ORDER BY r.k), count(*)
        INTO v_k, v_s, v_r, v_u, v_n
        FROM unnest(p_r_sends, p_r_devices) WITH ORDINALITY AS r(s, dev, k)
        JOIN devices d ON d.device = r.dev;
    IF v_n < coalesce(cardinality(p_r_devices), 0) THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a recipient is unknown';
    END IF;
    -- Every recipient user other than its sender's has a block pair.
    IF EXISTS (SELECT 1 FROM unnest(v_s, v_u) AS t(s, u)
               LEFT JOIN unnest(p_b_sends, p_b_users) AS b(s, u) ON b.s = t.s AND b.u = t.u
               WHERE t.u <> p_sender_users[t.s] AND b.s IS NULL) THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'the node looked up stale device users';
    END IF;
    -- Users that block the sender get nothing, and the sender is not told.
    SELECT array_agg(t.k ORDER BY t.k), array_agg(t.s ORDER BY t.k),
           array_agg(t.r ORDER BY t.k), array_agg(t.u ORDER BY t.k)
        INTO v_k, v_s, v_r, v_u
        FROM unnest(v_k, v_s, v_r, v_u) AS t(k, s, r, u)
        LEFT JOIN (SELECT b.s, b.u FROM unnest(p_b_sends, p_b_users, p_b_pairs) AS b(s, u, pair)
                   JOIN block_list l ON l.pair = b.pair) AS x ON x.s = t.s AND x.u = t.u
        WHERE x.s IS NULL;
    IF v_k IS NULL THEN
        RETURN;
    END IF;
    -- Locked until the commit, in id order: the recipient users (the quota
    -- reads all their devices), then the devices written (which acks lock
    -- in the same order).
    PERFORM 1 FROM users WHERE id IN (SELECT unnest(v_u)) ORDER BY id FOR NO KEY UPDATE;
    SELECT count(*) INTO v_n FROM (
        SELECT 1 FROM devices WHERE id IN (SELECT unnest(v_r)) ORDER BY id FOR NO KEY UPDATE
    ) AS l;
    IF v_n < (SELECT count(DISTINCT r) FROM unnest(v_r) AS t(r)) THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a recipient was removed';
    END IF;
    -- Within both quotas after the whole group means within them after
    -- each send.
    IF EXISTS (
        SELECT 1 FROM (SELECT t.r, sum(octet_length(p_bodies[t.s])) AS add,
                              min(p_device_quotas[t.s]) AS q
                       FROM unnest(v_s, v_r) AS t(s, r) GROUP BY t.r) AS a
        JOIN devices d ON d.id = a.r
        WHERE d.pending_bytes::numeric + a.add > a.q
    ) OR EXISTS (
        SELECT 1 FROM (SELECT t.u, sum(octet_length(p_bodies[t.s])) AS add,
                              min(p_user_quotas[t.s]) AS q
                       FROM unnest(v_s, v_u) AS t(s, u) GROUP BY t.u) AS a
        WHERE (SELECT sum(x.pending_bytes) FROM devices x WHERE x.user_id = a.u) + a.add > a.q
    ) THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a mailbox would be full';
    END IF;
    -- Each send's datagram, new: one stored already (a resend) or twice in
    -- the group takes the other path.
    WITH s AS (SELECT DISTINCT t.s FROM unnest(v_s) AS t(s)),
    ins AS (
        INSERT INTO datagrams (digest, body, received_at)
            SELECT p_digests[s.s], p_bodies[s.s], p_nows[s.s] FROM s
            ON CONFLICT (digest) DO NOTHING RETURNING id, digest
    )
    SELECT array_agg(s.s), array_agg(ins.id),
           (SELECT count(*) FROM s) - (SELECT count(*) FROM ins)
        INTO v_ds, v_di, v_n
        FROM s JOIN ins ON ins.digest = p_digests[s.s];
    IF v_n <> 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a datagram is stored already';
    END IF;
    WITH a AS (SELECT t.r, count(*) AS n, sum(octet_length(p_bodies[t.s])) AS b
               FROM unnest(v_s, v_r) AS t(s, r) GROUP BY t.r),
    u AS (
        UPDATE devices d SET last_seq = d.last_seq + a.n, pending_bytes = d.pending_bytes + a.b
        FROM a WHERE d.id = a.r RETURNING d.id, d.last_seq - a.n AS base
    )
    SELECT array_agg(u.id), array_agg(u.base) INTO v_ids, v_base FROM u;
    -- A device's rows get its next numbers in the order of the group.
    RETURN QUERY
    WITH q AS (
        SELECT t.k, t.s, t.r, b.base + row_number() OVER (PARTITION BY t.r ORDER BY t.k) AS seq
        FROM unnest(v_k, v_s, v_r) AS t(k, s, r)
        JOIN unnest(v_ids, v_base) AS b(id, base) ON b.id = t.r
    ),
    ins AS (
        INSERT INTO mailbox (device_id, seq, datagram, received_at, size)
            SELECT q.r, q.seq, g.id, p_nows[q.s], octet_length(p_bodies[q.s])
            FROM q JOIN unnest(v_ds, v_di) AS g(s, id) ON g.s = q.s
    )
    SELECT q.k, q.seq FROM q ORDER BY q.k;
END
$f$;

-- Acknowledgements of several devices in one call, each committed without
-- waiting for the WAL flush (a lost ack is a redelivery, as `sotto_ack`'s
-- relaxed ones). The devices are locked in id order, as sends lock them.
CREATE FUNCTION sotto_ack_many(
    p_devices bytea[],          -- per ack: its device, distinct
    p_a_acks int[],             -- per sequence number: its ack (1-based)
    p_seqs bigint[],
    p_nows bigint[],            -- per ack
    p_retain boolean            -- mark acknowledged (kept until purged) rather than delete
) RETURNS TABLE (o_ack bigint, o_acked bigint) -- o_acked -1: the device is unknown
LANGUAGE plpgsql AS $f$
DECLARE
    v_i bigint[];               -- per known device: its ack...
    v_id bigint[];              -- ...and its row
    v_mi bigint[];              -- per row acknowledged: its ack,
    v_md bigint[];              -- its device row,
    v_ms bigint[];              -- its size
    v_touched bigint[];
BEGIN
    -- Until the end of this call's transaction, i.e. its commit.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT array_agg(l.i), array_agg(l.id) INTO v_i, v_id FROM (
        SELECT a.i, d.id FROM unnest(p_devices) WITH ORDINALITY AS a(dev, i)
        JOIN devices d ON d.device = a.dev ORDER BY d.id FOR NO KEY UPDATE OF d
    ) AS l;
    IF p_retain THEN
        WITH m AS (
            UPDATE mailbox x SET acked_at = p_nows[dv.i]
            FROM unnest(p_a_acks, p_seqs) AS s(a, seq)
            JOIN unnest(v_i, v_id) AS dv(i, id) ON dv.i = s.a
            WHERE x.device_id = dv.id AND x.seq = s.seq AND x.acked_at IS NULL
            RETURNING dv.i, x.device_id, x.size
        )
        SELECT array_agg(m.i), array_agg(m.device_id), array_agg(m.size)
            INTO v_mi, v_md, v_ms FROM m;
    ELSE
        WITH m AS (
            DELETE FROM mailbox x
            USING unnest(p_a_acks, p_seqs) AS s(a, seq)
            JOIN unnest(v_i, v_id) AS dv(i, id) ON dv.i = s.a
            WHERE x.device_id = dv.id AND x.seq = s.seq AND x.acked_at IS NULL
            RETURNING dv.i, x.device_id, x.size, x.datagram
        )
        SELECT array_agg(m.i), array_agg(m.device_id), array_agg(m.size),
               array_agg(DISTINCT m.datagram)
            INTO v_mi, v_md, v_ms, v_touched FROM m;
        -- Datagrams no row points at any more.
        DELETE FROM datagrams d WHERE d.id = ANY(v_touched)
            AND NOT EXISTS (SELECT 1 FROM mailbox x WHERE x.datagram = d.id);
    END IF;
    UPDATE devices d SET pending_bytes = d.pending_bytes - f.b
        FROM (SELECT t.id, sum(t.size) AS b FROM unnest(v_md, v_ms) AS t(id, size)
              GROUP BY t.id) AS f
        WHERE d.id = f.id;
    RETURN QUERY
    SELECT a.i, CASE WHEN k.i IS NULL THEN -1 ELSE coalesce(c.n, 0) END
    FROM generate_series(1, cardinality(p_devices)::bigint) AS a(i)
    LEFT JOIN unnest(v_i) AS k(i) ON k.i = a.i
    LEFT JOIN (SELECT t.i, count(*) AS n FROM unnest(v_mi) AS t(i) GROUP BY t.i) AS c
        ON c.i = a.i;
END
$f$;
