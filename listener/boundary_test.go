package listener_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// TestInlineBoundaryPropagates writes records at the inline limit of format
// 1 (key and value 7908 bytes of base64) and just under and over the limit
// of format 2 (7810), with the widest version and expiry fields, one per
// statement, all in one statement, and through a sidecar: no write fails
// (Postgres refuses a payload of 8000 bytes, which would abort the writer's
// transaction), and every sidecar serves every value.
func TestInlineBoundaryPropagates(t *testing.T) {
	t.Parallel()
	dsn, db := testdb.New(t)
	// Versions of 19 digits and an expiry of 18: the widest fixed fields.
	sqlExec(t, db, `SELECT setval('cache_entries_version_seq', 9000000000000000000)`)
	const expires = "9999-12-31 23:59:59+00"
	s := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror()})
	long := strings.Repeat("k", 4000)
	cases := []struct {
		key   string
		value int // bytes
		b64   int // key64 + value64
	}{
		{"edge", 5925, 7908},       // format 1's limit
		{"edge-under", 5844, 7808}, // format 2's last inline size
		{"edge-over", 5850, 7812},  // the first fetch marker
		{long, 1929, 7908},         // a 4000-byte key at format 1's limit
	}
	value := func(key string, n int) []byte {
		return bytes.Repeat([]byte{key[0] ^ 0x5a}, n)
	}
	for _, c := range cases {
		got := 4*((len(c.key)+2)/3) + 4*((c.value+2)/3)
		if got != c.b64 {
			t.Fatalf("case %.10q: %d bytes of base64, the test wants %d", c.key, got, c.b64)
		}
		sqlExec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ($1, $2, $3)`, c.key, value(c.key, c.value), expires)
	}
	// All of them in one statement, among small rows: packed payloads.
	sqlExec(t, db, `UPDATE cache_entries SET value = value || '\x00'::bytea`)
	sqlExec(t, db, `INSERT INTO cache_entries(key, value, expires_at)
		SELECT 'small' || i, '\x01'::bytea, $1 FROM generate_series(1, 300) i`, expires)
	sqlExec(t, db, `UPDATE cache_entries SET value = substring(value FROM 1 FOR octet_length(value) - 1)
		WHERE key NOT LIKE 'small%'`)
	// A sidecar's own write (pgmirror_write publishes the final state).
	ctx := context.Background()
	if err := s.Client.Set(ctx, "edge-set", value("edge-set", 5922), 0).Err(); err != nil { // 12 + 7896 = 7908
		t.Fatalf("SET at the old limit: %v", err)
	}
	other := sidecartest.Start(t, dsn, sidecartest.Config{Mirror: testMirror()})
	sqlExec(t, db, `UPDATE cache_entries SET value = value WHERE key = 'edge'`) // a fresh notification after both started
	for i, sc := range []*sidecartest.Sidecar{s, other} {
		for _, c := range append(cases, struct {
			key   string
			value int
			b64   int
		}{"edge-set", 5922, 7908}) {
			want := value(c.key, c.value)
			testutil.Eventually(t, 10*time.Second, func() (bool, string) {
				got, err := sc.Client.Get(ctx, c.key).Bytes()
				return err == nil && bytes.Equal(got, want),
					fmt.Sprintf("sidecar %d: %.10q: %d bytes, %v; want %d", i, c.key, len(got), err, len(want))
			})
		}
	}
}
