package pgstore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lib/pq"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
)

// fakeApplier records ApplyWrite calls and keeps a key index from them.
type fakeApplier struct {
	exists atomic.Int64 // Exists calls
	mu     sync.Mutex
	calls  []applyCall
	index  map[string]mirror.Lookup
}

type applyCall struct {
	xid     uint64
	changes []mirror.Change
}

func newFakeApplier() *fakeApplier { return &fakeApplier{index: map[string]mirror.Lookup{}} }

func (f *fakeApplier) BeginWrite() *mirror.WriteTicket  { return &mirror.WriteTicket{} }
func (f *fakeApplier) AbandonWrite(*mirror.WriteTicket) {}

func (f *fakeApplier) ApplyWrite(_ *mirror.WriteTicket, xid uint64, changes []mirror.Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, applyCall{xid, slices.Clone(changes)})
	for _, c := range changes {
		if c.Op == mirror.OpDelete {
			delete(f.index, c.Key)
		} else {
			f.index[c.Key] = mirror.Lookup{Found: true, Version: c.Version, Expires: c.Expires, Size: len(c.Value)}
		}
	}
}

func (f *fakeApplier) Exists(key string) (mirror.Lookup, error) {
	f.exists.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index[key], nil
}

func (f *fakeApplier) Calls() []applyCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// newWriter opens a Writer on a pool of its own (on db's DSN unless opts
// names one), as the sidecar runs it.
func newWriter(t *testing.T, db *sql.DB, apply pgstore.Applier, opts pgstore.WriterOptions) *pgstore.Writer {
	t.Helper()
	if opts.DSN == "" {
		opts.DSN = testdb.DSN(t, db)
	}
	return newSharedWriter(t, db, apply, opts)
}

// newSharedWriter opens a Writer as opts say: without a DSN, its batches
// share db (each after a ping).
func newSharedWriter(t *testing.T, db *sql.DB, apply pgstore.Applier, opts pgstore.WriterOptions) *pgstore.Writer {
	t.Helper()
	w := pgstore.NewWriter(db, apply, opts)
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// dbRow is a row of cache_entries as the tests compare it.
type dbRow struct {
	value   []byte
	expires int64 // epoch µs, or mirror.NoExpiry
	version int64
}

func readRows(t *testing.T, db *sql.DB) map[string]dbRow {
	t.Helper()
	rows, err := db.Query(`SELECT key, value, version, CASE WHEN expires_at IS NULL THEN NULL
		ELSE (extract(epoch FROM expires_at) * 1000000)::bigint END FROM cache_entries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]dbRow{}
	for rows.Next() {
		var (
			k   string
			r   dbRow
			exp sql.NullInt64
		)
		if err := rows.Scan(&k, &r.value, &r.version, &exp); err != nil {
			t.Fatal(err)
		}
		r.expires = mirror.NoExpiry
		if exp.Valid {
			r.expires = exp.Int64
		}
		out[k] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// seed is a row written before a case runs.
type seed struct {
	key, value string
	exp        string // "": none; "past": expired a second ago; "hour": in an hour; "fixed": futureUS
}

// futureUS is 2100-01-01 00:00:00.123456 UTC.
const futureUS int64 = 4102444800123456

// Expected expiries of a row after a case.
type (
	expNone  struct{}
	expSame  struct{}      // as seeded
	expAbout time.Duration // from now, within a few seconds
	expExact int64         // epoch µs
)

// want is a row expected after a case; nil in the map means absent.
type want struct {
	value string
	exp   any
}

// reply is an expected reply.
type reply struct {
	kind mirror.ReplyKind
	n    int64
	bulk string
	err  string // the whole error text; "" for none
}

type writeCase struct {
	name  string
	seeds []seed
	op    mirror.WriteOp
	reply reply
	// after lists the rows that change; every other seeded key must keep
	// its row exactly (same version: no rewrite).
	after map[string]*want
}

func okReply() reply          { return reply{kind: mirror.ReplyOK} }
func nilReply() reply         { return reply{kind: mirror.ReplyNil} }
func intReply(n int64) reply  { return reply{kind: mirror.ReplyInt, n: n} }
func bulk(s string) reply     { return reply{kind: mirror.ReplyBulk, bulk: s} }
func errReply(s string) reply { return reply{err: s} }
func ks(k ...string) []string { return k }
func vals(vs ...string) [][]byte {
	out := make([][]byte, len(vs))
	for i, v := range vs {
		out[i] = []byte(v)
	}
	return out
}

const (
	errNotInt   = "ERR value is not an integer or out of range"
	errOverflow = "ERR increment or decrement would overflow"
	errNotFloat = "ERR value is not a valid float"
	errNaN      = "ERR increment would produce NaN or Infinity"
	errTooBig   = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
)

func setOp(k, v string) mirror.WriteOp {
	return mirror.WriteOp{Kind: mirror.WriteSet, Keys: ks(k), Values: vals(v)}
}

func with(op mirror.WriteOp, f func(*mirror.WriteOp)) mirror.WriteOp { f(&op); return op }

func writeCases() []writeCase {
	nx := func(o *mirror.WriteOp) { o.Cond = mirror.CondNX }
	xx := func(o *mirror.WriteOp) { o.Cond = mirror.CondXX }
	get := func(o *mirror.WriteOp) { o.Get = true }
	in := func(ms int64) func(*mirror.WriteOp) {
		return func(o *mirror.WriteOp) { o.Expiry, o.ExpiryMS = mirror.ExpiryIn, ms }
	}
	at := func(ms int64) func(*mirror.WriteOp) {
		return func(o *mirror.WriteOp) { o.Expiry, o.ExpiryMS = mirror.ExpiryAt, ms }
	}
	keep := func(o *mirror.WriteOp) { o.Expiry = mirror.ExpiryKeep }
	persist := func(o *mirror.WriteOp) { o.Expiry = mirror.ExpiryPersist }
	all := func(fs ...func(*mirror.WriteOp)) func(*mirror.WriteOp) {
		return func(o *mirror.WriteOp) {
			for _, f := range fs {
				f(o)
			}
		}
	}
	present := []seed{{key: "k", value: "old"}}
	withExp := []seed{{key: "k", value: "old", exp: "fixed"}}
	expired := []seed{{key: "k", value: "old", exp: "past"}}
	gone := map[string]*want{"k": nil}
	set := func(v string, exp any) map[string]*want { return map[string]*want{"k": {v, exp}} }
	op := func(kind mirror.WriteKind, fs ...func(*mirror.WriteOp)) mirror.WriteOp {
		o := mirror.WriteOp{Kind: kind, Keys: ks("k")}
		all(fs...)(&o)
		return o
	}
	incr := func(n int64) mirror.WriteOp { return mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("k"), Int: n} }
	incrf := func(f string) mirror.WriteOp {
		return mirror.WriteOp{Kind: mirror.WriteIncrByFloat, Keys: ks("k"), Float: f}
	}
	appendOp := func(v string) mirror.WriteOp {
		return mirror.WriteOp{Kind: mirror.WriteAppend, Keys: ks("k"), Values: vals(v)}
	}
	num := func(v string) []seed { return []seed{{key: "k", value: v}} }
	numExp := func(v string) []seed { return []seed{{key: "k", value: v, exp: "fixed"}} }
	const pxat = 4102444800123 // 2100-01-01 00:00:00.123 UTC
	const later, earlier = futureUS/1000 + 1000, futureUS/1000 - 1000

	cases := []writeCase{
		// SET
		{name: "set/new", op: setOp("k", "v"), reply: okReply(), after: set("v", expNone{})},
		{name: "set/clears expiry", seeds: withExp, op: setOp("k", "v"), reply: okReply(), after: set("v", expNone{})},
		{name: "set/EX", seeds: present, op: with(setOp("k", "v"), in(10000)), reply: okReply(), after: set("v", expAbout(10*time.Second))},
		{name: "set/PXAT", op: with(setOp("k", "v"), at(pxat)), reply: okReply(), after: set("v", expExact(pxat*1000))},
		{name: "set/PXAT past deletes", seeds: present, op: with(setOp("k", "v"), at(1000)), reply: okReply(), after: gone},
		{name: "set/EX past on absent", op: with(setOp("k", "v"), in(-5)), reply: okReply()},
		{name: "set/KEEPTTL keeps", seeds: withExp, op: with(setOp("k", "v"), keep), reply: okReply(), after: set("v", expSame{})},
		{name: "set/KEEPTTL on expired", seeds: expired, op: with(setOp("k", "v"), keep), reply: okReply(), after: set("v", expNone{})},
		{name: "set/KEEPTTL on absent", op: with(setOp("k", "v"), keep), reply: okReply(), after: set("v", expNone{})},
		{name: "set/NX absent", op: with(setOp("k", "v"), nx), reply: okReply(), after: set("v", expNone{})},
		{name: "set/NX present", seeds: present, op: with(setOp("k", "v"), nx), reply: nilReply()},
		{name: "set/NX expired row", seeds: expired, op: with(setOp("k", "v"), nx), reply: okReply(), after: set("v", expNone{})},
		{name: "set/NX expired row EX", seeds: expired, op: with(setOp("k", "v"), all(nx, in(60000))), reply: okReply(), after: set("v", expAbout(time.Minute))},
		{name: "set/XX absent", op: with(setOp("k", "v"), xx), reply: nilReply()},
		{name: "set/XX expired row", seeds: expired, op: with(setOp("k", "v"), xx), reply: nilReply()},
		{name: "set/XX present", seeds: withExp, op: with(setOp("k", "v"), xx), reply: okReply(), after: set("v", expNone{})},
		{name: "set/GET present", seeds: present, op: with(setOp("k", "v"), get), reply: bulk("old"), after: set("v", expNone{})},
		{name: "set/GET absent", op: with(setOp("k", "v"), get), reply: nilReply(), after: set("v", expNone{})},
		{name: "set/GET expired", seeds: expired, op: with(setOp("k", "v"), get), reply: nilReply(), after: set("v", expNone{})},
		{name: "set/GET NX present", seeds: present, op: with(setOp("k", "v"), all(get, nx)), reply: bulk("old")},
		{name: "set/GET XX absent", op: with(setOp("k", "v"), all(get, xx)), reply: nilReply()},
		{name: "set/GET XX present", seeds: present, op: with(setOp("k", "v"), all(get, xx)), reply: bulk("old"), after: set("v", expNone{})},
		{name: "set/GET empty old", seeds: num(""), op: with(setOp("k", "v"), get), reply: bulk(""), after: set("v", expNone{})},
		{name: "set/binary", op: setOp("k", "\x00\xff\r\n"), reply: okReply(), after: set("\x00\xff\r\n", expNone{})},
		{name: "set/empty", seeds: present, op: setOp("k", ""), reply: okReply(), after: set("", expNone{})},
		{name: "set/odd key", op: setOp(`a"b\c{d},ключ`, "v"), reply: okReply(),
			after: map[string]*want{`a"b\c{d},ключ`: {"v", expNone{}}}},
		{name: "set/key too long", op: setOp(strings.Repeat("x", 4001), "v"),
			reply: errReply(`ERR new row for relation "cache_entries" violates check constraint "cache_entries_key_max_4000_bytes"`)},

		// GETDEL
		{name: "getdel/present", seeds: withExp, op: op(mirror.WriteGetDel), reply: bulk("old"), after: gone},
		{name: "getdel/absent", op: op(mirror.WriteGetDel), reply: nilReply()},
		{name: "getdel/expired", seeds: expired, op: op(mirror.WriteGetDel), reply: nilReply()},

		// GETEX
		{name: "getex/plain", seeds: withExp, op: op(mirror.WriteGetEx), reply: bulk("old")},
		{name: "getex/EX", seeds: present, op: op(mirror.WriteGetEx, in(10000)), reply: bulk("old"), after: set("old", expAbout(10*time.Second))},
		{name: "getex/PXAT", seeds: present, op: op(mirror.WriteGetEx, at(pxat)), reply: bulk("old"), after: set("old", expExact(pxat*1000))},
		{name: "getex/PERSIST", seeds: withExp, op: op(mirror.WriteGetEx, persist), reply: bulk("old"), after: set("old", expNone{})},
		{name: "getex/PERSIST no expiry", seeds: present, op: op(mirror.WriteGetEx, persist), reply: bulk("old")},
		{name: "getex/PXAT past deletes", seeds: withExp, op: op(mirror.WriteGetEx, at(1)), reply: bulk("old"), after: gone},
		{name: "getex/EX 0 deletes", seeds: present, op: op(mirror.WriteGetEx, in(0)), reply: bulk("old"), after: gone},
		{name: "getex/absent", op: op(mirror.WriteGetEx, in(10000)), reply: nilReply()},
		{name: "getex/expired", seeds: expired, op: op(mirror.WriteGetEx, persist), reply: nilReply()},

		// MSET, MSETNX
		{name: "mset", seeds: []seed{{key: "a", value: "1", exp: "fixed"}, {key: "b", value: "2", exp: "past"}},
			op:    mirror.WriteOp{Kind: mirror.WriteMSet, Keys: ks("a", "b", "c"), Values: vals("x", "y", "z")},
			reply: okReply(), after: map[string]*want{"a": {"x", expNone{}}, "b": {"y", expNone{}}, "c": {"z", expNone{}}}},
		{name: "mset/duplicate key", op: mirror.WriteOp{Kind: mirror.WriteMSet, Keys: ks("a", "b", "a"), Values: vals("1", "2", "3")},
			reply: okReply(), after: map[string]*want{"a": {"3", expNone{}}, "b": {"2", expNone{}}}},
		{name: "msetnx/all absent", op: mirror.WriteOp{Kind: mirror.WriteMSetNX, Keys: ks("a", "b"), Values: vals("1", "2")},
			reply: intReply(1), after: map[string]*want{"a": {"1", expNone{}}, "b": {"2", expNone{}}}},
		{name: "msetnx/one present", seeds: []seed{{key: "b", value: "old"}},
			op:    mirror.WriteOp{Kind: mirror.WriteMSetNX, Keys: ks("a", "b"), Values: vals("1", "2")},
			reply: intReply(0)},
		{name: "msetnx/expired counts absent", seeds: []seed{{key: "b", value: "old", exp: "past"}, {key: "c", value: "live", exp: "hour"}},
			op:    mirror.WriteOp{Kind: mirror.WriteMSetNX, Keys: ks("a", "b"), Values: vals("1", "2")},
			reply: intReply(1), after: map[string]*want{"a": {"1", expNone{}}, "b": {"2", expNone{}}}},
		{name: "msetnx/duplicate key", op: mirror.WriteOp{Kind: mirror.WriteMSetNX, Keys: ks("a", "a"), Values: vals("1", "2")},
			reply: intReply(1), after: map[string]*want{"a": {"2", expNone{}}}},

		// INCRBY
		{name: "incr/absent", op: incr(1), reply: intReply(1), after: set("1", expNone{})},
		{name: "incr/keeps expiry", seeds: numExp("5"), op: incr(3), reply: intReply(8), after: set("8", expSame{})},
		{name: "incr/expired starts at 0", seeds: []seed{{key: "k", value: "41", exp: "past"}}, op: incr(2), reply: intReply(2), after: set("2", expNone{})},
		{name: "incr/negative", seeds: num("-5"), op: incr(-3), reply: intReply(-8), after: set("-8", expNone{})},
		{name: "incr/zero", seeds: num("0"), op: incr(0), reply: intReply(0), after: set("0", expNone{})},
		{name: "incr/to min", seeds: num("-9223372036854775807"), op: incr(-1), reply: intReply(math.MinInt64), after: set("-9223372036854775808", expNone{})},
		{name: "incr/max", seeds: num("9223372036854775806"), op: incr(1), reply: intReply(math.MaxInt64), after: set("9223372036854775807", expNone{})},
		{name: "incr/overflow", seeds: num("9223372036854775807"), op: incr(1), reply: errReply(errOverflow)},
		{name: "incr/underflow", seeds: num("-9223372036854775808"), op: incr(-1), reply: errReply(errOverflow)},
		{name: "incr/absent min", op: incr(math.MinInt64), reply: intReply(math.MinInt64), after: set("-9223372036854775808", expNone{})},
		{name: "incr/text", seeds: num("abc"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/empty", seeds: num(""), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/leading space", seeds: num(" 5"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/trailing space", seeds: num("5 "), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/decimal", seeds: num("1.0"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/leading zero", seeds: num("007"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/plus", seeds: num("+5"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/minus zero", seeds: num("-0"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/too large", seeds: num("9223372036854775808"), op: incr(-1), reply: errReply(errNotInt)},
		{name: "incr/too long", seeds: num("123456789012345678901"), op: incr(1), reply: errReply(errNotInt)},
		{name: "incr/NUL byte", seeds: num("1\x00"), op: incr(1), reply: errReply(errNotInt)},

		// INCRBYFLOAT
		{name: "incrbyfloat/10.5+0.1", seeds: numExp("10.5"), op: incrf("0.1"), reply: bulk("10.6"), after: set("10.6", expSame{})},
		{name: "incrbyfloat/5.0e3+0", seeds: num("5.0e3"), op: incrf("0"), reply: bulk("5000"), after: set("5000", expNone{})},
		{name: "incrbyfloat/absent", op: incrf("1.5"), reply: bulk("1.5"), after: set("1.5", expNone{})},
		{name: "incrbyfloat/expired", seeds: []seed{{key: "k", value: "7", exp: "past"}}, op: incrf("-.5"), reply: bulk("-0.5"), after: set("-0.5", expNone{})},
		{name: "incrbyfloat/int result", seeds: num("1.5"), op: incrf("1.5"), reply: bulk("3"), after: set("3", expNone{})},
		{name: "incrbyfloat/exponents", seeds: num("1e3"), op: incrf("+1E2"), reply: bulk("1100"), after: set("1100", expNone{})},
		{name: "incrbyfloat/trailing dot", seeds: num("5."), op: incrf("1"), reply: bulk("6"), after: set("6", expNone{})},
		{name: "incrbyfloat/bad value", seeds: num("abc"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/bad delta", seeds: num("1"), op: incrf("1x"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/empty delta", seeds: num("1"), op: incrf(""), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/space", seeds: num(" 1"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/nan", seeds: num("1"), op: incrf("nan"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/inf delta", seeds: num("1"), op: incrf("inf"), reply: errReply(errNaN)},
		{name: "incrbyfloat/inf value", seeds: num("-Infinity"), op: incrf("1"), reply: errReply(errNaN)},
		{name: "incrbyfloat/out of long double", seeds: num("1"), op: incrf("1e5000"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/underflow", seeds: num("1"), op: incrf("1e-5000"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/tiny", seeds: num("1"), op: incrf("1e-7"), reply: bulk("1.0000001"), after: set("1.0000001", expNone{})},
		{name: "incrbyfloat/to zero", seeds: num("0.5"), op: incrf("-0.5"), reply: bulk("0"), after: set("0", expNone{})},
		{name: "incrbyfloat/overflow", seeds: num("1.1e4932"), op: incrf("1.1e4932"), reply: errReply(errNaN)},
		// Both operands go through one parser (pgmirror_parse_float): its bounds and refusals hold for each.
		{name: "incrbyfloat/nan value", seeds: num("NaN"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/binary value", seeds: num("1\xff"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/NUL in value", seeds: num("1\x00"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/value out of long double", seeds: num("-2e4932"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/value underflow", seeds: num("1e-4952"), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/longest value", seeds: num("1." + strings.Repeat("0", 5117)), op: incrf("1"), reply: bulk("2"), after: set("2", expNone{})},
		{name: "incrbyfloat/value too long", seeds: num("1." + strings.Repeat("0", 5118)), op: incrf("1"), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/longest delta", seeds: num("1"), op: incrf("1." + strings.Repeat("0", 5117)), reply: bulk("2"), after: set("2", expNone{})},
		{name: "incrbyfloat/delta too long", seeds: num("1"), op: incrf("1." + strings.Repeat("0", 5118)), reply: errReply(errNotFloat)},
		{name: "incrbyfloat/INF delta", op: incrf("-INF"), reply: errReply(errNaN)},
		{name: "incrbyfloat/bad value before bad delta", seeds: num("inf"), op: incrf("x"), reply: errReply(errNotFloat)},

		// APPEND
		{name: "append/absent", op: appendOp("ab"), reply: intReply(2), after: set("ab", expNone{})},
		{name: "append/present keeps expiry", seeds: withExp, op: appendOp("\x00x"), reply: intReply(5), after: set("old\x00x", expSame{})},
		{name: "append/expired starts empty", seeds: expired, op: appendOp("x"), reply: intReply(1), after: set("x", expNone{})},
		{name: "append/empty to present", seeds: present, op: appendOp(""), reply: intReply(3)},
		{name: "append/empty to absent", op: appendOp(""), reply: intReply(0), after: set("", expNone{})},
		{name: "append/too big", seeds: num(strings.Repeat("x", 60)), op: appendOp(strings.Repeat("y", 5)), reply: errReply(errTooBig)},
		{name: "append/exactly max", seeds: num(strings.Repeat("x", 60)), op: appendOp("yyyy"), reply: intReply(64),
			after: set(strings.Repeat("x", 60)+"yyyy", expNone{})},

		// DEL
		{name: "del", seeds: []seed{{key: "a", value: "1", exp: "fixed"}, {key: "b", value: "2", exp: "past"}, {key: "d", value: "4"}},
			op:    mirror.WriteOp{Kind: mirror.WriteDel, Keys: ks("a", "b", "c", "a")},
			reply: intReply(1), after: map[string]*want{"a": nil, "b": nil}},
		{name: "del/absent", op: mirror.WriteOp{Kind: mirror.WriteDel, Keys: ks("a")}, reply: intReply(0)},

		// EXPIRE
		{name: "expire/absent", op: op(mirror.WriteExpire, in(10000)), reply: intReply(0)},
		{name: "expire/expired", seeds: expired, op: op(mirror.WriteExpire, in(10000)), reply: intReply(0)},
		{name: "expire/in", seeds: present, op: op(mirror.WriteExpire, in(10000)), reply: intReply(1), after: set("old", expAbout(10*time.Second))},
		{name: "expire/at", seeds: present, op: op(mirror.WriteExpire, at(pxat)), reply: intReply(1), after: set("old", expExact(pxat*1000))},
		{name: "expire/same time", seeds: []seed{{key: "k", value: "old", exp: "fixed"}}, op: op(mirror.WriteExpire, at(futureUS/1000)),
			reply: intReply(1), after: set("old", expExact(futureUS/1000*1000))},
		{name: "expire/past deletes", seeds: withExp, op: op(mirror.WriteExpire, in(-1)), reply: intReply(1), after: gone},
		{name: "expire/zero deletes", seeds: present, op: op(mirror.WriteExpire, in(0)), reply: intReply(1), after: gone},
		{name: "expire/NX no expiry", seeds: present, op: op(mirror.WriteExpire, in(10000), nx), reply: intReply(1), after: set("old", expAbout(10*time.Second))},
		{name: "expire/NX with expiry", seeds: withExp, op: op(mirror.WriteExpire, in(10000), nx), reply: intReply(0)},
		{name: "expire/XX no expiry", seeds: present, op: op(mirror.WriteExpire, in(10000), xx), reply: intReply(0)},
		{name: "expire/XX with expiry", seeds: withExp, op: op(mirror.WriteExpire, in(10000), xx), reply: intReply(1), after: set("old", expAbout(10*time.Second))},
		{name: "expire/GT no expiry", seeds: present, op: op(mirror.WriteExpire, at(later), func(o *mirror.WriteOp) { o.Cond = mirror.CondGT }), reply: intReply(0)},
		{name: "expire/GT later", seeds: withExp, op: op(mirror.WriteExpire, at(later), func(o *mirror.WriteOp) { o.Cond = mirror.CondGT }),
			reply: intReply(1), after: set("old", expExact(later*1000))},
		{name: "expire/GT earlier", seeds: withExp, op: op(mirror.WriteExpire, at(earlier), func(o *mirror.WriteOp) { o.Cond = mirror.CondGT }), reply: intReply(0)},
		{name: "expire/GT past no expiry", seeds: present, op: op(mirror.WriteExpire, in(-1), func(o *mirror.WriteOp) { o.Cond = mirror.CondGT }), reply: intReply(0)},
		{name: "expire/LT no expiry", seeds: present, op: op(mirror.WriteExpire, at(later), func(o *mirror.WriteOp) { o.Cond = mirror.CondLT }),
			reply: intReply(1), after: set("old", expExact(later*1000))},
		{name: "expire/LT earlier", seeds: withExp, op: op(mirror.WriteExpire, at(earlier), func(o *mirror.WriteOp) { o.Cond = mirror.CondLT }),
			reply: intReply(1), after: set("old", expExact(earlier*1000))},
		{name: "expire/LT later", seeds: withExp, op: op(mirror.WriteExpire, at(later), func(o *mirror.WriteOp) { o.Cond = mirror.CondLT }), reply: intReply(0)},
		{name: "expire/LT past deletes", seeds: withExp, op: op(mirror.WriteExpire, at(1), func(o *mirror.WriteOp) { o.Cond = mirror.CondLT }), reply: intReply(1), after: gone},
		{name: "expire/XX LT no expiry", seeds: present, op: op(mirror.WriteExpire, at(earlier), func(o *mirror.WriteOp) { o.Cond = mirror.CondXXLT }), reply: intReply(0)},
		{name: "expire/XX LT earlier", seeds: withExp, op: op(mirror.WriteExpire, at(earlier), func(o *mirror.WriteOp) { o.Cond = mirror.CondXXLT }),
			reply: intReply(1), after: set("old", expExact(earlier*1000))},
		{name: "expire/XX LT later", seeds: withExp, op: op(mirror.WriteExpire, at(later), func(o *mirror.WriteOp) { o.Cond = mirror.CondXXLT }), reply: intReply(0)},
		{name: "expire/out of range", seeds: present, op: op(mirror.WriteExpire, at(math.MaxInt64/2)), reply: errReply("ERR invalid expire time in 'expire' command")},

		// PERSIST
		{name: "persist/with expiry", seeds: withExp, op: op(mirror.WritePersist), reply: intReply(1), after: set("old", expNone{})},
		{name: "persist/no expiry", seeds: present, op: op(mirror.WritePersist), reply: intReply(0)},
		{name: "persist/absent", op: op(mirror.WritePersist), reply: intReply(0)},
		{name: "persist/expired", seeds: expired, op: op(mirror.WritePersist), reply: intReply(0)},
	}
	return cases
}

func TestWriteCommands(t *testing.T) {
	_, db := testdb.New(t)
	for _, tc := range writeCases() {
		t.Run(tc.name, func(t *testing.T) {
			exec(t, db, `DELETE FROM cache_entries`)
			for _, s := range tc.seeds {
				exp := map[string]string{
					"":      "NULL",
					"past":  "clock_timestamp() - interval '1 second'",
					"hour":  "clock_timestamp() + interval '1 hour'",
					"fixed": fmt.Sprintf("to_timestamp(%d / 1000000.0)", futureUS),
				}[s.exp]
				exec(t, db, `INSERT INTO cache_entries(key, value, expires_at) VALUES ($1, $2, `+exp+`)`, s.key, []byte(s.value))
			}
			before := readRows(t, db)
			if s, ok := before["k"]; ok && slices.ContainsFunc(tc.seeds, func(s seed) bool { return s.exp == "fixed" }) && s.expires != futureUS {
				t.Fatalf("seeded expiry %d, want %d", s.expires, futureUS)
			}
			apply := newFakeApplier()
			w := newWriter(t, db, apply, pgstore.WriterOptions{MaxValueSize: 64})
			start := time.Now()
			res, err := w.Write(ctx(t), tc.op)
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			checkReply(t, res, tc.reply)
			after := readRows(t, db)
			checkRows(t, tc, before, after, start)
			checkStates(t, res, before, after)
			calls := apply.Calls()
			switch {
			case len(res.States) == 0 && len(calls) != 0:
				t.Errorf("ApplyWrite called %d times without states", len(calls))
			case len(res.States) > 0 && (len(calls) != 1 || calls[0].xid == 0 || !reflectEqualChanges(calls[0].changes, res.States)):
				t.Errorf("ApplyWrite calls %+v, want one with a xid and the states %+v", calls, res.States)
			}
		})
	}
}

func reflectEqualChanges(a, b []mirror.Change) bool {
	return slices.EqualFunc(a, b, func(x, y mirror.Change) bool {
		return x.Op == y.Op && x.Key == y.Key && x.Version == y.Version && x.Expires == y.Expires && bytes.Equal(x.Value, y.Value)
	})
}

func checkReply(t *testing.T, res mirror.WriteResult, want reply) {
	t.Helper()
	if want.err != "" {
		if res.Err == nil || res.Err.Error() != want.err {
			t.Errorf("error reply %v, want %q", res.Err, want.err)
		}
		if len(res.States) != 0 {
			t.Errorf("a failed command has states %+v", res.States)
		}
		return
	}
	if res.Err != nil {
		t.Fatalf("error reply %v, want %+v", res.Err, want)
	}
	if res.Reply != want.kind || res.Int != want.n || string(res.Bulk) != want.bulk ||
		(res.Reply == mirror.ReplyBulk && res.Bulk == nil) {
		t.Errorf("reply %v int %d bulk %q, want %v int %d bulk %q", res.Reply, res.Int, res.Bulk, want.kind, want.n, want.bulk)
	}
}

// checkRows compares the table with the case's expectations: the rows in
// tc.after changed as listed, every other row is untouched (same version).
func checkRows(t *testing.T, tc writeCase, before, after map[string]dbRow, start time.Time) {
	t.Helper()
	for k := range mergeKeys(before, after) {
		b, hadRow := before[k]
		a, hasRow := after[k]
		w, listed := tc.after[k]
		switch {
		case !listed:
			if hadRow != hasRow || hadRow && (a.version != b.version || !bytes.Equal(a.value, b.value) || a.expires != b.expires) {
				t.Errorf("%q changed: before %+v (%v), after %+v (%v)", k, b, hadRow, a, hasRow)
			}
		case w == nil:
			if hasRow {
				t.Errorf("%q: row %+v, want none", k, a)
			}
		case !hasRow:
			t.Errorf("%q: no row, want %q", k, w.value)
		default:
			if string(a.value) != w.value {
				t.Errorf("%q: value %q, want %q", k, a.value, w.value)
			}
			if hadRow && a.version == b.version {
				t.Errorf("%q: version unchanged", k)
			}
			switch e := w.exp.(type) {
			case expNone:
				if a.expires != mirror.NoExpiry {
					t.Errorf("%q: expires %d, want none", k, a.expires)
				}
			case expSame:
				if a.expires != b.expires || !hadRow {
					t.Errorf("%q: expires %d, want it kept (%d)", k, a.expires, b.expires)
				}
			case expExact:
				if a.expires != int64(e) {
					t.Errorf("%q: expires %d, want %d", k, a.expires, int64(e))
				}
			case expAbout:
				lo, hi := start.Add(time.Duration(e)-2*time.Second).UnixMicro(), time.Now().Add(time.Duration(e)+2*time.Second).UnixMicro()
				if a.expires < lo || a.expires > hi {
					t.Errorf("%q: expires %d, want about %v from now", k, a.expires, time.Duration(e))
				}
			}
		}
	}
	for k := range tc.after {
		if _, ok := mergeKeys(before, after)[k]; !ok && tc.after[k] != nil {
			t.Errorf("%q: no row, want %q", k, tc.after[k].value)
		}
	}
}

func mergeKeys(a, b map[string]dbRow) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// checkStates: the states are exactly the rows that changed, and each
// describes the row as the table now holds it.
func checkStates(t *testing.T, res mirror.WriteResult, before, after map[string]dbRow) {
	t.Helper()
	last := map[string]mirror.Change{}
	for _, c := range res.States {
		last[c.Key] = c
	}
	for k := range mergeKeys(before, after) {
		b, hadRow := before[k]
		a, hasRow := after[k]
		changed := hadRow != hasRow || hadRow && a.version != b.version
		c, reported := last[k]
		if changed != reported {
			t.Errorf("%q: changed %v, reported %v (%+v)", k, changed, reported, res.States)
			continue
		}
		if !reported {
			continue
		}
		switch {
		case c.Op == mirror.OpDelete:
			if hasRow {
				t.Errorf("%q: state deleted, row %+v", k, a)
			}
		case !hasRow:
			t.Errorf("%q: state %+v, no row", k, c)
		case c.Version != a.version || c.Expires != a.expires:
			t.Errorf("%q: state version %d expires %d, row %d %d", k, c.Version, c.Expires, a.version, a.expires)
		case c.Op == mirror.OpSet && !bytes.Equal(c.Value, a.value):
			t.Errorf("%q: state value %q, row %q", k, c.Value, a.value)
		case c.Op != mirror.OpSet && c.Op != mirror.OpFetch:
			t.Errorf("%q: state op %v", k, c.Op)
		}
	}
}

// TestWriteStateOps: which states carry the value and which ask for a fetch.
func TestWriteStateOps(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{})
	big := strings.Repeat("x", 70000)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('big', $1), ('small', 'v'), ('n', '1')`, []byte(big))
	for _, tc := range []struct {
		op    mirror.WriteOp
		state mirror.Op
		value string
	}{
		{setOp("s", "sv"), mirror.OpSet, "sv"},
		{mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 2}, mirror.OpSet, "3"},
		{mirror.WriteOp{Kind: mirror.WriteAppend, Keys: ks("small"), Values: vals("w")}, mirror.OpSet, "vw"},
		{mirror.WriteOp{Kind: mirror.WriteAppend, Keys: ks("big"), Values: vals("y")}, mirror.OpFetch, ""},
		{mirror.WriteOp{Kind: mirror.WriteExpire, Keys: ks("small"), Expiry: mirror.ExpiryIn, ExpiryMS: 60000}, mirror.OpSet, "vw"},
		{mirror.WriteOp{Kind: mirror.WriteExpire, Keys: ks("big"), Expiry: mirror.ExpiryIn, ExpiryMS: 60000}, mirror.OpFetch, ""},
		{mirror.WriteOp{Kind: mirror.WriteGetEx, Keys: ks("big"), Expiry: mirror.ExpiryPersist}, mirror.OpSet, big + "y"},
		{mirror.WriteOp{Kind: mirror.WritePersist, Keys: ks("small")}, mirror.OpSet, "vw"},
		{mirror.WriteOp{Kind: mirror.WriteMSet, Keys: ks("a", "b", "a"), Values: vals("1", "2", "3")}, mirror.OpSet, "3"},
	} {
		res, err := w.Write(ctx(t), tc.op)
		if err != nil || res.Err != nil || len(res.States) == 0 {
			t.Fatalf("%+v: %v %+v", tc.op.Kind, err, res)
		}
		if c := res.States[0]; c.Op != tc.state || string(c.Value) != tc.value {
			t.Errorf("kind %d: state %v value of %d bytes, want %v with %d bytes", tc.op.Kind, c.Op, len(c.Value), tc.state, len(tc.value))
		}
	}
}

// TestWriteXidMatchesNotifications: the xid passed to ApplyWrite is the one
// the notifications of that transaction carry, with the same versions.
func TestWriteXidMatchesNotifications(t *testing.T) {
	dsn, db := testdb.New(t)
	l := pq.NewListener(dsn, 10*time.Millisecond, time.Second, nil)
	defer l.Close()
	if err := l.Listen(listener.Channel); err != nil {
		t.Fatal(err)
	}
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('d', 'x'), ('e', 'y')`)
	drain(t, l, 1)
	apply := newFakeApplier()
	w := newWriter(t, db, apply, pgstore.WriterOptions{})
	ops := []mirror.WriteOp{
		setOp("a", "1"),
		{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 5},
		{Kind: mirror.WriteDel, Keys: ks("d", "zz")},
		{Kind: mirror.WriteExpire, Keys: ks("e"), Expiry: mirror.ExpiryIn, ExpiryMS: 60000},
		{Kind: mirror.WriteMSet, Keys: ks("m1", "m2"), Values: vals("1", "2")},
	}
	for _, op := range ops {
		if res, err := w.Write(ctx(t), op); err != nil || res.Err != nil {
			t.Fatalf("%+v: %v %v", op, err, res.Err)
		}
	}
	calls := apply.Calls()
	if len(calls) != len(ops) {
		t.Fatalf("%d ApplyWrite calls, want %d", len(calls), len(ops))
	}
	byXid := map[uint64][]mirror.Change{}
	want := 0
	for _, c := range calls {
		want += len(c.changes)
	}
	got := 0
	deadline := time.After(30 * time.Second)
	for got < want {
		select {
		case n := <-l.Notify:
			if n == nil {
				t.Fatal("listener reconnected")
			}
			p, err := listener.Decode(n.Extra)
			if err != nil {
				t.Fatal(err)
			}
			byXid[p.Xid] = append(byXid[p.Xid], p.Changes...)
			got += len(p.Changes)
		case <-deadline:
			t.Fatalf("%d of %d changes notified within 30s", got, want)
		}
	}
	for _, c := range calls {
		notified := byXid[c.xid]
		if len(notified) != len(c.changes) {
			t.Errorf("xid %d: applied %+v, notified %+v", c.xid, c.changes, notified)
			continue
		}
		for i, ch := range c.changes {
			n := notified[i]
			if n.Key != ch.Key || (n.Op == mirror.OpDelete) != (ch.Op == mirror.OpDelete) ||
				ch.Op != mirror.OpDelete && (n.Version != ch.Version || n.Expires != ch.Expires) {
				t.Errorf("xid %d change %d: applied %+v, notified %+v", c.xid, i, ch, n)
			}
			if ch.Op == mirror.OpSet && n.Op == mirror.OpSet && !bytes.Equal(n.Value, ch.Value) {
				t.Errorf("xid %d change %d: applied value %q, notified %q", c.xid, i, ch.Value, n.Value)
			}
		}
	}
}

func drain(t *testing.T, l *pq.Listener, n int) {
	t.Helper()
	for range n {
		select {
		case <-l.Notify:
		case <-time.After(30 * time.Second):
			t.Fatal("no notification")
		}
	}
}

// gate holds the key lock of key on its own connection, so that a batch
// writing key waits in Postgres until release.
func gate(t *testing.T, db *sql.DB, key string) (release func()) {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_lock(pgmirror_key_lock($1))`, key); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(pgmirror_key_lock($1))`, key)
			conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// waitBlocked waits until a pgmirror_write statement waits for a lock.
func waitBlocked(t *testing.T, db *sql.DB) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var pid int
		err := db.QueryRow(`SELECT pid FROM pg_stat_activity WHERE query LIKE '%pgmirror_write($1%'
			AND wait_event_type = 'Lock' AND datname = current_database()`).Scan(&pid)
		if err == nil {
			return pid
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no pgmirror_write blocked within 30s")
	return 0
}

func TestGroupCommit(t *testing.T) {
	_, db := testdb.New(t)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('text', 'abc'), ('big', $1)`, bytes.Repeat([]byte("x"), 100))
	apply := newFakeApplier()
	w := newWriter(t, db, apply, pgstore.WriterOptions{MaxValueSize: 104})
	release := gate(t, db, "gate")
	first := make(chan error, 1)
	go func() {
		_, err := w.Write(context.Background(), setOp("gate", "g"))
		first <- err
	}()
	waitBlocked(t, db)

	const n = 50
	var wg sync.WaitGroup
	results := make([]mirror.WriteResult, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var op mirror.WriteOp
			switch {
			case i == 7:
				op = mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("text"), Int: 1}
			case i == 13:
				op = mirror.WriteOp{Kind: mirror.WriteAppend, Keys: ks("big"), Values: vals("12345")}
			case i%2 == 0:
				op = mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("counter"), Int: 1}
			default:
				op = setOp(fmt.Sprintf("k%d", i), fmt.Sprint(i))
			}
			results[i], errs[i] = w.Write(context.Background(), op)
		}()
	}
	// Let them queue behind the blocked batch, then let it go.
	time.Sleep(300 * time.Millisecond)
	release()
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	counts := map[int64]bool{}
	for i := range n {
		res, err := results[i], errs[i]
		switch {
		case err != nil:
			t.Errorf("op %d: %v", i, err)
		case i == 7:
			if res.Err == nil || res.Err.Error() != errNotInt {
				t.Errorf("INCR on text: %v", res.Err)
			}
		case i == 13:
			if res.Err == nil || res.Err.Error() != errTooBig {
				t.Errorf("APPEND over the maximum: %v", res.Err)
			}
		case res.Err != nil:
			t.Errorf("op %d: %v", i, res.Err)
		case i%2 == 0:
			counts[res.Int] = true
		case res.Reply != mirror.ReplyOK:
			t.Errorf("op %d: reply %v", i, res.Reply)
		}
	}
	if len(counts) != 25 {
		t.Errorf("INCR replies %v, want 25 distinct", counts)
	}
	rows := readRows(t, db)
	if string(rows["counter"].value) != "25" || string(rows["text"].value) != "abc" || len(rows["big"].value) != 100 {
		t.Errorf("counter %q, text %q, big %d bytes", rows["counter"].value, rows["text"].value, len(rows["big"].value))
	}
	for i := 1; i < n; i += 2 {
		if i != 7 && i != 13 && string(rows[fmt.Sprintf("k%d", i)].value) != fmt.Sprint(i) {
			t.Errorf("k%d = %q", i, rows[fmt.Sprintf("k%d", i)].value)
		}
	}
	st := w.Stats()
	if st.Ops != n+1 || st.Batches >= 5 {
		t.Errorf("stats %+v: want %d ops in a few batches", st, n+1)
	}
	calls := apply.Calls()
	if uint64(len(calls)) != st.Batches {
		t.Errorf("%d ApplyWrite calls for %d batches", len(calls), st.Batches)
	}
	t.Logf("%d ops in %d batches", st.Ops, st.Batches)
}

// TestTwoWritersNoDeadlock: two sidecars (two pools) writing overlapping
// keys in opposite orders never deadlock, and every increment counts.
func TestTwoWritersNoDeadlock(t *testing.T) {
	dsn, db := testdb.New(t)
	const nkeys = 8
	var asc []string
	for i := range nkeys {
		asc = append(asc, fmt.Sprintf("key%d", i))
	}
	rev := slices.Clone(asc)
	slices.Reverse(rev)
	var incrs atomic.Int64
	var failures atomic.Int64
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for wi, order := range [][]string{asc, rev} {
		pool := testdb.Open(t, dsn)
		w := newWriter(t, pool, newFakeApplier(), pgstore.WriterOptions{MaxBatch: 16})
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; time.Now().Before(stop); i++ {
					var op mirror.WriteOp
					switch (g + i) % 3 {
					case 0:
						op = mirror.WriteOp{Kind: mirror.WriteMSet, Keys: order, Values: vals(slices.Repeat([]string{fmt.Sprint(wi)}, nkeys)...)}
					case 1:
						op = mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("c" + order[(g+i)%nkeys]), Int: 1}
					default:
						op = mirror.WriteOp{Kind: mirror.WriteDel, Keys: order[:nkeys/2]}
					}
					res, err := w.Write(context.Background(), op)
					if err != nil || res.Err != nil {
						failures.Add(1)
						t.Errorf("writer %d: %v %v", wi, err, res.Err)
						return
					}
					if op.Kind == mirror.WriteIncrBy {
						incrs.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	var sum int64
	if err := db.QueryRow(`SELECT coalesce(sum(convert_from(value, 'UTF8')::bigint), 0) FROM cache_entries WHERE key LIKE 'ckey%'`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != incrs.Load() {
		t.Errorf("counters sum to %d after %d increments", sum, incrs.Load())
	}
	t.Logf("%d increments, %d failures", incrs.Load(), failures.Load())
}

// TestWritePostgresDown: with the server stopped, writes fail as
// unavailable within the timeout, and succeed again once it is back; on the
// Writer's own pool and sharing the sidecar's.
func TestWritePostgresDown(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			srv := pgtest.New(t)
			dsn := srv.CreateDB(t)
			db := testdb.Migrate(t, dsn)
			opts := pgstore.WriterOptions{Timeout: 2 * time.Second, DSN: dsn}
			if shared {
				opts.DSN = ""
			}
			writeWhilePostgresDown(t, srv, db, newSharedWriter(t, db, newFakeApplier(), opts), opts.Timeout)
		})
	}
}

func writeWhilePostgresDown(t *testing.T, srv *pgtest.Server, db *sql.DB, w *pgstore.Writer, timeout time.Duration) {
	if res, err := w.Write(ctx(t), setOp("a", "1")); err != nil || res.Err != nil {
		t.Fatalf("before the stop: %v %v", err, res.Err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		start := time.Now()
		_, err := w.Write(ctx(t), setOp("a", "2"))
		if !errors.Is(err, mirror.ErrWriteUnavailable) {
			t.Fatalf("write %d while stopped: %v, want ErrWriteUnavailable", i, err)
		}
		if d := time.Since(start); d > timeout+time.Second {
			t.Errorf("write %d took %v", i, d)
		}
		if strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("error %q spans lines", err)
		}
		t.Logf("while stopped: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The first write after the restart succeeds: connections the pool
	// kept from before are found dead before anything is sent on them.
	if res, err := w.Write(ctx(t), setOp("a", "3")); err != nil || res.Err != nil {
		t.Fatalf("after the start: %v %v", err, res.Err)
	}
	db.SetMaxIdleConns(5)
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); db.Ping() }()
	}
	wg.Wait()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if res, err := w.Write(ctx(t), setOp("a", "4")); err != nil || res.Err != nil {
		t.Fatalf("after a restart: %v %v", err, res.Err)
	}
	if v := readRows(t, db)["a"].value; string(v) != "4" {
		t.Errorf("a = %q after the restart", v)
	}
	if st := w.Stats(); st.Unknown != 0 || st.Unavailable != 3 {
		t.Errorf("stats %+v, want 3 unavailable batches", st)
	}
}

// TestWriteServerSilent: a server that accepts connections and never
// answers makes writes fail as unavailable within the timeout.
func TestWriteServerSilent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	db := testdb.Open(t, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=x sslmode=disable", port))
	const timeout = time.Second
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{Timeout: timeout})
	start := time.Now()
	_, err = w.Write(ctx(t), setOp("a", "1"))
	if !errors.Is(err, mirror.ErrWriteUnavailable) {
		t.Fatalf("Write: %v, want ErrWriteUnavailable", err)
	}
	if d := time.Since(start); d > timeout+time.Second {
		t.Errorf("Write took %v", d)
	}
	t.Logf("silent server: %v after %v", err, time.Since(start))
	// Batches given up on do not pile up: after a few, writes fail at once.
	for range 3 {
		if _, err := w.Write(ctx(t), setOp("a", "1")); !errors.Is(err, mirror.ErrWriteUnavailable) {
			t.Fatalf("Write: %v, want ErrWriteUnavailable", err)
		}
	}
	start = time.Now()
	_, err = w.Write(ctx(t), setOp("a", "1"))
	if !errors.Is(err, mirror.ErrWriteUnavailable) || time.Since(start) > 100*time.Millisecond {
		t.Errorf("with 4 batches stuck: %v after %v, want ErrWriteUnavailable at once", err, time.Since(start))
	}
	t.Logf("then: %v", err)
}

// TestWriteOutcomeUnknown: the connection is lost while the statement runs;
// the write reports an unknown outcome (never unavailable), and the mirror
// was made to agree with Postgres before the answer.
func TestWriteOutcomeUnknown(t *testing.T) {
	srv := pgtest.New(t)
	dsn := srv.CreateDB(t)
	db := testdb.Migrate(t, dsn)
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('other', 'o')`)
	apply := newFakeApplier()
	// The mirror (fake) knows "other" as it is.
	var ver int64
	if err := db.QueryRow(`SELECT version FROM cache_entries WHERE key = 'other'`).Scan(&ver); err != nil {
		t.Fatal(err)
	}
	apply.index["other"] = mirror.Lookup{Found: true, Version: ver, Expires: mirror.NoExpiry}
	w := newWriter(t, db, apply, pgstore.WriterOptions{Timeout: 10 * time.Second})
	release := gate(t, db, "a")
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(context.Background(), mirror.WriteOp{Kind: mirror.WriteMSet, Keys: ks("a", "other"), Values: vals("1", "2")})
		done <- err
	}()
	pid := waitBlocked(t, db)
	if _, err := db.Exec(`SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	release()
	select {
	case err := <-done:
		if !errors.Is(err, mirror.ErrWriteUnknown) {
			t.Fatalf("Write: %v, want ErrWriteUnknown", err)
		}
		t.Logf("unknown: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Write did not return")
	}
	rows := readRows(t, db)
	if _, ok := rows["a"]; ok || string(rows["other"].value) != "o" {
		t.Errorf("rows after the lost batch: %+v", rows)
	}
	if st := w.Stats(); st.Unknown != 1 || st.Unavailable != 0 {
		t.Errorf("stats %+v", st)
	}
	if apply.exists.Load() == 0 {
		t.Error("the keys were not checked in the mirror")
	}
	// The writer carries on.
	if res, err := w.Write(ctx(t), setOp("a", "2")); err != nil || res.Err != nil {
		t.Fatalf("after: %v %v", err, res.Err)
	}
}

// TestWriteCancelledWhileQueued: a command whose context ends while it is
// queued is not run.
func TestWriteCancelledWhileQueued(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{InFlight: 1})
	release := gate(t, db, "gate")
	first := make(chan error, 1)
	go func() {
		_, err := w.Write(context.Background(), setOp("gate", "g"))
		first <- err
	}()
	waitBlocked(t, db)
	c, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		_, err := w.Write(c, setOp("cancelled", "x"))
		queued <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-queued:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Write: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled Write did not return")
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if res, err := w.Write(ctx(t), setOp("after", "y")); err != nil || res.Err != nil {
		t.Fatal(err, res.Err)
	}
	rows := readRows(t, db)
	if _, ok := rows["cancelled"]; ok {
		t.Error("the cancelled command was run")
	}
	if st := w.Stats(); st.Ops != 2 {
		t.Errorf("stats %+v, want 2 ops run", st)
	}
}

// TestWritesInFlight: a batch blocked in Postgres does not hold up commands
// on other keys, while commands on its keys wait, and so do later commands
// sharing a key with a waiting one: per-key order is arrival order.
func TestWritesInFlight(t *testing.T) {
	_, db := testdb.New(t)
	// MaxBatch 4: a second batch may start while one command waits.
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{InFlight: 2, MaxBatch: 4})
	release := gate(t, db, "gate")
	write := func(op mirror.WriteOp) chan error {
		ch := make(chan error, 1)
		go func() {
			res, err := w.Write(context.Background(), op)
			if err == nil {
				err = res.Err
			}
			ch <- err
		}()
		return ch
	}
	queued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for w.Stats().Queued != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d commands queued, want %d", w.Stats().Queued, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	a := write(setOp("gate", "a"))
	waitBlocked(t, db)
	b := write(mirror.WriteOp{Kind: mirror.WriteMSet, Keys: ks("x", "gate"), Values: vals("b", "b")})
	queued(1) // held: gate is in flight
	c := write(setOp("x", "c"))
	queued(2) // held: x belongs to the waiting MSET
	select {
	case err := <-write(setOp("y", "d")):
		if err != nil {
			t.Fatalf("a write of another key, while a batch is blocked: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write of another key waited for a blocked batch")
	}
	if _, ok := readRows(t, db)["x"]; ok {
		t.Fatal("a command ran before an earlier command on its key")
	}
	release()
	for _, ch := range []chan error{a, b, c} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	rows := readRows(t, db)
	if string(rows["x"].value) != "c" || string(rows["gate"].value) != "b" || string(rows["y"].value) != "d" {
		t.Fatalf("x=%q gate=%q y=%q, want c, b, d (arrival order per key)", rows["x"].value, rows["gate"].value, rows["y"].value)
	}
}

// TestWriteLinger: with Linger, writes that arrive apart within it share
// one batch (one commit, one notification).
func TestWriteLinger(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{Linger: time.Second})
	errs := make(chan error, 5)
	for i := range 5 {
		go func() {
			res, err := w.Write(context.Background(), setOp(fmt.Sprint("l", i), "v"))
			if err == nil {
				err = res.Err
			}
			errs <- err
		}()
		time.Sleep(20 * time.Millisecond) // arrivals spread out, each alone without Linger
	}
	for range 5 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := w.Stats(); st.Ops != 5 || st.Batches > 2 {
		t.Fatalf("stats %+v: want the 5 writes in at most 2 batches", st)
	}
}

// TestWriterClose: Close answers what is queued and in flight, then returns;
// later writes are refused.
func TestWriterClose(t *testing.T) {
	_, db := testdb.New(t)
	w := pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{MaxBatch: 4})
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	release := gate(t, db, "gate")
	var wg sync.WaitGroup
	errs := make(chan error, 21)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := w.Write(context.Background(), setOp("gate", "g"))
		errs <- err
	}()
	waitBlocked(t, db)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.Write(context.Background(), setOp(fmt.Sprintf("q%d", i), "v"))
			if err == nil && res.Err != nil {
				err = res.Err
			}
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond)
	closed := make(chan struct{})
	go func() {
		w.Close()
		close(closed)
	}()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-closed:
		t.Fatal("Close returned while a batch was in flight")
	default:
	}
	release()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("queued write: %v", err)
		}
	}
	if n := len(readRows(t, db)); n != 21 {
		t.Errorf("%d rows, want 21", n)
	}
	if _, err := w.Write(ctx(t), setOp("late", "v")); !errors.Is(err, mirror.ErrWriteUnavailable) {
		t.Errorf("Write after Close: %v", err)
	}
}

// TestWriterLifecycle: NewWriter starts nothing (a write waits in the queue
// until Open runs it); a Writer opens once and not after Close; Close of a
// Writer never opened answers what is queued as closed, and Close may be
// called twice.
func TestWriterLifecycle(t *testing.T) {
	_, db := testdb.New(t)
	w := pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{})
	done := make(chan error, 1)
	go func() {
		res, err := w.Write(context.Background(), setOp("early", "v"))
		if err == nil {
			err = res.Err
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if n := len(readRows(t, db)); n != 0 {
		t.Fatalf("%d rows before Open, want 0: NewWriter started the Writer", n)
	}
	if st := w.Stats(); st.Queued != 1 || st.Batches != 0 {
		t.Fatalf("stats before Open %+v, want one command queued and no batch", st)
	}
	if err := w.Open(); err != nil {
		t.Fatal(err)
	}
	if err := w.Open(); err == nil {
		t.Error("a second Open succeeded")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the write queued before Open: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write queued before Open was not run after it")
	}
	for range 2 {
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Open(); err == nil {
		t.Error("Open after Close succeeded")
	}

	never := pgstore.NewWriter(db, newFakeApplier(), pgstore.WriterOptions{})
	go func() {
		_, err := never.Write(context.Background(), setOp("unrun", "v"))
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	for range 2 {
		if err := never.Close(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if !errors.Is(err, mirror.ErrWriteUnavailable) {
			t.Fatalf("a write queued in a Writer closed unopened: %v, want ErrWriteUnavailable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close of a Writer never opened left a queued write waiting")
	}
	if _, err := never.Write(ctx(t), setOp("late", "v")); !errors.Is(err, mirror.ErrWriteUnavailable) {
		t.Errorf("Write after Close: %v", err)
	}
}

// TestWriteInvalidOp: a malformed command fails alone, before any query.
func TestWriteInvalidOp(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{})
	for _, op := range []mirror.WriteOp{
		{Kind: mirror.WriteSet, Keys: ks("a")},
		{Kind: mirror.WriteMSet, Keys: ks("a", "b"), Values: vals("1")},
		{Kind: mirror.WriteDel},
		{Kind: 99, Keys: ks("a")},
		setOp("bad\x00key", "v"),
		setOp("bad\xffkey", "v"),
	} {
		res, err := w.Write(ctx(t), op)
		if err != nil || res.Err == nil || !strings.HasPrefix(res.Err.Error(), "ERR ") {
			t.Errorf("%+v: %v %v", op, err, res.Err)
		}
	}
	if st := w.Stats(); st.Batches != 0 {
		t.Errorf("stats %+v: invalid commands were sent", st)
	}
}

// TestWriteRetriesAfterPlainSQL: a plain SQL write (which takes no key lock)
// that commits between a command's read and its write makes the command
// run again on the new row, so it stays atomic.
func TestWriteRetriesAfterPlainSQL(t *testing.T) {
	_, db := testdb.New(t)
	w := newWriter(t, db, newFakeApplier(), pgstore.WriterOptions{})
	exec(t, db, `INSERT INTO cache_entries(key, value) VALUES ('n', '1')`)
	for _, tc := range []struct {
		name    string
		plain   string
		op      mirror.WriteOp
		reply   reply
		wantKey string
		want    string // "" for absent
	}{
		{"incr", `UPDATE cache_entries SET value = '10' WHERE key = 'n'`,
			mirror.WriteOp{Kind: mirror.WriteIncrBy, Keys: ks("n"), Int: 1}, intReply(11), "n", "11"},
		{"msetnx", `INSERT INTO cache_entries(key, value) VALUES ('b', 'plain')`,
			mirror.WriteOp{Kind: mirror.WriteMSetNX, Keys: ks("a", "b"), Values: vals("1", "2")}, intReply(0), "a", ""},
		{"set nx", `INSERT INTO cache_entries(key, value) VALUES ('c', 'plain')`,
			with(setOp("c", "mine"), func(o *mirror.WriteOp) { o.Cond = mirror.CondNX }), nilReply(), "c", "plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx, err := db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			exec(t, tx, tc.plain)
			done := make(chan mirror.WriteResult, 1)
			go func() {
				res, err := w.Write(context.Background(), tc.op)
				if err != nil {
					res.Err = err
				}
				done <- res
			}()
			waitBlocked(t, db)
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			checkReply(t, <-done, tc.reply)
			got, ok := readRows(t, db)[tc.wantKey]
			if ok != (tc.want != "") || ok && string(got.value) != tc.want {
				t.Errorf("%s = %q (%v), want %q", tc.wantKey, got.value, ok, tc.want)
			}
		})
	}
}
