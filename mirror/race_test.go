package mirror_test

// Races made deterministic with the mirror's test hooks: data read outside
// the stream (fetched rows, snapshot rows) must never overwrite newer state
// the stream delivered, and a deleted key must never come back.

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// watcher records, in the background, every state a key is served in, and
// fails the test if an older state comes back after a newer one.
type watcher struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen []string
}

// last is the latest state the watcher recorded.
func (w *watcher) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen) == 0 {
		return ""
	}
	return w.seen[len(w.seen)-1]
}

func watch(t *testing.T, s *sidecar, key string) *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			v, ok, err := s.m.Get(context.Background(), key)
			state := "<absent>"
			if err != nil {
				state = "<error>"
			} else if ok {
				state = string(v)
			}
			w.mu.Lock()
			if len(w.seen) == 0 || w.seen[len(w.seen)-1] != state {
				w.seen = append(w.seen, state)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// states stops the watcher and returns the distinct states in serving order.
func (w *watcher) states() []string {
	close(w.stop)
	<-w.done
	return w.seen
}

func waitVersionChange(t *testing.T, s *sidecar, key string, from int64) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		l, err := s.m.Exists(key)
		return err == nil && l.Version != from, fmt.Sprintf("%s still at version %d", key, from)
	})
}

func TestStaleFetchedRowIsIgnored(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	var armed atomic.Bool
	var fired atomic.Int32
	var s *sidecar
	old := bytes.Repeat([]byte("o"), 20000) // a fetch marker: the value must be fetched
	s = start(t, dsn, mirror.Options{Hooks: &mirror.Hooks{AfterFetch: func(keys []string) {
		if !armed.Load() || len(keys) == 0 || keys[0] != "f" || fired.Add(1) != 1 {
			return
		}
		// The fetch has read the old row; now a newer state commits and is
		// delivered before the fetched row is installed.
		l, _ := s.m.Exists("f")
		exec(t, db, `UPDATE cache_entries SET value = 'new' WHERE key = 'f'`)
		waitVersionChange(t, s, "f", l.Version)
	}}})
	armed.Store(true)
	w := watch(t, s, "f")
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('f', $1)`, old)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, ok := s.get(t, "f")
		return ok && string(v) == "new", fmt.Sprintf("f = %.10q", v)
	})
	// A read of the watcher that joined the stale fetch returns the old
	// value (it began before the update); its next read must see the new.
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		return w.last() == "new", fmt.Sprintf("the watcher's last state %.10q", w.last())
	})
	states := w.states()
	if fired.Load() == 0 {
		t.Fatal("the fetch hook never fired; the race was not exercised")
	}
	for i, st := range states {
		if st == string(old) && i > 0 && contains(states[:i], "new") {
			t.Fatalf("the stale fetched value was served after the newer one: %.12q", states)
		}
	}
	if states[len(states)-1] != "new" {
		t.Fatalf("final state %.12q, want new", states[len(states)-1])
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// reloadWith runs a reload whose snapshot is taken, then action runs (its
// change is delivered by the stream) before any snapshot row is merged.
func reloadWith(t *testing.T, dsn string, setup string, action func(s *sidecar)) (*sidecar, *watcher) {
	t.Helper()
	_, db := dsn, testdb.Open(t, dsn)
	exec(t, db, setup)
	var armed atomic.Bool
	var s *sidecar
	s = start(t, dsn, mirror.Options{Hooks: &mirror.Hooks{AfterSnapshotVisible: func() {
		if armed.CompareAndSwap(true, false) {
			action(s)
		}
	}}})
	w := watch(t, s, "k")
	armed.Store(true)
	if _, err := s.m.Reload(context.Background(), "test"); err != nil {
		t.Fatal(err)
	}
	if armed.Load() {
		t.Fatal("the snapshot hook never fired")
	}
	return s, w
}

func TestSnapshotRowDoesNotOverwriteNewerState(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s, w := reloadWith(t, dsn, `INSERT INTO cache_entries(key, value) VALUES ('k', 'old')`, func(s *sidecar) {
		l, _ := s.m.Exists("k")
		exec(t, db, `UPDATE cache_entries SET value = 'new' WHERE key = 'k'`)
		waitVersionChange(t, s, "k", l.Version)
	})
	if v, ok := s.get(t, "k"); !ok || string(v) != "new" {
		t.Fatalf("after the reload k = %q (found %v), want new", v, ok)
	}
	if states := w.states(); len(states) != 2 || states[0] != "old" || states[1] != "new" {
		t.Fatalf("served states %q, want old then new", states)
	}
}

func TestDeleteDuringReloadIsNotResurrected(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s, w := reloadWith(t, dsn, `INSERT INTO cache_entries(key, value) VALUES ('k', 'old')`, func(s *sidecar) {
		exec(t, db, `DELETE FROM cache_entries WHERE key = 'k'`)
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			l, _ := s.m.Exists("k")
			return !l.Found, "k still present"
		})
	})
	if _, ok := s.get(t, "k"); ok {
		t.Fatal("the reload brought back a key deleted during it")
	}
	if states := w.states(); len(states) != 2 || states[1] != "<absent>" {
		t.Fatalf("served states %q, want old then absent", states)
	}
	if st := s.m.Stats(); st.Tombstones != 0 {
		t.Fatalf("%d tombstones left after the reload", st.Tombstones)
	}
}

// TestUpsertAfterHigherVersionDelete: an INSERT ... ON CONFLICT takes its
// version, is held, a DELETE of the key takes a higher version and commits,
// then the insert commits. Every sidecar must end with the key present.
func TestUpsertAfterHigherVersionDelete(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	exec(t, db, `CREATE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.key = 'race' THEN PERFORM pg_advisory_xact_lock(4242); END IF;
			RETURN NEW;
		END $$`)
	exec(t, db, `CREATE TRIGGER zz_test_hold BEFORE INSERT ON cache_entries FOR EACH ROW EXECUTE FUNCTION test_hold()`)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('race', 'old')`)
	sidecars := []*sidecar{start(t, dsn, mirror.Options{}), start(t, dsn, mirror.Options{})}

	ctx := context.Background()
	holder, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_lock(4242)`); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('race', 'new') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`)
	}()
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		var waiting bool
		_ = db.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted)`).Scan(&waiting)
		return waiting, "the insert is not waiting in the test trigger"
	})
	exec(t, db, `DELETE FROM cache_entries WHERE key = 'race'`)
	var delVersion int64
	_ = db.QueryRow(`SELECT last_value FROM cache_entries_version_seq`).Scan(&delVersion)
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_unlock(4242)`); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	var insVersion int64
	if err := db.QueryRow(`SELECT version FROM cache_entries WHERE key = 'race'`).Scan(&insVersion); err != nil {
		t.Fatal(err)
	}
	if insVersion >= delVersion {
		t.Fatalf("insert v%d, delete v%d: the race did not happen", insVersion, delVersion)
	}
	for i, s := range sidecars {
		testutil.Eventually(t, 5*time.Second, func() (bool, string) {
			v, ok := s.get(t, "race")
			return ok && string(v) == "new", fmt.Sprintf("sidecar %d: race = %q (found %v)", i, v, ok)
		})
	}
}
