package unixsock_test

import (
	"testing"

	"pgmirror/internal/testdb"
)

// bitCases compare GETBIT, BITCOUNT and BITPOS with Redis 7.0, ranges and
// errors included.
var bitCases = map[string][]step{
	"getbit": {s("GETBIT", "k", "0"), s("SET", "k", "\x80\x01"), s("GETBIT", "k", "0"), s("GETBIT", "k", "1"),
		s("GETBIT", "k", "15"), s("GETBIT", "k", "16"), s("GETBIT", "k", "4294967295"), s("GETBIT", "k", "4294967296"),
		s("GETBIT", "k", "-1"), s("GETBIT", "k", "x"), s("GETBIT", "k")},
	"bitcount": {s("BITCOUNT", "k"), s("BITCOUNT", "k", "0", "-1"), s("SET", "k", "foobar"), s("BITCOUNT", "k"),
		s("BITCOUNT", "k", "0", "0"), s("BITCOUNT", "k", "1", "1"), s("BITCOUNT", "k", "1", "1", "BYTE"),
		s("BITCOUNT", "k", "5", "30", "BIT"), s("BITCOUNT", "k", "-3", "-1"), s("BITCOUNT", "k", "-3", "-1", "bit"),
		s("BITCOUNT", "k", "3", "1"), s("BITCOUNT", "k", "-100", "100"), s("BITCOUNT", "k", "0", "-100"),
		s("BITCOUNT", "k", "7", "7", "BIT"), s("BITCOUNT", "k", "1", "6", "BIT"), s("BITCOUNT", "k", "0"),
		s("BITCOUNT", "k", "x", "1"), s("BITCOUNT", "k", "0", "1", "BOGUS"), s("BITCOUNT", "k", "0", "1", "BIT", "x"),
		s("BITCOUNT", "k2", "x", "1"), s("BITCOUNT", "k2", "0"), s("SET", "k3", ""), s("BITCOUNT", "k3"),
		s("BITCOUNT", "k3", "0", "-1", "BIT")},
	"bitpos": {s("BITPOS", "k", "1"), s("BITPOS", "k", "0"), s("BITPOS", "k", "2"), s("BITPOS", "k", "x"),
		s("BITPOS", "k", "1", "x"), s("SET", "k", "\xff\xf0\x00"), s("BITPOS", "k", "0"), s("BITPOS", "k", "1"),
		s("BITPOS", "k", "0", "2"), s("BITPOS", "k", "1", "2"), s("BITPOS", "k", "1", "2", "-1"),
		s("BITPOS", "k", "0", "0", "0"), s("BITPOS", "k", "0", "0", "1"), s("BITPOS", "k", "0", "1", "-1"),
		s("BITPOS", "k", "0", "7", "15", "BIT"), s("BITPOS", "k", "1", "7", "15", "BIT"),
		s("BITPOS", "k", "0", "3", "11", "BIT"), s("BITPOS", "k", "1", "12", "23", "bit"), s("BITPOS", "k", "0", "0", "7", "BIT"),
		s("BITPOS", "k", "0", "-5", "-1", "BIT"), s("BITPOS", "k", "1", "5", "2"), s("BITPOS", "k", "1", "-100", "100"),
		s("BITPOS", "k", "1", "0", "-1", "BOGUS"), s("BITPOS", "k", "1", "0", "x"), s("BITPOS", "k", "1", "0", "1", "BIT", "x"),
		s("SET", "k2", "\xff\xff"), s("BITPOS", "k2", "0"), s("BITPOS", "k2", "0", "1"), s("BITPOS", "k2", "0", "0", "-1"),
		s("BITPOS", "k2", "0", "0", "15", "BIT"), s("BITPOS", "k2", "0", "3"), s("SET", "k3", ""), s("BITPOS", "k3", "0"),
		s("BITPOS", "k3", "1"), s("SET", "k4", "\x00\x00\x01"), s("BITPOS", "k4", "1"), s("BITPOS", "k4", "0", "2"),
		s("BITPOS", "k4", "1", "0", "1"), s("BITPOS", "k4", "1", "20", "23", "BIT"), s("BITPOS", "k5", "0", "x"),
		s("BITPOS", "k5", "1", "0", "1", "BIT", "x")},
}

func TestBitCommandsMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	compareCases(t, client(t, sc.socket), client(t, redisSock), bitCases)
}
