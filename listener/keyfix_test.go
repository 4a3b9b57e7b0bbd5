package listener_test

// Keys announced before use (migration 0008) and what happens to a payload
// dropped for a key the sidecar had not read yet (the attack of
// TestRotationWindowDropAndReplay).

import (
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/listener"
	"pgmirror/mirror"
)

// TestRotationPendingKeyHeldBeforeUse: a sidecar that read the keys at its
// load verifies the first payload after a rotation, and after a second one,
// without dropping anything under an unknown key: each rotation switches
// to the key that was pending, which the sidecar already holds.
func TestRotationPendingKeyHeldBeforeUse(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('k', 'v0')`)
	var l *listener.Listener
	s := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Mirror: mirror.Options{MinResyncInterval: time.Minute},
		Listener: func(x *listener.Listener) { l = x; l.Unsigned = listener.UnsignedReject }})
	for i, v := range []string{"v1", "v2"} {
		var kid int64
		if err := db.QueryRow(`SELECT pgmirror_rotate_secret()`).Scan(&kid); err != nil {
			t.Fatal(err)
		}
		if s.Mirror.Keyring().Key(kid) == nil {
			t.Fatalf("rotation %d switched to key %d, which the sidecar does not hold yet", i+1, kid)
		}
		sqlExec(t, db, `UPDATE cache_entries SET value = $1 WHERE key = 'k'`, v)
		testutil.Eventually(t, 5*time.Second, func() (bool, string) { return serves(s, "k", v, true) })
		// The payload under the new key made the sidecar read the keys
		// again: it holds the next pending key before the next rotation.
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			return s.Mirror.Keyring().Key(kid+1) != nil, "the next pending key was not read"
		})
	}
	if n := l.Stats().Rejected[listener.RejectUnknownKey]; n != 0 {
		t.Fatalf("%d payloads dropped under an unknown key; want none", n)
	}
	if n := s.Mirror.Stats().Repairs; n != 0 {
		t.Fatalf("%d repair reloads; want none", n)
	}
}

// rotationAttack: mallory makes the sidecar read its keys (a made-up key
// id, whose repair reload reads them too), then, within the second in
// which the sidecar will not read them again, the keys are rotated twice
// (so the sidecar lacks the key the triggers now sign with) and 'victim'
// updated to v1. Returns the captured payload of that update, after the
// sidecar dropped it. Repairs are spaced by a minute: what brings v1 in
// must not be the repair.
func rotationAttack(t *testing.T, junkAfter bool) (s *sidecartest.Sidecar, l *listener.Listener, db, m *sql.DB, w1 string) {
	var dsn string
	dsn, db = testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('victim', 'v0')`)
	m = mallory(t, dsn, db)
	s = sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Mirror: mirror.Options{MinResyncInterval: time.Minute},
		Listener: func(x *listener.Listener) { l = x }})
	capture := pq.NewListener(strings.Replace(dsn, "user=postgres", "user=mallory", 1), 10*time.Millisecond, time.Second, nil)
	if err := capture.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { capture.Close() })

	time.Sleep(1100 * time.Millisecond) // past the load's read
	reloads := s.Mirror.Stats().Reloads
	notify(t, m, "pgm2 "+strings.Repeat("0", 64)+" 77 1 1 1/1\nT 1")
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		st := s.Mirror.Stats()
		return st.Repairs == 1 && st.Reloads > reloads, "the made-up key's repair reload has not ended"
	})
	unknown := l.Stats().Rejected[listener.RejectUnknownKey]
	sqlExec(t, db, `SELECT pgmirror_rotate_secret()`)
	sqlExec(t, db, `SELECT pgmirror_rotate_secret()`)
	sqlExec(t, db, `UPDATE cache_entries SET value = 'v1' WHERE key = 'victim'`)
	var kid string
	deadline := time.After(5 * time.Second)
	for w1 == "" {
		select {
		case n := <-capture.Notify:
			if n != nil && strings.HasPrefix(n.Extra, "pgm2 ") && !strings.Contains(n.Extra, " 77 ") {
				w1 = n.Extra
				kid = strings.Fields(w1)[2]
			}
		case <-deadline:
			t.Fatal("the update's notification was not captured")
		}
	}
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		return l.Stats().Rejected[listener.RejectUnknownKey] > unknown, "the update under the twice-rotated key was not dropped " +
			"(the sidecar read the keys after the rotations: the attack's timing failed)"
	})
	if junkAfter {
		// Junk under the same key id, after the genuine payload: it
		// replaces the one the sidecar kept to verify later.
		notify(t, m, "pgm2 "+strings.Repeat("1", 64)+" "+kid+" 1 1 1/1\nT 1")
	}
	return s, l, db, m, w1
}

// TestRotationDroppedGenuineResyncsAtOnce: the payload dropped for a key
// rotated in twice within the forced second is verified once the keys may
// be read again, and the sidecar resyncs at once (repairs are a minute
// apart here): v1 is served within 2 s. Then mallory's replay of it, after
// a newer change, is refused.
func TestRotationDroppedGenuineResyncsAtOnce(t *testing.T) {
	t.Parallel()
	for _, junk := range []bool{false, true} {
		name := "kept"
		if junk {
			name = "kept-replaced-by-junk"
		}
		t.Run(name, func(t *testing.T) {
			s, l, db, m, w1 := rotationAttack(t, junk)
			start := time.Now()
			ok, msg := false, ""
			for time.Since(start) < 2*time.Second {
				if ok, msg = serves(s, "victim", "v1", true); ok {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !ok {
				t.Fatalf("2 s after the dropped update, the sidecar still serves the old value (%s); rejected %v", msg,
					l.Stats().Rejected)
			}
			if n := l.Stats().GenuineDrops; junk && n != 0 || !junk && n != 1 {
				t.Errorf("genuine drops verified: %d", n)
			}
			sqlExec(t, db, `UPDATE cache_entries SET value = 'v2' WHERE key = 'victim'`)
			testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, "victim", "v2", true) })
			notify(t, m, w1)
			barrier(t, db, s)
			if ok, msg := serves(s, "victim", "v2", true); !ok {
				t.Errorf("after mallory replayed the dropped payload: %s (the table holds v2)", msg)
			}
		})
	}
}
