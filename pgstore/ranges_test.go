package pgstore_test

import (
	"fmt"
	"sort"
	"testing"

	"pgmirror/internal/testdb"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// TestRangeChecksumsMatchGo proves the SQL bucket and hash expressions
// compute mirror.Bucket and mirror.RowHash, then that only picked ranges'
// rows are read.
func TestRangeChecksumsMatchGo(t *testing.T) {
	_, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES
		('plain', 'v', NULL),
		('ключ-ü-😀', '\x00ff10'::bytea, '2031-02-03 04:05:06.789012+00'),
		('', '', 'infinity'),
		('neg', 'x', '-infinity'),
		('old', 'y', '1969-12-31 23:59:59.5+00')`)
	exec(t, db, `INSERT INTO cache_entries(key, value) SELECT 'k' || i, convert_to(md5(i::text), 'UTF8') FROM generate_series(1, 500) i`)
	s := pgstore.New(db, nil)
	rows := snapshot(t, s, nil)
	for _, n := range []int{1, 7, 64} {
		want := make([]mirror.BucketSum, n)
		for _, r := range rows {
			b := &want[mirror.Bucket(r.Key, n)]
			b.Count++
			b.Xor ^= mirror.RowHash(r.Key, r.Version, r.Expires, r.Value)
		}
		var picked []int
		read := map[string]bool{}
		err := s.RangeSnapshot(ctx(t), n, nil, func(sums []mirror.BucketSum) ([]int, error) {
			for b := range sums {
				if sums[b] != want[b] {
					t.Errorf("n=%d range %d: SQL %+v, Go %+v", n, b, sums[b], want[b])
				}
			}
			picked = []int{0, n - 1}
			return picked, nil
		}, func(r mirror.Row) error {
			if b := mirror.Bucket(r.Key, n); b != 0 && b != n-1 {
				return fmt.Errorf("row %q of range %d was not picked", r.Key, b)
			}
			read[r.Key] = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for k := range rows {
			if b := mirror.Bucket(k, n); (b == 0 || b == n-1) && !read[k] {
				missing = append(missing, k)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Fatalf("n=%d: rows of picked ranges not read: %q", n, missing)
		}
	}
}
