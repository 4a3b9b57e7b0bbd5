package mirror

import (
	"encoding/binary"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/cespare/xxhash/v2"
)

// shardCount splits the index so readers and the applier rarely meet on a lock.
const shardCount = 64

// entry is what the index knows of one key. The index, not the value cache,
// is the authority on existence.
//
// An entry is the header of one allocation that also holds, after it, the
// transaction id and the expiry when there are any (a snapshot row has no
// xid, and most keys never expire), the key's bytes, and then either the
// value itself (flagInline: small values live in the index, not in the
// value cache), or the 8-byte digest of a value the value cache may hold
// (neither flag), or nothing (flagDeleted). One allocation per key, no
// pointers inside (the garbage collector never scans it), and the key
// strings the index hands out point into it. Only the header's fields and
// the digest of a value never seen yet (set once) change; everything else
// is fixed when the entry is made, and a new state of the key is a new
// entry.
type entry struct {
	version int64
	owned   uint32 // reload epoch whose snapshot installed this state; later visible changes are older
	seen    uint32 // reload epoch whose snapshot contained this key
	size    uint32 // value length in bytes
	// meta holds the key's length (low 12 bits), the access stamp (the
	// next 12, idle.go) and the flags (high 8). The stamp, accessed,
	// expiredSent and echo change under a read lock, or with readers
	// about: hence atomic.
	meta atomic.Uint32
}

// entryHeader is the size of entry; what follows starts there.
const entryHeader = int(unsafe.Sizeof(entry{}))

// The flags of entry.meta.
const (
	keyLenMask uint32 = 1<<12 - 1 // MaxKeyBytes fits (idle.go)
	// flagDeleted: a tombstone, kept only while a reload is in flight or
	// this sidecar's delete awaits its echo.
	flagDeleted uint32 = 1 << 24
	// flagInline: the value's bytes follow the key.
	flagInline uint32 = 1 << 25
	// flagEcho: shard.echo holds the xid of this sidecar's write whose
	// echo has not arrived yet (rare, so not a field of every entry).
	flagEcho uint32 = 1 << 26
	// flagAccessed is set by reads and cleared when access times are
	// flushed to Postgres (a flag, so tracking costs no memory per hit).
	flagAccessed uint32 = 1 << 27
	// flagExpiredSent is set once the key's expiry was reported (EventExpired).
	flagExpiredSent uint32 = 1 << 28
	// flagXid: the transaction id follows the header (else it is 0).
	flagXid uint32 = 1 << 29
	// flagExpires: the expiry follows the header (and the xid); else NoExpiry.
	flagExpires uint32 = 1 << 30
)

// digestLen is what a value-cache entry keeps after its key: the digest.
const digestLen = 8

// newEntry allocates an entry for key, with tail bytes after the key, and
// the given flags (flagDeleted, flagInline or none).
func newEntry(key string, version, expires int64, xid uint64, tail int, flags uint32) *entry {
	if uint32(len(key)) > keyLenMask { // cache_entries' check constraint keeps keys within MaxKeyBytes
		panic("mirror: key longer than 4095 bytes")
	}
	if xid != 0 {
		flags |= flagXid
	}
	if expires != NoExpiry {
		flags |= flagExpires
	}
	off := entryHeader + optLen(flags)
	n := off + len(key) + tail
	// []uint64: 8-byte aligned, and holds no pointers.
	words := make([]uint64, (n+7)/8)
	p := unsafe.Pointer(unsafe.SliceData(words))
	e := (*entry)(p)
	e.version = version
	e.meta.Store(uint32(len(key)) | flags)
	if xid != 0 {
		*(*uint64)(unsafe.Add(p, entryHeader)) = xid
	}
	if expires != NoExpiry {
		*(*int64)(unsafe.Add(p, off-8)) = expires
	}
	copy(e.rest(len(key)), key)
	return e
}

// optLen is the length of the optional words (xid, expiry) of an entry
// with meta m.
func optLen(m uint32) int {
	n := 0
	if m&flagXid != 0 {
		n += 8
	}
	if m&flagExpires != 0 {
		n += 8
	}
	return n
}

// xid is the transaction whose change produced this state; 0 when a
// snapshot row did.
func (e *entry) xid() uint64 {
	if e.meta.Load()&flagXid == 0 {
		return 0
	}
	return *(*uint64)(unsafe.Add(unsafe.Pointer(e), entryHeader))
}

// expires is the state's expiry in epoch microseconds, or NoExpiry.
func (e *entry) expires() int64 {
	m := e.meta.Load()
	if m&flagExpires == 0 {
		return NoExpiry
	}
	return *(*int64)(unsafe.Add(unsafe.Pointer(e), entryHeader+optLen(m)-8))
}

// rest returns the n bytes from the key on.
func (e *entry) rest(n int) []byte {
	if n == 0 {
		return nil
	}
	off := entryHeader + optLen(e.meta.Load())
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(e), off)), n)
}

func (e *entry) keyLen() int { return int(e.meta.Load() & keyLenMask) }

// key returns the entry's key; the string shares the entry's memory.
func (e *entry) key() string {
	m := e.meta.Load()
	n := int(m & keyLenMask)
	if n == 0 {
		return ""
	}
	return unsafe.String((*byte)(unsafe.Add(unsafe.Pointer(e), entryHeader+optLen(m))), n)
}

func (e *entry) deleted() bool { return e.meta.Load()&flagDeleted != 0 }
func (e *entry) inline() bool  { return e.meta.Load()&flagInline != 0 }

// value returns an inline entry's value. It must not be modified.
func (e *entry) value() []byte {
	if e.size == 0 {
		return []byte{}
	}
	k := e.keyLen()
	return e.rest(k + int(e.size))[k:]
}

// digest returns the RowHash of the state's value for an entry whose value
// is not inline: the identity of the value the value cache may hold for
// it; 0 while the value was never seen (a fetch marker). Inline and deleted
// entries have none.
func (e *entry) digest() uint64 {
	if e.meta.Load()&(flagInline|flagDeleted) != 0 {
		return 0
	}
	k := e.keyLen()
	return binary.LittleEndian.Uint64(e.rest(k + digestLen)[k:])
}

// setDigest records the digest of a value-cache entry's value; the shard's
// write lock is held.
func (e *entry) setDigest(d uint64) {
	k := e.keyLen()
	binary.LittleEndian.PutUint64(e.rest(k + digestLen)[k:], d)
}

// allocBytes is the memory the entry occupies.
func (e *entry) allocBytes() int64 {
	m := e.meta.Load()
	n := entryHeader + optLen(m) + int(m&keyLenMask)
	switch {
	case m&flagInline != 0:
		n += int(e.size)
	case m&flagDeleted == 0:
		n += digestLen
	}
	return int64(allocSize((n + 7) &^ 7))
}

// maxNegativePerShard bounds the remembered absences (loader found no row).
const maxNegativePerShard = 2048

type shard struct {
	mu sync.RWMutex
	t  table
	// negs remembers keys whose loader found no row, until an epoch
	// microsecond; any change of the key ends it.
	negs map[string]int64
	// echo holds, for entries with flagEcho, which of this sidecar's
	// writes the entry awaits the echo of.
	echo map[string]echoMark
	// hand is the slot where makeRoom last looked.
	hand int
}

// index is the sharded key index, and its memory accounting.
type index struct {
	shards [shardCount]shard
	// entryBytes is the memory of the entries (keys and inline values
	// included), tableBytes of the hash tables' slots.
	entryBytes, tableBytes atomic.Int64
	// inlineBytes is the value bytes held inline (part of entryBytes).
	inlineBytes atomic.Int64
}

func newIndex() *index {
	ix := &index{}
	for i := range ix.shards {
		ix.shards[i].negs = make(map[string]int64)
		ix.shards[i].echo = make(map[string]echoMark)
		ix.shards[i].t.bytes = &ix.tableBytes
	}
	return ix
}

// keyHash is the hash of a key that picks its shard (low bits), its place
// in the shard's table (high bits) and its tag (bits 8-15).
func keyHash(key string) uint64 { return xxhash.Sum64String(key) }

func (ix *index) shard(key string) (*shard, uint64) {
	h := keyHash(key)
	return &ix.shards[h%shardCount], h
}

// bytes is the memory of the index: entries (with inline values) and tables.
func (ix *index) bytes() int64 { return ix.entryBytes.Load() + ix.tableBytes.Load() }

// get returns key's entry (maybe a tombstone), or nil; sh.mu is held.
func (sh *shard) get(key string, h uint64) *entry {
	_, e := sh.t.find(key, h)
	return e
}

// echoMark names the write of this sidecar whose echo an entry awaits: its
// transaction, and the sequence number of its local apply (Mirror.ownSeq),
// which tells whether another write of this sidecar began after it.
type echoMark struct {
	xid, seq uint64
}

// echoOf returns the xid of this sidecar's write whose echo e awaits, or 0.
func (sh *shard) echoOf(e *entry) uint64 {
	return sh.echoMarkOf(e).xid
}

// echoMarkOf returns the write whose echo e awaits; zero if none.
func (sh *shard) echoMarkOf(e *entry) echoMark {
	if e == nil || e.meta.Load()&flagEcho == 0 {
		return echoMark{}
	}
	return sh.echo[e.key()]
}

// setEcho records that e awaits the echo of this sidecar's write xid, whose
// local apply was number seq; sh.mu is held for writing.
func (sh *shard) setEcho(e *entry, xid, seq uint64) {
	sh.echo[e.key()] = echoMark{xid: xid, seq: seq}
	e.meta.Or(flagEcho)
}

// clearEcho ends e's wait for an echo; sh.mu is held for writing.
func (sh *shard) clearEcho(e *entry) {
	if e.meta.Load()&flagEcho != 0 {
		delete(sh.echo, e.key())
		e.meta.And(^flagEcho)
	}
}

// put installs ne (whose key hashes to h) in place of the key's entry, and
// returns the old one or nil; sh.mu is held for writing. An echo the old
// entry awaited is the caller's to carry over (setEcho on ne).
func (sh *shard) put(ix *index, h uint64, ne *entry) *entry {
	old := sh.t.put(ne, h)
	if old != nil {
		if old.meta.Load()&flagEcho != 0 && ne.meta.Load()&flagEcho == 0 {
			delete(sh.echo, old.key())
		}
		ix.release(old)
	}
	ix.entryBytes.Add(ne.allocBytes())
	if ne.inline() {
		ix.inlineBytes.Add(int64(ne.size))
	}
	return old
}

// remove deletes key's entry e; sh.mu is held for writing.
func (sh *shard) remove(ix *index, e *entry, h uint64) {
	sh.clearEcho(e)
	sh.t.remove(e.key(), h)
	ix.release(e)
}

// release accounts for an entry leaving the index.
func (ix *index) release(e *entry) {
	ix.entryBytes.Add(-e.allocBytes())
	if e.inline() {
		ix.inlineBytes.Add(-int64(e.size))
	}
}

// table is an open-addressing hash table of entries (linear probing,
// backward-shift deletion, no tombstones), about 9 bytes a slot at 60-80%
// load: a Go map[string]*entry costs 25 bytes a slot, and at times below
// half load. A one-byte tag per slot (bits of the key's hash) spares most
// comparisons of keys.
type table struct {
	slots []*entry
	tags  []uint8 // 0: empty slot
	n     int
	bytes *atomic.Int64 // the index's tableBytes
}

const (
	tableMinSlots = 8
	// tableMaxLoad: grow beyond 80% full (to 1.5 times the slots), shrink
	// below 10%.
	tableMaxLoadNum, tableMaxLoadDen = 4, 5
)

func tagOf(h uint64) uint8 {
	if t := uint8(h >> 8); t != 0 {
		return t
	}
	return 1
}

// home is the slot where a key of hash h starts its probe.
func (t *table) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(t.slots)))
	return int(hi)
}

// find returns key's slot and entry, or -1 and nil.
func (t *table) find(key string, h uint64) (int, *entry) {
	if t.n == 0 {
		return -1, nil
	}
	tag := tagOf(h)
	n := len(t.slots)
	for i := t.home(h); ; {
		switch t.tags[i] {
		case 0:
			return -1, nil
		case tag:
			if e := t.slots[i]; e.key() == key {
				return i, e
			}
		}
		if i++; i == n {
			i = 0
		}
	}
}

// put stores e under its key, whose hash is h, and returns the entry it
// replaced, or nil.
func (t *table) put(e *entry, h uint64) *entry {
	if i, old := t.find(e.key(), h); old != nil {
		t.slots[i] = e
		return old
	}
	if (t.n+1)*tableMaxLoadDen > len(t.slots)*tableMaxLoadNum {
		t.resize(max(len(t.slots)*3/2, tableMinSlots))
	}
	t.insert(e, h)
	t.n++
	return nil
}

// insert puts e, which is not in the table, into its first free slot.
func (t *table) insert(e *entry, h uint64) {
	n := len(t.slots)
	i := t.home(h)
	for t.tags[i] != 0 {
		if i++; i == n {
			i = 0
		}
	}
	t.slots[i], t.tags[i] = e, tagOf(h)
}

// remove deletes key, whose hash is h, if present.
func (t *table) remove(key string, h uint64) {
	i, e := t.find(key, h)
	if e == nil {
		return
	}
	// Backward shift: move later entries of the probe run into the hole
	// when their home allows it, so lookups never need tombstones.
	n := len(t.slots)
	for j := i; ; {
		if j++; j == n {
			j = 0
		}
		if t.tags[j] == 0 {
			break
		}
		k := t.home(keyHash(t.slots[j].key()))
		if i <= j && (k <= i || k > j) || i > j && k <= i && k > j {
			t.slots[i], t.tags[i] = t.slots[j], t.tags[j]
			i = j
		}
	}
	t.slots[i], t.tags[i] = nil, 0
	t.n--
	switch {
	case t.n == 0:
		t.resize(0)
	case len(t.slots) > 64 && t.n*10 < len(t.slots):
		t.resize(t.n * 2)
	}
}

// reserve makes room for n entries without growing.
func (t *table) reserve(n int) {
	if want := n*tableMaxLoadDen/tableMaxLoadNum + 1; want > len(t.slots) {
		t.resize(want)
	}
}

// resize rehashes into size slots (0: release the table).
func (t *table) resize(size int) {
	old, oldTags := t.slots, t.tags
	t.bytes.Add(-tableAlloc(len(old)))
	if size == 0 {
		t.slots, t.tags = nil, nil
		return
	}
	t.slots, t.tags = make([]*entry, size), make([]uint8, size)
	t.bytes.Add(tableAlloc(size))
	for i, e := range old {
		if oldTags[i] != 0 {
			t.insert(e, keyHash(e.key()))
		}
	}
}

// all calls fn for every entry until it returns false. fn must not add or
// remove entries (it may replace one: put of an existing key).
func (t *table) all(fn func(e *entry) bool) {
	for i, e := range t.slots {
		if t.tags[i] != 0 && !fn(e) {
			return
		}
	}
}

func tableAlloc(slots int) int64 {
	if slots == 0 {
		return 0
	}
	return int64(allocSize(slots*8) + allocSize(slots))
}

// sizeClasses are the Go allocator's size classes (runtime/sizeclasses.go):
// what an allocation of up to 32 KiB really occupies.
var sizeClasses = [...]uint16{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
	256, 288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536,
	1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472,
	9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672, 32768}

// allocSize is the memory an allocation of n bytes occupies.
func allocSize(n int) int {
	if n <= 0 {
		return 0
	}
	if n > 32768 {
		return (n + 8191) &^ 8191
	}
	lo, hi := 0, len(sizeClasses)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if int(sizeClasses[mid]) >= n {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return int(sizeClasses[lo])
}

// entries appends every entry of the shard (tombstones included) to buf;
// sh.mu is held. For loops that remove entries as they go.
func (sh *shard) entries(buf []*entry) []*entry {
	sh.t.all(func(e *entry) bool {
		buf = append(buf, e)
		return true
	})
	return buf
}

// reserve sizes the shards' tables for n keys in all, before a load.
func (ix *index) reserve(n int64) {
	per := int(n/shardCount + n/shardCount/16)
	for i := range ix.shards {
		sh := &ix.shards[i]
		sh.mu.Lock()
		sh.t.reserve(per)
		sh.mu.Unlock()
	}
}
