package unixsock_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

// TestStrlenOfFetchMarker: a value too large for its notification travels
// as a fetch marker; STRLEN answers its true length before anything fetched
// it (not the marker's). The prefetch of the value is held back.
func TestStrlenOfFetchMarker(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	prefetching := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, Mirror: mirror.Options{Hooks: &mirror.Hooks{
		AfterFetch: func([]string) {
			held := false
			once.Do(func() { held = true })
			if held { // the prefetch that follows the marker: hold it
				close(prefetching)
				<-release
			}
		},
	}}})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	ctx := context.Background()
	const size = 20000
	if _, err := db.Exec(`INSERT INTO cache_entries(key, value) VALUES ('big', convert_to(repeat('x', $1), 'UTF8'))`, size); err != nil {
		t.Fatal(err)
	}
	select {
	case <-prefetching:
	case <-time.After(30 * time.Second):
		t.Fatal("the marker's value was never prefetched")
	}
	if n, err := sc.Client.StrLen(ctx, "big").Result(); err != nil || n != size {
		t.Fatalf("STRLEN of a value known only by its fetch marker = %d, %v; want %d", n, err, size)
	}
	close(release)
	if n, err := sc.Client.StrLen(ctx, "big").Result(); err != nil || n != size {
		t.Fatalf("STRLEN after the fetch = %d, %v; want %d", n, err, size)
	}
	if n, err := sc.Client.StrLen(ctx, "nothing").Result(); err != nil || n != 0 {
		t.Fatalf("STRLEN of a missing key = %d, %v; want 0", n, err)
	}
}

// TestTTLCenturiesAway: TTL and PTTL of an expiry more than 292 years away
// (past time.Duration's range) answer the time left, not -1.
func TestTTLCenturiesAway(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true})
	ctx := context.Background()
	const secs = 10_000_000_000 // about 317 years
	if err := sc.Client.Do(ctx, "SET", "far", "v", "EX", secs).Err(); err != nil {
		t.Fatal(err)
	}
	ttl, err := sc.Client.Do(ctx, "TTL", "far").Int64()
	if err != nil || ttl < secs-5 || ttl > secs {
		t.Fatalf("TTL = %d, %v; want about %d", ttl, err, int64(secs))
	}
	pttl, err := sc.Client.Do(ctx, "PTTL", "far").Int64()
	if err != nil || pttl < secs*1000-5000 || pttl > secs*1000 {
		t.Fatalf("PTTL = %d, %v; want about %d", pttl, err, int64(secs)*1000)
	}
	if err := sc.Client.Set(ctx, "plain", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"TTL", "PTTL"} {
		if n, err := sc.Client.Do(ctx, cmd, "plain").Int64(); err != nil || n != -1 {
			t.Fatalf("%s of a key without expiry = %d, %v", cmd, n, err)
		}
		if n, err := sc.Client.Do(ctx, cmd, "missing").Int64(); err != nil || n != -2 {
			t.Fatalf("%s of a missing key = %d, %v", cmd, n, err)
		}
	}
}

// TestMGetRunsLoadersConcurrently: MGET computes the absent keys of a
// loader as GET does, concurrently rather than one after the other; hits,
// misses and loaded keys come back in order. Concurrently as far as the
// memory bound allows (mirror.GetMulti): with --max-value-size 1 MiB, eight
// at once; with the default 16 MiB, one at a time (checked in the mirror's
// TestGetMultiBoundsWhatItHolds).
func TestMGetRunsLoadersConcurrently(t *testing.T) {
	// Not parallel: it bounds how long MGET takes.
	dsn, db := testdb.New(t)
	if _, err := db.Exec(`INSERT INTO cache_loaders(prefix, query) VALUES ('slow:', 'SELECT ''v:'' || $1::text FROM pg_sleep(0.4)'),
		('bad:', 'SELECT 1/0 WHERE $1 IS NOT NULL')`); err != nil {
		t.Fatal(err)
	}
	sc := sidecartest.Start(t, dsn, sidecartest.Config{NoJobs: true, MaxValueSize: 1 << 20})
	ctx := context.Background()
	if err := sc.Client.Set(ctx, "hit", "h", 0).Err(); err != nil {
		t.Fatal(err)
	}
	keys := []string{"hit", "missing"}
	for i := range 10 {
		keys = append(keys, fmt.Sprint("slow:", i))
	}
	start := time.Now()
	vals, err := sc.Client.MGet(ctx, keys...).Result()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"h", nil}
	for i := range 10 {
		want = append(want, fmt.Sprint("v:", i))
	}
	if fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Fatalf("MGET = %v, want %v", vals, want)
	}
	t.Logf("MGET of 10 keys whose loader takes 0.4 s each: %v", took)
	if took > 2500*time.Millisecond {
		t.Fatalf("MGET of 10 keys whose loader takes 0.4 s took %v: loaders ran one after the other", took)
	}
	// Stored by the loaders, so a second MGET is all hits.
	start = time.Now()
	if vals, err = sc.Client.MGet(ctx, keys...).Result(); err != nil || fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Fatalf("second MGET = %v, %v", vals, err)
	}
	if took := time.Since(start); took > 300*time.Millisecond {
		t.Fatalf("second MGET took %v", took)
	}
	// A loader error fails the MGET, as it fails GET, when nothing was
	// written yet; after values went out (MGET streams them), the failing
	// key and those after it answer an error element each.
	if err := sc.Client.MGet(ctx, "bad:1", "hit").Err(); err == nil || !strings.Contains(err.Error(), "loader failed") {
		t.Fatalf("MGET with a failing loader first: %v", err)
	}
	vals, err = sc.Client.MGet(ctx, "hit", "bad:1", "missing").Result()
	if err != nil || len(vals) != 3 || vals[0] != "h" {
		t.Fatalf("MGET with a failing loader after a hit = %v, %v", vals, err)
	}
	for _, v := range vals[1:] {
		if e, ok := v.(error); !ok || !strings.Contains(e.Error(), "loader failed") {
			t.Fatalf("MGET with a failing loader after a hit = %#v, want error elements after the hit", vals)
		}
	}
}
