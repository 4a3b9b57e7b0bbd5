package pgstore

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"

	"github.com/lib/pq"

	"pgmirror/mirror"
)

// bucketExpr is mirror.Bucket in SQL, with $1 the number of buckets.
const bucketExpr = `((('x' || substr(md5(convert_to(key, 'UTF8')), 1, 8))::bit(32)::bigint & 4294967295) % $1)`

// hashExpr is mirror.RowHash in SQL (a never-expiring row hashes
// mirror.NoExpiry, as the mirror stores it).
var hashExpr = `('x' || substr(md5(convert_to(key, 'UTF8') || decode('00', 'hex') || int8send(version)
	|| int8send(coalesce(` + expiryExpr + `, ` + strconv.FormatInt(math.MaxInt64, 10) + `)) || value), 1, 16))::bit(64)::bigint`

// RangeSnapshot implements mirror.Source: the checksums are computed by
// Postgres (it reads every row, but sends one line per range), and only
// the rows of the ranges pick returns travel.
func (s *Store) RangeSnapshot(ctx context.Context, n int, visible func(mirror.Visibility) error,
	pick func(sums []mirror.BucketSum) ([]int, error), row func(mirror.Row) error) error {
	if n <= 0 {
		return fmt.Errorf("range snapshot: %d ranges", n)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tx, err := s.DB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("range snapshot: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // read only: rollback ends it as a commit would
	if err := openSnapshot(ctx, tx, visible); err != nil {
		return err
	}
	sums, err := bucketSums(ctx, tx, n)
	if err != nil {
		return err
	}
	picked, err := pick(sums)
	if err != nil || len(picked) == 0 {
		return err
	}
	_, err = readRows(ctx, cancel, tx, `SELECT `+columns+` FROM cache_entries WHERE `+bucketExpr+` = ANY($2)`,
		[]any{n, pq.Array(picked)}, row)
	return err
}

// bucketSums computes the checksum of every range in tx's snapshot.
func bucketSums(ctx context.Context, tx *sql.Tx, n int) ([]mirror.BucketSum, error) {
	rows, err := tx.QueryContext(ctx, `SELECT b, count(*), bit_xor(h) FROM (
		SELECT `+bucketExpr+` AS b, `+hashExpr+` AS h FROM cache_entries) r GROUP BY b`, n)
	if err != nil {
		return nil, fmt.Errorf("range checksums: %w", err)
	}
	defer rows.Close()
	sums := make([]mirror.BucketSum, n)
	for rows.Next() {
		var b, count, xor int64
		if err := rows.Scan(&b, &count, &xor); err != nil {
			return nil, fmt.Errorf("range checksums: %w", err)
		}
		if b < 0 || b >= int64(n) {
			return nil, fmt.Errorf("range checksums: range %d out of [0, %d)", b, n)
		}
		sums[b] = mirror.BucketSum{Count: count, Xor: uint64(xor)}
	}
	return sums, rows.Err()
}
