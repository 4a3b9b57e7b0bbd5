package mirror_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// valueFetches counts the value fetches this database has run (the
// mirror's query for values it lacks), from pg_stat_statements.
func valueFetches(t *testing.T, db *sql.DB) int64 {
	t.Helper()
	return statementCalls(t, db, `s.query ILIKE '%FROM cache_entries WHERE key = ANY%'`)
}

// TestReadAfterChangeNeedsNoFetch writes small values with plain SQL while
// readers poll the keys as the propagation benchmark's probes do: the
// moment the index has a new state, its value is there too, so no read
// ever asks Postgres (it would, were the value only in ristretto, which
// takes a value some time after it is given it: a read in between would
// fetch it). Values above the inline limit still go through the value
// cache.
func TestReadAfterChangeNeedsNoFetch(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	s := start(t, dsn, mirror.Options{})
	before := valueFetches(t, db)
	ctx := context.Background()
	const keys, rounds = 40, 15
	for round := range rounds {
		// One statement changes every key: one notification, applied key
		// by key while the readers poll.
		var wg sync.WaitGroup
		ks, vs := make([]string, keys), make([][]byte, keys)
		for k := range keys {
			key := fmt.Sprint("probe:", k)
			want := []byte(fmt.Sprintf("%d/%d %s", round, k, strings.Repeat("x", (round*keys+k)*7%(mirror.DefaultInlineLimit-10))))
			ks[k], vs[k] = key, want
			wg.Add(1)
			go func() { // polls until the write is visible
				defer wg.Done()
				deadline := time.Now().Add(10 * time.Second)
				for {
					v, ok, err := s.m.Get(ctx, key)
					if err != nil {
						t.Errorf("%s: %v", key, err)
						return
					}
					if ok && bytes.Equal(v, want) {
						return
					}
					if time.Now().After(deadline) {
						t.Errorf("%s: %.20q after 10 s, want %.20q", key, v, want)
						return
					}
					time.Sleep(20 * time.Microsecond)
				}
			}()
		}
		exec(t, db, `INSERT INTO cache_entries(key, value) SELECT * FROM unnest($1::text[], $2::bytea[])
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, pq.Array(ks), pq.Array(vs))
		wg.Wait()
	}
	st := s.m.Stats()
	if d := valueFetches(t, db) - before; d != 0 || st.Fetches != 0 {
		t.Fatalf("%d value fetches in Postgres (mirror counted %d) for %d small changes read at once; want 0", d, st.Fetches, keys*rounds)
	}
	if st.InlineBytes == 0 || st.ValueBytes != 0 {
		t.Fatalf("small values: %d bytes in the index, %d in the value cache", st.InlineBytes, st.ValueBytes)
	}

	// A large value (still carried by the notification) is in the value cache.
	big := bytes.Repeat([]byte("L"), 4*mirror.DefaultInlineLimit)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('big', $1)`, big)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		v, ok := s.get(t, "big")
		return ok && bytes.Equal(v, big), "big not visible"
	})
	if st := s.m.Stats(); st.ValueBytes < int64(len(big)) {
		t.Fatalf("value cache holds %d bytes after a %d-byte value", st.ValueBytes, len(big))
	}
	// (A read that came between the index taking its new state and the
	// value cache taking its value may have fetched it: by design.)
	before = valueFetches(t, db)
	s.m.EvictValue("big")
	if v, ok := s.get(t, "big"); !ok || !bytes.Equal(v, big) || valueFetches(t, db)-before != 1 {
		t.Fatalf("an evicted large value: found %v, %d fetches; want one fetch", ok, valueFetches(t, db)-before)
	}
}
