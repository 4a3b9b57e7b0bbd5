-- pgmirror 0010: FLUSHDB and FLUSHALL; SETRANGE, SETBIT, BITOP, RENAME,
-- RENAMENX and COPY. Applied by `pgmirror migrate` inside
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
-- * pgmirror_write_commands runs SETRANGE, SETBIT, BITOP, RENAME, RENAMENX
--   and COPY as Redis does (under the key locks of every key they name),
--   storing through pgmirror_store.
--
-- pgmirror_flush and pgmirror_store are not SECURITY DEFINER:
-- pgmirror_write and pgmirror_write_commands, which are, call them as
-- pgmirror's owner; PUBLIC may not execute them. The replaced functions keep
-- their signatures, owners, grants and everything else they did.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0010_commands.sql needs search_path "<schema>, pg_temp" (got "%")',
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

-- Stores value v with expiry exp under key k as read before (present, and
-- then at version ver): an update that matches only that version, or an
-- insert that does nothing if the row came back; either way PMRTY when a
-- writer without the key lock (plain SQL) changed it meanwhile, which makes
-- pgmirror_write_commands run the command again. Returns the row's new
-- version and expiry. pgmirror_write_commands calls it, as its owner.
CREATE FUNCTION pgmirror_store(k text, v bytea, exp timestamptz, present boolean, ver bigint,
                               OUT o_ver bigint, OUT o_exp timestamptz)
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF present THEN
        UPDATE cache_entries c SET value = v, expires_at = exp
         WHERE c.key = k AND c.version = ver
        RETURNING c.version, c.expires_at INTO o_ver, o_exp;
    ELSE
        INSERT INTO cache_entries AS c (key, value, expires_at) VALUES (k, v, exp)
        ON CONFLICT (key) DO NOTHING
        RETURNING c.version, c.expires_at INTO o_ver, o_exp;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
    END IF;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_store(text, bytea, timestamptz, boolean, bigint) FROM PUBLIC;

-- pgmirror_write_commands as in 0009_records.sql, with SETRANGE, SETBIT,
-- BITOP, RENAME, RENAMENX and COPY; nothing else changed.
CREATE OR REPLACE FUNCTION pgmirror_write_commands(ops jsonb, vals bytea, max_value bigint DEFAULT NULL)
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
    inline_max  constant int := 65536;      -- st_value travels back up to this size
    int_max     constant numeric := 9223372036854775807;
    int_min     constant numeric := -9223372036854775808;
    -- The largest long double: a larger INCRBYFLOAT result is infinite.
    ldbl_max    constant numeric := 1.18973149535723176502e4932;
    e_notint    constant text := 'ERR value is not an integer or out of range';
    e_overflow  constant text := 'ERR increment or decrement would overflow';
    e_naninf    constant text := 'ERR increment would produce NaN or Infinity';
    e_toobig    constant text := 'ERR string exceeds maximum allowed size (proto-max-bulk-len)';
    lockid      bigint;
    i           int;
    o           jsonb;
    kd          text;
    k           text;
    keys        text[];
    em          text;
    ms          bigint;
    cnd         text;
    t           timestamptz;      -- the command's clock
    attempt     int;
    -- the row as read
    r_found     boolean;
    r_live      boolean;
    r_value     bytea;
    r_len       bigint;
    r_exp       timestamptz;
    r_ver       bigint;
    cur_exp     timestamptz;      -- r_exp with infinity as NULL (no expiry)
    -- computed
    v           bytea;
    new_exp     timestamptz;
    new_val     bytea;
    s           text;
    num         numeric;
    delta       numeric;
    cnt         bigint;
    rr          record;
    -- SETRANGE, SETBIT, BITOP, RENAME, RENAMENX, COPY
    off         bigint;
    srcs        bytea[];
    dst         text;
    d_exp       timestamptz;
    d_ver       bigint;
    d_found     boolean;
    d_live      boolean;
    -- the command's reply and states
    rp          text;
    rp_int      bigint;
    rp_bulk     bytea;
    rp_err      text;
    sk          text[];
    sv          bigint[];
    se          bigint[];
    sd          boolean[];
    sval        bytea[];
    ret_ver     bigint;
    ret_exp     timestamptz;
    ret_val     bytea;
BEGIN
    IF jsonb_typeof(ops) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'pgmirror_write: ops must be a JSON array';
    END IF;

    -- Every key of the batch, in one order all writers share: two batches
    -- with overlapping keys wait for each other instead of deadlocking.
    FOR lockid IN
        SELECT DISTINCT pgmirror_key_lock(kk)
          FROM jsonb_array_elements(ops) e, jsonb_array_elements_text(e->'keys') kk
         ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lockid);
    END LOOP;

    FOR i IN 0 .. jsonb_array_length(ops) - 1 LOOP
        o := ops->i;
        kd := o->>'k';
        k := o->'keys'->>0;
        IF kd IN ('mset', 'msetnx', 'del', 'bitop', 'rename', 'renamenx', 'copy') THEN
            keys := ARRAY(SELECT x FROM jsonb_array_elements_text(o->'keys') WITH ORDINALITY a(x, n) ORDER BY n);
        ELSE
            keys := ARRAY[k];
        END IF;
        em := coalesce(o->>'e', 'none');
        ms := (o->>'ms')::bigint;
        cnd := coalesce(o->>'c', 'none');
        attempt := 0;
        LOOP
            rp := NULL; rp_int := NULL; rp_bulk := NULL; rp_err := NULL;
            sk := '{}'; sv := '{}'; se := '{}'; sd := '{}'; sval := '{}';
            BEGIN
                t := clock_timestamp();
                IF k IS NULL THEN
                    RAISE EXCEPTION 'ERR wrong number of arguments for ''%'' command', kd USING ERRCODE = 'PMERR';
                END IF;
                -- The new expiry of set, getex and expire.
                new_exp := CASE em
                    WHEN 'in' THEN t + (ms / 1000) * interval '1 second' + (ms % 1000) * interval '1 millisecond'
                    WHEN 'at' THEN to_timestamp(ms / 1000) + (ms % 1000) * interval '1 millisecond'
                END;

                CASE kd
                WHEN 'set' THEN
                    v := substring(vals FROM (o->'v'->0->>0)::int FOR (o->'v'->0->>1)::int);
                    IF cnd = 'none' AND em IN ('none', 'in', 'at') AND NOT coalesce((o->>'g')::boolean, false) THEN
                        -- A plain SET replaces whatever is there: no need to read it.
                        rp := 'ok';
                        IF new_exp IS NOT NULL AND new_exp <= t THEN
                            DELETE FROM cache_entries c WHERE c.key = k RETURNING c.version INTO ret_ver;
                            IF FOUND THEN
                                sk := sk || k; sv := sv || ret_ver; se := array_append(se, NULL::bigint);
                                sd := sd || true; sval := array_append(sval, NULL::bytea);
                            END IF;
                        ELSE
                            UPDATE cache_entries c SET value = v, expires_at = new_exp WHERE c.key = k
                            RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                            IF NOT FOUND THEN
                                INSERT INTO cache_entries AS c (key, value, expires_at) VALUES (k, v, new_exp)
                                ON CONFLICT (key) DO NOTHING
                                RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                                IF NOT FOUND THEN
                                    RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                                END IF;
                            END IF;
                            sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                            sd := sd || false; sval := array_append(sval, NULL::bytea);
                        END IF;
                    ELSE
                        -- Conditions, GET or KEEPTTL: read the row first.
                        IF coalesce((o->>'g')::boolean, false) THEN
                            SELECT c.value, c.expires_at, c.version INTO r_value, r_exp, r_ver
                              FROM cache_entries c WHERE c.key = k;
                        ELSE
                            SELECT NULL, c.expires_at, c.version INTO r_value, r_exp, r_ver
                              FROM cache_entries c WHERE c.key = k;
                        END IF;
                        r_found := FOUND;
                        r_live := r_found AND (r_exp IS NULL OR r_exp > t);
                        IF coalesce((o->>'g')::boolean, false) THEN
                            rp := CASE WHEN r_live THEN 'bulk' ELSE 'nil' END;
                            rp_bulk := CASE WHEN r_live THEN r_value END;
                        ELSE
                            rp := 'ok';
                        END IF;
                        IF (cnd = 'nx' AND r_live) OR (cnd = 'xx' AND NOT r_live) THEN
                            IF rp = 'ok' THEN
                                rp := 'nil';
                            END IF;
                        ELSE
                            IF em = 'keep' THEN
                                new_exp := CASE WHEN r_live THEN r_exp END;
                            ELSIF em NOT IN ('in', 'at') THEN
                                new_exp := NULL;
                            END IF;
                            IF new_exp IS NOT NULL AND new_exp <= t THEN
                                -- Expired on arrival: the key ends up absent.
                                IF r_found THEN
                                    DELETE FROM cache_entries c WHERE c.key = k AND c.version = r_ver;
                                    IF NOT FOUND THEN
                                        RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                                    END IF;
                                    sk := sk || k; sv := sv || r_ver; se := array_append(se, NULL::bigint);
                                    sd := sd || true; sval := array_append(sval, NULL::bytea);
                                END IF;
                            ELSE
                                IF r_found THEN
                                    UPDATE cache_entries c SET value = v, expires_at = new_exp
                                     WHERE c.key = k AND c.version = r_ver
                                    RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                                ELSE
                                    INSERT INTO cache_entries AS c (key, value, expires_at) VALUES (k, v, new_exp)
                                    ON CONFLICT (key) DO NOTHING
                                    RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                                END IF;
                                IF NOT FOUND THEN
                                    RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                                END IF;
                                sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                                sd := sd || false; sval := array_append(sval, NULL::bytea);
                            END IF;
                        END IF;
                    END IF;

                WHEN 'getdel' THEN
                    SELECT c.value, c.expires_at, c.version INTO r_value, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    IF FOUND AND (r_exp IS NULL OR r_exp > t) THEN
                        DELETE FROM cache_entries c WHERE c.key = k AND c.version = r_ver;
                        IF NOT FOUND THEN
                            RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                        END IF;
                        rp := 'bulk'; rp_bulk := r_value;
                        sk := sk || k; sv := sv || r_ver; se := array_append(se, NULL::bigint);
                        sd := sd || true; sval := array_append(sval, NULL::bytea);
                    ELSE
                        rp := 'nil';
                    END IF;

                WHEN 'getex' THEN
                    SELECT c.value, c.expires_at, c.version INTO r_value, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    IF NOT FOUND OR NOT (r_exp IS NULL OR r_exp > t) THEN
                        rp := 'nil';
                    ELSE
                        rp := 'bulk'; rp_bulk := r_value;
                        cur_exp := CASE WHEN r_exp <> 'infinity' THEN r_exp END;
                        IF em = 'persist' THEN
                            new_exp := NULL;
                        ELSIF em NOT IN ('in', 'at') THEN
                            new_exp := cur_exp;  -- no option: a plain GET
                        END IF;
                        IF new_exp IS NOT NULL AND new_exp <= t THEN
                            DELETE FROM cache_entries c WHERE c.key = k AND c.version = r_ver;
                            IF NOT FOUND THEN
                                RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                            END IF;
                            sk := sk || k; sv := sv || r_ver; se := array_append(se, NULL::bigint);
                            sd := sd || true; sval := array_append(sval, NULL::bytea);
                        ELSIF new_exp IS DISTINCT FROM cur_exp THEN
                            UPDATE cache_entries c SET expires_at = new_exp
                             WHERE c.key = k AND c.version = r_ver
                            RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                            IF NOT FOUND THEN
                                RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                            END IF;
                            sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                            sd := sd || false; sval := array_append(sval, NULL::bytea);
                        END IF;
                    END IF;

                WHEN 'mset', 'msetnx' THEN
                    IF jsonb_array_length(o->'v') IS DISTINCT FROM cardinality(keys) THEN
                        RAISE EXCEPTION 'ERR wrong number of arguments for ''%'' command', kd USING ERRCODE = 'PMERR';
                    END IF;
                    IF kd = 'msetnx' AND EXISTS (SELECT FROM cache_entries c
                            WHERE c.key = ANY(keys) AND (c.expires_at IS NULL OR c.expires_at > t)) THEN
                        rp := 'int'; rp_int := 0;
                    ELSE
                        -- One statement, so one notification for the command;
                        -- a key given twice takes its last value, as in Redis.
                        -- msetnx overwrites only expired rows: a row that came
                        -- alive since the check above makes it start over.
                        cnt := 0;
                        FOR rr IN
                            INSERT INTO cache_entries AS c (key, value, expires_at)
                            SELECT DISTINCT ON (a.x) a.x,
                                   substring(vals FROM (o->'v'->(a.n::int - 1)->>0)::int
                                                  FOR (o->'v'->(a.n::int - 1)->>1)::int),
                                   NULL::timestamptz
                              FROM unnest(keys) WITH ORDINALITY a(x, n)
                             ORDER BY a.x, a.n DESC
                            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = NULL
                             WHERE kd = 'mset' OR c.expires_at <= t
                            RETURNING c.key AS rkey, c.version AS rver, c.expires_at AS rexp
                        LOOP
                            cnt := cnt + 1;
                            sk := sk || rr.rkey; sv := sv || rr.rver; se := array_append(se, pgmirror_expiry_us(rr.rexp));
                            sd := sd || false; sval := array_append(sval, NULL::bytea);
                        END LOOP;
                        IF kd = 'msetnx' THEN
                            IF cnt <> (SELECT count(DISTINCT x) FROM unnest(keys) x) THEN
                                RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                            END IF;
                            rp := 'int'; rp_int := 1;
                        ELSE
                            rp := 'ok';
                        END IF;
                    END IF;

                WHEN 'incrby', 'incrbyfloat' THEN
                    -- Values longer than any number are not read in full.
                    SELECT CASE WHEN octet_length(c.value) <= 5119 THEN c.value END, c.expires_at, c.version
                      INTO r_value, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    r_found := FOUND;
                    r_live := r_found AND (r_exp IS NULL OR r_exp > t);
                    IF kd = 'incrby' THEN
                        delta := (o->>'i')::numeric;
                        IF delta IS NULL OR delta <> trunc(delta) OR delta < int_min OR delta > int_max THEN
                            RAISE EXCEPTION '%', e_notint USING ERRCODE = 'PMERR';
                        END IF;
                        num := 0;
                        IF r_live THEN
                            -- Redis's string2ll: optional '-', no '+', no
                            -- spaces, no leading zeros, at most 20 bytes.
                            -- encode(escape) turns every byte that is not
                            -- printable ASCII into a backslash sequence,
                            -- which the pattern refuses.
                            s := CASE WHEN octet_length(r_value) <= 20 THEN encode(r_value, 'escape') END;
                            IF s IS NULL OR s !~ '^(0|-?[1-9][0-9]*)$' THEN
                                RAISE EXCEPTION '%', e_notint USING ERRCODE = 'PMERR';
                            END IF;
                            num := s::numeric;
                            IF num < int_min OR num > int_max THEN
                                RAISE EXCEPTION '%', e_notint USING ERRCODE = 'PMERR';
                            END IF;
                        END IF;
                        num := num + delta;
                        IF num < int_min OR num > int_max THEN
                            RAISE EXCEPTION '%', e_overflow USING ERRCODE = 'PMERR';
                        END IF;
                        new_val := convert_to(num::text, 'UTF8');
                        rp := 'int'; rp_int := num::bigint;
                    ELSE
                        -- Both operands parse as Redis parses them
                        -- (pgmirror_parse_float); an infinite operand makes
                        -- an infinite result.
                        num := 0;
                        IF r_live THEN
                            num := pgmirror_parse_float(
                                CASE WHEN octet_length(r_value) <= 5119 THEN encode(r_value, 'escape') END);
                        END IF;
                        delta := pgmirror_parse_float(o->>'f');
                        num := num + delta;
                        IF num IS NULL OR abs(num) > ldbl_max THEN
                            RAISE EXCEPTION '%', e_naninf USING ERRCODE = 'PMERR';
                        END IF;
                        new_val := convert_to(trim_scale(num)::text, 'UTF8');
                        IF coalesce(max_value, 0) > 0 AND octet_length(new_val) > max_value THEN
                            RAISE EXCEPTION '%', e_toobig USING ERRCODE = 'PMERR';
                        END IF;
                        rp := 'bulk'; rp_bulk := new_val;
                    END IF;
                    -- The expiry stays; a key that was absent starts without one.
                    IF r_live THEN
                        UPDATE cache_entries c SET value = new_val
                         WHERE c.key = k AND c.version = r_ver
                        RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                    ELSIF r_found THEN
                        UPDATE cache_entries c SET value = new_val, expires_at = NULL
                         WHERE c.key = k AND c.version = r_ver
                        RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                    ELSE
                        INSERT INTO cache_entries AS c (key, value) VALUES (k, new_val)
                        ON CONFLICT (key) DO NOTHING
                        RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                    END IF;
                    IF NOT FOUND THEN
                        RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                    END IF;
                    sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                    sd := sd || false; sval := array_append(sval, new_val);

                WHEN 'append' THEN
                    v := substring(vals FROM (o->'v'->0->>0)::int FOR (o->'v'->0->>1)::int);
                    SELECT octet_length(c.value), c.expires_at, c.version INTO r_len, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    r_found := FOUND;
                    r_live := r_found AND (r_exp IS NULL OR r_exp > t);
                    IF NOT r_live THEN
                        r_len := 0;
                    END IF;
                    rp := 'int'; rp_int := r_len + octet_length(v);
                    IF coalesce(max_value, 0) > 0 AND rp_int > max_value THEN
                        RAISE EXCEPTION '%', e_toobig USING ERRCODE = 'PMERR';
                    END IF;
                    IF r_live AND octet_length(v) = 0 THEN
                        NULL;  -- nothing changes
                    ELSE
                        IF r_live THEN
                            UPDATE cache_entries c SET value = c.value || v
                             WHERE c.key = k AND c.version = r_ver
                            RETURNING c.version, c.expires_at,
                                      CASE WHEN octet_length(c.value) <= inline_max THEN c.value END
                                 INTO ret_ver, ret_exp, ret_val;
                        ELSIF r_found THEN
                            UPDATE cache_entries c SET value = v, expires_at = NULL
                             WHERE c.key = k AND c.version = r_ver
                            RETURNING c.version, c.expires_at,
                                      CASE WHEN octet_length(c.value) <= inline_max THEN c.value END
                                 INTO ret_ver, ret_exp, ret_val;
                        ELSE
                            INSERT INTO cache_entries AS c (key, value) VALUES (k, v)
                            ON CONFLICT (key) DO NOTHING
                            RETURNING c.version, c.expires_at,
                                      CASE WHEN octet_length(c.value) <= inline_max THEN c.value END
                                 INTO ret_ver, ret_exp, ret_val;
                        END IF;
                        IF NOT FOUND THEN
                            RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                        END IF;
                        sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                        sd := sd || false; sval := array_append(sval, ret_val);
                    END IF;

                WHEN 'setrange', 'setbit' THEN
                    -- The socket server checked the offset and the bit.
                    v := substring(vals FROM (o->'v'->0->>0)::int FOR (o->'v'->0->>1)::int);
                    off := (o->>'i')::bigint;
                    SELECT c.value, c.expires_at, c.version INTO r_value, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    r_found := FOUND;
                    r_live := r_found AND (r_exp IS NULL OR r_exp > t);
                    IF NOT r_live THEN
                        r_value := ''::bytea;
                        r_exp := NULL;
                    END IF;
                    r_len := octet_length(r_value);
                    rp := 'int';
                    IF off IS NULL OR off < 0 THEN
                        RAISE EXCEPTION 'ERR offset is out of range' USING ERRCODE = 'PMERR';
                    END IF;
                    IF kd = 'setrange' THEN
                        cnt := off + octet_length(v);
                    ELSE
                        cnt := off / 8 + 1;
                    END IF;
                    IF kd = 'setrange' AND octet_length(v) = 0 THEN
                        rp_int := r_len;  -- nothing changes
                    ELSIF cnt > 536870912 OR coalesce(max_value, 0) > 0 AND cnt > max_value THEN
                        RAISE EXCEPTION '%', e_toobig USING ERRCODE = 'PMERR';
                    ELSE
                        new_val := r_value;
                        IF r_len < cnt THEN
                            new_val := new_val || decode(repeat('00', (cnt - r_len)::int), 'hex');
                        END IF;
                        IF kd = 'setrange' THEN
                            new_val := overlay(new_val PLACING v FROM (off + 1)::int FOR octet_length(v));
                            rp_int := octet_length(new_val);
                        ELSE
                            -- Redis numbers bits from the most significant of
                            -- each byte, Postgres from the least.
                            off := (off / 8) * 8 + 7 - off % 8;
                            rp_int := get_bit(new_val, off);
                            new_val := set_bit(new_val, off, CASE WHEN v = '\x31'::bytea THEN 1 ELSE 0 END);
                        END IF;
                        SELECT s1.o_ver, s1.o_exp INTO ret_ver, ret_exp FROM pgmirror_store(k, new_val, r_exp, r_found, r_ver) s1;
                        sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                        sd := sd || false;
                        sval := array_append(sval, CASE WHEN octet_length(new_val) <= inline_max THEN new_val END);
                    END IF;

                WHEN 'bitop' THEN
                    s := lower(o->>'o');
                    IF s IS NULL OR s NOT IN ('and', 'or', 'xor', 'not') THEN
                        RAISE EXCEPTION 'ERR syntax error' USING ERRCODE = 'PMERR';
                    ELSIF cardinality(keys) < 2 OR s = 'not' AND cardinality(keys) <> 2 THEN
                        RAISE EXCEPTION 'ERR BITOP NOT must be called with a single source key.' USING ERRCODE = 'PMERR';
                    END IF;
                    srcs := ARRAY(SELECT coalesce((SELECT c.value FROM cache_entries c
                                                    WHERE c.key = a.x AND (c.expires_at IS NULL OR c.expires_at > t)), ''::bytea)
                                    FROM unnest(keys[2:]) WITH ORDINALITY a(x, n) ORDER BY a.n);
                    cnt := (SELECT coalesce(max(octet_length(x)), 0) FROM unnest(srcs) x);
                    IF coalesce(max_value, 0) > 0 AND cnt > max_value THEN
                        RAISE EXCEPTION '%', e_toobig USING ERRCODE = 'PMERR';
                    END IF;
                    new_val := NULL;
                    IF cnt > 0 THEN
                        -- Byte by byte, a shorter source counting as zeros.
                        new_val := decode((
                            SELECT string_agg(lpad(to_hex(g.b), 2, '0'), '' ORDER BY g.i)
                              FROM (SELECT y.i, CASE s WHEN 'and' THEN bit_and(y.b) WHEN 'or' THEN bit_or(y.b)
                                                       WHEN 'xor' THEN bit_xor(y.b) ELSE 255 - min(y.b) END AS b
                                      FROM (SELECT gs.gi AS i,
                                                   CASE WHEN gs.gi < octet_length(x.v) THEN get_byte(x.v, gs.gi::int) ELSE 0 END AS b
                                              FROM generate_series(0, cnt - 1) gs(gi), unnest(srcs) x(v)) y
                                     GROUP BY y.i) g), 'hex');
                    END IF;
                    SELECT c.version INTO d_ver FROM cache_entries c WHERE c.key = k;
                    d_found := FOUND;
                    rp := 'int'; rp_int := cnt;
                    IF new_val IS NULL THEN
                        IF d_found THEN
                            DELETE FROM cache_entries c WHERE c.key = k AND c.version = d_ver;
                            IF NOT FOUND THEN
                                RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                            END IF;
                            sk := sk || k; sv := sv || d_ver; se := array_append(se, NULL::bigint);
                            sd := sd || true; sval := array_append(sval, NULL::bytea);
                        END IF;
                    ELSE
                        SELECT s2.o_ver, s2.o_exp INTO ret_ver, ret_exp FROM pgmirror_store(k, new_val, NULL, d_found, d_ver) s2;
                        sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                        sd := sd || false;
                        sval := array_append(sval, CASE WHEN octet_length(new_val) <= inline_max THEN new_val END);
                    END IF;

                WHEN 'rename', 'renamenx', 'copy' THEN
                    IF cardinality(keys) <> 2 THEN
                        RAISE EXCEPTION 'ERR wrong number of arguments for ''%'' command', kd USING ERRCODE = 'PMERR';
                    END IF;
                    dst := keys[2];
                    IF kd = 'copy' AND dst = k THEN
                        RAISE EXCEPTION 'ERR source and destination objects are the same' USING ERRCODE = 'PMERR';
                    END IF;
                    SELECT c.value, c.expires_at, c.version INTO r_value, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    r_live := FOUND AND (r_exp IS NULL OR r_exp > t);
                    rp := CASE kd WHEN 'rename' THEN 'ok' ELSE 'int' END;
                    rp_int := CASE WHEN kd <> 'rename' THEN 0 END;
                    IF NOT r_live AND kd <> 'copy' THEN
                        RAISE EXCEPTION 'ERR no such key' USING ERRCODE = 'PMERR';
                    END IF;
                    SELECT c.expires_at, c.version INTO d_exp, d_ver FROM cache_entries c WHERE c.key = dst;
                    d_found := FOUND;
                    d_live := d_found AND (d_exp IS NULL OR d_exp > t);
                    IF NOT r_live OR dst = k
                       OR d_live AND (kd = 'renamenx' OR kd = 'copy' AND coalesce(o->>'o', '') <> 'replace') THEN
                        NULL;  -- nothing changes (RENAME of a key to itself: OK; RENAMENX: 0)
                    ELSE
                        IF kd <> 'copy' THEN
                            DELETE FROM cache_entries c WHERE c.key = k AND c.version = r_ver;
                            IF NOT FOUND THEN
                                RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                            END IF;
                            sk := sk || k; sv := sv || r_ver; se := array_append(se, NULL::bigint);
                            sd := sd || true; sval := array_append(sval, NULL::bytea);
                        END IF;
                        SELECT s3.o_ver, s3.o_exp INTO ret_ver, ret_exp FROM pgmirror_store(dst, r_value, r_exp, d_found, d_ver) s3;
                        sk := sk || dst; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                        sd := sd || false;
                        sval := array_append(sval, CASE WHEN octet_length(r_value) <= inline_max THEN r_value END);
                        IF kd <> 'rename' THEN
                            rp_int := 1;
                        END IF;
                    END IF;

                WHEN 'del' THEN
                    -- Expired rows are deleted too, but count as absent.
                    cnt := 0;
                    FOR rr IN
                        DELETE FROM cache_entries c WHERE c.key = ANY(keys)
                        RETURNING c.key AS rkey, c.version AS rver, (c.expires_at IS NULL OR c.expires_at > t) AS rlive
                    LOOP
                        IF rr.rlive THEN
                            cnt := cnt + 1;
                        END IF;
                        sk := sk || rr.rkey; sv := sv || rr.rver; se := array_append(se, NULL::bigint);
                        sd := sd || true; sval := array_append(sval, NULL::bytea);
                    END LOOP;
                    rp := 'int'; rp_int := cnt;

                WHEN 'expire', 'persist' THEN
                    IF kd = 'expire' AND em NOT IN ('in', 'at') THEN
                        RAISE EXCEPTION 'ERR syntax error' USING ERRCODE = 'PMERR';
                    END IF;
                    SELECT CASE WHEN octet_length(c.value) <= inline_max THEN c.value END, c.expires_at, c.version
                      INTO r_value, r_exp, r_ver
                      FROM cache_entries c WHERE c.key = k;
                    r_live := FOUND AND (r_exp IS NULL OR r_exp > t);
                    cur_exp := CASE WHEN r_exp <> 'infinity' THEN r_exp END;
                    rp := 'int'; rp_int := 0;
                    IF NOT r_live THEN
                        NULL;
                    ELSIF kd = 'persist' THEN
                        IF cur_exp IS NOT NULL THEN
                            UPDATE cache_entries c SET expires_at = NULL
                             WHERE c.key = k AND c.version = r_ver
                            RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                            IF NOT FOUND THEN
                                RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                            END IF;
                            rp_int := 1;
                            sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                            sd := sd || false; sval := array_append(sval, r_value);
                        END IF;
                    ELSIF (cnd = 'nx' AND cur_exp IS NOT NULL)
                       OR (cnd = 'xx' AND cur_exp IS NULL)
                       OR (cnd = 'gt' AND (cur_exp IS NULL OR new_exp <= cur_exp))
                       OR (cnd = 'lt' AND cur_exp IS NOT NULL AND new_exp >= cur_exp)
                       OR (cnd = 'xxlt' AND (cur_exp IS NULL OR new_exp >= cur_exp)) THEN
                        NULL;  -- the condition fails: nothing changes
                    ELSIF new_exp <= t THEN
                        DELETE FROM cache_entries c WHERE c.key = k AND c.version = r_ver;
                        IF NOT FOUND THEN
                            RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                        END IF;
                        rp_int := 1;
                        sk := sk || k; sv := sv || r_ver; se := array_append(se, NULL::bigint);
                        sd := sd || true; sval := array_append(sval, NULL::bytea);
                    ELSIF new_exp = cur_exp THEN
                        rp_int := 1;  -- set to what it was: nothing to write
                    ELSE
                        UPDATE cache_entries c SET expires_at = new_exp
                         WHERE c.key = k AND c.version = r_ver
                        RETURNING c.version, c.expires_at INTO ret_ver, ret_exp;
                        IF NOT FOUND THEN
                            RAISE EXCEPTION 'retry' USING ERRCODE = 'PMRTY';
                        END IF;
                        rp_int := 1;
                        sk := sk || k; sv := sv || ret_ver; se := array_append(se, pgmirror_expiry_us(ret_exp));
                        sd := sd || false; sval := array_append(sval, r_value);
                    END IF;

                ELSE
                    RAISE EXCEPTION 'ERR unknown write command ''%''', left(kd, 40) USING ERRCODE = 'PMERR';
                END CASE;
                EXIT;  -- done: leaving the block releases the subtransaction
            EXCEPTION WHEN OTHERS THEN
                -- The command's effects are rolled back. PMRTY: a writer that
                -- does not take the key lock (plain SQL) changed a row between
                -- the read and the write; run the command again.
                IF SQLSTATE = 'PMRTY' AND attempt < 20 THEN
                    attempt := attempt + 1;
                    CONTINUE;
                END IF;
                rp := 'error';
                rp_err := CASE
                    WHEN SQLSTATE = 'PMERR' THEN SQLERRM
                    WHEN SQLSTATE = 'PMRTY' THEN 'ERR the key kept changing under concurrent writes; retry'
                    WHEN SQLSTATE IN ('22008', '22015') THEN 'ERR invalid expire time in ''' || kd || ''' command'
                    ELSE 'ERR ' || left(regexp_replace(SQLERRM, '[\r\n]+', ' ', 'g'), 200)
                END;
                sk := '{}';
                EXIT;
            END;
        END LOOP;

        cmd := i;
        rec := 'reply';
        reply := rp; reply_int := rp_int; reply_bulk := rp_bulk; reply_err := rp_err;
        st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
        xact_id := NULL;
        RETURN NEXT;
        reply := NULL; reply_int := NULL; reply_bulk := NULL; reply_err := NULL;
        rec := 'state';
        FOR j IN 1 .. coalesce(cardinality(sk), 0) LOOP
            st_key := sk[j]; st_version := sv[j]; st_expires := se[j]; st_deleted := sd[j]; st_value := sval[j];
            RETURN NEXT;
        END LOOP;
    END LOOP;

    cmd := NULL; rec := 'xact';
    reply := NULL; reply_int := NULL; reply_bulk := NULL; reply_err := NULL;
    st_key := NULL; st_version := NULL; st_expires := NULL; st_deleted := NULL; st_value := NULL;
    xact_id := pg_current_xact_id_if_assigned()::text::bigint;
    RETURN NEXT;
END
$fn$;

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
