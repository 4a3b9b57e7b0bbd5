-- pgmirror triggers: version stamping and change notification for cache_entries.
--
-- Applied by `pgmirror migrate` (in its transaction, with search_path set to
-- "<schema>, pg_temp"), after the numbered migrations; safe to apply again:
-- every statement replaces what an earlier run created. Apply it with
-- migrate, not by hand: migrate then, on every run, sets search_path to
-- "pg_catalog, <schema>, pg_temp" on each SECURITY DEFINER function,
-- revokes EXECUTE on them from PUBLIC, and when it runs as a superuser hands
-- them (and pgmirror's tables) to the NOLOGIN role pgmirror_owner, so that
-- none runs as a superuser (migrations/migrations.go, docs/security.md).
--
-- Privileges (docs/security.md): the functions below are SECURITY DEFINER so
-- that a role that may write cache_entries (pgmirror_writer, pgmirror_sidecar)
-- needs no privilege on the sequence's stamping or on NOTIFY's payload
-- building. They run as pgmirror's owner whoever writes, so they call
-- functions schema-qualified and typed (pg_catalog.nextval(...::regclass):
-- an untyped nextval('...') would take any nextval(text) on the path), and
-- migrate refuses a schema that other roles may CREATE in, where an
-- exact-typed operator could still win over pg_catalog's.
--
-- Channel: pgmirror. Payload format 2 (decoded by listener/payload.go):
--
--   payload := "pgm2 " mac " " kid " " sent_at_us " " xid " " part "/" parts "\n" body
--   mac     := 64 lowercase hex digits: HMAC-SHA256 under key kid of pgmirror_secret
--              of everything after "pgm2 " mac " " (header from kid on, and body)
--   body    := record { "\n" record }
--   record  := "S " version " " expiry " " key64 " " value64   -- set, value inline
--            | "F " version " " expiry " " key64               -- set, value too large: fetch it
--            | "D " version " " key64                          -- deleted
--            | "T " version                                    -- table truncated: every key deleted
--            | "P " version " " prefix64 { " " kept64 }       -- FLUSHDB: every key under the prefix
--                                                                 deleted but those under a kept prefix
--            | "L"                                             -- cache_loaders changed
--            | "M " id " " channel64 " " message64              -- a pub/sub message (migrations/0012,
--                                                                 pgmirror_publish_channel): id unique
--   expiry  := "-" (never) | epoch microseconds (integer, may be negative)
--   prefix64 := "-" (the empty prefix: every key) | the prefix's UTF-8 bytes in base64
--
-- A sidecar skips a record of any other kind (an ASCII letter, then nothing
-- or a space and fields): later versions add kinds. kid is the current key of
-- pgmirror_secret (the newest whose activated_at is set), read once per call;
-- sidecars accept it, the one before, and the pending key that the next
-- rotation makes current, which they read ahead of its use (see
-- pgmirror_rotate_secret, migrations/0005 and 0008). The payloads of one
-- pgmirror_publish call are numbered part 1..parts, so a sidecar applies the
-- changes of one statement all at once, when it holds every part.
--
-- sent_at_us is clock_timestamp() when the payload was built, in epoch
-- microseconds; xid is the writing transaction's pg_current_xact_id(), which
-- tells a sidecar whether a change is visible in a snapshot it read,
-- recognises the echo of its own writes, and with the MAC lets it drop a
-- replayed payload; key64 is the key's UTF-8 bytes and value64 the value's
-- bytes in standard base64 without line breaks. Every field is built from
-- integers, encode() and replace(), so no session setting (DateStyle,
-- TimeZone, bytea_output, search_path, extra_float_digits) can change a payload.
--
-- Format 1 ("pgm1 " sent_at_us " " xid, then the same records, unsigned) is
-- what pgmirror_publish sends when pgmirror_secret holds no key, and what
-- sidecars send themselves as reload sentinels ("N " token records only).
--
-- One statement's changes are packed into as few payloads as fit in 7999
-- bytes (Postgres refuses 8000 or more), by statement-level triggers with
-- transition tables. A header takes at most 144 bytes. A record that does not
-- fit in a payload of its own with its value inline carries the fetch marker
-- (F) instead, and a key is at most 4000 bytes (CHECK), so every record fits:
-- no legal write fails because of NOTIFY.
--
-- Only inserts, deletes and updates of key, value or expires_at (or a forged
-- version) take a version and notify; the access-time flush and the refresh
-- lock update other columns and notify nothing.

DO $guard$
BEGIN
    -- SECURITY DEFINER functions below capture the current search_path; it
    -- must end with pg_temp, or a temporary object could shadow ours.
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION 'triggers.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`, or run SET search_path TO <schema>, pg_temp first.';
    END IF;
END
$guard$;

-- Base64 without the line breaks encode() inserts every 76 characters.
-- replace(), not translate(): translate walks the text character by
-- character (multibyte-aware), 3.5x slower on a 100-byte value, and this
-- runs for every key and value notified.
CREATE OR REPLACE FUNCTION pgmirror_b64(b bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT replace(encode(b, 'base64'), E'\n', '') $$;

-- Expiry as epoch microseconds; '-' for never (NULL or infinity).
CREATE OR REPLACE FUNCTION pgmirror_expiry(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN ts IS NULL OR ts = 'infinity'::timestamptz THEN '-'
        WHEN ts = '-infinity'::timestamptz THEN '0'
        ELSE (extract(epoch FROM ts) * 1000000)::bigint::text
    END
$$;

-- The record of a set: value inline when the record fits in a payload of its
-- own (7999 bytes less at most 144 of header, 1 of newline and 44 of fixed
-- fields: 7810 bytes of base64 for key and value), else the fetch marker.
-- The size test reads only lengths, so a large value is never detoasted here.
CREATE OR REPLACE FUNCTION pgmirror_set_record(k text, v bytea, exp timestamptz, ver bigint) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN 4 * ((octet_length(k) + 2) / 3) + 4 * ((octet_length(v) + 2) / 3) <= 7810
        THEN 'S ' || ver || ' ' || pgmirror_expiry(exp) || ' '
             || pgmirror_b64(convert_to(k, 'UTF8')) || ' ' || pgmirror_b64(v)
        ELSE 'F ' || ver || ' ' || pgmirror_expiry(exp) || ' ' || pgmirror_b64(convert_to(k, 'UTF8'))
    END
$$;

-- The record of a deleted key: "D", a version of its own taken now, the key.
-- The one place a delete record is built: the delete and update triggers
-- below and pgmirror_write's publishing step (migrations/0009) call it.
-- Volatile: every call takes a version. It reads the sequence with its
-- caller's rights (the owner, in those SECURITY DEFINER callers), and its
-- calls are qualified as theirs are.
CREATE OR REPLACE FUNCTION pgmirror_delete_record(k text) RETURNS text
LANGUAGE sql VOLATILE
AS $$
    SELECT 'D '::text || pg_catalog.nextval('cache_entries_version_seq'::regclass)::text || ' '::text
           || pgmirror_b64(pg_catalog.convert_to(k, 'UTF8'::name))
$$;

-- The record of a flush (FLUSHDB, migrations/0010): "P", the version ver
-- the flush took, its prefix ("-" when empty: every key), then each prefix
-- whose keys it left in place (copy-mode watches'). Sidecars before 0010
-- skip it (an unknown kind); --no-flush refuses FLUSHDB while they run.
CREATE OR REPLACE FUNCTION pgmirror_flush_record(ver bigint, prefix text, keep text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 'P '::text || ver::text || ' '::text
           || CASE WHEN prefix = '' THEN '-'::text ELSE pgmirror_b64(pg_catalog.convert_to(prefix, 'UTF8'::name)) END
           || coalesce((SELECT pg_catalog.string_agg(' '::text || pgmirror_b64(pg_catalog.convert_to(k.p, 'UTF8'::name)), ''::text ORDER BY k.n)
                          FROM unnest(keep) WITH ORDINALITY k(p, n)), ''::text)
$$;

-- Packs records into as few payloads as fit, signs each, and sends them on
-- channel pgmirror, in order, numbered part 1..parts. The common case, a few
-- records that fit in one payload, is joined, signed and sent at once; more
-- are packed one by one. The current key is read once per call (one row of
-- a table of three, by its primary key's index). SECURITY DEFINER:
-- the writer's role cannot read pgmirror_secret, and must not.
--
-- With no current key in pgmirror_secret it sends format 1, unsigned, as the
-- triggers of a schema older than migration 0005 do: a write never fails for
-- want of a key (sidecars that reject unsigned payloads then repair by
-- reloading).
CREATE OR REPLACE FUNCTION pgmirror_publish(records text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
DECLARE
    budget constant int := 7999;
    key_id int;
    ipad   bytea;
    opad   bytea;
    head   text;        -- what every part's signed text starts with: kid, sent_at, xid
    room   int;         -- bytes of records one payload can carry
    bodies text[] := '{}';
    batch  text[] := '{}';
    used   int := -1;      -- bytes of batch joined, newlines included
    rec    text;
    n      int;
    signed text;
BEGIN
    -- The current key: the newest in use. The pending key (activated_at
    -- NULL, migrations/0008) is not signed with until a rotation.
    SELECT s.kid, s.ikey, s.okey INTO key_id, ipad, opad FROM pgmirror_secret s
        WHERE s.activated_at IS NOT NULL ORDER BY s.kid DESC LIMIT 1;
    head := ((EXTRACT(epoch FROM pg_catalog.clock_timestamp()) * 1000000)::bigint)::text
            || ' ' || pg_catalog.pg_current_xact_id()::text;
    IF key_id IS NULL THEN
        head := 'pgm1 ' || head;  -- no key: format 1, unsigned
    ELSE
        head := key_id::text || ' ' || head || ' ';
    END IF;
    IF cardinality(records) BETWEEN 1 AND 128 THEN
        IF key_id IS NULL THEN
            signed := head || E'\n' || pg_catalog.array_to_string(records, E'\n');
            IF pg_catalog.octet_length(signed) <= budget THEN
                PERFORM pg_catalog.pg_notify('pgmirror'::text, signed);
                RETURN;
            END IF;
        ELSE
            signed := head || '1/1' || E'\n' || pg_catalog.array_to_string(records, E'\n');
            IF 70 + pg_catalog.octet_length(signed) <= budget THEN
                PERFORM pg_catalog.pg_notify('pgmirror'::text, 'pgm2 '
                    || pg_catalog.encode(pg_catalog.sha256(opad || pg_catalog.sha256(ipad
                           || pg_catalog.convert_to(signed, 'UTF8'))), 'hex')
                    || ' ' || signed);
                RETURN;
            END IF;
        END IF;
    END IF;
    -- 70: "pgm2 ", the MAC and a space; 21: the widest "part/parts"; 1: the newline.
    room := budget - pg_catalog.octet_length(head) - CASE WHEN key_id IS NULL THEN 1 ELSE 70 + 21 + 1 END;
    FOREACH rec IN ARRAY records LOOP
        IF cardinality(batch) > 0 AND used + 1 + pg_catalog.octet_length(rec) > room THEN
            bodies := bodies || pg_catalog.array_to_string(batch, E'\n');
            batch := '{}';
            used := -1;
        END IF;
        batch := batch || rec;
        used := used + 1 + pg_catalog.octet_length(rec);
    END LOOP;
    IF cardinality(batch) > 0 THEN
        bodies := bodies || pg_catalog.array_to_string(batch, E'\n');
    END IF;
    n := cardinality(bodies);
    FOR i IN 1..n LOOP
        IF key_id IS NULL THEN
            PERFORM pg_catalog.pg_notify('pgmirror'::text, head || E'\n' || bodies[i]);
        ELSE
            signed := head || i::text || '/' || n::text || E'\n' || bodies[i];
            PERFORM pg_catalog.pg_notify('pgmirror'::text, 'pgm2 '
                || pg_catalog.encode(pg_catalog.sha256(opad || pg_catalog.sha256(ipad
                       || pg_catalog.convert_to(signed, 'UTF8'))), 'hex')
                || ' ' || signed);
        END IF;
    END LOOP;
END
$$;

-- pgmirror_write (migrations/0004, 0009) runs a sidecar's batch of write
-- commands as one statement and publishes, once at its end, the final state
-- of every key the batch changed: one packed set of notifications per batch
-- instead of one per command. While it runs, the notify triggers of
-- cache_entries find pgmirror.write_batch set to this statement's token and
-- send nothing. The token names the backend and the statement's start, so a
-- value left in a session by hand, or by another statement, never silences a
-- trigger.
--
-- Anyone can compute the token and set the setting, so silencing also needs
-- the session's login role to be a member of pgmirror_sidecar (which alone
-- may run pgmirror_write): a role that may only write cache_entries cannot
-- make a change that no sidecar hears of. session_user, not current_user:
-- inside these SECURITY DEFINER triggers current_user is their owner, and
-- SET ROLE does not change session_user (only a superuser's session can
-- change it, with SET SESSION AUTHORIZATION). The membership test runs only
-- when the setting holds the token, so ordinary writes do not pay for it;
-- without the role (dropped by hand) nothing is silenced, and a batch is
-- notified twice rather than not at all.
CREATE OR REPLACE FUNCTION pgmirror_batch_token() RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS $$
    SELECT pg_catalog.pg_backend_pid()::text || '/'::text
           || (EXTRACT(epoch FROM pg_catalog.statement_timestamp()) * 1000000::numeric)::bigint::text
$$;

CREATE OR REPLACE FUNCTION pgmirror_deferred() RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS $$
    SELECT CASE
        WHEN pg_catalog.current_setting('pgmirror.write_batch'::text, true) = pgmirror_batch_token()
        THEN coalesce(pg_catalog.pg_has_role(session_user, pg_catalog.to_regrole('pgmirror_sidecar'::text), 'MEMBER'::text), false)
        ELSE false
    END
$$;

-- BEFORE ROW: a new version and updated_at for every insert, and for every
-- update that names key, value, expires_at or version (see the trigger's
-- column list), so a client can neither skip nor forge a version.
CREATE OR REPLACE FUNCTION pgmirror_stamp() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
    NEW.version := pg_catalog.nextval('cache_entries_version_seq'::regclass);
    NEW.updated_at := pg_catalog.clock_timestamp();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION pgmirror_notify_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
    IF pgmirror_deferred() THEN
        RETURN NULL;  -- pgmirror_write publishes the batch at its end
    END IF;
    PERFORM pgmirror_publish(ARRAY(
        SELECT pgmirror_set_record(n.key, n.value, n.expires_at, n.version) FROM pgmirror_new n));
    RETURN NULL;
END
$$;

-- An update notifies the rows whose version changed (the stamp trigger ran for
-- them), and deletes the keys an update renamed away. Updates of other columns
-- (last_accessed_at, the refresh lock) leave every version as it was and send
-- nothing.
--
-- enable_nestloop is off for this function: PL/pgSQL plans the query below
-- once per session and keeps the plan, which the planner made for the size
-- of the transition tables of that first call. After a one-row update that
-- plan is a nested loop, and a later 10,000-row update on the same
-- connection (any pooled one) would compare every old row with every new
-- one: 9 to 17 s instead of 0.2 s. Hash joins are linear whatever the
-- first call was, and cost a one-row update nothing measurable.
CREATE OR REPLACE FUNCTION pgmirror_notify_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET enable_nestloop = off
AS $$
BEGIN
    IF pgmirror_deferred() THEN
        RETURN NULL;  -- pgmirror_write publishes the batch at its end
    END IF;
    PERFORM pgmirror_publish(ARRAY(
        SELECT pgmirror_set_record(n.key, n.value, n.expires_at, n.version)
          FROM pgmirror_new n LEFT JOIN pgmirror_old o ON o.key = n.key
         WHERE o.version IS DISTINCT FROM n.version
        UNION ALL
        SELECT pgmirror_delete_record(o.key)
          FROM pgmirror_old o
         WHERE NOT EXISTS (SELECT 1 FROM pgmirror_new n WHERE n.key = o.key)));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgmirror_notify_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
    IF pgmirror_deferred() THEN
        RETURN NULL;  -- pgmirror_write publishes the batch at its end
    END IF;
    PERFORM pgmirror_publish(ARRAY(
        SELECT pgmirror_delete_record(o.key) FROM pgmirror_old o));
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION pgmirror_notify_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pgmirror_publish(ARRAY['T '::text || pg_catalog.nextval('cache_entries_version_seq'::regclass)::text]);
    RETURN NULL;
END
$$;

-- Any change of cache_loaders tells the sidecars to reload their loaders.
CREATE OR REPLACE FUNCTION pgmirror_notify_loaders() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pgmirror_publish(ARRAY['L']);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS pgmirror_20_notify_loaders ON cache_loaders;
CREATE TRIGGER pgmirror_20_notify_loaders
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON cache_loaders
    FOR EACH STATEMENT EXECUTE FUNCTION pgmirror_notify_loaders();
ALTER TABLE cache_loaders ENABLE ALWAYS TRIGGER pgmirror_20_notify_loaders;

-- Triggers fire in name order: the stamp (10) before any user trigger named
-- later, the notifications (20) after the statement.
DROP TRIGGER IF EXISTS pgmirror_10_stamp_insert ON cache_entries;
CREATE TRIGGER pgmirror_10_stamp_insert
    BEFORE INSERT ON cache_entries
    FOR EACH ROW EXECUTE FUNCTION pgmirror_stamp();

DROP TRIGGER IF EXISTS pgmirror_10_stamp_update ON cache_entries;
CREATE TRIGGER pgmirror_10_stamp_update
    BEFORE UPDATE OF key, value, expires_at, version ON cache_entries
    FOR EACH ROW EXECUTE FUNCTION pgmirror_stamp();

DROP TRIGGER IF EXISTS pgmirror_20_notify_insert ON cache_entries;
CREATE TRIGGER pgmirror_20_notify_insert
    AFTER INSERT ON cache_entries
    REFERENCING NEW TABLE AS pgmirror_new
    FOR EACH STATEMENT EXECUTE FUNCTION pgmirror_notify_insert();

DROP TRIGGER IF EXISTS pgmirror_20_notify_update ON cache_entries;
CREATE TRIGGER pgmirror_20_notify_update
    AFTER UPDATE ON cache_entries
    REFERENCING OLD TABLE AS pgmirror_old NEW TABLE AS pgmirror_new
    FOR EACH STATEMENT EXECUTE FUNCTION pgmirror_notify_update();

DROP TRIGGER IF EXISTS pgmirror_20_notify_delete ON cache_entries;
CREATE TRIGGER pgmirror_20_notify_delete
    AFTER DELETE ON cache_entries
    REFERENCING OLD TABLE AS pgmirror_old
    FOR EACH STATEMENT EXECUTE FUNCTION pgmirror_notify_delete();

DROP TRIGGER IF EXISTS pgmirror_20_notify_truncate ON cache_entries;
CREATE TRIGGER pgmirror_20_notify_truncate
    AFTER TRUNCATE ON cache_entries
    FOR EACH STATEMENT EXECUTE FUNCTION pgmirror_notify_truncate();

-- Fire even under session_replication_role = replica (logical replication
-- apply, pg_restore --disable-triggers): a change that is not notified leaves
-- every sidecar stale until its next reload.
ALTER TABLE cache_entries ENABLE ALWAYS TRIGGER pgmirror_10_stamp_insert;
ALTER TABLE cache_entries ENABLE ALWAYS TRIGGER pgmirror_10_stamp_update;
ALTER TABLE cache_entries ENABLE ALWAYS TRIGGER pgmirror_20_notify_insert;
ALTER TABLE cache_entries ENABLE ALWAYS TRIGGER pgmirror_20_notify_update;
ALTER TABLE cache_entries ENABLE ALWAYS TRIGGER pgmirror_20_notify_delete;
ALTER TABLE cache_entries ENABLE ALWAYS TRIGGER pgmirror_20_notify_truncate;

-- Nobody needs to call these directly; triggers fire regardless (a trigger
-- function's EXECUTE is checked when the trigger is created, not when it fires).
REVOKE ALL ON FUNCTION pgmirror_delete_record(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_flush_record(bigint, text, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_publish(text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_deferred() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_stamp() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_notify_insert() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_notify_update() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_notify_delete() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_notify_truncate() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgmirror_notify_loaders() FROM PUBLIC;
