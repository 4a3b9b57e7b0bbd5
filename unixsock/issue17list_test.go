package unixsock_test

import (
	"testing"

	"pgmirror/internal/testdb"
)

// issue17Cases go over issue 17's list of everyday commands (item 3) once
// more, edge cases and errors included, against a real Redis.
var issue17Cases = map[string][]step{
	"getset": {s("GETSET", "k", "a"), s("GETSET", "k", "b"), s("GET", "k"), s("GETSET", "k"), s("SET", "k2", "1", "EX", "100"),
		s("GETSET", "k2", "2"), s("TTL", "k2")},
	"setrange": {s("SETRANGE", "k", "0", "abc"), s("SETRANGE", "k", "5", "xy"), s("GET", "k"), s("SETRANGE", "k2", "3", ""),
		s("EXISTS", "k2"), s("SETRANGE", "k", "1", ""), s("SETRANGE", "k", "-1", "x"), s("SETRANGE", "k", "x", "y"),
		s("SETRANGE", "k", "536870912", "x"), s("SETRANGE", "k", "536870911", ""), s("STRLEN", "k")},
	"setbit getbit": {s("SETBIT", "k", "7", "1"), s("GET", "k"), s("SETBIT", "k", "7", "0"), s("GETBIT", "k", "7"),
		s("SETBIT", "k", "100", "1"), s("STRLEN", "k"), s("GETBIT", "k", "100"), s("GETBIT", "k", "1000"),
		s("GETBIT", "k2", "0"), s("SETBIT", "k", "-1", "1"), s("SETBIT", "k", "0", "2"), s("SETBIT", "k", "x", "1"),
		s("SETBIT", "k", "4294967296", "1"), s("GETBIT", "k", "4294967296"), s("GETBIT", "k", "-1")},
	"bitcount bitpos": {s("SET", "k", "foobar"), s("BITCOUNT", "k"), s("BITCOUNT", "k", "0", "0"), s("BITCOUNT", "k", "1", "1"),
		s("BITCOUNT", "k", "1", "-2"), s("BITCOUNT", "k", "5", "30", "BIT"), s("BITCOUNT", "k", "0", "-1", "BYTE"),
		s("BITCOUNT", "k", "0"), s("BITCOUNT", "k", "0", "1", "NIBBLE"), s("BITCOUNT", "k2"), s("BITCOUNT", "k", "a", "b"),
		s("BITPOS", "k", "1"), s("BITPOS", "k", "0"), s("BITPOS", "k", "1", "2"), s("BITPOS", "k", "1", "2", "-1", "BYTE"),
		s("BITPOS", "k", "0", "7", "15", "BIT"), s("BITPOS", "k", "2"), s("BITPOS", "k2", "0"), s("BITPOS", "k2", "1"),
		s("SET", "k3", "\xff\xff"), s("BITPOS", "k3", "0"), s("BITPOS", "k3", "0", "0", "-1"), s("BITPOS", "k3", "0", "0"),
		s("BITPOS", "k", "1", "x")},
	"bitop": {s("SET", "k", "abc"), s("SET", "k2", "a"), s("BITOP", "AND", "k3", "k", "k2"), s("GET", "k3"),
		s("BITOP", "OR", "k3", "k", "k2"), s("GET", "k3"), s("BITOP", "XOR", "k3", "k", "k2"), s("GET", "k3"),
		s("BITOP", "NOT", "k3", "k"), s("GET", "k3"), s("BITOP", "NOT", "k3", "k", "k2"), s("BITOP", "NAND", "k3", "k"),
		s("BITOP", "AND", "k3", "k4", "k5"), s("EXISTS", "k3"), s("BITOP", "AND", "k3")},
	"rename": {s("RENAME", "k", "k2"), s("SET", "k", "v", "EX", "100"), s("RENAME", "k", "k2"), s("GET", "k2"), s("TTL", "k2"),
		s("EXISTS", "k"), s("RENAME", "k2", "k2"), s("SET", "k", "w"), s("RENAMENX", "k", "k2"), s("RENAMENX", "k", "k3"),
		s("RENAMENX", "k3", "k3"), s("RENAMENX", "k9", "k3"), s("RENAME", "k")},
	"copy": {s("COPY", "k", "k2"), s("SET", "k", "v", "EX", "100"), s("COPY", "k", "k2"), s("TTL", "k2"), s("COPY", "k", "k2"),
		s("SET", "k", "w"), s("COPY", "k", "k2", "REPLACE"), s("GET", "k2"), s("COPY", "k", "k"), s("COPY", "k", "k2", "DB", "0"),
		s("COPY", "k", "k2", "DB", "x"), s("COPY", "k", "k2", "BOGUS"), s("COPY", "k", "k2", "DB"), s("COPY", "k")},
	"auth": {s("AUTH", "x"), s("AUTH", "default", "x"), s("AUTH", "nobody", "x"), s("AUTH", "a", "b", "c"),
		s("HELLO", "4"), s("HELLO", "x"), s("HELLO", "2", "BOGUS")},
	"client": {s("CLIENT", "NO-EVICT", "on"), s("CLIENT", "NO-EVICT", "OFF"), s("CLIENT", "NO-EVICT", "x"),
		s("CLIENT", "NO-EVICT"), s("CLIENT", "LIST", "TYPE", "x"), s("CLIENT", "LIST", "ID", "x"), s("CLIENT", "LIST", "x"),
		s("CLIENT", "KILL", "nosuch:1"), s("CLIENT", "KILL", "ID", "999999"), s("CLIENT", "KILL", "ID", "0"),
		s("CLIENT", "KILL", "TYPE", "x"), s("CLIENT", "KILL", "USER", "nobody"), s("CLIENT", "KILL", "SKIPME", "x"),
		s("CLIENT", "KILL", "x", "y"), s("CLIENT", "KILL"), s("CLIENT", "NOSUCH"), s("CLIENT", "SETNAME", "a b"),
		s("CLIENT", "GETNAME")},
	"config": {s("CONFIG", "GET", "maxmemory"), s("CONFIG", "GET", "save"), s("CONFIG", "GET", "appendonly"),
		s("CONFIG", "GET", "nosuch"), s("CONFIG", "GET", "maxmemory-policy"),
		s("CONFIG", "SET", "nosuch", "x"), s("CONFIG", "RESETSTAT", "x"), s("CONFIG", "RESETSTAT"), s("CONFIG", "HELP", "x"), s("CONFIG", "SET", "maxmemory"),
		s("CONFIG", "SET", "notify-keyspace-events", "KEA"), s("CONFIG", "GET", "notify-keyspace-events"),
		s("CONFIG", "SET", "notify-keyspace-events", "Kx"), s("CONFIG", "GET", "notify-keyspace-events"),
		s("CONFIG", "SET", "notify-keyspace-events", "Z"), s("CONFIG", "SET", "notify-keyspace-events", ""),
		s("CONFIG", "GET", "notify-keyspace-events"), s("CONFIG", "GET"), s("CONFIG", "SET", "notify-keyspace-events"),
		s("CONFIG", "NOSUCH")},
	// After APPEND, SETRANGE, SETBIT or BITOP Redis answers "raw" whatever
	// the value; pgmirror answers from the value as SET would store it.
	"object": {s("SET", "k", "1"), s("INCR", "k"), s("OBJECT", "ENCODING", "k"), s("INCRBYFLOAT", "k4", "1.5"),
		s("OBJECT", "ENCODING", "k4"), s("GETSET", "k5", "123"), s("OBJECT", "ENCODING", "k5"), s("COPY", "k5", "k6"),
		s("OBJECT", "ENCODING", "k6"), s("OBJECT", "FREQ", "k9"), s("OBJECT", "IDLETIME", "k9"), s("OBJECT", "REFCOUNT", "k9"),
		s("OBJECT", "ENCODING", "k9"), s("OBJECT", "IDLETIME"), s("OBJECT", "IDLETIME", "k", "x"), s("OBJECT")},
	"misc": {s("WAIT", "0", "0"), s("WAIT", "1", "10"), s("TIME", "x"), s("RANDOMKEY", "x"), s("FLUSHDB", "x"),
		s("FLUSHDB", "ASYNC", "SYNC"), s("FLUSHALL", "x"), s("COMMAND", "COUNT", "x"), s("COMMAND", "INFO", "nosuch"),
		s("COMMAND", "DOCS", "nosuch"), s("SELECT", "x")},
}

func TestIssue17ListMatchesRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	compareCases(t, client(t, sc.socket), client(t, redisSock), issue17Cases)
}
