package mirror_test

import (
	"fmt"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// TestFailoverToTheWritableServer runs a sidecar on a multi-host DSN with
// target_session_attrs=read-write over two servers of which one is
// writable. It mirrors the writable one; when the other becomes the
// writable one (and the old one's connections drop, as in a failover), the
// sidecar follows it and resyncs fully: the mirror then equals the new
// primary's table.
func TestFailoverToTheWritableServer(t *testing.T) {
	t.Parallel()
	a, b := pgtest.New(t), pgtest.New(t)
	for _, srv := range []*pgtest.Server{a, b} {
		srv.Exec(t, srv.DSN("postgres"), `CREATE DATABASE failover`)
		db := testdb.Migrate(t, srv.DSN("failover"))
		exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ($1, 'v')`, fmt.Sprintf("on-%d", srv.Port()))
	}
	// pg_reload_conf only signals the postmaster: a connection made at
	// once may still get the old setting. Wait until new ones get the new.
	readOnly := func(srv *pgtest.Server, on bool) {
		srv.Exec(t, srv.DSN("postgres"), fmt.Sprintf(`ALTER SYSTEM SET default_transaction_read_only = %v`, on))
		srv.Exec(t, srv.DSN("postgres"), `SELECT pg_reload_conf()`)
		want := map[bool]string{true: "on", false: "off"}[on]
		testutil.Eventually(t, 10*time.Second, func() (bool, string) {
			db := testdb.Open(t, srv.DSN("failover"))
			defer db.Close()
			var got string
			err := db.QueryRow(`SHOW default_transaction_read_only`).Scan(&got)
			return err == nil && got == want, fmt.Sprintf("default_transaction_read_only %q %v, want %q", got, err, want)
		})
	}
	readOnly(b, true)
	dsn := fmt.Sprintf("host=%s,%s port=%d,%d user=postgres dbname=failover sslmode=disable target_session_attrs=read-write",
		a.SocketDir(), b.SocketDir(), a.Port(), b.Port())
	s := start(t, dsn, mirror.Options{})
	onA, onB := fmt.Sprintf("on-%d", a.Port()), fmt.Sprintf("on-%d", b.Port())
	has := func(key string) bool { l, _ := s.m.Exists(key); return l.Found }
	if !has(onA) || has(onB) {
		t.Fatalf("mirror of the writable server: %s %v, %s %v", onA, has(onA), onB, has(onB))
	}

	readOnly(b, false)
	readOnly(a, true)
	if _, err := a.TerminateBackends("failover", ""); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() (bool, string) {
		return has(onB) && !has(onA), fmt.Sprintf("after the switch: %s %v, %s %v", onA, has(onA), onB, has(onB))
	})
	exec(t, testdb.Open(t, b.DSN("failover")), `INSERT INTO cache_entries(key, value) VALUES ('after', 'x')`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return has("after"), "a write on the new primary not mirrored" })
}
