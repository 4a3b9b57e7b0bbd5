-- pgmirror 0013: MULTI/EXEC blocks share the group commit. Applied by
-- `pgmirror migrate` inside one transaction with search_path set to
-- "<schema>, pg_temp"; do not add BEGIN/COMMIT here.
--
-- pgmirror_write (as in 0010) learns two commands a block sends:
-- * {"k":"watch","keys":[...],"n":N,"w":[{"key","f","v"}...]} heads a
--   block of the N commands that follow it. "keys" names every key of the
--   block and every watched key, so the batch takes their advisory locks
--   with the batch's others, in the one order every writer shares. Each
--   watched key ("f": found at WATCH, "v": its version then) is read FOR
--   UPDATE; if one differs, or was live and has expired by
--   clock_timestamp(), the head answers 'nil' and the N commands are
--   skipped (they answer nothing: EXEC answers a null array). Otherwise
--   the head answers 'ok'.
-- * {"k":"read","keys":[...]}: the rows of keys at this point of the
--   batch, locked, as 'row' records (st_key, st_value, st_version,
--   st_expires, st_deleted = expired by clock_timestamp(), reply_int = the
--   milliseconds left, -1 for no expiry). The block's reads are answered
--   from them, so they see the block's own earlier writes.
-- * {"k":"pub","keys":[],"p":channel,"v":[[offset,length]]}: PUBLISH in a
--   block; the messages are sent in order after the batch's changes are
--   published (pgmirror_publish_channel, 0012), and answer 'ok'.
-- Nothing else changes: a block's commands run as single commands do (each
-- in its own subtransaction; plain SETs as one upsert), and the batch
-- publishes everything it changed as one unit at its end, so every sidecar
-- applies a block with the rest of its batch, at once.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0013_blocks.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

CREATE OR REPLACE FUNCTION pgmirror_write(ops jsonb, vals bytea, max_value bigint DEFAULT NULL)
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
    wk      jsonb;
    pub_c   text[] := '{}';
    pub_m   bytea[] := '{}';
    wrow    record;
    abort   boolean;
BEGIN
    IF jsonb_typeof(ops) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'pgmirror_write: ops must be a JSON array';
    END IF;
    nops := jsonb_array_length(ops);
    IF nops = 1 AND ops->0->>'k' = 'flush' THEN
        -- FLUSHDB runs alone (the Writer sends it in a batch of its own).
        RETURN QUERY SELECT * FROM pgmirror_flush(ops->0->>'p');
        RETURN;
    END IF;
    PERFORM pg_catalog.set_config('pgmirror.write_batch'::text, pgmirror_batch_token(), true);

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
        IF ops->i->>'k' = 'watch' THEN
            -- The head of a MULTI/EXEC block: its n commands follow. Each
            -- watched key is read under the block's locks, its row locked
            -- too (plain SQL takes no advisory lock, so FOR UPDATE waits for
            -- a writer that holds the row); the block is skipped if a key's
            -- existence or version differs from what WATCH recorded, or if
            -- it was live then and has expired since.
            abort := false;
            FOR wk IN SELECT x FROM jsonb_array_elements(coalesce(ops->i->'w', '[]'::jsonb)) x LOOP
                SELECT ce.version, ce.expires_at IS NULL OR ce.expires_at > clock_timestamp() AS live
                  INTO wrow FROM cache_entries ce WHERE ce.key = wk->>'key' FOR UPDATE;
                IF (wk->>'f')::boolean THEN
                    abort := abort OR NOT FOUND OR wrow.version <> (wk->>'v')::bigint OR NOT wrow.live;
                ELSE
                    abort := abort OR FOUND AND wrow.live;
                END IF;
            END LOOP;
            cmd := i; rec := 'reply'; reply_int := NULL; reply_bulk := NULL; reply_err := NULL; xact_id := NULL;
            st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
            reply := CASE WHEN abort THEN 'nil' ELSE 'ok' END;
            RETURN NEXT;
            IF abort THEN
                i := i + coalesce((ops->i->>'n')::int, 0);
            END IF;
            i := i + 1;
            CONTINUE;
        END IF;
        IF ops->i->>'k' = 'pub' THEN
            -- PUBLISH inside a block: sent after the batch's changes.
            pub_c := pub_c || (ops->i->>'p');
            pub_m := pub_m || substring(vals FROM (ops->i->'v'->0->>0)::int FOR (ops->i->'v'->0->>1)::int);
            cmd := i; rec := 'reply'; reply := 'ok'; reply_int := NULL; reply_bulk := NULL; reply_err := NULL;
            st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL; xact_id := NULL;
            RETURN NEXT;
            i := i + 1;
            CONTINUE;
        END IF;
        IF ops->i->>'k' = 'read' THEN
            -- A read inside a block: the rows of its keys as they stand at
            -- this point of the batch (the block's earlier writes included),
            -- locked. A key without a row has no row here.
            cmd := i; rec := 'row'; reply := NULL; reply_bulk := NULL; reply_err := NULL; xact_id := NULL;
            FOR wrow IN SELECT ce.key, ce.value, ce.version, pgmirror_expiry_us(ce.expires_at) AS exp,
                            ce.expires_at IS NULL OR ce.expires_at > clock_timestamp() AS live,
                            CASE WHEN ce.expires_at IS NULL OR ce.expires_at = 'infinity'::timestamptz THEN -1
                                 ELSE greatest(floor(extract(epoch FROM ce.expires_at - clock_timestamp()) * 1000), 0)::bigint
                            END AS pttl
                       FROM cache_entries ce
                      WHERE ce.key IN (SELECT jsonb_array_elements_text(ops->i->'keys'))
                      ORDER BY ce.key FOR UPDATE LOOP
                st_key := wrow.key; st_value := wrow.value; st_version := wrow.version; st_expires := wrow.exp;
                st_deleted := NOT wrow.live; reply_int := wrow.pttl;
                RETURN NEXT;
            END LOOP;
            i := i + 1;
            CONTINUE;
        END IF;
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
            WHILE j < nops AND NOT coalesce(plain[j + 1], false)
                  AND coalesce(ops->j->>'k', '') NOT IN ('watch', 'read', 'pub') LOOP
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

    PERFORM pg_catalog.set_config('pgmirror.write_batch'::text, ''::text, true);
    IF cardinality(changed) > 0 THEN
        -- The batch holds the key lock and the row lock of every changed key
        -- until it commits, so these rows are the state it commits.
        PERFORM pgmirror_publish(ARRAY(
            SELECT CASE
                       WHEN c.key IS NULL
                       THEN pgmirror_delete_record(k.key)
                       ELSE pgmirror_set_record(c.key, c.value, c.expires_at, c.version)
                   END
              FROM (SELECT DISTINCT x AS key FROM unnest(changed) x) k
              LEFT JOIN cache_entries c ON c.key = k.key));
    END IF;

    -- The block's messages, in order, after its changes: a subscriber that
    -- reads a key when a message arrives finds the batch's state.
    FOR ci IN 1 .. coalesce(cardinality(pub_c), 0) LOOP
        PERFORM pgmirror_publish_channel(pub_c[ci], pub_m[ci]);
    END LOOP;

    cmd := NULL; rec := 'xact';
    reply := NULL; reply_int := NULL; reply_bulk := NULL; reply_err := NULL;
    st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
    xact_id := pg_current_xact_id_if_assigned()::text::bigint;
    RETURN NEXT;
END
$fn$;
