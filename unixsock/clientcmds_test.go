package unixsock_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
)

// clientConfigCases compare CONFIG and CLIENT with Redis 7.0 where both
// answer alike (CONFIG GET databases differs: pgmirror has one).
var clientConfigCases = map[string][]step{
	"config get": {s("CONFIG", "GET", "maxmemory"), s("CONFIG", "GET", "maxmemory-policy"), s("CONFIG", "GET", "save"),
		s("CONFIG", "GET", "appendonly"), s("CONFIG", "GET", "nosuchparameter"), s("CONFIG", "GET")},
	"config set notify": {s("CONFIG", "SET", "notify-keyspace-events", "KEg$x"),
		s("CONFIG", "GET", "notify-keyspace-events"), s("CONFIG", "SET", "notify-keyspace-events", "KEA"),
		s("CONFIG", "GET", "notify-keyspace-events"), s("CONFIG", "SET", "notify-keyspace-events", "AKEnm"),
		s("CONFIG", "GET", "notify-keyspace-events"), s("CONFIG", "SET", "notify-keyspace-events", "Q"),
		s("CONFIG", "SET", "notify-keyspace-events", "lshztedn"), s("CONFIG", "GET", "notify-keyspace-events"),
		s("CONFIG", "SET", "notify-keyspace-events", "g"), s("CONFIG", "GET", "notify-keyspace-events"),
		s("CONFIG", "SET", "notify-keyspace-events", "K", "notify-keyspace-events", "E"),
		s("CONFIG", "SET", "notify-keyspace-events", "KEA", "nosuch", "1"), s("CONFIG", "GET", "notify-keyspace-events"),
		s("CONFIG", "SET", "nosuch", "1"), s("CONFIG", "SET", "notify-keyspace-events"),
		s("CONFIG", "SET", "notify-keyspace-events", ""), s("CONFIG", "GET", "notify-keyspace-events")},
	"client errors": {s("CLIENT", "KILL"), s("CLIENT", "KILL", "id", "x"), s("CLIENT", "KILL", "id", "0"),
		s("CLIENT", "KILL", "id", "1", "skipme"), s("CLIENT", "KILL", "bogus", "1"), s("CLIENT", "KILL", "type", "bogus"),
		s("CLIENT", "KILL", "1.2.3.4:5"), s("CLIENT", "KILL", "id", "999999"), s("CLIENT", "KILL", "skipme", "maybe"),
		s("CLIENT", "KILL", "user", "nobody"), s("CLIENT", "LIST", "type", "bogus"), s("CLIENT", "LIST", "id", "x"),
		s("CLIENT", "LIST", "bogus"), s("CLIENT", "LIST", "id", "999999"), s("CLIENT", "NO-EVICT", "maybe"),
		s("CLIENT", "NO-EVICT", "on"), s("CLIENT", "NO-EVICT", "off"), s("CLIENT", "BOGUS")},
}

func TestClientConfigMatchRedis(t *testing.T) {
	t.Parallel()
	redisSock := startRedis(t)
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	compareCases(t, client(t, sc.socket), client(t, redisSock), clientConfigCases)
}

// TestNotifyKeyspaceEvents: pgmirror publishes every event it has by
// default (reported as g$xKE); CONFIG SET notify-keyspace-events selects
// the classes (g: del and expire, $: set, x: expired) and the channels
// (K keyspace, E keyevent), as in Redis.
func TestNotifyKeyspaceEvents(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	c := client(t, sc.socket)
	if v, err := c.ConfigGet(ctx, "notify-keyspace-events").Result(); err != nil || v["notify-keyspace-events"] != "g$xKE" {
		t.Fatalf("default notify-keyspace-events = %v, %v; want g$xKE", v, err)
	}
	if err := c.ConfigSet(ctx, "notify-keyspace-events", "K$").Err(); err != nil {
		t.Fatal(err)
	}
	ps := c.PSubscribe(ctx, "__key*__:*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]any{{"SET", "n1", "v"}, {"DEL", "n1"}, {"SET", "n2", "v", "EX", "100"}, {"EXPIRE", "n2", "200"}, {"SET", "n3", "v"}} {
		if err := c.Do(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < 3 {
		select {
		case m := <-ps.Channel():
			got = append(got, m.Channel+"="+m.Payload)
		case <-deadline:
			t.Fatalf("got %q so far", got)
		}
	}
	want := "__keyspace@0__:n1=set __keyspace@0__:n2=set __keyspace@0__:n3=set"
	if strings.Join(got, " ") != want {
		t.Fatalf("events %q, want %q", strings.Join(got, " "), want)
	}
}

// TestClientListInfoKill: CLIENT LIST and CLIENT INFO describe the
// connections as Redis does (go-redis parses CLIENT INFO), CLIENT SETINFO
// and NO-EVICT show in them, and CLIENT KILL disconnects by id and type.
func TestClientListInfoKill(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	ctx := context.Background()
	one := func() *redis.Client {
		return redis.NewClient(&redis.Options{Network: "unix", Addr: sc.socket, PoolSize: 1, MaxRetries: -1,
			DisableIdentity: true})
	}
	a, b := one(), one()
	defer a.Close()
	defer b.Close()
	for _, args := range [][]any{{"CLIENT", "SETNAME", "alice"}, {"CLIENT", "SETINFO", "LIB-NAME", "mylib"},
		{"CLIENT", "SETINFO", "lib-ver", "1.2"}, {"CLIENT", "NO-EVICT", "on"}, {"CLIENT", "NO-TOUCH", "on"}} {
		if err := a.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	info, err := a.ClientInfo(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	aID, _ := a.ClientID(ctx).Result()
	if info.ID != aID || info.Name != "alice" || info.LibName != "mylib" || info.LibVer != "1.2" ||
		info.LastCmd != "client" || info.User != "default" || info.Resp != 3 || info.DB != 0 {
		t.Errorf("CLIENT INFO parsed as %+v", info)
	}
	list, err := b.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, fmt.Sprintf("id=%d addr=%s:0 ", aID, sc.socket)) ||
		!strings.Contains(list, " name=alice ") || !strings.Contains(list, " flags=UeT ") {
		t.Errorf("CLIENT LIST:\n%s", list)
	}
	for _, bad := range [][]any{{"CLIENT", "SETINFO", "lib-name", "a b"}, {"CLIENT", "SETINFO", "bogus", "x"},
		{"CLIENT", "NO-TOUCH", "maybe"}} {
		if err := a.Do(ctx, bad...).Err(); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	// A subscriber is of type pubsub; CLIENT KILL TYPE pubsub ends it only.
	ps := b.Subscribe(ctx, "ch")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := a.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n != 1 {
		t.Errorf("CLIENT KILL TYPE pubsub = %d, %v; want 1", n, err)
	}
	if n, err := b.ClientKillByFilter(ctx, "ID", fmt.Sprint(aID)).Result(); err != nil || n != 1 {
		t.Errorf("CLIENT KILL ID = %d, %v; want 1", n, err)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := sc.srv.Clients()
		return n == 1, fmt.Sprintf("%d clients connected, want 1", n)
	})
	// Killing itself: answered, then disconnected.
	c := one()
	defer c.Close()
	if n, err := c.ClientKillByFilter(ctx, "SKIPME", "no").Result(); err != nil || n != 2 {
		t.Errorf("CLIENT KILL SKIPME no = %d, %v; want 2", n, err)
	}
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		n := sc.srv.Clients()
		return n == 0, fmt.Sprintf("%d clients connected, want 0", n)
	})
}

// TestClientNoEvict: past --max-client-buffers the largest client that did
// not send CLIENT NO-EVICT on is disconnected; its own bytes still count.
func TestClientNoEvict(t *testing.T) {
	t.Parallel()
	dsn, _ := testdb.New(t)
	const budget = 2 << 20
	sc := startSidecar(t, dsn, config{maxValue: 2 << 20, server: budgetServer(budget)})
	sent := map[string]int{"A": 1_000_000, "B": 128_000, "C": 256_000, "D": 500_000, "E": 200_000}
	conns := map[string]net.Conn{}
	for _, name := range []string{"A", "B", "C", "D", "E"} {
		c, err := net.Dial("unix", sc.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[name] = c
		if name == "A" {
			fmt.Fprintf(c, "CLIENT NO-EVICT on\r\n")
			if reply, err := bufio.NewReader(c).ReadString('\n'); err != nil || reply != "+OK\r\n" {
				t.Fatalf("CLIENT NO-EVICT on: %q, %v", reply, err)
			}
		}
		before := clientBuffers(sc.srv)
		fmt.Fprintf(c, "*3\r\n$3\r\nSET\r\n$1\r\n%s\r\n$%d\r\n", name, 2<<20)
		if _, err := c.Write(bytes.Repeat([]byte("v"), sent[name])); err != nil {
			t.Fatal(err)
		}
		if name == "E" {
			break
		}
		testutil.Eventually(t, 10*time.Second, func() (bool, string) {
			now := clientBuffers(sc.srv)
			return now-before >= int64(sent[name]), fmt.Sprintf("client %s: buffers %d before, %d now", name, before, now)
		})
	}
	// D, the largest but A, is disconnected; A stays.
	if !closedByServer(t, conns["D"]) {
		t.Fatal("the largest evictable client was not disconnected")
	}
	_ = conns["A"].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := conns["A"].Read(make([]byte, 1)); !isTimeout(err) {
		t.Fatalf("the NO-EVICT client was disconnected: %v", err)
	}
}
