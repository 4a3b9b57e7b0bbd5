package migrations_test

// The least-privilege setup of docs/security.md, end to end: a sidecar whose
// login role is only a member of pgmirror_sidecar runs everything a sidecar
// runs, and an application whose role is only a member of pgmirror_writer
// writes with plain SQL that every sidecar hears of; neither can do more.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/migrations"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

func TestLeastPrivilegeRoles(t *testing.T) {
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE TABLE things (id text PRIMARY KEY, v text NOT NULL)`)
	exec(t, db, `INSERT INTO things VALUES ('1', 'first'), ('2', 'second')`)
	// A loader's query runs as the sidecar: its role reads what the query reads.
	exec(t, db, `GRANT SELECT ON things TO pgmirror_sidecar`)
	exec(t, db, `INSERT INTO cache_loaders(prefix, query, ttl) VALUES ('thing:', 'SELECT v FROM things WHERE id = $1', '1 hour')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'old:' || i, 'v' FROM generate_series(1, 50) i`)
	sidecarRole, _ := newRole(t, db, dsn, "sidecar", `GRANT pgmirror_sidecar TO %s`)
	_, writer := newRole(t, db, dsn, "writer", `GRANT pgmirror_writer TO %s`)

	sc := sidecartest.Start(t, dsn+" user="+sidecarRole, sidecartest.Config{NoJobs: true})
	ctx := context.Background()
	c := sc.Client

	// The write path (pgmirror_write) and the loaders, through the socket.
	for _, cmd := range [][]any{
		{"SET", "k", "v1"}, {"SET", "n", "10"}, {"INCRBY", "n", "5"}, {"APPEND", "k", "+"},
		{"EXPIRE", "k", "100"}, {"PERSIST", "k"}, {"MSET", "m1", "a", "m2", "b"}, {"GETDEL", "m2"},
		{"DEL", "m1"}, {"SET", "gone", "x", "PX", "1"},
	} {
		if err := c.Do(ctx, cmd...).Err(); err != nil && err != redis.Nil {
			t.Fatalf("%v as a member of pgmirror_sidecar: %v", cmd, err)
		}
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v1+" {
		t.Fatalf("GET k = %q, %v", v, err)
	}
	if v, err := c.Get(ctx, "thing:1").Result(); err != nil || v != "first" {
		t.Fatalf("GET thing:1 (loader) = %q, %v", v, err)
	}

	// Everything else a sidecar runs: checks, snapshots, fetches, the jobs.
	st, ld := sc.Store, sc.Loaders
	for name, run := range map[string]func() error{
		"CheckPrimary": func() error { return st.CheckPrimary(ctx) },
		"CheckSchema":  func() error { return st.CheckSchema(ctx) },
		"Snapshot": func() error {
			return st.Snapshot(ctx, func(mirror.Visibility) error { return nil }, func(mirror.Row) error { return nil })
		},
		"RangeSnapshot": func() error {
			return st.RangeSnapshot(ctx, 4, func(mirror.Visibility) error { return nil },
				func(sums []mirror.BucketSum) ([]int, error) { return []int{0, 1, 2, 3}, nil },
				func(mirror.Row) error { return nil })
		},
		"Fetch":       func() error { _, err := st.Fetch(ctx, []string{"k", "thing:1"}); return err },
		"Sentinel":    func() error { return st.Sentinel(ctx, "privtest") },
		"FlushAccess": func() error { _, err := st.FlushAccess(ctx, []string{"k", "old:1"}, 0); return err },
		"Refresh": func() error {
			// Due: expires within refresh-ahead; claim, recompute, store.
			if _, err := db.Exec(`UPDATE cache_entries SET expires_at = clock_timestamp() + interval '1 second' WHERE key = 'thing:1'`); err != nil {
				return err
			}
			p := pgstore.RefreshPolicy{Ahead: time.Minute, Window: time.Hour, LockStale: time.Minute}
			keys, err := st.DueKeys(ctx, p, 10)
			if err != nil || len(keys) != 1 {
				t.Errorf("DueKeys = %v, %v; want thing:1", keys, err)
				return err
			}
			token, ok, err := st.Claim(ctx, keys[0], p)
			if err != nil || !ok {
				t.Errorf("Claim = %v, %v", ok, err)
				return err
			}
			if out, err := ld.Refresh(ctx, sc.Mirror, keys[0], token); err != nil || out != pgstore.Refreshed {
				t.Errorf("Refresh = %v, %v", out, err)
				return err
			}
			if token, ok, err = st.Claim(ctx, keys[0], pgstore.RefreshPolicy{Ahead: 2 * time.Hour, LockStale: time.Minute}); err != nil || !ok {
				t.Errorf("second Claim = %v, %v", ok, err)
				return err
			}
			return st.Release(ctx, keys[0], token)
		},
		"CleanupBatch": func() error {
			exec(t, db, `UPDATE cache_entries SET last_accessed_at = now() - interval '30 days' WHERE starts_with(key, 'old:')`)
			n, ran, err := st.CleanupBatch(ctx, pgstore.CleanupPolicy{Retention: 24 * time.Hour, ExpiredGrace: time.Hour, Batch: 100})
			if err == nil && (!ran || n < 50) {
				t.Errorf("cleanup deleted %d (ran %v), want the 50 old keys at least", n, ran)
			}
			return err
		},
	} {
		if err := run(); err != nil {
			t.Errorf("%s as a member of pgmirror_sidecar: %v", name, err)
		}
	}

	// An application writing with plain SQL, as a member of pgmirror_writer:
	// every sidecar hears of it.
	exec(t, writer, `INSERT INTO cache_entries(key, value) VALUES ('app', 'one')`)
	serve(t, sc, "app", "one")
	exec(t, writer, `UPDATE cache_entries SET value = 'two' WHERE key = 'app'`)
	serve(t, sc, "app", "two")
	exec(t, writer, `DELETE FROM cache_entries WHERE key = 'app'`)
	serve(t, sc, "app", "")

	// And neither can do more.
	sdb := testdb.Open(t, dsn+" user="+sidecarRole)
	for _, q := range []string{
		`INSERT INTO cache_loaders(prefix, query) VALUES ('x:', 'SELECT 1')`, // loaders run as the sidecar: owner-only
		`UPDATE cache_entries SET version = 1`,
		`TRUNCATE cache_entries`,
		`SELECT count(*) FROM pgmirror_schema_migrations`,
	} {
		if _, err := sdb.Exec(q); pqCode(err) != "42501" {
			t.Errorf("%s as a member of pgmirror_sidecar: %v, want permission denied", q, err)
		}
	}
	for _, q := range []string{
		`SELECT * FROM pgmirror_write('[{"k":"del","keys":["k"]}]'::jsonb, ''::bytea)`,
		`SELECT count(*) FROM cache_loaders`,
		`INSERT INTO cache_loaders(prefix, query) VALUES ('x:', 'SELECT 1')`,
		`TRUNCATE cache_entries`,
	} {
		if _, err := writer.Exec(q); pqCode(err) != "42501" {
			t.Errorf("%s as a member of pgmirror_writer: %v, want permission denied", q, err)
		}
	}
}

// serve waits until GET key on sc answers want ("" for absent).
func serve(t *testing.T, sc *sidecartest.Sidecar, key, want string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, err := sc.Client.Get(context.Background(), key).Result()
		if want == "" {
			return err == redis.Nil, "GET " + key + " = " + v + ", want absent"
		}
		return err == nil && v == want, "GET " + key + " = " + v + ", want " + want
	})
}

// TestMigrateAsNonSuperuser: on a cluster without pgmirror's roles, a
// migrating role that may not create roles is told which statements a
// superuser must run; with CREATEROLE it creates them, becomes a member of
// pgmirror_sidecar (so a sidecar sharing its role keeps working) and owns
// pgmirror's objects itself, and no SECURITY DEFINER function is left
// executable by PUBLIC.
func TestMigrateAsNonSuperuser(t *testing.T) {
	srv := pgtest.New(t) // a cluster of its own: roles belong to the cluster
	dsn := srv.CreateDB(t)
	db := testdb.Open(t, dsn)
	exec(t, db, `CREATE ROLE mig LOGIN; CREATE SCHEMA cache AUTHORIZATION mig`)
	mig := testdb.Open(t, dsn+" user=mig search_path=cache")
	triggers := pgtest.RepoFile(t, "triggers.sql")
	ctx := context.Background()

	_, err := migrations.Apply(ctx, mig, triggers, nil)
	if err == nil || !strings.Contains(err.Error(), "CREATE ROLE pgmirror_sidecar NOLOGIN; CREATE ROLE pgmirror_writer NOLOGIN; GRANT pgmirror_sidecar TO mig") {
		t.Fatalf("migrate by a role that may not create roles: %v, want the statements a superuser must run", err)
	}

	exec(t, db, `ALTER ROLE mig CREATEROLE`)
	res, err := migrations.Apply(ctx, mig, triggers, nil)
	if err != nil {
		t.Fatalf("migrate with CREATEROLE: %v", err)
	}
	for _, fix := range res.Secured {
		if strings.Contains(fix, "owner") || strings.Contains(fix, "PUBLIC") {
			t.Errorf("migrate as the owner: %q; the files should have revoked PUBLIC, and nothing is a superuser's", fix)
		}
	}
	var member, ownerRole bool
	var owners string
	err = db.QueryRow(`SELECT pg_has_role('mig', 'pgmirror_sidecar', 'MEMBER'),
		EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgmirror_owner'),
		(SELECT string_agg(DISTINCT r.rolname, ',') FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner
		  WHERE p.pronamespace = 'cache'::regnamespace)`).Scan(&member, &ownerRole, &owners)
	if err != nil {
		t.Fatal(err)
	}
	if !member || ownerRole || owners != "mig" {
		t.Fatalf("after migrate as mig: member of pgmirror_sidecar %v, pgmirror_owner exists %v, functions owned by %q; want true, false, mig",
			member, ownerRole, owners)
	}
	var public int
	if err := db.QueryRow(`SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'cache'::regnamespace AND p.prosecdef
		AND (p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0))`).Scan(&public); err != nil || public != 0 {
		t.Fatalf("%d SECURITY DEFINER functions executable by PUBLIC (%v)", public, err)
	}
	// A sidecar sharing mig's role writes, and its batch silences the triggers.
	if _, err := mig.Exec(`SELECT * FROM pgmirror_write('[{"k":"set","keys":["a"],"v":[[1,1]]}]'::jsonb, 'x'::bytea)`); err != nil {
		t.Fatalf("pgmirror_write as mig: %v", err)
	}
	if res, err := migrations.Apply(ctx, mig, triggers, nil); err != nil || res.Changed() {
		t.Fatalf("second migrate as mig: %+v, %v; want nothing to do", res, err)
	}
}
