package main

// -demo: what `make demo-profile` runs. The app first starts what README.md
// otherwise asks for by hand (a throwaway Postgres, pgmirror's migrations,
// schema.sql, the watch of table profile, a sidecar, here in this process),
// then serves as usual; Ctrl-C stops the app, the sidecar and Postgres and
// removes their directories.

import (
	"context"
	"errors"
	"os"

	"pgmirror/examples/internal/demo"
	"pgmirror/pgstore"
)

// startDemo starts the demo's Postgres and sidecar, and points dsn and
// socket at them; stop stops everything.
func startDemo(ctx context.Context, dsn, socket *string) (stop func() error, err error) {
	env, err := demo.Start(ctx, os.Stdout)
	if err != nil {
		return nil, err
	}
	if err = env.ExecFile(ctx, "examples/profile/schema.sql"); err == nil {
		err = env.Watch(ctx, pgstore.WatchSpec{Table: "profile", Key: "username", Prefix: keyPrefix,
			Columns: []string{"likes", "followers", "followings"}, Mode: "copy"})
	}
	var sc *demo.Sidecar
	if err == nil {
		sc, err = env.StartSidecar(ctx, "sidecar")
	}
	if err != nil {
		return nil, errors.Join(err, env.Close())
	}
	env.Printf("demo: schema.sql applied, table profile watched under %s, a sidecar on %s", keyPrefix, sc.Socket)
	*dsn, *socket = env.DSN, sc.Socket
	demoEnv, demoSocket = env, sc.Socket
	return env.Close, nil
}

// The running demo and its sidecar's socket, for demoHints; nil without -demo.
var (
	demoEnv    *demo.Env
	demoSocket string
)

// demoHints says what to open and try once the app listens on addr.
func demoHints(addr string) {
	if demoEnv == nil {
		return
	}
	e := demoEnv
	e.Printf("demo: open http://%s/?user=ada in two browser windows and click: each click shows in both", addr)
	e.Printf("demo: or, in another terminal:")
	e.Printf("  curl -X POST 'http://%s/v1/profile/ada?action=inc_likes'", addr)
	e.Printf("  curl -N http://%s/stream/ada", addr)
	e.Printf("  curl -i http://%s/v1/counters/ada   # from the app's client-side cache (X-Cache: hit)", addr)
	e.Printf("  psql %q -c \"UPDATE profile SET followers = 1000 WHERE username = 'ada'\"   # every window shows 1000", e.DSN)
	e.Printf("  redis-cli -s %s GET profile:ada", demoSocket)
	e.Printf("demo: Ctrl-C stops the app, the sidecar and Postgres")
}
