package mirror

import (
	"crypto/md5"
	"encoding/binary"
)

// RowHash is the content hash of one row that reloads compare, computable in
// SQL too (pgstore): the first 8 bytes, big-endian, of
// md5(key || 0x00 || int8send(version) || int8send(expires) || value).
// Two states with the same version but other bytes (a write made with the
// triggers disabled) hash differently.
func RowHash(key string, version, expires int64, value []byte) uint64 {
	h, _ := rowHash(nil, key, version, expires, value)
	return h
}

// rowHash is RowHash with a reusable buffer, which it returns.
func rowHash(buf []byte, key string, version, expires int64, value []byte) (uint64, []byte) {
	buf = append(buf[:0], key...)
	buf = append(buf, 0)
	buf = binary.BigEndian.AppendUint64(buf, uint64(version))
	buf = binary.BigEndian.AppendUint64(buf, uint64(expires))
	buf = append(buf, value...)
	sum := md5.Sum(buf)
	return binary.BigEndian.Uint64(sum[:8]), buf
}

// Bucket is the key range (one of n) a key belongs to for checksum
// comparison: the first 4 bytes of md5(key), big-endian, modulo n.
func Bucket(key string, n int) int {
	sum := md5.Sum([]byte(key))
	return int(binary.BigEndian.Uint32(sum[:4]) % uint32(n))
}

// BucketSum is the checksum of one key range: its row count and the XOR of
// its rows' RowHash.
type BucketSum struct {
	Count int64
	Xor   uint64
}

// localSums computes the index's checksums over n buckets. A key whose
// value was never seen (a fetch marker not yet fetched) has no hash and
// makes its bucket differ, which re-reads it. The RowHash of a value held
// in the index is computed here, not kept: it is computed outside the
// shard's lock (an entry's key and value never change), so the stream is
// not held up meanwhile.
func (m *Mirror) localSums(n int) []BucketSum {
	sums := make([]BucketSum, n)
	type item struct {
		e      *entry
		digest uint64
	}
	var (
		items []item
		buf   []byte
	)
	for i := range m.ix.shards {
		sh := &m.ix.shards[i]
		items = items[:0]
		sh.mu.RLock()
		sh.t.all(func(e *entry) bool {
			if !e.deleted() {
				items = append(items, item{e, e.digest()})
			}
			return true
		})
		sh.mu.RUnlock()
		for _, it := range items {
			e, d := it.e, it.digest
			if e.inline() {
				d, buf = rowHash(buf, e.key(), e.version, e.expires(), e.value())
			}
			b := &sums[Bucket(e.key(), n)]
			b.Count++
			b.Xor ^= d
		}
	}
	return sums
}

// bucketCount picks the number of key ranges for a table of rows rows:
// about 256 rows a range, so a difference re-reads little.
func bucketCount(rows int64) int {
	return int(min(max(rows/256, 16), 1<<16))
}
