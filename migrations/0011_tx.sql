-- pgmirror 0011: transactions of several write commands (MULTI/EXEC, and
-- scripts). Applied by `pgmirror migrate` inside one transaction with
-- search_path set to "<schema>, pg_temp"; do not add BEGIN/COMMIT here.
--
-- A group-commit batch runs as one statement, pgmirror_write, which takes
-- its key locks, runs its commands and publishes at its end. A transaction
-- (pgstore.Tx) runs on one connection across several statements instead:
--   1. it takes the advisory locks of every key it declares, in the one
--      order all writers share (pgmirror_key_lock ascending), in one
--      statement, so it neither deadlocks with batches nor with another
--      transaction;
--   2. each command runs through pgmirror_tx_write: pgmirror_write_commands
--      (the commands' shared code: each in its own subtransaction, a failed
--      one rolled back alone) with the notify triggers silenced as
--      pgmirror_write silences them, so nothing is sent yet;
--   3. before COMMIT, pgmirror_tx_publish sends the final state of every key
--      the transaction changed in ONE pgmirror_publish call, so every
--      sidecar applies the whole transaction at once.
-- Both functions only add callers to code pgmirror_write already runs; they
-- do not replace pgmirror_write or pgmirror_write_commands.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0011_tx.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

CREATE OR REPLACE FUNCTION pgmirror_tx_write(ops jsonb, vals bytea, max_value bigint DEFAULT NULL)
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
BEGIN
    IF jsonb_typeof(ops) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'pgmirror_tx_write: ops must be a JSON array';
    END IF;
    PERFORM pg_catalog.set_config('pgmirror.write_batch'::text, pgmirror_batch_token(), true);
    RETURN QUERY SELECT * FROM pgmirror_write_commands(ops, vals, max_value);
    PERFORM pg_catalog.set_config('pgmirror.write_batch'::text, ''::text, true);
END
$fn$;

-- The records of the keys' current states (a delete record for a key with
-- no row), published as one unit; returns the transaction's id. The caller
-- holds the keys' advisory locks and the row locks of the rows it wrote.
CREATE OR REPLACE FUNCTION pgmirror_tx_publish(changed text[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $fn$
BEGIN
    IF cardinality(changed) > 0 THEN
        PERFORM pgmirror_publish(ARRAY(
            SELECT CASE
                       WHEN c.key IS NULL
                       THEN pgmirror_delete_record(k.key)
                       ELSE pgmirror_set_record(c.key, c.value, c.expires_at, c.version)
                   END
              FROM (SELECT DISTINCT x AS key FROM unnest(changed) x) k
              LEFT JOIN cache_entries c ON c.key = k.key));
    END IF;
    RETURN pg_catalog.pg_current_xact_id_if_assigned()::text::bigint;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_tx_write(jsonb, bytea, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_tx_publish(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgmirror_tx_write(jsonb, bytea, bigint) TO pgmirror_sidecar;
GRANT EXECUTE ON FUNCTION pgmirror_tx_publish(text[]) TO pgmirror_sidecar;
