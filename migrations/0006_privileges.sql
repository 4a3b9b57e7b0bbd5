-- pgmirror 0006: privileges (issue 15). Applied by `pgmirror migrate` inside
-- one transaction with search_path set to "<schema>, pg_temp"; do not add
-- BEGIN/COMMIT here. See docs/security.md for the threat model and the roles.
--
-- * The roles: pgmirror_sidecar (the sidecars' login roles are its members)
--   and pgmirror_writer (applications that write cache_entries with plain
--   SQL), created here if absent. The migrating role, unless it is a
--   superuser, becomes a member of pgmirror_sidecar, so a deployment where
--   sidecars and migrate share one role keeps working.
-- * pgmirror_write is SECURITY DEFINER: EXECUTE only for pgmirror_sidecar,
--   not PUBLIC (finding 1); the calls of its publishing step, and of the
--   helpers it shares with the watches, are typed and schema-qualified, so a
--   same-named function elsewhere (public.nextval(text)) cannot capture
--   them (finding 8).
-- * Watches (finding 2): the generated trigger function runs as the role
--   that writes the watched table (SECURITY INVOKER), so row_to_json, key
--   casts and everything else the table's owner controls run with that
--   role's privileges; it hands keys and values to a narrow SECURITY DEFINER
--   function per watch, which only writes cache_entries under the watch's
--   prefix, only from a trigger, and only for the roles that could write the
--   table when the watch was installed. Existing watches are regenerated.
--
-- `pgmirror migrate` then (migrations.go, every run) fixes search_path to
-- "pg_catalog, <schema>, pg_temp" on every SECURITY DEFINER function of
-- pgmirror, revokes EXECUTE from PUBLIC on them, and, when it runs as a
-- superuser, hands pgmirror's tables, sequences and functions to the NOLOGIN
-- role pgmirror_owner: no SECURITY DEFINER function runs as a superuser.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0006_privileges.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

-- The roles. Roles belong to the cluster, not the database: another
-- database's migrate may create them at the same moment (then ours fails on
-- the unique name, and the role exists).
DO $roles$
DECLARE
    r     text;
    me    name := current_user;
    super boolean := (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
BEGIN
    FOREACH r IN ARRAY ARRAY['pgmirror_sidecar', 'pgmirror_writer'] LOOP
        CONTINUE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'pgmirror needs the role %, and role % may not create roles', r, me
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = format('Have a superuser run: CREATE ROLE pgmirror_sidecar NOLOGIN; CREATE ROLE pgmirror_writer NOLOGIN; '
                                        'GRANT pgmirror_sidecar TO %I; then run pgmirror migrate again.', me);
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- created meanwhile by a migrate of another database
        END;
    END LOOP;
    -- Sidecars that connect as the migrating role (one role for everything,
    -- as before this migration) keep their rights, including silencing the
    -- notify triggers during their own write batches. A superuser has them.
    IF NOT super AND NOT pg_has_role(me, 'pgmirror_sidecar', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT pgmirror_sidecar TO %I', me);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'role % may not make itself a member of pgmirror_sidecar', me
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('Have a superuser run: GRANT pgmirror_sidecar TO %I; then run pgmirror migrate again.', me);
        END;
    END IF;
END
$roles$;

-- What a sidecar runs (pgstore, jobs, listener), and nothing more:
--   snapshot, fetch, re-checks, range checksums  SELECT, LOCK ... ACCESS SHARE
--   loaders store                 INSERT (key, value, expires_at) ... ON CONFLICT DO UPDATE SET value, expires_at
--                                 (the version column's default takes nextval: USAGE on the sequence)
--   refresh claim/release/store   UPDATE (value, expires_at, is_refreshing, refresh_started_at), DELETE
--   access-time flush             UPDATE (last_accessed_at)
--   cleanup                       DELETE, SELECT ... FOR UPDATE (needs an UPDATE privilege), SELECT pgmirror_watches
--   loaders                       SELECT cache_loaders (their queries need SELECT on what they read)
--   writes                        EXECUTE pgmirror_write
--   payload format 2              SELECT pgmirror_secret (migration 0005), when it exists
-- Everything else it calls (pgmirror_key_lock, pg_notify, advisory locks)
-- is executable by PUBLIC and grants nothing.
DO $grants$
DECLARE
    s name := current_schema();
BEGIN
    -- The schema's owner (or a superuser) can grant USAGE; any other
    -- migrating role leaves that to the DBA (docs/security.md).
    IF has_schema_privilege(s, 'USAGE WITH GRANT OPTION') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgmirror_sidecar, pgmirror_writer', s);
    END IF;
    IF to_regclass('pgmirror_secret') IS NOT NULL THEN
        EXECUTE 'GRANT SELECT ON pgmirror_secret TO pgmirror_sidecar';
    END IF;
END
$grants$;

GRANT SELECT, DELETE ON cache_entries TO pgmirror_sidecar;
GRANT INSERT (key, value, expires_at) ON cache_entries TO pgmirror_sidecar;
GRANT UPDATE (value, expires_at, last_accessed_at, is_refreshing, refresh_started_at) ON cache_entries TO pgmirror_sidecar;
GRANT SELECT ON cache_loaders, pgmirror_watches TO pgmirror_sidecar;
GRANT USAGE ON SEQUENCE cache_entries_version_seq TO pgmirror_sidecar, pgmirror_writer;

-- Applications that write the cache with plain SQL. The triggers stamp a
-- version and notify whatever they write, so these grants reach nothing but
-- the rows of cache_entries.
GRANT SELECT, INSERT, UPDATE, DELETE ON cache_entries TO pgmirror_writer;

-- Typed and schema-qualified versions of 0002's helpers: pgmirror_write and
-- the watch functions call them with their owner's rights, and an untyped
-- literal or an implicit cast would let an exact-typed function of the same
-- name elsewhere on the search_path win (hashtextextended(text, integer)).
CREATE OR REPLACE FUNCTION pgmirror_key_lock(key text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_catalog.hashtextextended(key, 0::bigint) $$;

CREATE OR REPLACE FUNCTION pgmirror_expiry_us(ts timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN ts IS NULL OR ts = 'infinity'::timestamptz THEN NULL::bigint
        WHEN ts = '-infinity'::timestamptz THEN 0::bigint
        ELSE (EXTRACT(epoch FROM ts) * 1000000::numeric)::bigint
    END
$$;

-- pgmirror_write as in 0004_write_publish.sql, with the calls of its
-- publishing step typed and qualified (pg_catalog.nextval(...::regclass):
-- nextval('...') took any nextval(text) on the search_path).
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
                       THEN 'D '::text || pg_catalog.nextval('cache_entries_version_seq'::regclass)::text || ' '::text
                            || pgmirror_b64(pg_catalog.convert_to(k.key, 'UTF8'::name))
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

-- Finding 1: no EXECUTE for PUBLIC (a role with only CONNECT could write and
-- delete any key through it). Grants made to other roles stay.
REVOKE ALL ON FUNCTION pgmirror_write(jsonb, bytea, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_write_commands(jsonb, bytea, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgmirror_write(jsonb, bytea, bigint) TO pgmirror_sidecar;

COMMENT ON FUNCTION pgmirror_write(jsonb, bytea, bigint) IS
    'pgmirror: runs a batch of sidecar write commands (see migrations/0002_write.sql) and notifies its changes once '
    '(0004_write_publish.sql). SECURITY DEFINER: executable by pgmirror_sidecar only; make a sidecar''s login role '
    'a member: GRANT pgmirror_sidecar TO <role>';

-- ---------------------------------------------------------------------------
-- Watches (0003_watch.sql), finding 2.
-- ---------------------------------------------------------------------------

-- The roles that may write tbl (insert, update, delete or truncate it, or
-- some of its columns): its owner, the grantees of those privileges (0 for
-- PUBLIC) and pg_write_all_data. Members of these roles inherit.
CREATE OR REPLACE FUNCTION pgmirror_watch_writers(tbl regclass) RETURNS oid[]
LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $fn$
    SELECT ARRAY(
        SELECT DISTINCT g FROM (
            SELECT c.relowner FROM pg_class c WHERE c.oid = tbl
            UNION ALL
            SELECT a.grantee FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = tbl AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
            UNION ALL
            SELECT a.grantee FROM pg_attribute att, aclexplode(att.attacl) a
             WHERE att.attrelid = tbl AND att.attnum > 0 AND a.privilege_type IN ('INSERT', 'UPDATE')
            UNION ALL
            SELECT r.oid FROM pg_roles r WHERE r.rolname = 'pg_write_all_data'
        ) w(g)
        ORDER BY 1)
$fn$;

-- Code that reading tbl as pgmirror_watch's copy does (row_to_json of the
-- watched columns, the key column cast to text, row-level security) would
-- run with the caller's privileges although another role controls it: a
-- function cast to json from a type of a watched column (through domains,
-- arrays and composites, as row_to_json looks them up), a function cast to
-- text from the key column's type, and the policies of the table when they
-- apply to the caller. Code is harmless when its owner is a superuser, or
-- could become both the session's role and the current role anyway (SET
-- ROLE would take code running as a less privileged role back to the
-- session's role, so both count). Returns one description per hazard.
CREATE OR REPLACE FUNCTION pgmirror_watch_hazards(tbl regclass, key_column name, columns name[]) RETURNS text[]
LANGUAGE sql STABLE SET search_path FROM CURRENT
AS $fn$
    WITH RECURSIVE json_types(typ) AS (
        SELECT a.atttypid FROM pg_attribute a
         WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
           AND (columns IS NULL OR a.attname = ANY (columns))
        UNION
        SELECT n.typ FROM json_types j JOIN pg_type t ON t.oid = j.typ
         CROSS JOIN LATERAL (
            SELECT t.typbasetype WHERE t.typbasetype <> 0
            UNION ALL SELECT t.typelem WHERE t.typelem <> 0
            UNION ALL SELECT a.atttypid FROM pg_attribute a
                       WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
         ) n(typ)
    ), key_types(typ) AS (
        SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = key_column
        UNION
        SELECT t.typbasetype FROM key_types k JOIN pg_type t ON t.oid = k.typ WHERE t.typbasetype <> 0
    ), code(what, owner) AS (
        SELECT format('the cast from %s to json (%s)', c.castsource::regtype, c.castfunc::regprocedure), p.proowner
          FROM pg_cast c JOIN json_types j ON j.typ = c.castsource JOIN pg_proc p ON p.oid = c.castfunc
         WHERE c.casttarget = 'json'::regtype
        UNION ALL
        SELECT format('the cast from %s to text (%s)', c.castsource::regtype, c.castfunc::regprocedure), p.proowner
          FROM pg_cast c JOIN key_types k ON k.typ = c.castsource JOIN pg_proc p ON p.oid = c.castfunc
         WHERE c.casttarget = 'text'::regtype
        UNION ALL
        SELECT format('the row-level security policies of %s', c.oid::regclass), c.relowner
          FROM pg_class c, pg_roles me
         WHERE c.oid = tbl AND c.relrowsecurity AND me.rolname = current_user
           AND NOT me.rolsuper AND NOT me.rolbypassrls
           AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
    )
    SELECT coalesce(array_agg(DISTINCT format('%s, controlled by role %I', c.what, r.rolname)), '{}')
      FROM code c JOIN pg_roles r ON r.oid = c.owner
     WHERE NOT r.rolsuper
       AND NOT (pg_has_role(c.owner, session_user, 'MEMBER') AND pg_has_role(c.owner, current_user, 'MEMBER'))
$fn$;

-- Drops the watch triggers of tbl and the functions they used (and the ones
-- pgmirror_watch generated for tbl's oid, if its table is gone); returns how
-- many triggers it dropped. As in 0003, plus the write function.
CREATE OR REPLACE FUNCTION pgmirror_watch_drop_triggers(tbl regclass) RETURNS int
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
    fns := fns || to_regprocedure(format('pgmirror_watch_%s()', pgmirror_watch_drop_triggers.tbl::oid))::oid
               || to_regprocedure(format('pgmirror_watch_%s_write(text, text[], bytea[], text[], bigint)',
                                         pgmirror_watch_drop_triggers.tbl::oid))::oid;
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

-- pgmirror_watch_install(tbl) (re)generates the two functions of tbl's watch
-- from its row in pgmirror_watches, grants, and returns notes for the caller:
--
--   pgmirror_watch_<oid>()        the trigger function, SECURITY INVOKER: it
--                                 runs as the role that wrote tbl, computes
--                                 the keys (and in copy mode the JSON values)
--                                 from the transition tables, and passes them
--                                 to the write function;
--   pgmirror_watch_<oid>_write()  SECURITY DEFINER, owned by pgmirror's owner
--                                 (the owner of cache_entries) when a
--                                 superuser installs it, else by the caller:
--                                 it only writes (copy) or deletes
--                                 (invalidate) keys under the watch's prefix,
--                                 refuses to run outside a trigger, and only
--                                 the roles that may write tbl now (its owner,
--                                 grantees of INSERT, UPDATE, DELETE or
--                                 TRUNCATE, pg_write_all_data) may execute it.
--
-- Both fix search_path to "pg_catalog, <schema of cache_entries>, pg_temp";
-- the trigger also fixes TimeZone, DateStyle, IntervalStyle,
-- extra_float_digits and bytea_output, so keys and values do not depend on
-- the writing session. It replaces functions only (the triggers keep
-- pointing at the same function), so it takes no lock on tbl. A role granted
-- writes on tbl later gets an error naming `pgmirror watch`, which grants
-- again. Nothing here runs code of tbl's owner.
CREATE OR REPLACE FUNCTION pgmirror_watch_install(tbl regclass) RETURNS text[]
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    w        record;
    cache    regclass := 'cache_entries'::regclass;
    cschema  name;
    cowner   oid;
    qcache   text;
    counter  text;
    wfn      text;
    wsig     text;
    wfn_oid  oid;
    tfn      text;
    key_t    text;
    proj_t   text;
    lat_t    text;
    keyok    text;
    wbody    text;
    tbody    text;
    g        oid;
    gname    text;
    owner_to oid;
    notes    text[] := '{}';
    missing  text[] := '{}';
BEGIN
    SELECT * INTO w FROM pgmirror_watches pw WHERE pw.tbl = pgmirror_watch_install.tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgmirror_watch_install: % is not watched', tbl USING ERRCODE = 'undefined_object';
    END IF;
    SELECT n.nspname, c.relowner INTO cschema, cowner
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = cache;
    qcache := format('%I.cache_entries', cschema);
    SELECT format('%I.%I', sn.nspname, sc.relname) INTO counter
      FROM pg_class sc JOIN pg_namespace sn ON sn.oid = sc.relnamespace WHERE sc.oid = w.skip_counter;
    wfn := format('%I.%I', cschema, 'pgmirror_watch_' || tbl::oid || '_write');
    wsig := wfn || '(text, text[], bytea[], text[], bigint)';
    tfn := format('%I.%I', cschema, 'pgmirror_watch_' || tbl::oid);

    -- A superuser hands what it generates to pgmirror's owner, so that no
    -- SECURITY DEFINER function runs as a superuser; before migrate has
    -- handed cache_entries over (0006 regenerating watches), migrate does it.
    owner_to := CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
                      AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = cowner)
                     THEN cowner END;
    IF NOT (SELECT bool_and(has_table_privilege(coalesce(owner_to, (SELECT oid FROM pg_roles WHERE rolname = current_user)), cache, p))
              FROM unnest(CASE w.mode WHEN 'copy' THEN '{SELECT,INSERT,UPDATE,DELETE}'::text[] ELSE '{SELECT,DELETE}'::text[] END) p) THEN
        RAISE EXCEPTION 'pgmirror_watch: the watch''s write function would run as role %, which may not write cache_entries',
            coalesce((SELECT rolname FROM pg_roles WHERE oid = owner_to), current_user::text)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Run pgmirror watch as the role that ran pgmirror migrate, or as a superuser.';
    END IF;

    key_t := format('(%L::text || t.%I::text) COLLATE "C"', w.prefix, w.key_column);
    keyok := format('t.%I IS NOT NULL', w.key_column);
    IF w.columns IS NULL THEN
        proj_t := 'row_to_json(t)::text';
        lat_t := '';
    ELSE
        proj_t := 'row_to_json(r)::text';
        lat_t := 'CROSS JOIN LATERAL (SELECT '
            || (SELECT string_agg(format('t.%I', c), ', ' ORDER BY o) FROM unnest(w.columns) WITH ORDINALITY u(c, o))
            || ') r';
    END IF;

    -- The write function. %1$L prefix, %2$s cache_entries, %3$L skip
    -- counter, %4$L table, %5$L the function, %6$s pgmirror_key_lock.
    IF w.mode = 'copy' THEN
        wbody := $tpl$
BEGIN
    IF pg_catalog.pg_trigger_depth() = 0 THEN
        RAISE EXCEPTION '%% only runs in the watch trigger of %%', %5$L, %4$L USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF op = 'TRUNCATE' THEN
        DELETE FROM %2$s e WHERE pg_catalog.starts_with(e.key, %1$L::text);
        RETURN;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.unnest(pg_catalog.array_cat(ks, dk)) k WHERE NOT pg_catalog.starts_with(k, %1$L::text)) THEN
        RAISE EXCEPTION '%% writes only keys under %%', %5$L, %1$L USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF dk IS NOT NULL THEN
        DELETE FROM %2$s e WHERE e.key = ANY (dk);
    END IF;
    IF ks IS NOT NULL THEN
        INSERT INTO %2$s AS e (key, value)
        SELECT u.k, u.v FROM ROWS FROM (pg_catalog.unnest(ks), pg_catalog.unnest(vs)) AS u(k, v)
        ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL
         WHERE e.value IS DISTINCT FROM EXCLUDED.value OR e.expires_at IS NOT NULL;
    END IF;
    IF skipped > 0 THEN
        PERFORM pg_catalog.nextval(%3$L::regclass) FROM pg_catalog.generate_series(1::bigint, skipped);
    END IF;
END
$tpl$;
    ELSE
        wbody := $tpl$
DECLARE
    ids    bigint[];
    tag    text;
    budget bigint;
    used   bigint;
    locked bigint;
BEGIN
    IF pg_catalog.pg_trigger_depth() = 0 THEN
        RAISE EXCEPTION '%% only runs in the watch trigger of %%', %5$L, %4$L USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF op = 'TRUNCATE' THEN
        DELETE FROM %2$s e WHERE pg_catalog.starts_with(e.key, %1$L::text);
        RETURN;
    END IF;
    IF ks IS NOT NULL OR vs IS NOT NULL
       OR EXISTS (SELECT FROM pg_catalog.unnest(dk) k WHERE NOT pg_catalog.starts_with(k, %1$L::text)) THEN
        RAISE EXCEPTION '%% only deletes keys under %%', %5$L, %1$L USING ERRCODE = 'insufficient_privilege';
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
        -- function, which has a SET clause of its own).
        ids := ARRAY(SELECT DISTINCT %6$s(x) FROM pg_catalog.unnest(dk) x ORDER BY 1);
        tag := coalesce(pg_catalog.current_setting('pgmirror.watch_lock_budget'::text, true), ''::text);
        budget := CASE WHEN tag ~ '^[0-9]{1,9}$'::text THEN tag::bigint ELSE 1000::bigint END;
        tag := coalesce(pg_catalog.current_setting('pgmirror.watch_locks_used'::text, true), ''::text);
        used := CASE WHEN tag ~ '^[0-9]+:[0-9]{1,9}$'::text
                      AND pg_catalog.split_part(tag, ':'::text, 1) = pg_catalog.pg_current_xact_id()::text
                     THEN pg_catalog.split_part(tag, ':'::text, 2)::bigint ELSE 0::bigint END;
        locked := least(pg_catalog.cardinality(ids)::bigint, greatest(budget - used, 0::bigint));
        IF locked > 0 THEN
            PERFORM pg_catalog.pg_advisory_xact_lock(l.id) FROM pg_catalog.unnest(ids[1:locked]) AS l(id);
            PERFORM pg_catalog.set_config('pgmirror.watch_locks_used'::text,
                pg_catalog.pg_current_xact_id()::text || ':'::text || (used + locked)::text, false);
        END IF;
        IF locked < pg_catalog.cardinality(ids) THEN
            RAISE WARNING 'pgmirror: this transaction invalidates more than %% keys: %% keys of %% were deleted without the loaders'' lock',
                budget, pg_catalog.cardinality(ids) - locked, %4$L
                USING DETAIL = 'A loader computing one of them right now may store a value it read before this change; it lives until its ttl.',
                      HINT = 'Raise pgmirror.watch_lock_budget (and max_locks_per_transaction) for bulk changes, or give the loader a ttl.';
        END IF;
        -- Most keys are not cached: look before deleting, so that a
        -- statement that finds nothing does not run (nor fire the
        -- statement triggers of) a DELETE on cache_entries.
        dk := ARRAY(SELECT e.key FROM %2$s e WHERE e.key = ANY (dk));
        IF pg_catalog.cardinality(dk) > 0 THEN
            DELETE FROM %2$s e WHERE e.key = ANY (dk);
        END IF;
    END IF;
    IF skipped > 0 THEN
        PERFORM pg_catalog.nextval(%3$L::regclass) FROM pg_catalog.generate_series(1::bigint, skipped);
    END IF;
END
$tpl$;
    END IF;
    wbody := format(wbody, w.prefix, qcache, counter, tbl::text, wfn, format('%I.pgmirror_key_lock', cschema));
    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %s(op text, ks text[], vs bytea[], dk text[], skipped bigint) RETURNS void
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, %I, pg_temp
        AS %L$ddl$, wfn, cschema, wbody);
    wfn_oid := wsig::regprocedure::oid;

    -- The trigger function. %1$s key of t, %2$s JSON of t, %3$s the lateral
    -- projection, %4$s t has a key, %5$s the write function, %6$s its oid,
    -- %7$L table name, %8$s oid of the schema.
    IF w.mode = 'copy' THEN
        tbody := $tpl$
DECLARE
    ks      text[];
    vs      bytea[];
    dk      text[];
    skipped bigint := 0;
    example text;
BEGIN
    IF TG_OP = 'INSERT' THEN
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
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(DISTINCT o.k) FILTER (WHERE octet_length(o.k) <= 4000) INTO dk
          FROM (SELECT %1$s AS k FROM pgmirror_old t WHERE %4$s) o;
    END IF;
    IF TG_OP = 'TRUNCATE' OR ks IS NOT NULL OR dk IS NOT NULL OR skipped > 0 THEN
        IF NOT (has_schema_privilege(%8$s::oid, 'USAGE') AND has_function_privilege(%6$s::oid, 'EXECUTE')) THEN
            RAISE EXCEPTION 'pgmirror: role %% may write %% but not its cache entries', current_user, %7$L
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'A watch lets the roles that could write the table when `pgmirror watch` ran update its cache entries; this role could not then.',
                      HINT = 'Run `pgmirror watch` for this table again: it grants the roles that may write it now.';
        END IF;
        PERFORM %5$s(TG_OP, ks, vs, dk, skipped);
    END IF;
    IF skipped > 0 THEN
        RAISE WARNING 'pgmirror: %% row(s) of %% not cached: the key would be longer than 4000 bytes (%%...)',
            skipped, %7$L, example
            USING HINT = 'Counted in pgmirror_watch_status.skipped_keys.';
    END IF;
    RETURN NULL;
END
$tpl$;
    ELSE
        tbody := $tpl$
DECLARE
    dk      text[];
    skipped bigint := 0;
    example text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
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
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(d.k) FILTER (WHERE octet_length(d.k) <= 4000) INTO dk
          FROM (SELECT DISTINCT %1$s AS k FROM pgmirror_old t WHERE %4$s) d;
    END IF;
    IF TG_OP = 'TRUNCATE' OR dk IS NOT NULL OR skipped > 0 THEN
        IF NOT (has_schema_privilege(%8$s::oid, 'USAGE') AND has_function_privilege(%6$s::oid, 'EXECUTE')) THEN
            RAISE EXCEPTION 'pgmirror: role %% may write %% but not invalidate its cache entries', current_user, %7$L
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'A watch lets the roles that could write the table when `pgmirror watch` ran invalidate its cache entries; this role could not then.',
                      HINT = 'Run `pgmirror watch` for this table again: it grants the roles that may write it now.';
        END IF;
        PERFORM %5$s(TG_OP, NULL::text[], NULL::bytea[], dk, skipped);
    END IF;
    IF skipped > 0 THEN
        RAISE WARNING 'pgmirror: %% key(s) of %% not invalidated: the key would be longer than 4000 bytes, so nothing can be cached under it (%%...)',
            skipped, %7$L, example
            USING HINT = 'Counted in pgmirror_watch_status.skipped_keys.';
    END IF;
    RETURN NULL;
END
$tpl$;
    END IF;
    tbody := format(tbody, key_t, proj_t, lat_t, keyok, wfn, wfn_oid, tbl::text,
                    (SELECT oid FROM pg_namespace WHERE nspname = cschema));
    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %s() RETURNS trigger
        LANGUAGE plpgsql SECURITY INVOKER
        SET search_path = pg_catalog, %I, pg_temp
        SET "TimeZone" = 'UTC'
        SET "DateStyle" = 'ISO, YMD'
        SET "IntervalStyle" = 'postgres'
        SET extra_float_digits = 1
        SET bytea_output = 'hex'
        AS %L$ddl$, tfn, cschema, tbody);

    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', wsig);
    EXECUTE format('REVOKE ALL ON FUNCTION %s() FROM PUBLIC', tfn);
    EXECUTE format('COMMENT ON FUNCTION %s() IS %L', tfn,
        format('pgmirror: watch trigger of %s (%s mode, prefix %L); generated by pgmirror_watch', tbl, w.mode, w.prefix));
    EXECUTE format('COMMENT ON FUNCTION %s IS %L', wsig,
        format('pgmirror: writes the cache entries of the watch of %s (%s mode, prefix %L) for its trigger; generated by pgmirror_watch',
               tbl, w.mode, w.prefix));
    IF owner_to IS NOT NULL THEN
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', wsig, (SELECT rolname FROM pg_roles WHERE oid = owner_to));
        EXECUTE format('ALTER FUNCTION %s() OWNER TO %I', tfn, (SELECT rolname FROM pg_roles WHERE oid = owner_to));
        IF (SELECT rolsuper FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = w.skip_counter) THEN
            EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', counter, (SELECT rolname FROM pg_roles WHERE oid = owner_to));
        END IF;
    END IF;
    IF NOT has_sequence_privilege((SELECT proowner FROM pg_proc WHERE oid = wfn_oid), w.skip_counter, 'UPDATE') THEN
        EXECUTE format('GRANT UPDATE ON SEQUENCE %s TO %I', counter,
                       (SELECT rolname FROM pg_roles r JOIN pg_proc p ON p.proowner = r.oid WHERE p.oid = wfn_oid));
    END IF;

    -- Who may run the write function: the roles that may write tbl now, and
    -- the two roles that may write cache_entries anyway (it gives them
    -- nothing), so that an application role that is a member of
    -- pgmirror_writer needs no new watch when it is granted writes on tbl.
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pgmirror_writer, pgmirror_sidecar', wsig);
    FOREACH g IN ARRAY pgmirror_watch_writers(tbl) LOOP
        gname := CASE WHEN g = 0 THEN 'PUBLIC' ELSE quote_ident((SELECT rolname FROM pg_roles WHERE oid = g)) END;
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', wsig, gname);
        -- The trigger calls it by name, in pgmirror's schema.
        IF g <> 0 AND NOT has_schema_privilege(g, cschema, 'USAGE') OR g = 0 AND NOT EXISTS (
                SELECT FROM pg_namespace n, aclexplode(n.nspacl) a
                 WHERE n.nspname = cschema AND a.grantee = 0 AND a.privilege_type = 'USAGE') THEN
            IF has_schema_privilege(cschema, 'USAGE WITH GRANT OPTION') THEN
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO %s', cschema, gname);
            ELSE
                missing := missing || gname;
            END IF;
        END IF;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        notes := notes || format('note: %s may write %s but lack USAGE on schema %I, which its watch trigger needs: '
                                 'GRANT USAGE ON SCHEMA %I TO %s', array_to_string(missing, ', '), tbl, cschema,
                                 cschema, array_to_string(missing, ', '));
    END IF;
    RETURN notes;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_watch_install(regclass) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_watch_hazards(regclass, name, name[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_watch_writers(regclass) FROM PUBLIC;

-- pgmirror_watch as in 0003_watch.sql, with the functions generated by
-- pgmirror_watch_install, and a copy that never runs code another role
-- controls with the caller's privileges: reading the table runs its casts to
-- json and text and its row-level security policies, which its owner
-- controls, so when pgmirror_watch_hazards finds any (a superuser running
-- watch on an application's table with such a cast), copy mode is refused
-- with what to do instead. The triggers themselves run that code as the role
-- that writes the table, which gains nothing.
CREATE OR REPLACE FUNCTION pgmirror_watch(tbl regclass, key_column name, prefix text,
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
    tfn      text;
    key_t    text;   -- the key of row t, collated "C"
    proj_t   text;   -- the JSON of row t
    lat_t    text;   -- the lateral projection of t's chosen columns
    hazards  text[];
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
    IF w_tbl IN (cache, 'cache_loaders'::regclass, 'pgmirror_watches'::regclass)
       OR w_tbl = to_regclass('pgmirror_secret') OR w_tbl = to_regclass('pgmirror_schema_migrations') THEN
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
    IF w_mode = 'copy' THEN
        hazards := pgmirror_watch_hazards(w_tbl, w_key, w_cols);
        IF cardinality(hazards) > 0 THEN
            RAISE EXCEPTION 'pgmirror_watch: copying % now would run code that another role controls with the privileges of role %: %',
                w_tbl, current_user, array_to_string(hazards, '; ')
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Run pgmirror watch as that role (it must own the table, or hold TRIGGER on it, and may write cache_entries), '
                             'or drop that code, or use invalidate mode, which reads nothing now. The triggers run it as the role that writes the table.';
        END IF;
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

    INSERT INTO pgmirror_watches AS w (tbl, key_column, prefix, columns, mode, skip_counter)
    VALUES (w_tbl, w_key, w_prefix, w_cols, w_mode, counter::regclass)
    ON CONFLICT ON CONSTRAINT pgmirror_watches_pkey DO UPDATE SET key_column = EXCLUDED.key_column, prefix = EXCLUDED.prefix,
        columns = EXCLUDED.columns, mode = EXCLUDED.mode, created_at = now(), skip_counter = EXCLUDED.skip_counter;

    msg := msg || pgmirror_watch_install(w_tbl);
    tfn := format('%I.%I', cschema, 'pgmirror_watch_' || w_tbl::oid);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS pgmirror_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, tfn);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgmirror_old NEW TABLE AS pgmirror_new '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, tfn);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS pgmirror_old '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, tfn);
    EXECUTE format('CREATE TRIGGER pgmirror_watch_truncate AFTER TRUNCATE ON %s '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %s()', w_tbl, tfn);
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

    -- Entries an earlier copy-mode watch kept, that nothing keeps any more.
    IF prev.mode = 'copy' AND (prev.prefix <> w_prefix OR w_mode <> 'copy') THEN
        DELETE FROM cache_entries e WHERE starts_with(e.key, prev.prefix);
        GET DIAGNOSTICS n = ROW_COUNT;
        msg := msg || format('removed %s entries of the earlier copy under %L', n, prev.prefix);
    END IF;

    key_t := format('(%L::text || t.%I::text) COLLATE "C"', w_prefix, w_key);
    IF w_cols IS NULL THEN
        proj_t := 'row_to_json(t)::text';
        lat_t := '';
    ELSE
        proj_t := 'row_to_json(r)::text';
        lat_t := 'CROSS JOIN LATERAL (SELECT '
            || (SELECT string_agg(format('t.%I', c), ', ' ORDER BY o) FROM unnest(w_cols) WITH ORDINALITY u(c, o))
            || ') r';
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

-- Regenerate the functions of every existing watch: the trigger functions
-- 0003 generated were SECURITY DEFINER and ran row_to_json as whoever ran
-- watch. Only functions are replaced (same names, so the triggers stay): no
-- lock on the tables, and nothing of them is read.
DO $regen$
DECLARE
    w record;
BEGIN
    FOR w IN SELECT pw.tbl FROM pgmirror_watches pw
              WHERE EXISTS (SELECT FROM pg_class c WHERE c.oid = pw.tbl) ORDER BY pw.tbl::oid LOOP
        BEGIN
            PERFORM pgmirror_watch_install(w.tbl);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION 'cannot regenerate the watch of %: %', w.tbl, SQLERRM
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Its trigger function belongs to the role that ran pgmirror watch: run pgmirror migrate once as a superuser '
                             '(or as that role), or pgmirror unwatch and watch the table again as the role that runs migrate.';
        END;
    END LOOP;
END
$regen$;
