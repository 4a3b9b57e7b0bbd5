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
    changed text[] := '{}';
    r       record;
BEGIN
    PERFORM set_config('pgmirror.write_batch', pgmirror_batch_token(), true);
    FOR r IN SELECT * FROM pgmirror_write_commands(ops, vals, max_value) LOOP
        IF r.rec = 'state' THEN
            changed := changed || r.st_key;
        END IF;
        cmd := r.cmd; rec := r.rec; reply := r.reply; reply_int := r.reply_int;
        reply_bulk := r.reply_bulk; reply_err := r.reply_err; st_key := r.st_key;
        st_version := r.st_version; st_expires := r.st_expires; st_deleted := r.st_deleted;
        st_value := r.st_value; xact_id := r.xact_id;
        RETURN NEXT;
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
