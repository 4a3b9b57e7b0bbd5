package unixsock_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/unixsock"
)

// authCases: without a password, AUTH answers as a Redis without
// requirepass does.
var authCases = map[string][]step{
	"auth without password": {s("AUTH", "x"), s("AUTH", "default", "x"), s("AUTH", "bob", "x"), s("AUTH", "a", "b", "c"),
		s("AUTH"), s("HELLO", "3", "AUTH", "bob", "x"), s("HELLO", "2", "AUTH", "default"), s("HELLO", "2", "BOGUS"),
		s("HELLO", "2", "SETNAME", "a b"), s("HELLO", "x"), s("HELLO", "4"), s("PING")},
}

func TestAuthMatchesRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	compareCases(t, client(t, sc.socket), client(t, redisSock), authCases)
}

// TestRequirePass: with a password (--requirepass), a connection must
// authenticate before other commands, and the replies are Redis's with
// requirepass set; go-redis with the password (HELLO 3 AUTH) works.
func TestRequirePass(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	ctx := context.Background()
	if err := client(t, redisSock).ConfigSet(ctx, "requirepass", "sec").Err(); err != nil {
		t.Fatal(err)
	}
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{server: func(s *unixsock.Server) { s.Password = "sec" }})
	for _, send := range []string{
		"GET k\r\nBOGUS\r\nGET\r\nHELLO 2\r\nAUTH wrong\r\nAUTH default wrong\r\nAUTH bob sec\r\nAUTH a b c\r\n" +
			"HELLO 2 AUTH default wrong\r\nCLIENT SETNAME x\r\nPING\r\nAUTH sec\r\nPING\r\nGET k\r\nAUTH wrong\r\nPING\r\n",
		"AUTH default sec\r\nPING\r\n",
		"QUIT\r\n",
	} {
		want, _ := raw(t, redisSock, []byte(send))
		got, _ := raw(t, sc.socket, []byte(send))
		if got != want {
			t.Errorf("%q:\n redis    %q\n pgmirror %q", send, want, got)
		}
	}
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sc.socket, Password: "sec", MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("go-redis with the password: %v", err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET = %q, %v", v, err)
	}
	bad := redis.NewClient(&redis.Options{Network: "unix", Addr: sc.socket, Password: "nope", MaxRetries: -1})
	defer bad.Close()
	if err := bad.Ping(ctx).Err(); err == nil || err.Error() != "WRONGPASS invalid username-password pair or user is disabled." {
		t.Errorf("a wrong password: %v", err)
	}
	none := redis.NewClient(&redis.Options{Network: "unix", Addr: sc.socket, MaxRetries: -1})
	defer none.Close()
	if err := none.Get(ctx, "k").Err(); err == nil || err.Error() != "NOAUTH Authentication required." {
		t.Errorf("no password: %v", err)
	}
}
