package mirror

import "math/bits"

// A SCAN cursor is a position in hash order: the shard in the top 6 bits,
// and in the other 58 the hash of a key of that shard shifted right by 6
// (its low 6 bits are the shard, so nothing is lost). Keys whose position is
// at or above the cursor remain. A shard's table places a key at or after
// its home slot, and the home slot grows with the hash whatever the table's
// size (table.home), so a call can start at the cursor's home slot, walk a
// bounded number of slots, and return the position where it stopped: no
// state is kept between calls, and resizes between them lose nothing (no
// reverse-binary trick needed, as the home is monotonic in the hash).
const (
	scanShardShift = 58
	scanPosMask    = 1<<scanShardShift - 1
)

// Scan iterates the key index as Redis's SCAN does: it returns present,
// unexpired keys for which match returns true (nil matches all), after
// looking at about count entries, and the cursor to continue from; 0 when
// the iteration is complete. Every key present for the whole iteration is
// returned at least once (and, unless the index changes, exactly once);
// keys added or removed meanwhile may or may not be. A call costs
// O(count) plus the length of one probe run, whatever the index's size.
//
// The cursors Scan returns are below 2^63: clients parse them as signed
// 64-bit integers (phpredis 5 saturates larger ones and never ends). A
// cursor is the position of scanPositions halved; one rounded down starts
// the next call a position early (a key exactly there may come twice, as
// SCAN allows), and one that would not advance is continued at once.
func (m *Mirror) Scan(cursor uint64, count int, match func(key string) bool) (uint64, []string) {
	cursor &= 1<<63 - 1
	next, out := m.scanPositions(cursor<<1, count, match)
	for next != 0 && next>>1 <= cursor {
		var more []string
		next, more = m.scanPositions(next, count, match)
		out = append(out, more...)
	}
	return next >> 1, out
}

// scanPositions is Scan on the full 64-bit cursor: the shard in the top 6
// bits, the position within it below.
func (m *Mirror) scanPositions(cursor uint64, count int, match func(key string) bool) (uint64, []string) {
	if count <= 0 {
		count = 10
	}
	now := m.clock.dbNow()
	var out []string
	var buf []*entry
	visited := 0
	from := cursor & scanPosMask
	for shardIdx := int(cursor >> scanShardShift); shardIdx < shardCount; shardIdx, from = shardIdx+1, 0 {
		sh := &m.ix.shards[shardIdx]
		sh.mu.RLock()
		var next uint64
		var done bool
		buf, next, done = sh.t.scan(from, count-visited, buf[:0])
		live := len(out)
		for _, e := range buf {
			if !e.deleted() && e.expires() > now {
				// The key's string shares the entry's memory, which stays
				// valid: entries never change once made.
				out = append(out, e.key())
			}
		}
		sh.mu.RUnlock()
		if match != nil { // outside the lock: a pattern may be slow to match
			kept := out[:live]
			for _, k := range out[live:] {
				if match(k) {
					kept = append(kept, k)
				}
			}
			out = kept
		}
		visited += len(buf)
		if !done {
			return uint64(shardIdx)<<scanShardShift | next, out
		}
		if visited >= count && shardIdx+1 < shardCount {
			return uint64(shardIdx+1) << scanShardShift, out
		}
	}
	return 0, out
}

// scanPos is a key's position within its shard (its hash h, shard bits
// dropped).
func scanPos(h uint64) uint64 { return h >> 6 }

// scan appends to buf the entries whose position is at least from, in home
// slot order, until it has appended about budget of them, and returns the
// position to continue from; done when it reached the end of the table.
// The entries appended are exactly those with a position in [from, next):
// the walk stops after a slot t and computes next as the first position
// whose home is past t, then follows t's probe run to its end, where the
// entries of homes up to t that were pushed beyond t sit.
func (t *table) scan(from uint64, budget int, buf []*entry) (_ []*entry, next uint64, done bool) {
	n := len(t.slots)
	if t.n == 0 {
		return buf, 0, true
	}
	budget = max(budget, 1)
	last := n - 1 // the boundary slot: homes up to it are covered
	for i := t.home(from << 6); i < n; i++ {
		if t.tags[i] != 0 {
			h := keyHash(t.slots[i].key())
			// An entry sits at or after its home slot, except one that
			// wrapped around the end: those come last, with slot n-1.
			if scanPos(h) >= from && t.home(h) <= i {
				buf = append(buf, t.slots[i])
			}
		}
		if len(buf) >= budget && i < n-1 {
			if next = firstPos(i+1, n); next > from {
				last = i
				break
			}
		}
	}
	done = last == n-1
	// The rest of the run of slot last: entries whose home is at most last,
	// and, at the end of the table, those that wrapped around to its start.
	for j := (last + 1) % n; t.tags[j] != 0; j = (j + 1) % n {
		h := keyHash(t.slots[j].key())
		home := t.home(h)
		wrapped := home > j
		if scanPos(h) >= from && (done && wrapped || !done && home <= last && (wrapped || j > last)) {
			buf = append(buf, t.slots[j])
		}
	}
	if !done {
		// Keep exactly [from, next): a key of position next whose home is
		// last still belongs to the next call, which starts at that slot.
		kept := buf[:0]
		for _, e := range buf {
			if scanPos(keyHash(e.key())) < next {
				kept = append(kept, e)
			}
		}
		buf = kept
	}
	return buf, next, done
}

// firstPos is the first position whose home, in a table of n slots, is
// slot i or later: the smallest hash h with h*n >= i<<64, shifted as
// scanPos shifts it. A hash below it is homed before slot i.
func firstPos(i, n int) uint64 {
	q, r := bits.Div64(uint64(i), 0, uint64(n))
	if r != 0 {
		q++
	}
	return q >> 6
}
