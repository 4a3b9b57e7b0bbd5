package listener

import (
	"fmt"
	"strings"
	"testing"

	"pgmirror/internal/testdb"
)

// TestDroppedMACRemembered: a payload under a key id above the newest the
// sidecar holds (a key it may read later) has its MAC handed to the sink's
// replay guard when it is dropped; one under an id at or below the newest
// but not held (deleted by a rotation: never valid again) does not.
func TestDroppedMACRemembered(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	r := &recorder{db: db}
	l := &Listener{DSN: dsn, Sink: r}
	run(t, l)
	newest := r.Keyring().Keys[0].ID
	send := func(kid int64, macByte string) {
		exec(t, db, `SELECT pg_notify($1, $2)`, Channel,
			fmt.Sprintf("pgm2 %s %d 1 %d 1/1\nT 1", strings.Repeat(macByte, 32), kid, uint64(1)<<40))
	}
	send(newest+1, "ab")
	poll(t, "the dropped MAC of a payload under a newer key", func() bool { return r.has("dropped-mac:abababababababab") })

	exec(t, db, `SELECT pgmirror_rotate_secret()`)
	exec(t, db, `SELECT pgmirror_rotate_secret()`)
	r.RefreshKeyring(t.Context())
	send(1, "cd") // deleted by the second rotation
	send(newest+10, "ef")
	poll(t, "the second newer-key payload", func() bool { return r.has("dropped-mac:efefefefefefefef") })
	if r.has("dropped-mac:cdcdcdcdcdcdcdcd") {
		t.Fatal("the MAC of a payload under a deleted key was remembered; it can never verify")
	}
}
