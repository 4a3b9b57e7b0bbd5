package mirror_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/mirror"
)

// TestChaos runs writers for about 20 s while the listener's backend is
// killed at random and the server is restarted once; at the end every
// sidecar's mirror equals the table.
func TestChaos(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	testdb.Migrate(t, dsn)
	sidecars := []*sidecar{
		start(t, dsn, mirror.Options{}),
		start(t, dsn, mirror.Options{ReloadInterval: 3 * time.Second}),
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		writer(t, dsn, 500, stop, &wg)
	}
	const duration = 20 * time.Second
	begin := time.Now()
	restarted := false
	kills := 0
	for time.Since(begin) < duration {
		time.Sleep(time.Duration(300+rand.IntN(900)) * time.Millisecond)
		if !restarted && time.Since(begin) > duration/2 {
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			restarted = true
			continue
		}
		kills += killListener(t, srv, dsn)
	}
	close(stop)
	wg.Wait()
	db := testdb.Open(t, dsn) // after the restart
	for _, s := range sidecars {
		s.converges(t, db, 30*time.Second)
	}
	var rows int
	_ = db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&rows)
	t.Logf("%d listener kills, one restart, %d rows at the end; reloads %d and %d", kills, rows,
		sidecars[0].m.Stats().Reloads, sidecars[1].m.Stats().Reloads)
}
