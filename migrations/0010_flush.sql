-- pgmirror 0010: FLUSHDB and FLUSHALL. Applied by `pgmirror migrate` inside
-- one transaction with search_path set to "<schema>, pg_temp"; do not add
-- BEGIN/COMMIT here.
--
-- * pgmirror_flush(prefix) deletes every cache entry whose key starts with
--   prefix ('' or NULL: every entry), but for the entries a copy-mode watch
--   maintains (nothing would restore them), and publishes ONE flush record
--   (pgmirror_flush_record, triggers.sql: "P" version prefix kept...) instead
--   of a delete record per key. The prefix is matched with LIKE, its "\", "_"
--   and "%" escaped. It locks cache_entries in SHARE ROW EXCLUSIVE mode
--   first: no other write can commit between its DELETE's snapshot and its
--   commit, so every sidecar, which applies the record at the flush's place
--   in commit order, deletes exactly the keys Postgres deleted.
-- * pgmirror_write runs a batch that is one 'flush' command
--   ({"k":"flush","keys":[],"p":prefix}) with pgmirror_flush; anything else
--   as in 0009. A flush in a batch with other commands answers
--   pgmirror_write_commands' unknown-command error.
--
-- pgmirror_flush is not SECURITY DEFINER: pgmirror_write, which is, calls it
-- as pgmirror's owner; PUBLIC may not execute it. pgmirror_write keeps its
-- signature, owner, grants and everything else it did.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0010_flush.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

CREATE FUNCTION pgmirror_flush(prefix text)
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
LANGUAGE plpgsql
AS $fn$
DECLARE
    -- A record must fit in one payload with its header (triggers.sql).
    room constant int := 7999 - 144 - 1;
    p    text := coalesce(prefix, '');
    keep text[];
    ver  bigint;
    r    text;
BEGIN
    LOCK TABLE cache_entries IN SHARE ROW EXCLUSIVE MODE;
    -- The copy-mode watches whose entries may start with p: a watch's
    -- prefix under p, or p under a watch's prefix.
    keep := ARRAY(SELECT w.prefix FROM pgmirror_watches w
                   WHERE w.mode = 'copy' AND (starts_with(w.prefix, p) OR starts_with(p, w.prefix))
                   ORDER BY w.prefix);
    ver := pg_catalog.nextval('cache_entries_version_seq'::regclass);
    r := pgmirror_flush_record(ver, p, keep);
    IF pg_catalog.octet_length(r) > room THEN
        RAISE EXCEPTION 'ERR FLUSHDB: the prefixes of the copy-mode watches under the namespace do not fit in one notification'
            USING ERRCODE = 'PMERR';
    END IF;
    -- The triggers send nothing for these rows: the record says it all.
    PERFORM pg_catalog.set_config('pgmirror.write_batch'::text, pgmirror_batch_token(), true);
    DELETE FROM cache_entries c
     WHERE c.key LIKE pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(p, '\', '\\'), '_', '\_'), '%', '\%') || '%'
       AND NOT EXISTS (SELECT FROM unnest(keep) k WHERE starts_with(c.key, k));
    PERFORM pg_catalog.set_config('pgmirror.write_batch'::text, ''::text, true);
    PERFORM pgmirror_publish(ARRAY[r]);

    cmd := 0; rec := 'reply'; reply := 'ok';
    RETURN NEXT;
    reply := NULL; rec := 'flush'; st_key := p; st_version := ver;
    RETURN NEXT;
    rec := 'keep'; st_version := NULL;
    FOR i IN 1 .. coalesce(cardinality(keep), 0) LOOP
        st_key := keep[i];
        RETURN NEXT;
    END LOOP;
    cmd := NULL; rec := 'xact'; st_key := NULL;
    xact_id := pg_current_xact_id_if_assigned()::text::bigint;
    RETURN NEXT;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_flush(text) FROM PUBLIC;

-- pgmirror_write as in 0009_records.sql, with a batch of one flush run by
-- pgmirror_flush; nothing else changed.
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

    cmd := NULL; rec := 'xact';
    reply := NULL; reply_int := NULL; reply_bulk := NULL; reply_err := NULL;
    st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
    xact_id := pg_current_xact_id_if_assigned()::text::bigint;
    RETURN NEXT;
END
$fn$;
