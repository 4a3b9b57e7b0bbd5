package mirror_test

// Test helpers: a sidecar (mirror + listener + pgstore) on a real Postgres,
// and a comparison of the mirror with the table.

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testutil"
	"pgmirror/listener"
	"pgmirror/mirror"
	sidecarpkg "pgmirror/sidecar"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// listenerApp names the listener's backend so tests can terminate it.
const listenerApp = "pgmirror-test-listener"

// sidecar is a whole sidecar (internal/sidecartest) seen by these tests:
// its mirror and listener.
type sidecar struct {
	m  *mirror.Mirror
	l  *listener.Listener
	sc *sidecartest.Sidecar
}

// start runs a sidecar on dsn and waits until its first load completed.
func start(t testing.TB, dsn string, opts mirror.Options) *sidecar {
	t.Helper()
	s := startNoWait(t, dsn, opts)
	s.waitReady(t)
	return s
}

// startNoWait runs a sidecar on dsn without waiting for Postgres or the
// first load. Its jobs do not run (these tests count the mirror's own
// queries), and its listener's backend is named listenerApp.
func startNoWait(t testing.TB, dsn string, opts mirror.Options) *sidecar {
	t.Helper()
	if opts.MaxMemory == 0 {
		opts.MaxMemory = 512 << 20
	}
	sc := sidecartest.StartNoWait(t, dsn, sidecartest.Config{
		Mirror:  opts,
		NoJobs:  true,
		Sidecar: func(c *sidecarpkg.Config) { c.ListenDSN = dsn + " application_name=" + listenerApp },
		Listener: func(l *listener.Listener) {
			l.PingInterval, l.PingTimeout, l.MaxReconnect = 200*time.Millisecond, 2*time.Second, 500*time.Millisecond
		},
	})
	return &sidecar{m: sc.Mirror, l: sc.Listener, sc: sc}
}

func (s *sidecar) waitReady(t testing.TB) {
	t.Helper()
	s.sc.WaitReady(t, 60*time.Second)
}

// stop stops the sidecar now (it is also stopped when the test ends).
func (s *sidecar) stop() { s.sc.Stop() }

func (s *sidecar) get(t testing.TB, key string) ([]byte, bool) {
	t.Helper()
	v, ok, err := s.m.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return v, ok
}

// tableRows reads the live (unexpired) rows of cache_entries.
func tableRows(t testing.TB, db *sql.DB) map[string][]byte {
	t.Helper()
	rows, err := db.Query(`SELECT key, value FROM cache_entries WHERE expires_at IS NULL OR expires_at > clock_timestamp()`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var k string
		var v []byte
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// diff compares the sidecar's mirror with the table and describes the first differences.
func (s *sidecar) diff(t testing.TB, db *sql.DB) string {
	t.Helper()
	want := tableRows(t, db)
	var problems []string
	for k, v := range want {
		got, ok, err := s.m.Get(context.Background(), k)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("%q: %v", k, err))
		case !ok:
			problems = append(problems, fmt.Sprintf("%q missing", k))
		case !bytes.Equal(got, v):
			problems = append(problems, fmt.Sprintf("%q = %.20q, table has %.20q", k, got, v))
		}
	}
	s.m.Range(func(k string, _ mirror.Lookup) bool {
		if _, ok := want[k]; !ok {
			problems = append(problems, fmt.Sprintf("%q in the mirror, not in the table", k))
		}
		return true
	})
	if len(problems) == 0 {
		return ""
	}
	sort.Strings(problems)
	if len(problems) > 5 {
		problems = append(problems[:5], fmt.Sprintf("... %d more", len(problems)-5))
	}
	return fmt.Sprint(problems)
}

// converges waits until the mirror equals the table.
func (s *sidecar) converges(t testing.TB, db *sql.DB, timeout time.Duration) {
	t.Helper()
	testutil.Eventually(t, timeout, func() (bool, string) {
		d := s.diff(t, db)
		return d == "", d
	})
}

func exec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%.80s: %v", q, err)
	}
}

// killListener terminates the listener's backend and returns how many it killed.
func killListener(t testing.TB, srv *pgtest.Server, dsn string) int {
	t.Helper()
	m := regexp.MustCompile(`dbname=(\S+)`).FindStringSubmatch(dsn)
	if m == nil {
		t.Fatalf("no dbname in %q", dsn)
	}
	n, err := srv.TerminateBackends(strings.Trim(m[1], "'"), "application_name = '"+listenerApp+"'")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
