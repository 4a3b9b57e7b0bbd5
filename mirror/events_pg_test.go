package mirror_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// events records what a mirror tells its handlers.
type events struct {
	mu  sync.Mutex
	evs []mirror.Event
}

func record(m *mirror.Mirror) *events {
	e := &events{}
	m.Handle(func(ev mirror.Event) {
		ev.Changes = slices.Clone(ev.Changes)
		e.mu.Lock()
		e.evs = append(e.evs, ev)
		e.mu.Unlock()
	})
	return e
}

// after returns the events after the end of the reload for reason (those
// of the first load may or may not have reached a handler registered once
// the mirror was ready).
func (e *events) after(reason string) []mirror.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, ev := range e.evs {
		if ev.Kind == mirror.KindReload && ev.Reason == reason {
			return slices.Clone(e.evs[i+1:])
		}
	}
	return nil
}

// kinds renders the events' kinds: "changes flush(truncate) reload ...".
func kinds(evs []mirror.Event) string {
	var s []string
	for _, ev := range evs {
		switch ev.Kind {
		case mirror.KindChanges:
			s = append(s, "changes")
		case mirror.KindFlush:
			s = append(s, "flush("+ev.Flush.String()+")")
		case mirror.KindReload:
			s = append(s, "reload")
		case mirror.KindLoaders:
			s = append(s, "loaders")
		}
	}
	return fmt.Sprint(s)
}

// TestEventsOfAResyncWithDrift: a resync that finds the mirror drifted
// reports its corrections as key changes, then a flush, then that the
// loaders may have changed, then its end; one without drift no flush.
func TestEventsOfAResyncWithDrift(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 100) i`)
	s := start(t, dsn, mirror.Options{})
	rec := record(s.m)
	ctx := context.Background()
	if _, err := s.m.Reload(ctx, "in sync"); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `ALTER TABLE cache_entries DISABLE TRIGGER USER`)
	exec(t, db, `UPDATE cache_entries SET value = 'silent' WHERE key = 'k10'`)
	exec(t, db, `DELETE FROM cache_entries WHERE key = 'k20'`)
	exec(t, db, `ALTER TABLE cache_entries ENABLE TRIGGER USER`)
	if res, err := s.m.Reload(ctx, "resync"); err != nil || res.Drift != 2 {
		t.Fatalf("resync: %+v, %v; want drift 2", res, err)
	}
	var evs []mirror.Event
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		evs = rec.after("in sync")
		return len(evs) > 0 && evs[len(evs)-1].Kind == mirror.KindReload, kinds(evs)
	})
	// The corrections come as one event or several (a reload's are not a
	// batch: they join while the handlers have not taken them).
	var changes []string
	for len(evs) > 0 && evs[0].Kind == mirror.KindChanges {
		for _, c := range evs[0].Changes {
			changes = append(changes, c.Event+" "+c.Key)
		}
		evs = evs[1:]
	}
	if got, want := kinds(evs), "[flush(drift) loaders reload]"; got != want {
		t.Fatalf("events after the corrections %s, want %s", got, want)
	}
	slices.Sort(changes)
	if !slices.Equal(changes, []string{"del k20", "set k10"}) {
		t.Fatalf("corrections %q", changes)
	}
	if evs[0].Reason != "resync" || evs[2].Reason != "resync" || evs[2].Reload.Drift != 2 || evs[2].Err != nil {
		t.Fatalf("flush %q and end %+v of the resync", evs[0].Reason, evs[2])
	}
}

// TestEventsOfATruncate: TRUNCATE reaches the handlers as the deletes of
// every key, then a flush.
func TestEventsOfATruncate(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, 'v' FROM generate_series(1, 50) i`)
	s := start(t, dsn, mirror.Options{})
	rec := record(s.m)
	if _, err := s.m.Reload(context.Background(), "in sync"); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `TRUNCATE cache_entries`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('after', 'v')`)
	var evs []mirror.Event
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		evs = rec.after("in sync")
		return len(evs) >= 3, kinds(evs)
	})
	if got, want := kinds(evs), "[changes flush(truncate) changes]"; got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
	if n := len(evs[0].Changes); n != 50 {
		t.Fatalf("the truncate reported %d changes, want 50 deletes", n)
	}
	for _, c := range evs[0].Changes {
		if c.Event != mirror.EventDel || c.Origin != 0 {
			t.Fatalf("the truncate reported %+v", c)
		}
	}
	if c := evs[2].Changes; len(c) != 1 || c[0].Key != "after" || c[0].Event != mirror.EventSet {
		t.Fatalf("after the truncate: %+v", c)
	}
}
