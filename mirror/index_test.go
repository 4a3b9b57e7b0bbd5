package mirror

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestTableAgainstMap drives the index's hash table and a Go map with the
// same random puts, replacements and removes (with growth and shrinking),
// and compares them throughout.
func TestTableAgainstMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var ix index
	sh := &ix.shards[0]
	sh.echo = map[string]echoMark{}
	sh.t.bytes = &ix.tableBytes
	want := map[string]*entry{}
	check := func(step int) {
		t.Helper()
		if sh.t.n != len(want) {
			t.Fatalf("step %d: table holds %d, map %d", step, sh.t.n, len(want))
		}
		for k, e := range want {
			if got := sh.get(k, keyHash(k)); got != e {
				t.Fatalf("step %d: %q: got %p, want %p", step, k, got, e)
			}
		}
		seen := 0
		sh.t.all(func(e *entry) bool {
			if want[e.key()] != e {
				t.Fatalf("step %d: iteration found %q, not in the map", step, e.key())
			}
			seen++
			return true
		})
		if seen != len(want) {
			t.Fatalf("step %d: iteration saw %d of %d", step, seen, len(want))
		}
	}
	keys := make([]string, 3000)
	for i := range keys {
		keys[i] = fmt.Sprint("k", i)
	}
	keys[0] = "" // the empty key is a key
	for step := 0; step < 60000; step++ {
		k := keys[r.IntN(len(keys))]
		if step > 30000 { // mostly removes: shrink to nothing
			k = keys[r.IntN(300)]
		}
		h := keyHash(k)
		switch op := r.IntN(10); {
		case op < 5 && step < 30000 || op < 2:
			v := strings.Repeat("v", r.IntN(40))
			e := newInline(k, &state{version: int64(step), expires: NoExpiry - int64(r.IntN(2)),
				xid: uint64(r.IntN(2)), value: []byte(v), hasValue: true})
			sh.put(&ix, h, e)
			want[k] = e
		default:
			if e := sh.get(k, h); e != nil {
				sh.remove(&ix, e, h)
			}
			delete(want, k)
		}
		if step%997 == 0 {
			check(step)
		}
	}
	for k, e := range want {
		sh.remove(&ix, e, keyHash(k))
		delete(want, k)
	}
	check(-1)
	if ix.entryBytes.Load() != 0 || ix.tableBytes.Load() != 0 || ix.inlineBytes.Load() != 0 || sh.t.slots != nil {
		t.Fatalf("empty index accounts %d entry bytes, %d table bytes, %d inline bytes",
			ix.entryBytes.Load(), ix.tableBytes.Load(), ix.inlineBytes.Load())
	}
}

func TestEntryLayout(t *testing.T) {
	if entryHeader != 24 {
		t.Fatalf("entry header is %d bytes, want 24", entryHeader)
	}
	// A snapshot row without expiry: no xid, no expiry stored.
	e := newInline("key:000000000001", &state{version: 7, expires: NoExpiry, value: []byte("value"), hasValue: true})
	if e.key() != "key:000000000001" || string(e.value()) != "value" || !e.inline() || e.deleted() || e.digest() != 0 ||
		e.version != 7 || e.xid() != 0 || e.expires() != NoExpiry {
		t.Fatalf("inline entry: key %q value %q", e.key(), e.value())
	}
	if got := e.allocBytes(); got != 48 {
		t.Fatalf("24+16+5 bytes occupy %d, want 48", got)
	}
	// 1M keys of 16 bytes with 100-byte values: 140 bytes, in the 144-byte class.
	if got := newInline("key:000000000001", &state{expires: NoExpiry, value: make([]byte, 100)}).allocBytes(); got != 144 {
		t.Fatalf("24+16+100 bytes occupy %d, want 144", got)
	}
	for _, xid := range []uint64{0, 42} {
		for _, exp := range []int64{NoExpiry, 1700000000000000, 0} {
			c := newEntry("big", 3, exp, xid, digestLen, 0)
			c.setDigest(0x0102030405060708)
			if c.digest() != 0x0102030405060708 || c.key() != "big" || c.inline() || c.xid() != xid || c.expires() != exp || c.version != 3 {
				t.Fatalf("cached entry (xid %d, expires %d): digest %x key %q xid %d expires %d", xid, exp, c.digest(), c.key(), c.xid(), c.expires())
			}
			v := newInline("k", &state{version: 4, expires: exp, xid: xid, value: []byte("vv")})
			if v.key() != "k" || string(v.value()) != "vv" || v.xid() != xid || v.expires() != exp || v.version != 4 {
				t.Fatalf("inline entry (xid %d, expires %d): key %q value %q xid %d expires %d", xid, exp, v.key(), v.value(), v.xid(), v.expires())
			}
		}
	}
	d := newEntry("", 1, NoExpiry, 9, 0, flagDeleted)
	if d.key() != "" || !d.deleted() || d.digest() != 0 || d.xid() != 9 {
		t.Fatal("tombstone of the empty key")
	}
	if v := newInline("", &state{expires: NoExpiry}).value(); v == nil || len(v) != 0 {
		t.Fatalf("empty inline value: %v", v)
	}
	for n, want := range map[int]int{1: 8, 8: 8, 9: 16, 156: 160, 1025: 1152, 32768: 32768, 32769: 40960} {
		if got := allocSize(n); got != want {
			t.Errorf("allocSize(%d) = %d, want %d", n, got, want)
		}
	}
}
