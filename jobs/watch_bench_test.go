package jobs_test

import (
	"database/sql"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/testdb"
)

// BenchmarkWatchAppUpdate: what a watch costs the application's writes.
// Single-row UPDATEs (autocommit) of three 10,000-row tables in one
// database: one not watched, one with a copy-mode watch and one with an
// invalidate-mode watch of every column (nothing cached under its prefix,
// the usual case), from 1 and from 8 connections, while one session LISTENs
// on the channel as a sidecar does (drained at once). The conditions take
// turns in rounds of 2 s, so that noise from other work on the machine hits
// them alike; it reports each one's median updates/s over the rounds.
//
//	go test -run '^$' -bench WatchAppUpdate -benchtime 1x ./jobs/
func BenchmarkWatchAppUpdate(b *testing.B) {
	const (
		rounds    = 5
		roundTime = 2 * time.Second
		rows      = 10000
	)
	dsn, db := testdb.New(b)
	conds := []struct{ name, table, mode string }{
		{"none", "acc_none", ""},
		{"copy", "acc_copy", "copy"},
		{"invalidate", "acc_inv", "invalidate"},
	}
	for _, c := range conds {
		exec(b, db, fmt.Sprintf(`CREATE TABLE %s (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, updated_at timestamptz)`, c.table))
		exec(b, db, fmt.Sprintf(`INSERT INTO %s SELECT i, 'owner' || i, 0, now() FROM generate_series(1, %d) i`, c.table, rows))
		exec(b, db, fmt.Sprintf(`VACUUM ANALYZE %s`, c.table))
		if c.mode != "" {
			exec(b, db, `SELECT pgmirror_watch($1::regclass, 'id', $2, NULL, $3)`, c.table, c.table+":", c.mode)
		}
	}
	l := pq.NewListener(dsn, time.Second, time.Second, nil)
	defer l.Close()
	if err := l.Listen("pgmirror"); err != nil {
		b.Fatal(err)
	}
	go func() {
		for range l.Notify {
		}
	}()
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)

	rates := map[string][]float64{}
	var order []string
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		for _, clients := range []int{1, 8} {
			for _, c := range conds {
				name := fmt.Sprintf("%s/clients=%d", c.name, clients)
				rate := updateRate(b, db, c.table, rows, clients, roundTime)
				if r == 0 {
					order = append(order, name)
				}
				rates[name] = append(rates[name], rate)
			}
		}
	}
	b.StopTimer()
	for _, name := range order {
		rs := append([]float64(nil), rates[name]...)
		sort.Float64s(rs)
		b.Logf("%-22s median %6.0f updates/s (rounds: %.0f)", name, rs[len(rs)/2], rates[name])
		b.ReportMetric(rs[len(rs)/2], name+"-updates/s")
	}
}

// updateRate runs single-row updates of table from clients connections for d
// and returns the updates per second.
func updateRate(b *testing.B, db *sql.DB, table string, rows, clients int, d time.Duration) float64 {
	var done atomic.Int64
	var wg sync.WaitGroup
	q := fmt.Sprintf(`UPDATE %s SET balance = balance + 1, updated_at = now() WHERE id = $1`, table)
	start := time.Now()
	deadline := start.Add(d)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; time.Now().Before(deadline); i += clients {
				if _, err := db.Exec(q, 1+i*7919%rows); err != nil {
					b.Error(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / time.Since(start).Seconds()
}
