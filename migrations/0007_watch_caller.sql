-- pgmirror 0007: the watch's write function runs only for the watch's own
-- trigger (issue 15, review of finding 2). Applied by `pgmirror migrate`
-- inside one transaction with search_path set to "<schema>, pg_temp"; do not
-- add BEGIN/COMMIT here. See docs/security.md, "Watches".
--
-- 0006 made pgmirror_watch_<oid>_write (SECURITY DEFINER) executable by every
-- role that may write the watched table in any way, guarded by
-- pg_trigger_depth() > 0 and the prefix only: a role with INSERT alone
-- called it from a trigger of its own on a temporary table and rewrote or
-- deleted the entries of rows it may not touch. Now:
--
-- * The trigger function pgmirror_watch_<oid>() (SECURITY INVOKER, so the
--   casts to json and text, and everything else the table's owner
--   controls, still run with the writer's privileges: finding 2) refuses to
--   run but as one of the watch's four AFTER ... FOR EACH STATEMENT
--   triggers on the watched table (TG_RELID, TG_NAME, TG_WHEN, TG_LEVEL,
--   TG_OP): attached to any other table it could be fed any rows.
-- * The write function checks, before anything else, that its immediate
--   caller is that trigger function, at the line where it calls it, from
--   the error context stack (pgmirror_watch_caller below). The trigger calls
--   it in an assignment, which PL/pgSQL evaluates as a simple expression,
--   so nothing the caller writes stands between the two frames. (A call by
--   PERFORM would put the query's text there, and a query's text may hold
--   any characters, newlines included, inside a quoted name: it could spell
--   the genuine lines.)
-- * The write function now returns boolean (0006's returned void, and is
--   dropped and created again, with its grants).
--
-- Existing watches are regenerated below: functions only (same names, so
-- the triggers stay), no lock on the application tables, nothing read.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0007_watch_caller.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

-- The line (from 1, as PL/pgSQL counts them) of the one occurrence of
-- marker in a generated function's body.
CREATE OR REPLACE FUNCTION pgmirror_watch_line_of(body text, marker text) RETURNS int
LANGUAGE plpgsql IMMUTABLE STRICT SET search_path FROM CURRENT
AS $fn$
DECLARE
    p      int := strpos(body, marker);
    before text;
BEGIN
    IF p = 0 OR strpos(substr(body, p + 1), marker) > 0 THEN
        RAISE EXCEPTION 'pgmirror_watch_line_of: % is not in the generated function exactly once', quote_literal(marker)
            USING HINT = 'Does the watch''s prefix contain that text? Choose another prefix.';
    END IF;
    before := left(body, p - 1);
    RETURN 1 + length(before) - length(replace(before, E'\n', ''));
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_watch_line_of(text, text) FROM PUBLIC;

-- pgmirror_watch_caller(names, caller, fn, tbl) returns true when the
-- function that called it (a watch's write function, called in an
-- assignment on line N, which PL/pgSQL names in its error context by one
-- of names) was itself called, directly, by the PL/pgSQL function named
-- caller in an assignment on the same line N; otherwise it raises. The
-- error context (GET DIAGNOSTICS ... PG_CONTEXT) then reads, one frame a
-- line, innermost first:
--
--   PL/pgSQL function <this function> line 9 at GET DIAGNOSTICS
--   PL/pgSQL function <one of names> line N at assignment
--   PL/pgSQL function <caller> line N at assignment         (the check)
--   ... whatever ran the statement that fired the trigger
--
-- The expected third line is the second with the name replaced, so it
-- holds in every language lc_messages may choose (the words, their order
-- and the spaces differ; Japanese has no space around the name). It must
-- be followed by a newline or the end: the text from the third line on is
-- the only part that the caller controls, and no caller but the genuine one
-- can begin it with that text:
--   * a PL/pgSQL function of another name: PL/pgSQL prints a function's
--     name as format_procedure does (quote_ident on the schema and the
--     name, which quotes any dot, space, parenthesis or newline, then the
--     argument types), so the name printed is `<schema>.pgmirror_watch_<oid>()`
--     only for that function of that schema, which only pgmirror's roles
--     may create (migrate refuses a schema others may CREATE in);
--   * a query run through SPI (PERFORM, SELECT, a SQL function): its line
--     begins with fixed words ("SQL statement", "SQL function", ...),
--     which differ from those that begin a PL/pgSQL frame;
--   * the genuine function on another line or in another kind of
--     statement: the line number or the statement differs (the trigger
--     calls the write function on one line only, with arguments that run
--     no code of anyone's).
-- A superuser's lc_messages whose PL/pgSQL template begins with the name
-- (Turkish) leaves the first point standing but makes the second rest on
-- the backend's templates for that language (untranslated, so English, in
-- PostgreSQL 15). Executable by PUBLIC: it only tells its caller who called
-- it, and every role may know that.
CREATE OR REPLACE FUNCTION pgmirror_watch_caller(names text[], caller text, fn text, tbl text) RETURNS boolean
LANGUAGE plpgsql
AS $fn$
DECLARE
    ctx  text;
    own  text;
    want text;
    rest text := '';
    n    text;
    p    int;
BEGIN
    GET DIAGNOSTICS ctx = PG_CONTEXT;
    p := pg_catalog.strpos(ctx, E'\n');
    IF p > 0 THEN
        rest := pg_catalog.substr(ctx, p + 1);
        p := pg_catalog.strpos(rest, E'\n');
        IF p > 0 THEN
            own := pg_catalog.left(rest, p - 1);
            rest := pg_catalog.substr(rest, p + 1);
            FOREACH n IN ARRAY names LOOP
                IF pg_catalog.strpos(own, n) > 0 THEN
                    want := pg_catalog.replace(own, n, caller);
                    EXIT;
                END IF;
            END LOOP;
            IF want IS NOT NULL AND (rest OPERATOR(pg_catalog.=) want
                                     OR pg_catalog.starts_with(rest, want OPERATOR(pg_catalog.||) E'\n')) THEN
                RETURN true;
            END IF;
        ELSE
            rest := '';
        END IF;
    END IF;
    RAISE EXCEPTION '% only runs when the watch trigger of % calls it', fn, tbl
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = CASE WHEN rest OPERATOR(pg_catalog.=) '' THEN 'It was called at the top level.'
                            ELSE 'It was called by: ' OPERATOR(pg_catalog.||) pg_catalog.split_part(rest, E'\n', 1) END,
              HINT = 'The write function of a watch only serves the watch''s trigger; write the watched table instead.';
END
$fn$;

COMMENT ON FUNCTION pgmirror_watch_caller(text[], text, text, text) IS
    'pgmirror: raises unless the calling watch write function was called directly by its watch trigger (see migrations/0007_watch_caller.sql)';

-- pgmirror_watch_install(tbl) (re)generates the two functions of tbl's watch
-- from its row in pgmirror_watches, grants, and returns notes for the caller
-- (as in 0006_privileges.sql, with the checks above):
--
--   pgmirror_watch_<oid>()        the trigger function, SECURITY INVOKER: it
--                                 runs as the role that wrote tbl, refuses to
--                                 run but as one of the watch's four triggers
--                                 on tbl, computes the keys (and in copy mode
--                                 the JSON values) from the transition tables,
--                                 and passes them to the write function, in an
--                                 assignment on a line of its own;
--   pgmirror_watch_<oid>_write()  SECURITY DEFINER, owned by pgmirror's owner
--                                 (the owner of cache_entries) when a
--                                 superuser installs it, else by the caller:
--                                 it first has pgmirror_watch_caller check that
--                                 the trigger function called it from that
--                                 line (its own call of the check is on the
--                                 same line, padded with blank lines), then
--                                 only writes (copy) or deletes (invalidate)
--                                 keys under the watch's prefix, and only the
--                                 roles that may write tbl now (its owner,
--                                 grantees of INSERT, UPDATE, DELETE or
--                                 TRUNCATE, pg_write_all_data) may execute it.
--
-- The trigger fixes search_path to "pg_catalog, pg_temp" (its calls are
-- qualified; leaving pgmirror's schema out makes PL/pgSQL print its name
-- qualified, the text the check expects), and TimeZone, DateStyle,
-- IntervalStyle, extra_float_digits and bytea_output, so keys and values do
-- not depend on the writing session; the write function has "pg_catalog,
-- <schema>, pg_temp" (migrate keeps it so). It replaces functions only (the
-- triggers keep pointing at the same function), so it takes no lock on tbl.
-- A role granted writes on tbl later gets an error naming `pgmirror watch`,
-- which grants again. Nothing here runs code of tbl's owner.
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
    tsig     text;   -- how PL/pgSQL names the trigger function in an error context
    wcall    text;   -- the trigger's call of the write function
    tline    int;    -- the line of that call in the trigger function
    wline    int;    -- the line of the caller check in the write function
    pad      int;
    ttpl     text;
    wsig_u   text;
    wsig_q   text;
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
    -- The trigger function's search_path leaves out pgmirror's schema, so
    -- format_procedure (which PL/pgSQL uses for its error contexts, under
    -- the function's own search_path) always qualifies its name.
    tsig := tfn || '()';
    -- How PL/pgSQL names the write function: unqualified under its own
    -- search_path (pgmirror's schema on it), qualified if that changes.
    wsig_u := format('%I(text,text[],bytea[],text[],bigint)', 'pgmirror_watch_' || tbl::oid || '_write');
    wsig_q := format('%I.', cschema) || wsig_u;

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
DECLARE
    ok     boolean;%11$s
BEGIN
    -- Line %9$s, as the trigger's call of this function: see pgmirror_watch_caller.
    ok := %7$s(%8$L::text[], %10$L::text, %5$L::text, %4$L::text);
    IF pg_catalog.pg_trigger_depth() = 0 THEN
        RAISE EXCEPTION '%% only runs in the watch trigger of %%', %5$L, %4$L USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF op = 'TRUNCATE' THEN
        DELETE FROM %2$s e WHERE pg_catalog.starts_with(e.key, %1$L::text);
        RETURN true;
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
    RETURN true;
END
$tpl$;
    ELSE
        wbody := $tpl$
DECLARE
    ok     boolean;
    ids    bigint[];
    tag    text;
    budget bigint;
    used   bigint;
    locked bigint;%11$s
BEGIN
    -- Line %9$s, as the trigger's call of this function: see pgmirror_watch_caller.
    ok := %7$s(%8$L::text[], %10$L::text, %5$L::text, %4$L::text);
    IF pg_catalog.pg_trigger_depth() = 0 THEN
        RAISE EXCEPTION '%% only runs in the watch trigger of %%', %5$L, %4$L USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF op = 'TRUNCATE' THEN
        DELETE FROM %2$s e WHERE pg_catalog.starts_with(e.key, %1$L::text);
        RETURN true;
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
    RETURN true;
END
$tpl$;
    END IF;
    -- The trigger function. %1$s key of t, %2$s JSON of t, %3$s the lateral
    -- projection, %4$s t has a key, %5$s the write function, %6$s its oid,
    -- %7$L table name, %8$s oid of the schema, %9$s oid of the table. It
    -- refuses to run but as one of the watch's four triggers on tbl, so
    -- that nobody can feed the write function rows of another table (a
    -- temporary one) through it. It calls the write function in an
    -- assignment, which PL/pgSQL evaluates as a simple expression: no SPI
    -- query, and so no line of query text (which the caller writes) between
    -- the two functions in the error context that the write function checks.
    IF w.mode = 'copy' THEN
        tbody := $tpl$
DECLARE
    ks      text[];
    vs      bytea[];
    dk      text[];
    skipped bigint := 0;
    example text;
    ok      boolean;
BEGIN
    IF TG_RELID <> %9$s::oid OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER'
       OR TG_OP NOT IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') OR TG_NAME <> 'pgmirror_watch_' || lower(TG_OP) THEN
        RAISE EXCEPTION 'pgmirror: this is the watch trigger function of %%; it does not run as trigger %% (%% %% %%) on %%',
            %7$L, TG_NAME, TG_WHEN, TG_LEVEL, TG_OP, TG_RELID::regclass
            USING ERRCODE = 'insufficient_privilege';
    END IF;
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
        ok := %5$s(TG_OP, ks, vs, dk, skipped);
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
    ok      boolean;
BEGIN
    IF TG_RELID <> %9$s::oid OR TG_LEVEL <> 'STATEMENT' OR TG_WHEN <> 'AFTER'
       OR TG_OP NOT IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE') OR TG_NAME <> 'pgmirror_watch_' || lower(TG_OP) THEN
        RAISE EXCEPTION 'pgmirror: this is the watch trigger function of %%; it does not run as trigger %% (%% %% %%) on %%',
            %7$L, TG_NAME, TG_WHEN, TG_LEVEL, TG_OP, TG_RELID::regclass
            USING ERRCODE = 'insufficient_privilege';
    END IF;
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
        ok := %5$s(TG_OP, NULL::text[], NULL::bytea[], dk, skipped);
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
    -- The line of the trigger's call of the write function (the oid of
    -- the write function, not known yet, adds no line).
    ttpl := tbody;
    tbody := format(ttpl, key_t, proj_t, lat_t, keyok, wfn, 0, tbl::text,
                    (SELECT oid FROM pg_namespace WHERE nspname = cschema), tbl::oid);
    wcall := 'ok := ' || wfn || '(';
    tline := pgmirror_watch_line_of(tbody, wcall);

    -- The write function, returning boolean so that the trigger calls it in
    -- an assignment (0006's returned void and is dropped, as a function's
    -- type cannot change; the grants below are made again). %7$s the
    -- caller check, %8$L the names PL/pgSQL may give this function in an
    -- error context (qualified first, as the other is part of it), %9$s the
    -- line of the trigger's call, %10$L the trigger function as it is named
    -- there, %11$s the blank lines that put the check on that line too, so
    -- that the two frames differ in the function's name only.
    IF (SELECT p.prorettype <> 'boolean'::regtype FROM pg_proc p WHERE p.oid = to_regprocedure(wsig)) THEN
        EXECUTE format('DROP FUNCTION %s', wsig);
    END IF;
    wline := pgmirror_watch_line_of(
        format(wbody, w.prefix, qcache, counter, tbl::text, wfn, format('%I.pgmirror_key_lock', cschema),
               format('%I.pgmirror_watch_caller', cschema), ARRAY[wsig_q, wsig_u], tline, tsig, ''),
        'ok := ' || format('%I.pgmirror_watch_caller', cschema) || '(');
    pad := tline - wline;
    IF pad < 0 THEN
        RAISE EXCEPTION 'pgmirror_watch_install: the trigger of % calls its write function on line %, before line % where the write function can check it',
            tbl, tline, wline;
    END IF;
    wbody := format(wbody, w.prefix, qcache, counter, tbl::text, wfn, format('%I.pgmirror_key_lock', cschema),
                    format('%I.pgmirror_watch_caller', cschema), ARRAY[wsig_q, wsig_u], tline, tsig, repeat(E'\n', pad));
    IF pgmirror_watch_line_of(wbody, 'ok := ' || format('%I.pgmirror_watch_caller', cschema) || '(') <> tline THEN
        RAISE EXCEPTION 'pgmirror_watch_install: could not align the caller check of % with line % of its trigger', wfn, tline;
    END IF;
    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %s(op text, ks text[], vs bytea[], dk text[], skipped bigint) RETURNS boolean
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, %I, pg_temp
        AS %L$ddl$, wfn, cschema, wbody);
    wfn_oid := wsig::regprocedure::oid;

    tbody := format(ttpl, key_t, proj_t, lat_t, keyok, wfn, wfn_oid, tbl::text,
                    (SELECT oid FROM pg_namespace WHERE nspname = cschema), tbl::oid);
    IF pgmirror_watch_line_of(tbody, wcall) <> tline THEN
        RAISE EXCEPTION 'pgmirror_watch_install: the call of % moved in the trigger of %', wfn, tbl;
    END IF;
    -- search_path without pgmirror's schema: see tsig.
    EXECUTE format($ddl$
        CREATE OR REPLACE FUNCTION %s() RETURNS trigger
        LANGUAGE plpgsql SECURITY INVOKER
        SET search_path = pg_catalog, pg_temp
        SET "TimeZone" = 'UTC'
        SET "DateStyle" = 'ISO, YMD'
        SET "IntervalStyle" = 'postgres'
        SET extra_float_digits = 1
        SET bytea_output = 'hex'
        AS %L$ddl$, tfn, tbody);

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


-- Regenerate the functions of every existing watch (as 0006 did): their
-- write functions served any trigger. Only functions are replaced: no lock
-- on the tables, and nothing of them is read.
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
                      HINT = 'Its functions belong to the role that ran pgmirror watch: run pgmirror migrate once as a superuser '
                             '(or as that role), or pgmirror unwatch and watch the table again as the role that runs migrate.';
        END;
    END LOOP;
END
$regen$;
