-- pgmirror 0004: one packed set of notifications per batch of sidecar writes.
-- Applied by `pgmirror migrate` inside one transaction with search_path set to
-- "<schema>, pg_temp"; do not add BEGIN/COMMIT here.
--
-- Until now every command of a pgmirror_write batch notified on its own (the
-- statement triggers of cache_entries fire per statement), so a batch of 50
-- SETs sent 50 notifications, and every listening sidecar's backend woke for
-- each. Now the commands run in pgmirror_write_commands (the former
-- pgmirror_write, renamed: its body is unchanged), while the notify triggers
-- stay silent (pgmirror_deferred() in triggers.sql), and pgmirror_write then
-- publishes the final state of every key the batch changed, packed into as few
-- payloads as fit. A key set and deleted within one batch is published as
-- deleted, so a sidecar waiting for the echo of its own write always gets one.
--
-- A run of plain SETs and MSETs runs as one upsert
-- statement instead of a subtransaction per command: such commands neither
-- read the row nor fail alone. The other commands run as before.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0004_write_publish.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

ALTER FUNCTION pgmirror_write(jsonb, bytea, bigint) RENAME TO pgmirror_write_commands;

CREATE FUNCTION pgmirror_write(ops jsonb, vals bytea, max_value bigint DEFAULT NULL)
RETURNS TABLE (
    cmd        int,
    rec        text,
    reply      text,
    reply_int  bigint,
    reply_bulk bytea,
    reply_err  text,
    st_key     text,
    st_version bigint,
    st_expires bigint,
    st_deleted boolean,
    st_value   bytea,
    xact_id    bigint
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $fn$
DECLARE
    nops    int;
    i       int := 0;
    j       int;
    ci      int;
    t       timestamptz;
    sub     jsonb;
    plain   boolean[];
    ok      boolean;
    f_cmd   int[];
    f_key   text[];
    f_ver   bigint[];
    f_exp   bigint[];
    changed text[] := '{}';
    r       record;
BEGIN
    IF jsonb_typeof(ops) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'pgmirror_write: ops must be a JSON array';
    END IF;
    nops := jsonb_array_length(ops);
    PERFORM set_config('pgmirror.write_batch', pgmirror_batch_token(), true);

    -- Every key of the batch, in the one order all writers share (as
    -- pgmirror_write_commands takes them; it takes its own again, which a
    -- holder gets at once).
    PERFORM pg_advisory_xact_lock(l.id)
       FROM (SELECT DISTINCT pgmirror_key_lock(kk) AS id
               FROM jsonb_array_elements(ops) e, jsonb_array_elements_text(e->'keys') kk
              ORDER BY 1) l;
    -- Which commands are plain SETs and MSETs: no condition, no GET, no
    -- expiry but a relative one. A run of them needs no read of the rows, so
    -- it runs as one upsert statement instead of a subtransaction each.
    BEGIN
        plain := ARRAY(
            SELECT a.e->>'k' IN ('set', 'mset')
               AND coalesce(a.e->>'c', 'none') = 'none'
               AND coalesce(a.e->>'g', 'false') = 'false'
               AND CASE coalesce(a.e->>'e', 'none')
                       WHEN 'none' THEN true
                       WHEN 'in' THEN coalesce(a.e->>'ms' ~ '^0*[1-9][0-9]{0,12}$', false)
                       ELSE false
                   END
               AND jsonb_array_length(a.e->'keys') = jsonb_array_length(a.e->'v')
               AND (a.e->>'k' = 'mset' OR jsonb_array_length(a.e->'keys') = 1)
              FROM jsonb_array_elements(ops) WITH ORDINALITY a(e, n)
             ORDER BY a.n);
    EXCEPTION WHEN OTHERS THEN
        plain := array_fill(false, ARRAY[nops]);  -- malformed: each command reports its own error
    END;

    WHILE i < nops LOOP
        j := i;
        WHILE j < nops AND coalesce(plain[j + 1], false) LOOP
            j := j + 1;
        END LOOP;
        IF j > i THEN
            -- Commands i .. j-1: one upsert of the last value each key is
            -- given. Should it fail (a key over the length limit, say), the
            -- run is undone and its commands run one by one below, each
            -- answering its own error.
            t := clock_timestamp();
            BEGIN
                WITH src AS (
                    SELECT DISTINCT ON (kq.kk)
                           kq.kk AS key, c.n::int - 1 AS src_cmd,
                           substring(vals FROM (c.e->'v'->(kq.q::int - 1)->>0)::int
                                          FOR (c.e->'v'->(kq.q::int - 1)->>1)::int) AS value,
                           CASE WHEN c.e->>'e' = 'in'
                                THEN t + ((c.e->>'ms')::bigint / 1000) * interval '1 second'
                                       + ((c.e->>'ms')::bigint % 1000) * interval '1 millisecond'
                           END AS exp
                      FROM jsonb_array_elements(ops) WITH ORDINALITY c(e, n),
                           jsonb_array_elements_text(c.e->'keys') WITH ORDINALITY kq(kk, q)
                     WHERE c.n > i AND c.n <= j
                     ORDER BY kq.kk, c.n DESC, kq.q DESC),
                up AS (
                    INSERT INTO cache_entries AS ce (key, value, expires_at)
                    SELECT s.key, s.value, s.exp FROM src s
                    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
                    RETURNING ce.key, ce.version, ce.expires_at)
                SELECT array_agg(s.src_cmd ORDER BY s.src_cmd), array_agg(up.key ORDER BY s.src_cmd),
                       array_agg(up.version ORDER BY s.src_cmd),
                       array_agg(pgmirror_expiry_us(up.expires_at) ORDER BY s.src_cmd)
                  INTO f_cmd, f_key, f_ver, f_exp
                  FROM up JOIN src s ON s.key = up.key;
                ok := true;
            EXCEPTION WHEN OTHERS THEN
                ok := false;
            END;
            IF ok THEN
                reply_int := NULL; reply_bulk := NULL; reply_err := NULL; xact_id := NULL;
                st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
                rec := 'reply'; reply := 'ok';
                FOR ci IN i .. j - 1 LOOP
                    cmd := ci;
                    RETURN NEXT;
                END LOOP;
                rec := 'state'; reply := NULL; st_deleted := false;
                FOR ci IN 1 .. coalesce(cardinality(f_key), 0) LOOP
                    cmd := f_cmd[ci]; st_key := f_key[ci]; st_version := f_ver[ci]; st_expires := f_exp[ci];
                    RETURN NEXT;
                END LOOP;
                changed := changed || f_key;
                i := j;
                CONTINUE;
            END IF;
        END IF;
        IF j = i THEN
            WHILE j < nops AND NOT coalesce(plain[j + 1], false) LOOP
                j := j + 1;
            END LOOP;
        END IF;
        -- Commands i .. j-1, each in its own subtransaction.
        IF i = 0 AND j = nops THEN
            sub := ops;
        ELSE
            sub := (SELECT jsonb_agg(a.e ORDER BY a.n) FROM jsonb_array_elements(ops) WITH ORDINALITY a(e, n)
                     WHERE a.n > i AND a.n <= j);
        END IF;
        FOR r IN SELECT * FROM pgmirror_write_commands(sub, vals, max_value) LOOP
            CONTINUE WHEN r.rec = 'xact';
            IF r.rec = 'state' THEN
                changed := changed || r.st_key;
            END IF;
            cmd := r.cmd + i; rec := r.rec; reply := r.reply; reply_int := r.reply_int;
            reply_bulk := r.reply_bulk; reply_err := r.reply_err; st_key := r.st_key;
            st_version := r.st_version; st_expires := r.st_expires; st_deleted := r.st_deleted;
            st_value := r.st_value; xact_id := NULL;
            RETURN NEXT;
        END LOOP;
        i := j;
    END LOOP;

    PERFORM set_config('pgmirror.write_batch', '', true);
    IF cardinality(changed) > 0 THEN
        -- The batch holds the key lock and the row lock of every changed key
        -- until it commits, so these rows are the state it commits.
        PERFORM pgmirror_publish(ARRAY(
            SELECT CASE
                       WHEN c.key IS NULL
                       THEN 'D ' || nextval('cache_entries_version_seq') || ' ' || pgmirror_b64(convert_to(k.key, 'UTF8'))
                       ELSE pgmirror_set_record(c.key, c.value, c.expires_at, c.version)
                   END
              FROM (SELECT DISTINCT x AS key FROM unnest(changed) x) k
              LEFT JOIN cache_entries c ON c.key = k.key));
    END IF;

    cmd := NULL; rec := 'xact';
    reply := NULL; reply_int := NULL; reply_bulk := NULL; reply_err := NULL;
    st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
    xact_id := pg_current_xact_id_if_assigned()::text::bigint;
    RETURN NEXT;
END
$fn$;

-- Keep whoever could run pgmirror_write able to, and nobody else: copy its
-- grants from the renamed function (a database that revoked PUBLIC keeps it
-- revoked).
DO $grants$
DECLARE
    g record;
    public_ok boolean := true;
BEGIN
    IF (SELECT proacl FROM pg_proc WHERE oid = 'pgmirror_write_commands(jsonb, bytea, bigint)'::regprocedure) IS NOT NULL THEN
        public_ok := false;
    END IF;
    FOR g IN
        SELECT a.grantee
          FROM pg_proc p, aclexplode(p.proacl) a
         WHERE p.oid = 'pgmirror_write_commands(jsonb, bytea, bigint)'::regprocedure
           AND a.privilege_type = 'EXECUTE'
    LOOP
        IF g.grantee = 0 THEN
            public_ok := true;
        ELSE
            EXECUTE format('GRANT EXECUTE ON FUNCTION pgmirror_write(jsonb, bytea, bigint) TO %I',
                           (SELECT rolname FROM pg_roles WHERE oid = g.grantee));
        END IF;
    END LOOP;
    IF NOT public_ok THEN
        REVOKE ALL ON FUNCTION pgmirror_write(jsonb, bytea, bigint) FROM PUBLIC;
    END IF;
END
$grants$;

REVOKE ALL ON FUNCTION pgmirror_write_commands(jsonb, bytea, bigint) FROM PUBLIC;
COMMENT ON FUNCTION pgmirror_write_commands(jsonb, bytea, bigint) IS
    'pgmirror: the commands of pgmirror_write (migrations/0002_write.sql); call pgmirror_write instead, which also notifies';

COMMENT ON FUNCTION pgmirror_write(jsonb, bytea, bigint) IS
    'pgmirror: runs a batch of sidecar write commands (see migrations/0002_write.sql) and notifies its changes once '
    '(0004_write_publish.sql). SECURITY DEFINER: EXECUTE is granted to PUBLIC by default; if it is revoked, or the '
    'sidecar role differs from the owner under a stricter default, GRANT EXECUTE ON FUNCTION pgmirror_write(jsonb, bytea, bigint) TO <sidecar role>';
