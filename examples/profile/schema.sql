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

-- Every change of a row is also published, from SQL, on the pub/sub channel
-- 'profile:' || username of every pgmirror sidecar (pgmirror_publish_channel,
-- pgmirror's migration 0012): the row as the cached JSON, or null once it is
-- deleted. The app's /stream/{user} pushes these messages to the browsers.
-- The message is sent when the transaction commits, after the watch's change
-- of the cache entry: statement triggers fire in name order, and the watch's
-- (pgmirror_watch_...) come before these (profile_publish_...). The role
-- that writes profile needs EXECUTE on pgmirror_publish_channel (members of
-- pgmirror_writer have it).
CREATE OR REPLACE FUNCTION profile_publish() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pgmirror_publish_channel('profile:' || o.username, 'null'::text) FROM profile_old o;
    ELSE
        PERFORM pgmirror_publish_channel('profile:' || n.username,
                    row_to_json((SELECT r FROM (SELECT n.likes, n.followers, n.followings) r))::text)
           FROM profile_new n;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS profile_publish_insert ON profile;
CREATE TRIGGER profile_publish_insert AFTER INSERT ON profile
    REFERENCING NEW TABLE AS profile_new FOR EACH STATEMENT EXECUTE FUNCTION profile_publish();
DROP TRIGGER IF EXISTS profile_publish_update ON profile;
CREATE TRIGGER profile_publish_update AFTER UPDATE ON profile
    REFERENCING NEW TABLE AS profile_new FOR EACH STATEMENT EXECUTE FUNCTION profile_publish();
DROP TRIGGER IF EXISTS profile_publish_delete ON profile;
CREATE TRIGGER profile_publish_delete AFTER DELETE ON profile
    REFERENCING OLD TABLE AS profile_old FOR EACH STATEMENT EXECUTE FUNCTION profile_publish();
