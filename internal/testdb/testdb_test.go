package testdb_test

import (
	"testing"
	"time"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestNewTurnsFsyncOff: a database from New is on a cluster that does not
// flush its commits to disk (reloaded configuration reaches backends on
// their next command, hence the poll).
func TestNewTurnsFsyncOff(t *testing.T) {
	_, db := testdb.New(t)
	testutil.Eventually(t, 5*time.Second, func() (bool, string) {
		var v string
		err := db.QueryRow(`SHOW fsync`).Scan(&v)
		return err == nil && v == "off", "fsync is " + v
	})
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM cache_entries`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("a new database's cache_entries: %d rows, %v", n, err)
	}
}
