-- The profile counters of examples/profile. Apply with psql, then watch the
-- table in copy mode, so that every committed change of a row is copied into
-- the cache entry 'profile:' || username as {"likes":..,"followers":..,"followings":..}:
--
--   bin/pgmirror watch --dsn "$DSN" --table profile --key username \
--       --prefix profile: --columns likes,followers,followings
CREATE TABLE IF NOT EXISTS profile (
    username   text   PRIMARY KEY,
    likes      bigint NOT NULL DEFAULT 0,
    followers  bigint NOT NULL DEFAULT 0,
    followings bigint NOT NULL DEFAULT 0
);
