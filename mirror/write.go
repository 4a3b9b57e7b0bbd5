package mirror

import (
	"context"
	"errors"
)

// WriteKind names a write command. Each is atomic in Postgres and behaves as
// the Redis command of the same name; an expired row counts as absent.
type WriteKind int

// The write commands.
const (
	WriteSet         WriteKind = iota + 1 // SET k v [expiry] [NX|XX] [GET]; SETEX, PSETEX, SETNX map to it
	WriteGetDel                           // GETDEL k
	WriteGetEx                            // GETEX k [expiry | PERSIST]
	WriteMSet                             // MSET k v [k v ...]
	WriteMSetNX                           // MSETNX k v [k v ...]
	WriteIncrBy                           // INCR, DECR, INCRBY, DECRBY: Int is the delta
	WriteIncrByFloat                      // INCRBYFLOAT: Float is the delta as the client wrote it
	WriteAppend                           // APPEND k v
	WriteDel                              // DEL, UNLINK k [k ...]
	WriteExpire                           // EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT k t [NX|XX|GT|LT]
	WritePersist                          // PERSIST k
	WriteFlush                            // FLUSHDB, FLUSHALL: no keys; every key under Prefix but copy-mode watches' entries
	WriteSetRange                         // SETRANGE k offset v: Int is the offset
	WriteSetBit                           // SETBIT k offset bit: Int is the offset, Values[0] "0" or "1"
	WriteBitOp                            // BITOP op dest src [src ...]: Keys dest then sources, Sub the op (and, or, xor, not)
	WriteRename                           // RENAME src dst
	WriteRenameNX                         // RENAMENX src dst
	WriteCopy                             // COPY src dst [REPLACE]: Sub "replace" or ""
)

// ExpiryMode says how a write sets the expiry.
type ExpiryMode int

// The expiry modes. Times are milliseconds.
const (
	ExpiryNone    ExpiryMode = iota // SET: no expiry (clears an old one); others: leave as is
	ExpiryIn                        // ExpiryMS from now (EX, PX, EXPIRE, PEXPIRE)
	ExpiryAt                        // at unix time ExpiryMS (EXAT, PXAT, EXPIREAT, PEXPIREAT)
	ExpiryKeep                      // SET ... KEEPTTL
	ExpiryPersist                   // GETEX ... PERSIST: remove the expiry
)

// Condition is a write's NX/XX (SET, EXPIRE) or GT/LT (EXPIRE) option.
type Condition int

// The conditions.
const (
	CondNone Condition = iota
	CondNX             // only if absent (SET) / no expiry (EXPIRE)
	CondXX             // only if present (SET) / has an expiry (EXPIRE)
	CondGT             // EXPIRE: only if the new expiry is later (no expiry counts as infinite)
	CondLT             // EXPIRE: only if the new expiry is earlier
	CondXXLT           // EXPIRE XX LT: only if the key has an expiry and the new one is earlier
)

// WriteOp is one client write command, keys already namespaced.
type WriteOp struct {
	Kind     WriteKind
	Keys     []string // one key, or several (MSET, MSETNX, DEL)
	Values   [][]byte // SET, MSET, MSETNX, APPEND: one per key
	Int      int64    // WriteIncrBy delta
	Float    string   // WriteIncrByFloat delta, as sent
	Expiry   ExpiryMode
	ExpiryMS int64
	Cond     Condition
	Get      bool   // SET ... GET: reply with the old value
	Prefix   string // WriteFlush: the namespace it clears ("" clears every key)
	Sub      string // WriteBitOp: the operation; WriteCopy: "replace" or ""
	// Origin identifies the connection the write came from (the socket
	// server's client id), 0 if none: the writer copies it into the
	// changes it applies (Change.Origin), and the mirror's events carry
	// it (KeyChange.Origin), so that a client can be told apart from the
	// others when its own write is reported.
	Origin uint64
}

// ReplyKind is the shape of a write's reply.
type ReplyKind int

// The reply shapes.
const (
	ReplyOK   ReplyKind = iota // +OK
	ReplyNil                   // null
	ReplyInt                   // integer Int
	ReplyBulk                  // bulk string Bulk
)

// WriteResult is the outcome of one write command that ran.
type WriteResult struct {
	Err   error // the command failed alone (worded as Redis words it, e.g. "ERR value is not an integer or out of range"); nothing it did was committed
	Reply ReplyKind
	Int   int64
	Bulk  []byte
	// States are the committed states of the keys the command changed, in
	// order; the writer applies them to the mirror (ApplyWrite) before the
	// result is returned, so the client reads its own write.
	States []Change
}

// ErrWriteUnavailable wraps a write that did not commit because Postgres
// could not be reached or refused the transaction.
var ErrWriteUnavailable = errors.New("write failed")

// ErrWriteUnknown wraps a write whose commit outcome is unknown (the
// connection was lost while committing); the client must check.
var ErrWriteUnknown = errors.New("write outcome unknown")

// Writer executes write commands in Postgres. Concurrent calls may share a
// transaction (group commit), but each command behaves as if it ran alone.
type Writer interface {
	// Write runs op and returns its result once committed (and applied to
	// the mirror), or an error wrapping ErrWriteUnavailable or
	// ErrWriteUnknown when its transaction did not (surely) commit.
	Write(ctx context.Context, op WriteOp) (WriteResult, error)
}
