package unixsock_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/listener"
	"pgmirror/mirror"
)

// TestWriteOriginInMirrorEvents: a client's write reaches the mirror's
// events carrying the client's id (CLIENT ID) as its origin, its echo is
// not reported again, and a change made elsewhere carries none.
func TestWriteOriginInMirrorEvents(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	var paused atomic.Bool
	gate := make(chan struct{})
	sc := startSidecar(t, dsn, config{listener: func(l *listener.Listener) {
		l.BeforeApply = func() {
			if paused.Load() {
				<-gate // the echo waits until the write has been applied
			}
		}
	}})
	changes := make(chan mirror.KeyChange, 100)
	sc.m.Handle(func(ev mirror.Event) {
		if ev.Kind != mirror.KindChanges {
			return
		}
		for _, c := range ev.Changes {
			select {
			case changes <- c:
			default:
				t.Error("too many changes")
			}
		}
	})
	ctx := context.Background()
	conn := client(t, sc.socket).Conn()
	defer conn.Close()
	id, err := conn.ClientID(ctx).Result()
	if err != nil || id <= 0 {
		t.Fatalf("CLIENT ID = %d, %v", id, err)
	}
	paused.Store(true)
	if err := conn.Set(ctx, "mine", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	paused.Store(false)
	close(gate)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('theirs', 'v')`)
	for _, want := range []mirror.KeyChange{
		{Key: "mine", Event: mirror.EventSet, Origin: uint64(id)},
		{Key: "theirs", Event: mirror.EventSet},
	} {
		select {
		case got := <-changes:
			if got != want {
				t.Fatalf("change %+v, want %+v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change within 5s; want %+v", want)
		}
	}
}
