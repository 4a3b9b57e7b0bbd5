-- pgmirror 0008: notification keys are announced before they are used.
-- Applied by `pgmirror migrate` inside one transaction with search_path set to
-- "<schema>, pg_temp"; do not add BEGIN/COMMIT here.
--
-- Until now pgmirror_rotate_secret() added a key that the triggers signed
-- with at once, so a sidecar learnt of it only from the first payload under
-- it, by reading pgmirror_secret again; and since that read is rate-limited
-- (a forger can name any key id), a forger who made a sidecar read the keys
-- just before a rotation made it drop the first genuine payloads under the
-- new key. From this migration on pgmirror_secret holds, besides the
-- current key (the newest with activated_at set, which the triggers sign
-- with) and the previous one, a pending key (activated_at NULL) that nobody
-- signs with yet. Sidecars read all three at every load and reload, and a
-- rotation makes the pending key current and adds a new pending one: a
-- sidecar that read the keys once since the previous rotation already holds
-- the key the triggers switch to. See docs/security.md, "Keys and rotation".

DO $guard$
BEGIN
    IF current_setting('search_path') !~ 'pg_temp\s*$' THEN
        RAISE EXCEPTION '0008_secret_pending.sql needs search_path "<schema>, pg_temp" (got "%")',
            current_setting('search_path')
            USING HINT = 'Apply it with `pgmirror migrate`.';
    END IF;
END
$guard$;

-- NULL: pending, announced to sidecars but not signed with yet. The keys of
-- 0005 were in use from their creation.
ALTER TABLE pgmirror_secret ADD COLUMN activated_at timestamptz;
UPDATE pgmirror_secret SET activated_at = created_at;

COMMENT ON COLUMN pgmirror_secret.activated_at IS
    'pgmirror: when the triggers began signing with this key; NULL for the pending key, which sidecars '
    'read ahead of its use';

-- Adds a pending key (32 random bytes and their HMAC pads) and returns its
-- kid: one past the highest, so a kid is never reused with another key.
-- SECURITY INVOKER, like pgmirror_rotate_secret: only a role that may write
-- pgmirror_secret can add a key.
CREATE FUNCTION pgmirror_add_secret() RETURNS int
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    k    bytea;
    ik   bytea;
    ok   bytea;
    b    int;
    new_kid int;
BEGIN
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
    INSERT INTO pgmirror_secret (kid, key, ikey, okey, activated_at) VALUES (new_kid, k, ik, ok, NULL);
    RETURN new_kid;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_add_secret() FROM PUBLIC;

COMMENT ON FUNCTION pgmirror_add_secret() IS
    'pgmirror: adds a pending notification signing key (used by pgmirror_rotate_secret); returns its kid';

-- Makes the pending key current (the triggers sign with it from the next
-- statement on), adds a new pending key, and keeps only these two and the
-- key that was current until now, whose payloads may still be on their way
-- from transactions open at the rotation. Returns the kid now current.
-- Without a pending key (deleted by hand), the new key is made current at
-- once, as before 0008: sidecars then learn it from its first payload.
CREATE OR REPLACE FUNCTION pgmirror_rotate_secret() RETURNS int
LANGUAGE plpgsql SET search_path FROM CURRENT
AS $fn$
DECLARE
    cur  int;
    prev int;
BEGIN
    -- One rotation at a time; readers (the triggers, the sidecars) are not blocked.
    LOCK TABLE pgmirror_secret IN SHARE ROW EXCLUSIVE MODE;
    SELECT s.kid INTO cur FROM pgmirror_secret s WHERE s.activated_at IS NULL ORDER BY s.kid DESC LIMIT 1;
    IF cur IS NULL THEN
        cur := pgmirror_add_secret();
    END IF;
    UPDATE pgmirror_secret s SET activated_at = pg_catalog.clock_timestamp() WHERE s.kid = cur;
    PERFORM pgmirror_add_secret();
    SELECT s.kid INTO prev FROM pgmirror_secret s
        WHERE s.activated_at IS NOT NULL AND s.kid < cur ORDER BY s.kid DESC LIMIT 1;
    DELETE FROM pgmirror_secret s
        WHERE (s.activated_at IS NOT NULL AND s.kid < coalesce(prev, cur))
           OR (s.activated_at IS NULL AND s.kid < cur);
    RETURN cur;
END
$fn$;

REVOKE ALL ON FUNCTION pgmirror_rotate_secret() FROM PUBLIC;

COMMENT ON FUNCTION pgmirror_rotate_secret() IS
    'pgmirror: makes the pending notification signing key current (the triggers sign with it from now on), '
    'adds a new pending key, and keeps only these and the previous key, which sidecars still accept; '
    'returns the kid now current';

-- The first pending key, so that the next rotation switches to a key every
-- sidecar has read at its next load.
SELECT pgmirror_add_secret();
