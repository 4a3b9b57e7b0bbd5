-- pgmirror 0003: reactive sources (watches). pgmirror_watch installs
-- triggers on an application table that keep the cache entries under a
-- prefix in step with it, in the application's own transaction:
--
--   copy        the entry prefix || key holds the row as JSON (row_to_json of
--               the chosen columns, UTF-8 bytes); insert/update upsert it,
--               delete deletes it, TRUNCATE deletes the prefix. Cleanup never
--               removes these entries (pgstore.CleanupBatch).
--   invalidate  insert/update/delete delete the entry prefix || key under
--               the key's advisory lock (pgmirror_key_lock, the lock loaders
--               compute under), so the next read recomputes it with a loader
--               and a computation that read the old row is never stored
--               after the change.
--
-- Updates that change no watched column and not the key write nothing.
-- A key longer than 4000 bytes is skipped (WARNING, and counted in a
-- sequence per watch, shown by the view pgmirror_watch_status), never an
-- error in the application's transaction.
--
-- Applied by `pgmirror migrate` inside one transaction with search_path set
-- to "<schema>, pg_temp"; do not add BEGIN/COMMIT here.

DO $guard$
BEGIN
    -- The functions below capture the current search_path; it must end with
    -- pg_temp, or a temporary object could shadow ours.
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0003_watch.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

-- One row per watched table. Maintained by pgmirror_watch and
-- pgmirror_unwatch: a row inserted by hand installs nothing.
CREATE TABLE pgmirror_watches (
    tbl          regclass    PRIMARY KEY,
    key_column   name        NOT NULL,
    prefix       text        NOT NULL UNIQUE
                             CONSTRAINT pgmirror_watches_prefix_check CHECK (prefix <> '' AND octet_length(prefix) < 4000),
    columns      name[]      NULL,          -- NULL: every column
    mode         text        NOT NULL
                             CONSTRAINT pgmirror_watches_mode_check CHECK (mode IN ('copy', 'invalidate')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- A sequence counting the keys skipped because they would be longer than
    -- 4000 bytes. A sequence, not a column: incrementing it takes no row lock,
    -- so application transactions never queue on it. Not transactional: a
    -- skip in a transaction that rolled back is counted too.
    skip_counter regclass    NOT NULL
);

COMMENT ON TABLE pgmirror_watches IS
    'pgmirror: tables whose changes are copied into (copy) or invalidate (invalidate) cache_entries under a prefix; '
    'use pgmirror_watch()/pgmirror_unwatch() or `pgmirror watch`/`pgmirror unwatch`';

-- The watches with their skip counters.
CREATE VIEW pgmirror_watch_status AS
SELECT w.tbl, w.mode, w.prefix, w.key_column, w.columns, w.created_at,
       coalesce(s.last_value, 0) AS skipped_keys
  FROM pgmirror_watches w
  LEFT JOIN pg_class c ON c.oid = w.skip_counter
  LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname;

-- The names of the triggers a watch installs on its table.
CREATE FUNCTION pgmirror_watch_trigger_names() RETURNS name[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '{pgmirror_watch_insert,pgmirror_watch_update,pgmirror_watch_delete,pgmirror_watch_truncate}'::name[] $$;

-- Drops the watch triggers of tbl and the trigger functions they used (and
-- the one pgmirror_watch generated for tbl's oid, if its table is gone);
-- returns how many triggers it dropped.
CREATE FUNCTION pgmirror_watch_drop_triggers(tbl regclass) RETURNS int
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    t   record;
    fns oid[] := '{}';
    f   oid;
    n   int := 0;
BEGIN
    FOR t IN SELECT tg.tgname, tg.tgfoid FROM pg_trigger tg
              WHERE tg.tgrelid = pgmirror_watch_drop_triggers.tbl
                AND tg.tgname = ANY (pgmirror_watch_trigger_names())
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, pgmirror_watch_drop_triggers.tbl);
        fns := fns || t.tgfoid;
        n := n + 1;
    END LOOP;
    -- The function pgmirror_watch generated, even without triggers (the
    -- table was dropped, taking its triggers along).
    fns := fns || to_regprocedure(format('pgmirror_watch_%s()', pgmirror_watch_drop_triggers.tbl::oid))::oid;
    FOR f IN SELECT DISTINCT x FROM unnest(fns) x WHERE x IS NOT NULL LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger tg WHERE tg.tgfoid = f)
           AND EXISTS (SELECT 1 FROM pg_proc p WHERE p.oid = f AND p.proname LIKE 'pgmirror\_watch\_%') THEN
            EXECUTE format('DROP FUNCTION %s', f::regprocedure);
        END IF;
    END LOOP;
    RETURN n;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_watch_drop_triggers(regclass) FROM PUBLIC;

-- pgmirror_watch(tbl, key_column, prefix, columns, mode) makes tbl a source
-- of the cache entries prefix || key_column::text. Calling it again replaces
-- the watch (and re-copies the table in copy mode, which also repairs
-- entries after changes made with the triggers disabled). It returns what it
-- did, as text.
--
-- It runs with the caller's privileges (SECURITY INVOKER): the caller needs
-- to own tbl (or hold TRIGGER on it), CREATE on this schema, and write
-- access to cache_entries and pgmirror_watches. The trigger function it
-- generates is SECURITY DEFINER, owned by the caller, with search_path fixed
-- to "<schema of cache_entries>, pg_temp", so application roles need no
-- privilege on cache_entries and no session setting can redirect it. It also
-- fixes TimeZone (UTC), DateStyle, IntervalStyle, extra_float_digits and
-- bytea_output, so keys and JSON values do not depend on the writing session.
--
-- Installing or replacing a watch takes a SHARE ROW EXCLUSIVE lock on tbl
-- (CREATE TRIGGER; ACCESS EXCLUSIVE when triggers are replaced) until the
-- calling transaction ends: set lock_timeout when the table is busy
-- (`pgmirror watch` does). In copy mode the whole table is copied in that
-- transaction, so no application change can slip between copy and triggers.
CREATE FUNCTION pgmirror_watch(tbl regclass, key_column name, prefix text,
                               columns name[] DEFAULT NULL, mode text DEFAULT 'copy')
RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET "TimeZone" = 'UTC'
SET "DateStyle" = 'ISO, YMD'
SET "IntervalStyle" = 'postgres'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $fn$
DECLARE
    w_tbl    regclass := tbl;
    w_key    name := key_column;
    w_prefix text := prefix;
    w_cols   name[] := columns;
    w_mode   text := lower(mode);
    cache    regclass := 'cache_entries'::regclass;
    cschema  name;
    rel      record;
    knum     int2;
    col      name;
    prev     record;
    counter  text;
    fn       text;
    key_t    text;   -- the key of transition row t, collated "C"
    proj_t   text;   -- the JSON of transition row t
    lat_t    text;   -- the lateral projection of t's chosen columns
    body     text;
    msg      text[] := '{}';
    n        bigint;
    skipped  bigint;
    total    bigint;
    dropped  int;
BEGIN
    IF w_tbl IS NULL OR w_key IS NULL OR w_prefix IS NULL OR w_mode IS NULL THEN
        RAISE EXCEPTION 'pgmirror_watch: tbl, key_column, prefix and mode must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF w_mode NOT IN ('copy', 'invalidate') THEN
        RAISE EXCEPTION 'pgmirror_watch: mode must be copy or invalidate, not %', quote_literal(mode)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF w_prefix = '' THEN
        RAISE EXCEPTION 'pgmirror_watch: the prefix must not be empty (the watch owns every key under it)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(w_prefix) >= 4000 THEN
        RAISE EXCEPTION 'pgmirror_watch: the prefix is % bytes long; keys are at most 4000 bytes', octet_length(w_prefix)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT n.nspname INTO cschema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = cache;
    SELECT c.relkind, c.relowner INTO rel FROM pg_class c WHERE c.oid = w_tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgmirror_watch: no table with oid %', w_tbl::oid USING ERRCODE = 'undefined_table';
    END IF;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgmirror_watch: % is not a table (only tables and partitioned tables can be watched)', w_tbl
            USING ERRCODE = 'wrong_object_type';
    END IF;
    IF w_tbl IN (cache, 'cache_loaders'::regclass, 'pgmirror_watches'::regclass) THEN
        RAISE EXCEPTION 'pgmirror_watch: % is one of pgmirror''s own tables and cannot be watched', w_tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT a.attnum INTO knum FROM pg_attribute a
     WHERE a.attrelid = w_tbl AND a.attname = w_key AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgmirror_watch: table % has no column %', w_tbl, quote_ident(w_key)
            USING ERRCODE = 'undefined_column',
                  HINT = 'Its columns: ' || coalesce((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_attribute a WHERE a.attrelid = w_tbl AND a.attnum > 0 AND NOT a.attisdropped), 'none') || '.';
    END IF;
    IF w_cols IS NOT NULL THEN
        IF cardinality(w_cols) = 0 THEN
            RAISE EXCEPTION 'pgmirror_watch: columns is empty; pass NULL for every column'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOREACH col IN ARRAY w_cols LOOP
            IF col IS NULL OR NOT EXISTS (SELECT 1 FROM pg_attribute a
                WHERE a.attrelid = w_tbl AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped) THEN
                RAISE EXCEPTION 'pgmirror_watch: table % has no column %', w_tbl, coalesce(quote_ident(col), 'NULL')
                    USING ERRCODE = 'undefined_column',
                          HINT = 'Its columns: ' || (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                              FROM pg_attribute a WHERE a.attrelid = w_tbl AND a.attnum > 0 AND NOT a.attisdropped) || '.';
            END IF;
        END LOOP;
        IF (SELECT count(DISTINCT c) FROM unnest(w_cols) c) <> cardinality(w_cols) THEN
            RAISE EXCEPTION 'pgmirror_watch: columns names a column twice' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF w_mode = 'copy' AND NOT EXISTS (SELECT 1 FROM pg_index i
        WHERE i.indrelid = w_tbl AND i.indisunique AND i.indnkeyatts = 1 AND i.indkey[0] = knum AND i.indpred IS NULL) THEN
        RAISE EXCEPTION 'pgmirror_watch: copy mode needs column % of % to be unique (a primary key, or a unique index on it alone), so that one entry mirrors one row',
            quote_ident(w_key), w_tbl
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add a unique index, or use invalidate mode, where many rows may share a key.';
    END IF;

    -- One watch change at a time, so that the prefix checks hold.
    PERFORM pg_advisory_xact_lock(hashtextextended('pgmirror_watches', 0));
    SELECT w.tbl AS other, w.prefix AS other_prefix INTO prev FROM pgmirror_watches w
     WHERE w.tbl <> w_tbl AND (starts_with(w.prefix, w_prefix) OR starts_with(w_prefix, w.prefix))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgmirror_watch: prefix % overlaps prefix % of the watch on %', quote_literal(w_prefix),
            quote_literal(prev.other_prefix), prev.other
            USING ERRCODE = 'unique_violation',
                  HINT = 'Each watch owns every key under its prefix: choose a prefix that neither starts nor is the start of another.';
    END IF;

    SELECT w.* INTO prev FROM pgmirror_watches w WHERE w.tbl = w_tbl;
    IF FOUND THEN
        msg := msg || format('replaced the earlier watch (%s mode, prefix %L)', prev.mode, prev.prefix);
    END IF;
    dropped := pgmirror_watch_drop_triggers(w_tbl);

    -- The skip counter survives a replacement.
    counter := NULL;
    IF prev.skip_counter IS NOT NULL THEN
        SELECT format('%I.%I', sn.nspname, sc.relname) INTO counter
          FROM pg_class sc JOIN pg_namespace sn ON sn.oid = sc.relnamespace WHERE sc.oid = prev.skip_counter;
    END IF;
    IF counter IS NULL THEN
        counter := format('%I.%I', cschema, 'pgmirror_watch_skips_' || w_tbl::oid);
        EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %s', counter);
    END IF;

    key_t := format('(%L || t.%I::text) COLLATE "C"', w_prefix, w_key);
    IF w_cols IS NULL THEN
        proj_t := 'row_to_json(t)::text';
        lat_t := '';
    ELSE
        proj_t := 'row_to_json(r)::text';
        lat_t := 'CROSS JOIN LATERAL (SELECT '
            || (SELECT string_agg(format('t.%I', c), ', ' ORDER BY o) FROM unnest(w_cols) WITH ORDINALITY u(c, o))
            || ') r';
    END IF;

    -- The trigger function. format() fills the template once, so nothing it
    -- substitutes is read as a placeholder: %1$s key of t, %2$s JSON of t,
    -- %3$s the lateral projection, %4$s t has a key, %5$L prefix, %6$L skip
    -- counter, %7$L table name.
    IF w_mode = 'copy' THEN
        body := $tpl$
DECLARE
    ks      text[];
    vs      bytea[];
    dk      text[];
    skipped bigint := 0;
    example text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM cache_entries WHERE starts_with(key, %5$L);
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        WITH n AS (SELECT %1$s AS k, %2$s AS j FROM pgmirror_new t %3$s WHERE %4$s),
             c AS (SELECT DISTINCT ON (k) k, j FROM n ORDER BY k)
        SELECT array_agg(c.k ORDER BY c.k) FILTER (WHERE octet_length(c.k) <= 4000),
               array_agg(convert_to(c.j, 'UTF8') ORDER BY c.k) FILTER (WHERE octet_length(c.k) <= 4000),
               count(*) FILTER (WHERE octet_length(c.k) > 4000),
               min(left(c.k, 60)) FILTER (WHERE octet_length(c.k) > 4000)
          INTO ks, vs, skipped, example
          FROM c;
    ELSIF TG_OP = 'UPDATE' THEN
        -- The entries before and after, by key: upsert those whose JSON
        -- changed, delete the keys that are gone. Unchanged rows cancel out.
        WITH o AS (SELECT %1$s AS k, %2$s AS j FROM pgmirror_old t %3$s WHERE %4$s),
             n AS (SELECT %1$s AS k, %2$s AS j FROM pgmirror_new t %3$s WHERE %4$s),
             c AS (SELECT DISTINCT ON (k) k, j FROM (SELECT k, j FROM n EXCEPT ALL SELECT k, j FROM o) x ORDER BY k),
             d AS (SELECT k FROM o EXCEPT SELECT k FROM n)
        SELECT (SELECT array_agg(c.k ORDER BY c.k) FROM c WHERE octet_length(c.k) <= 4000),
               (SELECT array_agg(convert_to(c.j, 'UTF8') ORDER BY c.k) FROM c WHERE octet_length(c.k) <= 4000),
               (SELECT array_agg(d.k ORDER BY d.k) FROM d WHERE octet_length(d.k) <= 4000),
               (SELECT count(*) FROM c WHERE octet_length(c.k) > 4000),
               (SELECT min(left(c.k, 60)) FROM c WHERE octet_length(c.k) > 4000)
          INTO ks, vs, dk, skipped, example;
    ELSE
        SELECT array_agg(DISTINCT o.k) FILTER (WHERE octet_length(o.k) <= 4000) INTO dk
          FROM (SELECT %1$s AS k FROM pgmirror_old t WHERE %4$s) o;
    END IF;
    IF dk IS NOT NULL THEN
        DELETE FROM cache_entries WHERE key = ANY (dk);
    END IF;
    IF ks IS NOT NULL THEN
        INSERT INTO cache_entries AS e (key, value)
        SELECT u.k, u.v FROM unnest(ks, vs) AS u(k, v)
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL
         WHERE e.value IS DISTINCT FROM EXCLUDED.value OR e.expires_at IS NOT NULL;
    END IF;
    IF skipped > 0 THEN
        PERFORM nextval(%6$L::regclass) FROM generate_series(1, skipped);
        RAISE WARNING 'pgmirror: %% row(s) of %% not cached: the key would be longer than 4000 bytes (%%...)',
            skipped, %7$L, example
            USING HINT = 'Counted in pgmirror_watch_status.skipped_keys.';
    END IF;
    RETURN NULL;
END
$tpl$;
    ELSE
        body := $tpl$
DECLARE
    dk      text[];
    ids     bigint[];
    tag     text;
    budget  bigint;
    used    bigint;
    locked  bigint;
    skipped bigint := 0;
    example text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM cache_entries WHERE starts_with(key, %5$L);
        RETURN NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        -- The keys of rows whose watched columns or key changed, before and after.
        WITH o AS (SELECT %1$s AS k, %2$s AS j FROM pgmirror_old t %3$s WHERE %4$s),
             n AS (SELECT %1$s AS k, %2$s AS j FROM pgmirror_new t %3$s WHERE %4$s),
             d AS (SELECT k FROM (SELECT k, j FROM o EXCEPT ALL SELECT k, j FROM n) x
                   UNION
                   SELECT k FROM (SELECT k, j FROM n EXCEPT ALL SELECT k, j FROM o) y)
        SELECT array_agg(d.k) FILTER (WHERE octet_length(d.k) <= 4000),
               count(*) FILTER (WHERE octet_length(d.k) > 4000),
               min(left(d.k, 60)) FILTER (WHERE octet_length(d.k) > 4000)
          INTO dk, skipped, example
          FROM d;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT array_agg(d.k) FILTER (WHERE octet_length(d.k) <= 4000),
               count(*) FILTER (WHERE octet_length(d.k) > 4000),
               min(left(d.k, 60)) FILTER (WHERE octet_length(d.k) > 4000)
          INTO dk, skipped, example
          FROM (SELECT DISTINCT %1$s AS k FROM pgmirror_new t WHERE %4$s) d;
    ELSE
        SELECT array_agg(d.k) FILTER (WHERE octet_length(d.k) <= 4000) INTO dk
          FROM (SELECT DISTINCT %1$s AS k FROM pgmirror_old t WHERE %4$s) d;
    END IF;
    IF dk IS NOT NULL THEN
        -- The loaders' per-key lock, in ascending id order: a computation
        -- that holds it finishes (and stores) before this delete, and one
        -- that waits for it runs after this transaction, on the new rows.
        -- Each lock holds a slot of the shared lock table until commit, so
        -- a transaction takes at most pgmirror.watch_lock_budget of them
        -- (default 1000): a bulk statement must not fail with "out of
        -- shared memory". The budget used is kept in a session setting
        -- tagged with the transaction id (SET LOCAL would end with this
        -- function, which has SET clauses of its own).
        ids := ARRAY(SELECT DISTINCT pgmirror_key_lock(x) FROM unnest(dk) x ORDER BY 1);
        tag := coalesce(current_setting('pgmirror.watch_lock_budget', true), '');
        budget := CASE WHEN tag ~ '^[0-9]{1,9}$' THEN tag::bigint ELSE 1000 END;
        tag := coalesce(current_setting('pgmirror.watch_locks_used', true), '');
        used := CASE WHEN tag ~ '^[0-9]+:[0-9]{1,9}$' AND split_part(tag, ':', 1) = pg_current_xact_id()::text
                     THEN split_part(tag, ':', 2)::bigint ELSE 0 END;
        locked := least(cardinality(ids), greatest(budget - used, 0));
        IF locked > 0 THEN
            PERFORM pg_advisory_xact_lock(l.id) FROM unnest(ids[1:locked]) AS l(id);
            PERFORM set_config('pgmirror.watch_locks_used', pg_current_xact_id()::text || ':' || (used + locked), false);
        END IF;
        IF locked < cardinality(ids) THEN
            RAISE WARNING 'pgmirror: this transaction invalidates more than %% keys: %% keys of %% were deleted without the loaders'' lock',
                budget, cardinality(ids) - locked, %7$L
                USING DETAIL = 'A loader computing one of them right now may store a value it read before this change; it lives until its ttl.',
                      HINT = 'Raise pgmirror.watch_lock_budget (and max_locks_per_transaction) for bulk changes, or give the loader a ttl.';
        END IF;
        -- Most keys are not cached: look before deleting, so that a
        -- statement that finds nothing does not run (nor fire the
        -- statement triggers of) a DELETE on cache_entries.
        dk := ARRAY(SELECT e.key FROM cache_entries e WHERE e.key = ANY (dk));
        IF cardinality(dk) > 0 THEN
            DELETE FROM cache_entries WHERE key = ANY (dk);
        END IF;
    END IF;
    IF skipped > 0 THEN
        PERFORM nextval(%6$L::regclass) FROM generate_series(1, skipped);
        RAISE WARNING 'pgmirror: %% key(s) of %% not invalidated: the key would be longer than 4000 bytes, so nothing can be cached under it (%%...)',
            skipped, %7$L, example
            USING HINT = 'Counted in pgmirror_watch_status.skipped_keys.';
    END IF;
    RETURN NULL;
END
$tpl$;
    END IF;
    body := format(body, key_t, proj_t, lat_t, format('t.%I IS NOT NULL', w_key), w_prefix, counter, w_tbl::text);

    fn := format('%I.%I', cschema, 'pgmirror_watch_' || w_tbl::oid);
    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %s() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = %I, pg_temp
        SET "TimeZone" = 'UTC'
        SET "DateStyle" = 'ISO, YMD'
        SET "IntervalStyle" = 'postgres'
        SET extra_float_digits = 1
        SET bytea_output = 'hex'
        AS %L$ddl$, fn, cschema, body);
    EXECUTE format('REVOKE ALL ON FUNCTION %s() FROM PUBLIC', fn);
    EXECUTE format('COMMENT ON FUNCTION %s() IS %L', fn,
        format('pgmirror: watch trigger of %s (%s mode, prefix %L); generated by pgmirror_watch', w_tbl, w_mode, w_prefix));

    EXECUTE format('CREATE TRIGGER pgmirror_watch_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS pgmirror_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, fn);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgmirror_old NEW TABLE AS pgmirror_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, fn);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS pgmirror_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, fn);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, fn);
    -- Fire under session_replication_role = replica too (logical
    -- replication apply), as the cache_entries triggers do: a change that
    -- skipped the watch would stay wrong in the cache. Needs the table's owner.
    IF pg_has_role(rel.relowner, 'USAGE') THEN
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER pgmirror_watch_insert, '
                       'ENABLE ALWAYS TRIGGER pgmirror_watch_update, ENABLE ALWAYS TRIGGER pgmirror_watch_delete, '
                       'ENABLE ALWAYS TRIGGER pgmirror_watch_truncate', w_tbl);
    ELSE
        msg := msg || 'note: not the table''s owner, so the triggers do not fire under session_replication_role = replica'::text;
    END IF;

    INSERT INTO pgmirror_watches AS w (tbl, key_column, prefix, columns, mode, skip_counter)
    VALUES (w_tbl, w_key, w_prefix, w_cols, w_mode, counter::regclass)
    ON CONFLICT ON CONSTRAINT pgmirror_watches_pkey DO UPDATE SET key_column = EXCLUDED.key_column, prefix = EXCLUDED.prefix,
        columns = EXCLUDED.columns, mode = EXCLUDED.mode, created_at = now(), skip_counter = EXCLUDED.skip_counter;

    -- Entries an earlier copy-mode watch kept, that nothing keeps any more.
    IF prev.mode = 'copy' AND (prev.prefix <> w_prefix OR w_mode <> 'copy') THEN
        DELETE FROM cache_entries e WHERE starts_with(e.key, prev.prefix);
        GET DIAGNOSTICS n = ROW_COUNT;
        msg := msg || format('removed %s entries of the earlier copy under %L', n, prev.prefix);
    END IF;

    IF w_mode = 'copy' THEN
        -- Make the prefix equal to the table: the triggers' lock on it keeps
        -- writers out until this transaction ends, so nothing is missed.
        EXECUTE format($q$
            DELETE FROM cache_entries e WHERE starts_with(e.key, %L) AND NOT EXISTS (
                SELECT 1 FROM %s t WHERE %s AND %s = e.key)$q$,
            w_prefix, w_tbl, format('t.%I IS NOT NULL', w_key), key_t);
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            msg := msg || format('removed %s entries under %L that match no row', n, w_prefix);
        END IF;
        EXECUTE format($q$
            INSERT INTO cache_entries AS e (key, value)
            SELECT DISTINCT ON (s.k) s.k, convert_to(s.j, 'UTF8')
              FROM (SELECT %s AS k, %s AS j FROM %s t %s WHERE %s) s
             WHERE octet_length(s.k) <= 4000
             ORDER BY s.k
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL
             WHERE e.value IS DISTINCT FROM EXCLUDED.value OR e.expires_at IS NOT NULL$q$,
            key_t, proj_t, w_tbl, lat_t, format('t.%I IS NOT NULL', w_key));
        GET DIAGNOSTICS n = ROW_COUNT;
        EXECUTE format('SELECT count(*), count(*) FILTER (WHERE octet_length(%s) > 4000) FROM %s t WHERE %s',
            key_t, w_tbl, format('t.%I IS NOT NULL', w_key)) INTO total, skipped;
        msg := msg || (format('copied %s rows of %s: %s entries written, the others were up to date',
            total - skipped, w_tbl, n) || CASE WHEN skipped > 0
            THEN format('; %s rows skipped: their keys would be longer than 4000 bytes', skipped) ELSE '' END);
    ELSIF NOT EXISTS (SELECT 1 FROM cache_loaders l WHERE starts_with(w_prefix, l.prefix)) THEN
        msg := msg || format('note: no loader in cache_loaders covers %L: invalidated keys stay absent until one is added', w_prefix);
    END IF;

    RETURN format('watching %s in %s mode: keys %L || %I, %s', w_tbl, w_mode, w_prefix, w_key,
                  CASE WHEN w_cols IS NULL THEN 'all columns'
                       ELSE 'columns ' || array_to_string(ARRAY(SELECT quote_ident(c) FROM unnest(w_cols) c), ', ') END)
           || CASE WHEN cardinality(msg) > 0 THEN E'\n' || array_to_string(msg, E'\n') ELSE '' END;
END
$fn$;

COMMENT ON FUNCTION pgmirror_watch(regclass, name, text, name[], text) IS
    'pgmirror: keep cache entries prefix || key_column in step with tbl (mode copy: the row as JSON; invalidate: delete under the key lock); calling it again replaces the watch';

-- pgmirror_unwatch(tbl) removes the watch of tbl: its triggers, trigger
-- function, skip counter and row. In copy mode it also deletes the entries
-- under the prefix, since nothing would keep them current; in invalidate
-- mode the entries stay (loaders computed them; they expire with their ttl).
-- Unwatching a table that is not watched does nothing.
CREATE FUNCTION pgmirror_unwatch(tbl regclass) RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    w_tbl   regclass := tbl;
    prev    record;
    dropped int;
    n       bigint;
    out     text;
BEGIN
    IF w_tbl IS NULL THEN
        RAISE EXCEPTION 'pgmirror_unwatch: tbl must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('pgmirror_watches', 0));
    SELECT w.* INTO prev FROM pgmirror_watches w WHERE w.tbl = w_tbl;
    dropped := pgmirror_watch_drop_triggers(w_tbl);
    IF prev.tbl IS NULL THEN
        IF dropped > 0 THEN
            RETURN format('%s was not recorded as watched; dropped %s leftover watch triggers', w_tbl, dropped);
        END IF;
        RETURN format('nothing to do: %s is not watched', w_tbl);
    END IF;
    DELETE FROM pgmirror_watches w WHERE w.tbl = w_tbl;
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = prev.skip_counter) THEN
        EXECUTE format('DROP SEQUENCE %s', prev.skip_counter);
    END IF;
    out := format('stopped watching %s (%s mode, prefix %L): dropped %s triggers', w_tbl, prev.mode, prev.prefix, dropped);
    IF prev.mode = 'copy' THEN
        DELETE FROM cache_entries e WHERE starts_with(e.key, prev.prefix);
        GET DIAGNOSTICS n = ROW_COUNT;
        out := out || format(E'\nremoved %s entries under %L (nothing would keep them current)', n, prev.prefix);
    END IF;
    RETURN out;
END
$fn$;

COMMENT ON FUNCTION pgmirror_unwatch(regclass) IS
    'pgmirror: remove the watch of tbl (triggers, row; in copy mode also its entries)';
