package mirror

import (
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// shardCount splits the index so readers and the applier rarely meet on a lock.
const shardCount = 64

// entryOverhead approximates the memory of one index entry beyond its key
// bytes: the map slot, the key's string header and the entry struct.
const entryOverhead = 120

// entry is what the index knows of one key. The index, not the value cache,
// is the authority on existence.
type entry struct {
	version int64
	expires int64  // epoch microseconds, or NoExpiry
	xid     uint64 // transaction whose change produced this state; 0 when a snapshot row did
	digest  uint64 // RowHash of key, version, expiry and value; 0 while the value was never seen.
	// It is also the identity of the cached value: a cached value serves
	// this state only if its digest is this one.
	size    int    // value length in bytes
	echo    uint64 // xid of this sidecar's write whose echo has not arrived yet; 0 = none
	owned   uint32 // reload epoch whose snapshot installed this state; later visible changes are older
	seen    uint32 // reload epoch whose snapshot contained this key
	deleted bool   // a tombstone: kept only while a reload is in flight
	// accessed is set by reads and cleared when access times are flushed
	// to Postgres (a flag, so tracking costs no memory per hit).
	accessed atomic.Bool
	// expiredSent is set once the key's expiry was reported (EventExpired).
	expiredSent atomic.Bool
}

// maxNegativePerShard bounds the remembered absences (loader found no row).
const maxNegativePerShard = 2048

type shard struct {
	mu sync.RWMutex
	m  map[string]*entry
	// negs remembers keys whose loader found no row, until an epoch
	// microsecond; any change of the key ends it.
	negs map[string]int64
}

// index is the sharded key index.
type index struct {
	shards [shardCount]shard
}

func newIndex() *index {
	ix := &index{}
	for i := range ix.shards {
		ix.shards[i].m = make(map[string]*entry)
		ix.shards[i].negs = make(map[string]int64)
	}
	return ix
}

func (ix *index) shard(key string) *shard {
	return &ix.shards[xxhash.Sum64String(key)%shardCount]
}
