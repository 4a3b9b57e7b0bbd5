package listener_test

// An attack on the notification stream around a key rotation by a role with
// only CONNECT (docs/security.md, Keys and rotation; Replays).

import (
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

// TestRotationWindowDropAndReplay: mallory (CONNECT only) sends a payload
// under a key id nobody has, which makes the sidecar read pgmirror_secret
// and then refuse to read it again for a second (keyringRereadGap). A key
// rotated within that second: the first genuine payload under the new key
// is dropped as unknown_key, its change is missed until a repair (spaced
// out to 5 s at least, more while mallory keeps sending junk), and since
// its MAC was never remembered, mallory can replay it later, after a newer
// change of the same key: the sidecar then serves the older value, which
// the table no longer holds. Forged or replayed notifications must not
// change what a sidecar serves, and a genuine one must not be lost because
// a forger chose when the keyring was read.
func TestRotationWindowDropAndReplay(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('victim', 'v0')`)
	mdb := mallory(t, dsn, db)
	var l *listener.Listener
	// Repairs spaced by the default 5 s, as in production.
	s := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Mirror: mirror.Options{},
		Listener: func(x *listener.Listener) { l = x }})

	capture := pq.NewListener(strings.Replace(dsn, "user=postgres", "user=mallory", 1), 10*time.Millisecond, time.Second, nil)
	if err := capture.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	defer capture.Close()

	// The sidecar read its keys at its load; wait for that second to pass.
	time.Sleep(1100 * time.Millisecond)
	before := l.Stats().Rejected[listener.RejectUnknownKey]
	notify(t, mdb, "pgm2 "+strings.Repeat("0", 64)+" 77 1 1 1/1\nT 1")
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		n := l.Stats().Rejected[listener.RejectUnknownKey]
		return n > before, "the forged key id not yet refused"
	})
	// Within the second after that forced read: rotate, then write.
	sqlExec(t, db, `SELECT pgmirror_rotate_secret()`)
	sqlExec(t, db, `UPDATE cache_entries SET value = 'v1' WHERE key = 'victim'`)
	var w1 string
	deadline := time.After(5 * time.Second)
	for w1 == "" {
		select {
		case n := <-capture.Notify:
			if n != nil && strings.HasPrefix(n.Extra, "pgm2 ") && !strings.Contains(n.Extra, " 77 ") {
				w1 = n.Extra
			}
		case <-deadline:
			t.Fatal("the update's notification was not captured")
		}
	}
	start := time.Now()
	ok, msg := false, ""
	for time.Since(start) < 2*time.Second {
		if ok, msg = serves(s, "victim", "v1", true); ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !ok {
		t.Errorf("2 s after the update under the rotated key, the sidecar still serves the old value (%s); rejected %v",
			msg, l.Stats().Rejected)
	}

	// Later: a newer change, then mallory replays the dropped payload.
	time.Sleep(1100 * time.Millisecond)
	sqlExec(t, db, `UPDATE cache_entries SET value = 'v2' WHERE key = 'victim'`)
	testutil.Eventually(t, 10*time.Second, func() (bool, string) { return serves(s, "victim", "v2", true) })
	notify(t, mdb, w1)
	barrier(t, db, s)
	if ok, msg := serves(s, "victim", "v2", true); !ok {
		t.Errorf("after mallory replayed the dropped payload: %s (the table holds v2)", msg)
	}
}
