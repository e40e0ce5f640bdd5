-- Version 6: sends and relaxed acknowledgements in groups (`group.rs`).
--
-- `sotto_send_many` stores a group of sends in one call: a constant number
-- of statements however many sends, where `sotto_send` runs about ten per
-- send (PostgreSQL's CPU per statement, not the rows, was the cost). It
-- takes only the common case: when any send of the group needs what only
-- `sotto_send` does (a refusal to name, a request id seen before, a
-- datagram stored already, a stale device user, a device removed since it
-- was looked up, a quota that the group would cross), it raises `SO006`
-- naming those sends, nothing of the group is committed, and the node sends
-- them on their own and the others again as a group.
--
-- Locks and inserts of unique keys go in one order everywhere (request
-- ids, then users, devices and datagrams, each in key order), so groups on
-- several nodes, acks and `sotto_send` (version 6 locks its devices in
-- order too) wait for each other without a cycle.
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
    v_bad text;                 -- the sends the group cannot take (1-based, comma-separated)
    v_k bigint[];               -- per stored row: its recipient (index in p_r_devices),
    v_s int[];                  -- its send,
    v_r bigint[];               -- its device row,
    v_u bigint[];               -- its user row
    v_ds int[];                 -- per send with rows: the send...
    v_di bigint[];              -- ...and its datagram row
    v_ids bigint[];             -- per device written: its row...
    v_base bigint[];            -- ...and its last sequence number before this group
BEGIN
    -- Every decline names (DETAIL) all the sends its check finds that need
    -- `sotto_send`; the node sends those alone and calls again with the
    -- others.
    IF EXISTS (SELECT 1 FROM unnest(p_requests) AS q(id) WHERE q.id IS NOT NULL) THEN
        -- In key order, as the datagrams below: two groups inserting the
        -- same keys wait for each other in one order, never in a cycle.
        WITH ins AS (
            INSERT INTO requests (id, expires_at)
                SELECT q.id, q.e FROM unnest(p_requests, p_request_expires) AS q(id, e)
                WHERE q.id IS NOT NULL ORDER BY q.id
                ON CONFLICT DO NOTHING RETURNING id
        )
        SELECT string_agg(DISTINCT t.i::text, ',') INTO v_bad FROM (
            SELECT q.i, q.id, row_number() OVER (PARTITION BY q.id ORDER BY q.i) AS n
            FROM unnest(p_requests) WITH ORDINALITY AS q(id, i) WHERE q.id IS NOT NULL
        ) AS t WHERE t.n > 1 OR t.id NOT IN (SELECT ins.id FROM ins);
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a request id was used before',
                DETAIL = v_bad;
        END IF;
    END IF;
    SELECT string_agg(s.i::text, ',') INTO v_bad
        FROM unnest(p_senders, p_sender_users) WITH ORDINALITY AS s(dev, u, i)
        LEFT JOIN devices d ON d.device = s.dev
        WHERE d.user_id IS DISTINCT FROM s.u;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a sender is unknown or its user stale',
            DETAIL = v_bad;
    END IF;
    SELECT array_agg(r.k ORDER BY r.k), array_agg(r.s ORDER BY r.k),
           array_agg(d.id ORDER BY r.k), array_agg(d.user_id ORDER BY r.k),
           string_agg(DISTINCT r.s::text, ',') FILTER (WHERE d.id IS NULL)
        INTO v_k, v_s, v_r, v_u, v_bad
        FROM unnest(p_r_sends, p_r_devices) WITH ORDINALITY AS r(s, dev, k)
        LEFT JOIN devices d ON d.device = r.dev;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a recipient is unknown',
            DETAIL = v_bad;
    END IF;
    -- Every recipient user other than its sender's has a block pair.
    SELECT string_agg(DISTINCT t.s::text, ',') INTO v_bad FROM unnest(v_s, v_u) AS t(s, u)
        LEFT JOIN unnest(p_b_sends, p_b_users) AS b(s, u) ON b.s = t.s AND b.u = t.u
        WHERE t.u <> p_sender_users[t.s] AND b.s IS NULL;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'the node looked up stale device users',
            DETAIL = v_bad;
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
        SELECT coalesce(string_agg(DISTINCT t.s::text, ','), '') INTO v_bad
            FROM unnest(v_s, v_r) AS t(s, r)
            WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = t.r);
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a recipient was removed',
            DETAIL = v_bad;
    END IF;
    -- Each send within both quotas with all the group's earlier sends
    -- counted: then each is within them after the sends before it. Every
    -- send past a quota so counted is named (alone, it gets its answer).
    SELECT string_agg(DISTINCT o.s::text, ',') INTO v_bad FROM (
        SELECT t.s, p_device_quotas[t.s] AS q, d.pending_bytes::numeric
               + sum(octet_length(p_bodies[t.s])) OVER (PARTITION BY t.r ORDER BY t.s) AS held
        FROM unnest(v_s, v_r) AS t(s, r) JOIN devices d ON d.id = t.r
        UNION ALL
        SELECT t.s, p_user_quotas[t.s],
               (SELECT sum(x.pending_bytes) FROM devices x WHERE x.user_id = t.u)
               + sum(octet_length(p_bodies[t.s])) OVER (PARTITION BY t.u ORDER BY t.s)
        FROM unnest(v_s, v_u) AS t(s, u)
    ) AS o WHERE o.held > o.q;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a mailbox would be full',
            DETAIL = v_bad;
    END IF;
    -- Each send's datagram, new (in key order): one stored already (a
    -- resend) or twice in the group takes the other path.
    WITH s AS (SELECT DISTINCT t.s FROM unnest(v_s) AS t(s)),
    ins AS (
        INSERT INTO datagrams (digest, body, received_at)
            SELECT p_digests[s.s], p_bodies[s.s], p_nows[s.s] FROM s ORDER BY p_digests[s.s]
            ON CONFLICT (digest) DO NOTHING RETURNING id, digest
    ),
    firsts AS (
        SELECT s.s, ins.id, row_number() OVER (PARTITION BY p_digests[s.s] ORDER BY s.s) AS n
        FROM s LEFT JOIN ins ON ins.digest = p_digests[s.s]
    )
    SELECT array_agg(f.s) FILTER (WHERE f.n = 1), array_agg(f.id) FILTER (WHERE f.n = 1),
           string_agg(f.s::text, ',') FILTER (WHERE f.n > 1 OR f.id IS NULL)
        INTO v_ds, v_di, v_bad FROM firsts AS f;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SO006', MESSAGE = 'a datagram is stored already',
            DETAIL = v_bad;
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
        -- Datagrams no row points at any more, locked first: of two acks
        -- deleting a datagram's last two rows at once, the second then sees
        -- the first's row gone, and deletes it.
        PERFORM 1 FROM datagrams WHERE id = ANY(v_touched) ORDER BY id FOR NO KEY UPDATE;
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

-- Version 5's functions again, changed only where marked "Version 6":
-- `sotto_send` locks the devices it writes in id order right after their
-- users (it took them in its `UPDATE`, in the order found and after its
-- datagram, which could close a cycle with a group waiting for that
-- datagram and an ack group holding some of those devices), and
-- `sotto_ack` locks the datagrams it may delete.
CREATE OR REPLACE FUNCTION sotto_send(
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
    -- (Version 6: then the devices, in id order, before any datagram: the
    -- order groups and acks take them in.)
    PERFORM 1 FROM devices WHERE id = ANY(v_rows) ORDER BY id FOR NO KEY UPDATE;
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

CREATE OR REPLACE FUNCTION sotto_ack(
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
        -- Datagrams no row points at any more. (Version 6: locked first, so
        -- that of two acks deleting a datagram's last two rows at once, the
        -- second sees the first's rows gone and deletes it.)
        PERFORM 1 FROM datagrams WHERE id = ANY(v_touched) ORDER BY id FOR NO KEY UPDATE;
        DELETE FROM datagrams d WHERE d.id = ANY(v_touched)
            AND NOT EXISTS (SELECT 1 FROM mailbox x WHERE x.datagram = d.id);
    END IF;
    IF v_freed > 0 THEN
        UPDATE devices SET pending_bytes = pending_bytes - v_freed WHERE id = v_id;
    END IF;
    RETURN v_n;
END
$f$;
