-- pgmirror 0012: application pub/sub channels carried to every sidecar.
-- Applied by `pgmirror migrate` inside one transaction with search_path set to
-- "<schema>, pg_temp"; do not add BEGIN/COMMIT here.
--
-- PUBLISH on any sidecar, and pgmirror_publish_channel from SQL (a trigger,
-- a job), send a message record on channel pgmirror, signed like every
-- payload (pgmirror_publish, triggers.sql), so that each sidecar's one
-- LISTEN connection carries messages too and no role can forge one:
--
--   record := "M " id " " channel64 " " message64
--
-- id is a value of pgmirror_message_seq: it makes every message's payload
-- unique, so that Postgres does not fold two equal messages of one
-- transaction into one (it drops duplicate notifications of a transaction),
-- nor a sidecar's replay guard take the second for a replay. channel64 is
-- the channel's UTF-8 bytes and message64 the message's bytes, in base64.
-- Sidecars before this migration skip the record (an unknown kind).
--
-- A message travels in one notification: channel and message together take
-- at most 5840 bytes (their base64, the record's fields and the widest
-- header then fit in Postgres's 8000-byte payload). A message published in
-- a transaction is delivered when, and only if, it commits, in commit order.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0012_channels.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

CREATE SEQUENCE pgmirror_message_seq;
REVOKE ALL ON SEQUENCE pgmirror_message_seq FROM PUBLIC;

COMMENT ON SEQUENCE pgmirror_message_seq IS
    'pgmirror: numbers pub/sub messages so that every message''s notification is unique';

-- Sends message on the application channel channel to the subscribers of
-- every sidecar. SECURITY DEFINER: the caller needs no privilege on the
-- sequence, nor on pgmirror_secret (which pgmirror_publish reads to sign).
CREATE FUNCTION pgmirror_publish_channel(channel text, message bytea) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $fn$
DECLARE
    ch bytea;
    n  bigint;
BEGIN
    IF channel IS NULL OR message IS NULL THEN
        RAISE EXCEPTION 'pgmirror_publish_channel: channel and message must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    ch := pg_catalog.convert_to(channel, 'UTF8'::name);
    n := pg_catalog.octet_length(ch)::bigint + pg_catalog.octet_length(message)::bigint;
    IF n > 5840 THEN
        RAISE EXCEPTION 'pgmirror_publish_channel: message too large: channel and message take % bytes, at most 5840 (one notification carries a message)', n
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    PERFORM pgmirror_publish(ARRAY['M '::text
        || pg_catalog.nextval('pgmirror_message_seq'::regclass)::text || ' '::text
        || pgmirror_b64(ch) || ' '::text || pgmirror_b64(message)]);
END
$fn$;

-- The same with a text message, sent as its UTF-8 bytes.
CREATE FUNCTION pgmirror_publish_channel(channel text, message text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path FROM CURRENT
AS $fn$
    SELECT pgmirror_publish_channel(channel, pg_catalog.convert_to(message, 'UTF8'::name))
$fn$;

REVOKE ALL ON FUNCTION pgmirror_publish_channel(text, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_publish_channel(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgmirror_publish_channel(text, bytea) TO pgmirror_sidecar, pgmirror_writer;
GRANT EXECUTE ON FUNCTION pgmirror_publish_channel(text, text) TO pgmirror_sidecar, pgmirror_writer;

COMMENT ON FUNCTION pgmirror_publish_channel(text, bytea) IS
    'pgmirror: publishes message on pub/sub channel channel to the subscribers of every sidecar, at commit; '
    'channel and message at most 5840 bytes together';
COMMENT ON FUNCTION pgmirror_publish_channel(text, text) IS
    'pgmirror: publishes message (as UTF-8) on pub/sub channel channel to the subscribers of every sidecar, at commit; '
    'channel and message at most 5840 bytes together';
