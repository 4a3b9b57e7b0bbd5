-- pgmirror 0001: the cache table, its version sequence, and the loaders table.
-- Applied by `pgmirror migrate` inside one transaction with search_path set to
-- the target schema; do not add BEGIN/COMMIT here.

-- Every change of a row's value or expiry takes a number from this sequence.
-- A version identifies a write (so a sidecar recognises the echo of its own
-- write); it does not order writes: commit order, as notifications arrive,
-- is the truth (SPEC §4).
CREATE SEQUENCE cache_entries_version_seq AS bigint;

CREATE TABLE cache_entries (
    key                text        PRIMARY KEY
                                   CONSTRAINT cache_entries_key_max_4000_bytes CHECK (octet_length(key) <= 4000),
    value              bytea       NOT NULL,
    expires_at         timestamptz NULL,
    last_accessed_at   timestamptz NOT NULL DEFAULT now(),
    refresh_started_at timestamptz NULL,
    is_refreshing      boolean     NOT NULL DEFAULT false,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- The stamp trigger (triggers.sql) overrides this on every insert and on
    -- every update of key, value or expires_at; the default keeps rows valid
    -- when ordinary triggers are disabled (session_replication_role).
    version            bigint      NOT NULL DEFAULT nextval('cache_entries_version_seq')
);

ALTER SEQUENCE cache_entries_version_seq OWNED BY cache_entries.version;

COMMENT ON TABLE cache_entries IS
    'pgmirror: source of truth of the sidecar caches; changes of value/expires_at are notified on channel pgmirror';

-- SQL that computes a missing value: $1 is the key without its prefix (text);
-- the query returns at most one row whose first column is the value.
CREATE TABLE cache_loaders (
    prefix text     PRIMARY KEY,
    query  text     NOT NULL,
    ttl    interval NULL
);

COMMENT ON TABLE cache_loaders IS
    'pgmirror: loaders; a GET of an absent key under prefix runs query with $1 = the rest of the key';
