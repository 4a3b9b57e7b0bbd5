package unixsock_test

import (
	"context"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"pgmirror/unixsock"
)

// answeredSubcommands names, for the container commands, the subcommands
// pgmirror answers: Redis reports their flags, not the container's. (CLIENT
// SETINFO and NO-TOUCH are newer than the Redis the tests run.)
var answeredSubcommands = map[string][]string{
	"client": {"client|setname", "client|getname", "client|id", "client|info", "client|list", "client|kill",
		"client|no-evict", "client|tracking", "client|caching", "client|getredir", "client|trackinginfo"},
	"cluster": {"cluster|slots", "cluster|info", "cluster|nodes"},
	"config":  {"config|get", "config|set", "config|resetstat"},
	"command": {"command", "command|count", "command|list", "command|info", "command|docs"},
	"object":  {"object|encoding", "object|freq", "object|idletime", "object|refcount", "object|help"},
	"pubsub":  {"pubsub|channels", "pubsub|numsub", "pubsub|numpat", "pubsub|shardchannels", "pubsub|shardnumsub", "pubsub|help"},
	"script":  {"script|load", "script|exists", "script|flush", "script|kill"},
}

// TestCommandTableMatchesRedis compares the command table with what a real
// Redis's COMMAND INFO reports for the same commands: arity, key positions,
// readonly and write, and where the command may run.
func TestCommandTableMatchesRedis(t *testing.T) {
	r := client(t, startRedis(t))
	ctx := context.Background()
	for _, ours := range unixsock.CommandSpecs(&unixsock.Server{}) {
		if ours.Name == "pgmirror.resync" {
			continue // pgmirror's own
		}
		infos := redisCommandInfo(t, ctx, r, ours.Name)
		if infos == nil {
			continue
		}
		theirs := infos[0]
		if ours.Arity != int(theirs.Arity) {
			t.Errorf("%s: arity %d, Redis %d", ours.Name, ours.Arity, theirs.Arity)
		}
		if ours.FirstKey != int(theirs.FirstKeyPos) || ours.LastKey != int(theirs.LastKeyPos) || ours.Step != int(theirs.StepCount) {
			t.Errorf("%s: keys %d %d %d, Redis %d %d %d", ours.Name, ours.FirstKey, ours.LastKey, ours.Step,
				theirs.FirstKeyPos, theirs.LastKeyPos, theirs.StepCount)
		}
		if has := slices.Contains(theirs.Flags, "readonly"); ours.Readonly != has {
			t.Errorf("%s: readonly %v, Redis %v", ours.Name, ours.Readonly, has)
		}
		if has := slices.Contains(theirs.Flags, "write"); ours.Write != has {
			t.Errorf("%s: write %v, Redis %v", ours.Name, ours.Write, has)
		}
		if subs := answeredSubcommands[ours.Name]; subs != nil {
			infos = redisCommandInfo(t, ctx, r, subs...)
		}
		var noscript, noMulti, loading bool
		for _, info := range infos {
			noscript = noscript || slices.Contains(info.Flags, "noscript")
			// Redis 7.0 still queues pub/sub commands in MULTI (for old
			// clients); pgmirror refuses them there, as later Redis does.
			// PUBLISH, which Redis 7.0 and later queue, excepted.
			noMulti = noMulti || slices.Contains(info.Flags, "no_multi") ||
				slices.Contains(info.Flags, "pubsub") && ours.Name != "publish"
			loading = loading || slices.Contains(info.Flags, "loading")
		}
		if ours.Script != !noscript {
			t.Errorf("%s: allowed in scripts %v, Redis %v", ours.Name, ours.Script, !noscript)
		}
		if ours.Multi != !noMulti {
			t.Errorf("%s: allowed in MULTI %v, want %v", ours.Name, ours.Multi, !noMulti)
		}
		// Commands Redis answers while loading pgmirror answers while its
		// mirror loads, and PING too.
		if ours.Mirror != !loading && ours.Name != "ping" {
			t.Errorf("%s: refused while loading %v, Redis %v", ours.Name, ours.Mirror, !loading)
		}
	}
}

// redisCommandInfo returns Redis's COMMAND INFO of the named commands, in
// order; a name Redis does not know fails the test.
func redisCommandInfo(t *testing.T, ctx context.Context, r *redis.Client, names ...string) []*redis.CommandInfo {
	t.Helper()
	args := []any{"command", "info"}
	for _, n := range names {
		args = append(args, n)
	}
	cmd := redis.NewCommandsInfoCmd(ctx, args...)
	if err := r.Process(ctx, cmd); err != nil {
		t.Errorf("COMMAND INFO %v: %v", names, err)
		return nil
	}
	var out []*redis.CommandInfo
	for _, n := range names {
		info := cmd.Val()[n]
		if info == nil {
			t.Errorf("Redis does not know %s", n)
			return nil
		}
		out = append(out, info)
	}
	return out
}
