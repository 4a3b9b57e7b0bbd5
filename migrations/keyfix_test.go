package migrations_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/migrations"
)

// TestSecretPendingUpgrade: a database migrated before 0008 (keys in use
// from their creation, no pending key) gains a pending key; the triggers go
// on signing with the key they used, and a rotation then switches them to
// the pending key, adds a new pending one, and deletes the key two
// rotations old. The functions that add keys are not executable by PUBLIC.
func TestSecretPendingUpgrade(t *testing.T) {
	dsn := pgtest.Shared(t).CreateDB(t)
	db := testdb.Open(t, dsn)
	applyUpTo(t, db, "0006_privileges.sql")
	exec(t, db, `SELECT pgmirror_rotate_secret()`) // 0006's rotation: keys 1 and 2, signing with 2
	if _, err := migrations.Apply(context.Background(), db, pgtest.RepoFile(t, "triggers.sql"), nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	keys := func() string {
		t.Helper()
		var s string
		if err := db.QueryRow(`SELECT string_agg(kid || CASE WHEN activated_at IS NULL THEN 'p' ELSE '' END, ',' ORDER BY kid)
			FROM pgmirror_secret`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := keys(); got != "1,2,3p" {
		t.Fatalf("keys after the upgrade: %s; want 1,2,3p (3 pending)", got)
	}
	l := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	if err := l.Listen("pgmirror"); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	signedWith := func() string {
		t.Helper()
		exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'v')
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value || 'x'`)
		select {
		case n := <-l.Notify:
			if n == nil || !strings.HasPrefix(n.Extra, "pgm2 ") {
				t.Fatalf("notification %+v, want a signed payload", n)
			}
			return strings.Fields(n.Extra)[2]
		case <-time.After(5 * time.Second):
			t.Fatal("no notification")
		}
		return ""
	}
	if kid := signedWith(); kid != "2" {
		t.Fatalf("after the upgrade the triggers sign with key %s; want 2, the key in use", kid)
	}
	var cur int
	if err := db.QueryRow(`SELECT pgmirror_rotate_secret()`).Scan(&cur); err != nil || cur != 3 {
		t.Fatalf("rotation returned %d, %v; want 3, the pending key", cur, err)
	}
	if got := keys(); got != "2,3,4p" {
		t.Fatalf("keys after a rotation: %s; want 2,3,4p", got)
	}
	if kid := signedWith(); kid != "3" {
		t.Fatalf("after a rotation the triggers sign with key %s; want 3", kid)
	}
	var public bool
	if err := db.QueryRow(`SELECT bool_or(has_function_privilege('public', p.oid, 'EXECUTE'))
		FROM pg_proc p WHERE p.proname IN ('pgmirror_add_secret', 'pgmirror_rotate_secret')`).Scan(&public); err != nil || public {
		t.Fatalf("PUBLIC may execute the key functions: %v, %v", public, err)
	}
}
