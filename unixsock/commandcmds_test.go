package unixsock_test

import (
	"context"
	"strings"
	"testing"

	"pgmirror/internal/testdb"
)

// TestCommandIntrospection: go-redis parses COMMAND and COMMAND INFO
// (Redis 7's ten-element entries); arity and key positions agree with
// Redis's for the commands both have; COUNT, LIST and DOCS agree with the
// table.
func TestCommandIntrospection(t *testing.T) {
	t.Parallel()
	red := client(t, startRedis(t))
	dsn, _ := testdb.New(t)
	sc := startSidecar(t, dsn, config{})
	pgm := client(t, sc.socket)
	ctx := context.Background()
	ours, err := pgm.Command(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := red.Command(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range ours {
		r := theirs[name]
		if r == nil {
			continue // pgmirror's own
		}
		if o.Arity != r.Arity || o.FirstKeyPos != r.FirstKeyPos || o.LastKeyPos != r.LastKeyPos || o.StepCount != r.StepCount ||
			o.ReadOnly != r.ReadOnly {
			t.Errorf("%s: %+v, Redis %+v", name, o, r)
		}
	}
	if ours["get"] == nil || ours["set"] == nil || ours["time"] == nil {
		t.Fatalf("COMMAND lacks get, set or time: %d entries", len(ours))
	}
	n, err := pgm.Do(ctx, "COMMAND", "COUNT").Int()
	if err != nil || int(n) != len(ours) {
		t.Errorf("COMMAND COUNT = %d, %v; COMMAND has %d", n, err, len(ours))
	}
	list, err := pgm.CommandList(ctx, nil).Result()
	top := 0 // as Redis, LIST names the subcommands too (container|sub): TestCommandListMatchesRedis
	for _, name := range list {
		if !strings.Contains(name, "|") {
			top++
		}
	}
	if err != nil || top != len(ours) {
		t.Errorf("COMMAND LIST: %d names of commands, %v; COMMAND has %d", top, err, len(ours))
	}
	if got := do(pgm, "COMMAND", "INFO", "GET", "nosuch"); got[:8] != `[["get" ` || got[len(got)-5:] != " nil]" {
		t.Errorf("COMMAND INFO GET nosuch = %s", got)
	}
	v, err := pgm.Do(ctx, "COMMAND", "DOCS", "get", "nosuch", "del").Result()
	docs, _ := v.(map[any]any)
	group := func(name string) any {
		d, _ := docs[name].(map[any]any)
		return d["group"]
	}
	if err != nil || len(docs) != 2 || group("get") != "string" || group("del") != "generic" {
		t.Errorf("COMMAND DOCS get nosuch del = %v, %v", v, err)
	}
	for _, args := range [][]any{{"COMMAND", "BOGUS"}, {"COMMAND", "COUNT", "x"}} {
		if want, got := do(red, args...), do(pgm, args...); want != got {
			t.Errorf("%v: %s, Redis %s", args, got, want)
		}
	}
}
