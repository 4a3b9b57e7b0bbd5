package migrations_test

// Attacks on the SQL side (docs/security.md), each by a role of its threat
// model: mallory (only CONNECT), writer (a member of pgmirror_writer) and
// app (owns a watched table). Roles belong to the whole test cluster, so
// every test makes its own, with a unique name.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/migrations"
)

var roleSeq atomic.Int64

// newRole creates a login role named base_N and returns its name and a pool
// on dsn that logs in as it. grants run (as the superuser of db) with %s
// standing for the role's name; a grant of pgmirror_writer or
// pgmirror_sidecar on a schema older than migration 0006 (which creates
// them) becomes the privileges the role needed there, so that the attacks
// below can run against the old schema and show that they worked.
func newRole(t *testing.T, db *sql.DB, dsn, base string, grants ...string) (string, *sql.DB) {
	t.Helper()
	name := fmt.Sprintf("%s_%d", base, roleSeq.Add(1))
	exec(t, db, `CREATE ROLE `+pq.QuoteIdentifier(name)+` LOGIN`)
	for _, g := range grants {
		g = fmt.Sprintf(g, pq.QuoteIdentifier(name))
		if strings.HasPrefix(g, "GRANT pgmirror_") {
			var exists bool
			role := strings.Fields(g)[1]
			if err := db.QueryRow(`SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)`, role).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if !exists {
				t.Logf("no role %s (schema before 0006): granting %s its privileges on cache_entries directly", role, name)
				g = `GRANT SELECT, INSERT, UPDATE, DELETE ON cache_entries TO ` + pq.QuoteIdentifier(name) +
					`; GRANT USAGE ON SEQUENCE cache_entries_version_seq TO ` + pq.QuoteIdentifier(name)
			}
		}
		exec(t, db, g)
	}
	as := testdb.Open(t, dsn+" user="+name)
	return name, as
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%.100s: %v", q, err)
	}
}

// isSuper reports whether role is a superuser now.
func isSuper(t *testing.T, db *sql.DB, role string) bool {
	t.Helper()
	var super bool
	if err := db.QueryRow(`SELECT rolsuper FROM pg_roles WHERE rolname = $1`, role).Scan(&super); err != nil {
		t.Fatal(err)
	}
	return super
}

// pqCode returns the SQLSTATE of err, "" if it is not a Postgres error.
func pqCode(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return string(pe.Code)
	}
	return ""
}

// value returns the value of key in cache_entries, "" when absent.
func value(t *testing.T, db *sql.DB, key string) string {
	t.Helper()
	var v string
	err := db.QueryRow(`SELECT convert_from(value, 'UTF8') FROM cache_entries WHERE key = $1`, key).Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return v
}

// becomeSuperuser is the body of the attackers' functions: it makes role a
// superuser if whoever runs it may, and otherwise goes on quietly, so the
// write that ran it succeeds either way and only rolsuper tells.
func becomeSuperuser(role string) string {
	return fmt.Sprintf(`BEGIN
		EXECUTE %s;
	EXCEPTION WHEN insufficient_privilege THEN
		NULL;
	END;`, pq.QuoteLiteral("ALTER ROLE "+pq.QuoteIdentifier(role)+" SUPERUSER"))
}

// TestWriteFunctionNotPublic: mallory, with only CONNECT, calls
// pgmirror_write (SECURITY DEFINER) to overwrite and delete keys she may not
// touch. Execution must be refused and the rows stay.
func TestWriteFunctionNotPublic(t *testing.T) {
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('victim', 'good'), ('other', 'kept')`)
	_, mallory := newRole(t, db, dsn, "mallory")
	var denied int
	for _, ops := range []string{
		`[{"k":"set","keys":["victim"],"v":[[1,4]]}]`,
		`[{"k":"del","keys":["other"]}]`,
	} {
		_, err := mallory.Exec(`SELECT * FROM pgmirror_write($1::jsonb, $2::bytea)`, ops, []byte("evil"))
		if code := pqCode(err); code == "42501" {
			denied++
		} else {
			t.Errorf("mallory's pgmirror_write(%s): %v, want permission denied (42501)", ops, err)
		}
	}
	_, err := mallory.Exec(`SELECT * FROM pgmirror_write_commands('[{"k":"del","keys":["other"]}]'::jsonb, ''::bytea)`)
	if pqCode(err) != "42501" {
		t.Errorf("mallory's pgmirror_write_commands: %v, want permission denied", err)
	}
	if v, o := value(t, db, "victim"), value(t, db, "other"); v != "good" || o != "kept" {
		t.Fatalf("after mallory's calls victim = %q, other = %q; want good and kept", v, o)
	}
	if denied != 2 {
		t.Fatalf("%d of 2 calls refused", denied)
	}
}

// TestSearchPathHijack: with CREATE on the schema granted to PUBLIC
// (PostgreSQL's default before 15), mallory creates public.nextval(text),
// which an untyped nextval('cache_entries_version_seq') in a SECURITY
// DEFINER trigger prefers to pg_catalog's; an INSERT by writer then ran it
// as the trigger's owner (the superuser that migrated) and made her a
// superuser. The migrations run before CREATE is granted (migrate would now
// refuse the schema).
func TestSearchPathHijack(t *testing.T) {
	dsn, db := testdb.New(t)
	mallory, mdb := newRole(t, db, dsn, "mallory")
	_, writer := newRole(t, db, dsn, "writer", `GRANT pgmirror_writer TO %s`)
	_, sidecar := newRole(t, db, dsn, "sidecar", `GRANT pgmirror_sidecar TO %s`)
	exec(t, db, `GRANT CREATE ON SCHEMA public TO PUBLIC`)
	exec(t, mdb, fmt.Sprintf(`CREATE FUNCTION public.nextval(text) RETURNS bigint LANGUAGE plpgsql AS $$
	BEGIN
		%s
		RETURN pg_catalog.nextval($1::regclass);
	END $$`, becomeSuperuser(mallory)))

	// Every path that takes a version: the stamp (insert, update), the
	// delete and truncate records of the notify triggers, and the publishing
	// step of pgmirror_write.
	exec(t, writer, `INSERT INTO cache_entries(key, value) VALUES ('a', 'one'), ('b', 'two')`)
	exec(t, writer, `UPDATE cache_entries SET value = 'uno' WHERE key = 'a'`)
	exec(t, writer, `UPDATE cache_entries SET key = 'c' WHERE key = 'b'`)
	exec(t, writer, `DELETE FROM cache_entries WHERE key = 'a'`)
	rows, err := sidecar.Query(`SELECT rec FROM pgmirror_write($1::jsonb, $2::bytea)`,
		`[{"k":"set","keys":["d"],"v":[[1,1]]},{"k":"del","keys":["c","d"]}]`, []byte("x"))
	if err != nil {
		t.Fatalf("pgmirror_write as a sidecar: %v", err)
	}
	rows.Close()
	exec(t, db, `TRUNCATE cache_entries`)

	if isSuper(t, db, mallory) {
		t.Fatalf("%s became a superuser through public.nextval(text)", mallory)
	}
}

// TestWatchTriggerRunsAsWriter: app owns a watched table (watched
// by a superuser). It adds a column of an enum type with a plpgsql cast to
// json; the next INSERT runs row_to_json, hence the cast, in the watch
// trigger. Run as the superuser who ran watch, the cast would make app a
// superuser; it must run as app. Also: the narrow function the trigger
// calls cannot be used for anything else, a role granted writes later is
// told to run watch again, and a superuser's watch refuses to copy the
// table through the cast.
func TestWatchTriggerRunsAsWriter(t *testing.T) {
	dsn, db := testdb.New(t)
	app, adb := newRole(t, db, dsn, "app")
	exec(t, db, fmt.Sprintf(`CREATE SCHEMA appsch AUTHORIZATION %s`, pq.QuoteIdentifier(app)))
	exec(t, adb, `CREATE TABLE appsch.items (id int PRIMARY KEY, name text NOT NULL)`)
	exec(t, adb, `INSERT INTO appsch.items VALUES (1, 'pen')`)
	var out string
	if err := db.QueryRow(`SELECT pgmirror_watch('appsch.items', 'id', 'item:')`).Scan(&out); err != nil {
		t.Fatalf("watch as a superuser: %v", err)
	}
	attack(t, db, adb, app)
	checkNarrowWriteFunction(t, db, dsn, adb)

	// The superuser's watch again would copy the table through the cast.
	err := db.QueryRow(`SELECT pgmirror_watch('appsch.items', 'id', 'item:')`).Scan(&out)
	if err == nil || !strings.Contains(err.Error(), "the cast from appsch.mood to json") {
		t.Fatalf("watch again as a superuser: %v, want a refusal naming the cast", err)
	}
	if isSuper(t, db, app) {
		t.Fatalf("%s became a superuser through watch's copy", app)
	}
}

// attack adds the enum column with its cast as app and inserts a row.
func attack(t *testing.T, db, adb *sql.DB, app string) {
	t.Helper()
	exec(t, adb, `CREATE TYPE appsch.mood AS ENUM ('calm', 'evil')`)
	exec(t, adb, fmt.Sprintf(`CREATE FUNCTION appsch.mood_json(appsch.mood) RETURNS json LANGUAGE plpgsql AS $$
	BEGIN
		%s
		RETURN to_json($1::text);
	END $$`, becomeSuperuser(app)))
	exec(t, adb, `CREATE CAST (appsch.mood AS json) WITH FUNCTION appsch.mood_json(appsch.mood)`)
	exec(t, adb, `ALTER TABLE appsch.items ADD COLUMN mood appsch.mood`)
	exec(t, adb, `INSERT INTO appsch.items VALUES (2, 'ink', 'evil')`)
	if isSuper(t, db, app) {
		t.Fatalf("%s became a superuser through the watch trigger", app)
	}
	if v := value(t, db, "item:2"); v != `{"id":2,"name":"ink","mood":"evil"}` {
		t.Fatalf("item:2 = %q: the watch no longer copies", v)
	}
}

// checkNarrowWriteFunction: the function the trigger hands its keys to
// writes nothing but keys under the prefix, from a trigger, for the roles
// that could write the table when the watch was installed.
func checkNarrowWriteFunction(t *testing.T, db *sql.DB, dsn string, adb *sql.DB) {
	t.Helper()
	var fn string
	if err := db.QueryRow(`SELECT format('public.pgmirror_watch_%s_write', 'appsch.items'::regclass::oid)`).Scan(&fn); err != nil {
		t.Fatal(err)
	}
	call := fmt.Sprintf(`SELECT %s('INSERT', ARRAY['victim'], ARRAY['evil'::bytea], NULL, 0)`, fn)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('victim', 'good')`)
	// mallory may not run it at all.
	_, mallory := newRole(t, db, dsn, "mallory")
	if _, err := mallory.Exec(call); pqCode(err) != "42501" {
		t.Errorf("mallory calls the write function: %v, want permission denied", err)
	}
	// app may, but not outside the watch's trigger...
	if _, err := adb.Exec(call); err == nil || !strings.Contains(err.Error(), "only runs when the watch trigger of") {
		t.Errorf("app calls the write function directly: %v, want a refusal", err)
	}
	// ... nor from a trigger of its own (for keys outside the prefix, here;
	// TestWatchWriteFunctionFromTempTrigger for keys under it).
	exec(t, adb, `CREATE TABLE appsch.side (x int)`)
	exec(t, adb, fmt.Sprintf(`CREATE FUNCTION appsch.side_trg() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM %s('INSERT', ARRAY['victim'], ARRAY['evil'::bytea], NULL, 0);
		RETURN NULL;
	END $$`, fn))
	exec(t, adb, `CREATE TRIGGER side AFTER INSERT ON appsch.side FOR EACH STATEMENT EXECUTE FUNCTION appsch.side_trg()`)
	if _, err := adb.Exec(`INSERT INTO appsch.side VALUES (1)`); err == nil || !strings.Contains(err.Error(), "only runs when the watch trigger of") {
		t.Errorf("app's own trigger writes victim through the write function: %v, want a refusal", err)
	}
	if v := value(t, db, "victim"); v != "good" {
		t.Fatalf("victim = %q after the calls, want good", v)
	}

	// A role granted INSERT after the watch is told what to do, and may
	// write once watch ran again (here in invalidate mode, as the copy
	// through app's cast is refused to a superuser).
	late, ldb := newRole(t, db, dsn, "late")
	exec(t, db, fmt.Sprintf(`GRANT USAGE ON SCHEMA appsch TO %[1]s; GRANT INSERT ON appsch.items TO %[1]s`, pq.QuoteIdentifier(late)))
	_, err := ldb.Exec(`INSERT INTO appsch.items VALUES (3, 'cap', 'calm')`)
	if err == nil || !strings.Contains(err.Error(), "may write appsch.items but not") {
		t.Fatalf("insert by a role granted later: %v, want an error naming the table", err)
	}
	var pe *pq.Error
	if !errors.As(err, &pe) || !strings.Contains(pe.Hint, "pgmirror watch") {
		t.Fatalf("the error's hint %q does not say to run pgmirror watch", pe.Hint)
	}
	var out string
	if err := db.QueryRow(`SELECT pgmirror_watch('appsch.items', 'id', 'item:', NULL, 'invalidate')`).Scan(&out); err != nil {
		t.Fatalf("watch again: %v", err)
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('item:3', 'stale')`)
	exec(t, ldb, `INSERT INTO appsch.items VALUES (3, 'cap', 'calm')`)
	if v := value(t, db, "item:3"); v != "" {
		t.Fatalf("item:3 = %q after the insert, want it invalidated", v)
	}
	// A member of pgmirror_writer, who may write cache_entries anyway, needs
	// no new watch.
	member, mdb := newRole(t, db, dsn, "member", `GRANT pgmirror_writer TO %s`)
	exec(t, db, fmt.Sprintf(`GRANT USAGE ON SCHEMA appsch TO %[1]s; GRANT INSERT ON appsch.items TO %[1]s`, pq.QuoteIdentifier(member)))
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('item:4', 'stale')`)
	exec(t, mdb, `INSERT INTO appsch.items VALUES (4, 'mug', 'calm')`)
	if v := value(t, db, "item:4"); v != "" {
		t.Fatalf("item:4 = %q after the insert by a member of pgmirror_writer, want it invalidated", v)
	}
}

// TestSecretTableCovered: pgmirror_secret (migration 0005, written beside
// this one) is read by the sidecars and owned by pgmirror's owner like
// every other table of pgmirror, whichever file created it.
func TestSecretTableCovered(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	db := testdb.Open(t, dsn)
	testdb.Migrate(t, dsn) // 0005 creates pgmirror_secret, 0006 and every migrate grant it
	var read, super bool
	if err := db.QueryRow(`SELECT has_table_privilege('pgmirror_sidecar', 'pgmirror_secret', 'SELECT'),
		(SELECT r.rolsuper FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE c.oid = 'pgmirror_secret'::regclass)`).Scan(&read, &super); err != nil {
		t.Fatal(err)
	}
	if !read || super {
		t.Fatalf("pgmirror_secret: pgmirror_sidecar may read it %v, owned by a superuser %v; want true, false", read, super)
	}
}

// TestExistingWatchRegenerated: a watch installed before migration
// 0006 (its trigger function SECURITY DEFINER, owned by the superuser that
// ran watch) is regenerated by migrate, so an upgraded database is safe
// without running watch again.
func TestExistingWatchRegenerated(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	db := testdb.Open(t, dsn)
	applyUpTo(t, db, "0004_write_publish.sql")
	app, adb := newRole(t, db, dsn, "app")
	exec(t, db, fmt.Sprintf(`CREATE SCHEMA appsch AUTHORIZATION %s`, pq.QuoteIdentifier(app)))
	exec(t, adb, `CREATE TABLE appsch.items (id int PRIMARY KEY, name text NOT NULL)`)
	var out string
	if err := db.QueryRow(`SELECT pgmirror_watch('appsch.items', 'id', 'item:')`).Scan(&out); err != nil {
		t.Fatalf("watch with the old schema: %v", err)
	}
	var definer bool
	if err := db.QueryRow(`SELECT prosecdef FROM pg_proc WHERE oid = format('pgmirror_watch_%s()', 'appsch.items'::regclass::oid)::regprocedure`).Scan(&definer); err != nil || !definer {
		t.Fatalf("the old watch trigger function: SECURITY DEFINER %v, %v; want true (the state to upgrade)", definer, err)
	}

	res, err := migrations.Apply(context.Background(), db, pgtest.RepoFile(t, "triggers.sql"), nil)
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	t.Logf("migrate applied %v and secured %q", res.Applied, res.Secured)
	var owner string
	if err := db.QueryRow(`SELECT t.prosecdef, w.proowner::regrole::text
		FROM pg_proc t, pg_proc w
		WHERE t.oid = format('pgmirror_watch_%s()', 'appsch.items'::regclass::oid)::regprocedure
		  AND w.oid = format('pgmirror_watch_%s_write(text, text[], bytea[], text[], bigint)', 'appsch.items'::regclass::oid)::regprocedure`).
		Scan(&definer, &owner); err != nil || definer || owner != migrations.OwnerRole {
		t.Fatalf("after migrate: trigger function SECURITY DEFINER %v, write function owned by %s (%v); want false and %s",
			definer, owner, err, migrations.OwnerRole)
	}
	attack(t, db, adb, app)
}

// applyUpTo applies the embedded migrations up to and including last the
// way Apply does (recorded with their checksums), without triggers.sql:
// the state of a database migrated by an older pgmirror.
func applyUpTo(t *testing.T, db *sql.DB, last string) {
	t.Helper()
	all, err := migrations.All()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, q := range []string{`SET LOCAL search_path TO public, pg_temp`,
		`CREATE TABLE pgmirror_schema_migrations (name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`} {
		if _, err := tx.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range all {
		if _, err := tx.Exec(m.SQL); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		if _, err := tx.Exec(`INSERT INTO pgmirror_schema_migrations (name, checksum) VALUES ($1, $2)`, m.Name, m.Checksum()); err != nil {
			t.Fatal(err)
		}
		if m.Name == last {
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no migration %s", last)
}

// TestSecurityDefinerCatalog: every SECURITY DEFINER function in pgmirror's
// schema, generated watch functions included, has a search_path that starts
// with pg_catalog and ends with pg_temp, no EXECUTE for PUBLIC (a NULL ACL
// means PUBLIC may execute), and an owner that is not a superuser; and the
// functions a superuser generated by watch after migrate are handed over at
// once.
func TestSecurityDefinerCatalog(t *testing.T) {
	for _, schema := range []string{"public", "Cache Schema"} {
		t.Run(schema, func(t *testing.T) {
			srv := pgtest.Shared(t)
			dsn := srv.CreateDB(t)
			admin := testdb.Open(t, dsn)
			exec(t, admin, `CREATE SCHEMA IF NOT EXISTS `+pq.QuoteIdentifier(schema))
			sdsn := dsn + " search_path=" + pgtestQuote(pq.QuoteIdentifier(schema))
			db := testdb.Migrate(t, sdsn)
			exec(t, db, `CREATE TABLE public.items (id int PRIMARY KEY, name text)`)
			exec(t, db, `CREATE TABLE public.orders (id int PRIMARY KEY, item int)`)
			exec(t, db, `SELECT pgmirror_watch('public.items', 'id', 'item:')`)
			exec(t, db, `SELECT pgmirror_watch('public.orders', 'item', 'orders:', NULL, 'invalidate')`)

			rows, err := db.Query(`SELECT p.oid::regprocedure::text, coalesce(p.proconfig::text, ''),
					p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
					r.rolsuper, r.rolname,
					coalesce((SELECT substr(c, 13) FROM unnest(p.proconfig) c WHERE c LIKE 'search\_path=%'), '')
				  FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
				 WHERE p.prosecdef AND p.pronamespace = $1::regnamespace ORDER BY 1`, pq.QuoteIdentifier(schema))
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var names []string
			for rows.Next() {
				var name, config, owner, path string
				var public, super bool
				if err := rows.Scan(&name, &config, &public, &super, &owner, &path); err != nil {
					t.Fatal(err)
				}
				names = append(names, name)
				parts := strings.Split(path, ",")
				for i := range parts {
					parts[i] = strings.TrimSpace(parts[i])
				}
				if len(parts) < 2 || parts[0] != "pg_catalog" || parts[len(parts)-1] != "pg_temp" {
					t.Errorf("%s: search_path %q, want pg_catalog first and pg_temp last (config %s)", name, path, config)
				}
				if public {
					t.Errorf("%s: PUBLIC may execute it", name)
				}
				if super {
					t.Errorf("%s: owned by superuser %s", name, owner)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			joined := strings.Join(names, " ")
			for _, want := range []string{"pgmirror_write(", "pgmirror_stamp(", "pgmirror_notify_update(", "pgmirror_publish(", "_write(text,text[],bytea[],text[],bigint)"} {
				if !strings.Contains(joined, want) {
					t.Errorf("no SECURITY DEFINER function %s among %v", want, names)
				}
			}
			if n := strings.Count(joined, "_write(text,text[],bytea[],text[],bigint)"); n != 2 {
				t.Errorf("%d watch write functions, want 2 (one per watch): %v", n, names)
			}
			var triggers, definers int
			if err := db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE prosecdef) FROM pg_proc
				WHERE proname ~ '^pgmirror_watch_[0-9]+$' AND prorettype = 'trigger'::regtype`).Scan(&triggers, &definers); err != nil {
				t.Fatal(err)
			}
			if triggers != 2 || definers != 0 {
				t.Errorf("%d watch trigger functions, %d of them SECURITY DEFINER; want 2 and 0", triggers, definers)
			}
		})
	}
}

// pgtestQuote quotes a key=value connection string value.
func pgtestQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// TestMigrateRefusesSharedSchema: migrate refuses a schema in which PUBLIC
// (or any role but pgmirror's) may CREATE, says why and how to fix it, and
// changes nothing; it proceeds when allowed.
func TestMigrateRefusesSharedSchema(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	db := testdb.Open(t, dsn)
	exec(t, db, `GRANT CREATE ON SCHEMA public TO PUBLIC`)
	triggers := pgtest.RepoFile(t, "triggers.sql")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, err := migrations.Apply(ctx, db, triggers, nil)
	var shared *migrations.SharedSchemaError
	if !errors.As(err, &shared) || len(shared.Roles) != 1 || shared.Roles[0] != "PUBLIC" {
		t.Fatalf("migrate in a schema PUBLIC may CREATE in: %v, want a SharedSchemaError naming PUBLIC", err)
	}
	for _, want := range []string{"REVOKE CREATE ON SCHEMA \"public\" FROM PUBLIC", "--allow-shared-schema", "SECURITY DEFINER"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	var table bool
	if err := db.QueryRow(`SELECT to_regclass('cache_entries') IS NOT NULL`).Scan(&table); err != nil || table {
		t.Fatalf("the refused migrate created cache_entries (%v)", err)
	}

	// One role with CREATE is named.
	exec(t, db, `REVOKE CREATE ON SCHEMA public FROM PUBLIC`)
	name, _ := newRole(t, db, dsn, "mallory")
	exec(t, db, `GRANT CREATE ON SCHEMA public TO `+pq.QuoteIdentifier(name))
	_, err = migrations.Apply(ctx, db, triggers, nil)
	if !errors.As(err, &shared) || strings.Join(shared.Roles, ",") != name {
		t.Fatalf("migrate with %s allowed to CREATE: %v, want a refusal naming it", name, err)
	}

	res, err := migrations.ApplyWith(ctx, db, triggers, migrations.Options{AllowSharedSchema: true})
	if err != nil || res.Schema != "public" || !res.TriggersUpdated {
		t.Fatalf("migrate with AllowSharedSchema: %+v, %v", res, err)
	}
}
