package compat

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/mirror"
)

// TestIoredisReadyCheckWaitsForTheFirstLoad: ioredis asks INFO until its
// loading field is 0 before it reports ready, so an application's first
// command after "ready" does not meet LOADING. The sidecar is held in its
// first load until ioredis has asked INFO twice (it retries after a second
// while loading:1), or has already reported ready.
func TestIoredisReadyCheckWaitsForTheFirstLoad(t *testing.T) {
	node := nodeCmd(t)
	dsn, _ := testdb.New(t)
	release := make(chan struct{})
	var once, released sync.Once
	free := func() { released.Do(func() { close(release) }) }
	defer free() // a failed test does not leave the load waiting
	sc := sidecartest.StartNoWait(t, dsn, sidecartest.Config{NoJobs: true, Mirror: mirror.Options{Hooks: &mirror.Hooks{
		AfterSnapshotVisible: func() { once.Do(func() { <-release }) },
	}}})
	script, _ := filepath.Abs(filepath.Join("testdata", "node", "ioredis_ready.js"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node[0], script, sc.Socket)
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, func() (bool, string) {
		infos := sc.Server.CommandCalls()["info"]
		return infos >= 2 || strings.Contains(out.String(), "ready"), fmt.Sprintf("INFO asked %d times; output %q", infos, out.String())
	})
	free()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if got := out.String(); got != "connect\nready null\n" {
		t.Errorf("ioredis printed %q, want connect, then ready and a GET answered null", got)
	}
}
