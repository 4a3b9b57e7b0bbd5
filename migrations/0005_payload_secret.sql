-- pgmirror 0005: the secret that authenticates notifications (payload format 2).
-- Applied by `pgmirror migrate` inside one transaction with search_path set to
-- "<schema>, pg_temp"; do not add BEGIN/COMMIT here.
--
-- Any role with CONNECT can NOTIFY on channel pgmirror (Postgres has no
-- channel ACL), so a sidecar must not trust a payload because of where it
-- arrived. From this migration on, pgmirror_publish (triggers.sql) signs
-- every payload with HMAC-SHA256 under the newest key of pgmirror_secret and
-- names that key (kid) in the payload's header; sidecars read the two newest
-- keys and accept a payload only if its MAC verifies under the one it names.
--
-- Who can read the keys decides who can forge: nobody but the table's owner
-- and the roles granted SELECT (pgmirror_sidecar, granted by 0006), and
-- whoever can read every table anyway (superusers, pg_read_all_data, a
-- backup of the database). See docs/security.md, "Notifications".
--
-- Rotation: SELECT pgmirror_rotate_secret(); adds a key, which the triggers
-- sign with from then on, and keeps only it and the one before, so payloads
-- signed just before the rotation (by transactions still open) stay valid.

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0005_payload_secret.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

-- key is the HMAC key (32 random bytes); ikey and okey are the key padded
-- to SHA-256's block (64 bytes) and XORed with 0x36 and 0x5c, the inner and
-- outer pads of HMAC (RFC 2104), stored so that the triggers compute a MAC
-- with two calls of the built-in sha256() and no extension:
--   mac = sha256(okey || sha256(ikey || message))
CREATE TABLE pgmirror_secret (
    kid        int         PRIMARY KEY CONSTRAINT pgmirror_secret_kid_check CHECK (kid > 0),
    key        bytea       NOT NULL CONSTRAINT pgmirror_secret_key_check CHECK (octet_length(key) = 32),
    ikey       bytea       NOT NULL CONSTRAINT pgmirror_secret_ikey_check CHECK (octet_length(ikey) = 64),
    okey       bytea       NOT NULL CONSTRAINT pgmirror_secret_okey_check CHECK (octet_length(okey) = 64),
    created_at timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON TABLE pgmirror_secret FROM PUBLIC;

COMMENT ON TABLE pgmirror_secret IS
    'pgmirror: keys that sign notifications (payload format 2); readable only by pgmirror''s roles. '
    'Rotate with SELECT pgmirror_rotate_secret()';

-- Adds a new key and returns its kid; keeps only the new key and the one
-- before it. SECURITY INVOKER: only a role that may already write
-- pgmirror_secret (its owner, a superuser) can rotate.
CREATE FUNCTION pgmirror_rotate_secret() RETURNS int
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    k    bytea;
    ik   bytea;
    ok   bytea;
    b    int;
    new_kid int;
BEGIN
    -- One rotation at a time; readers (the triggers, the sidecars) are not blocked.
    LOCK TABLE pgmirror_secret IN SHARE ROW EXCLUSIVE MODE;
    -- 32 bytes from two version-4 UUIDs: 244 bits from the server's strong
    -- random source (pg_strong_random), without pgcrypto.
    k := pg_catalog.decode(pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '')
                           || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''), 'hex');
    ik := pg_catalog.decode(pg_catalog.repeat('00', 64), 'hex');
    ok := ik;
    FOR i IN 0..63 LOOP
        b := CASE WHEN i < 32 THEN pg_catalog.get_byte(k, i) ELSE 0 END;
        ik := pg_catalog.set_byte(ik, i, b # 54);  -- 0x36
        ok := pg_catalog.set_byte(ok, i, b # 92);  -- 0x5c
    END LOOP;
    SELECT coalesce(max(s.kid), 0) + 1 INTO new_kid FROM pgmirror_secret s;
    INSERT INTO pgmirror_secret (kid, key, ikey, okey) VALUES (new_kid, k, ik, ok);
    DELETE FROM pgmirror_secret s WHERE s.kid < new_kid - 1;
    RETURN new_kid;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_rotate_secret() FROM PUBLIC;

COMMENT ON FUNCTION pgmirror_rotate_secret() IS
    'pgmirror: adds a notification signing key (the triggers sign with it from now on) and keeps only it and the '
    'previous one, which sidecars still accept; returns the new kid';

-- The first key.
SELECT pgmirror_rotate_secret();
