//go:build e2e

package main

// `make e2e`: the whole demo as a person sees it. Built binaries (pgmirror
// migrate, watch and serve; the profile app) on a throwaway Postgres, and
// headless Chromium (the system's, driven over the DevTools protocol by
// chromedp; nothing is downloaded) with the page open in two tabs: a click
// in one shows in the other.
//
//	go test -tags e2e -run TestE2E -v ./examples/profile/

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/testdb"
)

// chromiumPath finds the browser: $CHROMIUM, else the system's.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on PATH (nor $CHROMIUM): run `scripts/setup --e2e` (Debian's chromium package) or set CHROMIUM to a Chrome/Chromium binary")
	return ""
}

// build builds a package of the module into dir.
func build(t *testing.T, dir, pkg, name string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// logBuffer collects a process's output for the failure report; lines also
// go to onLine.
type logBuffer struct {
	mu     sync.Mutex
	b      strings.Builder
	onLine func(string)
}

func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// startProcess runs a long-lived command; it is stopped with SIGTERM (then
// SIGKILL) when the test ends, and gets SIGKILL if the test binary dies first.
func startProcess(t *testing.T, name string, onLine func(string), bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := &logBuffer{onLine: onLine}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.mu.Lock()
			logs.b.WriteString(sc.Text() + "\n")
			logs.mu.Unlock()
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("%s did not stop within 10s of SIGTERM", name)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, logs.String())
		}
	})
}

// runCommand runs a command to its end and fails the test if it fails.
func runCommand(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), args[0], err, out)
	}
	return string(out)
}

// poll calls cond every 20 ms until it holds; at the deadline it fails the
// test with cond's last word.
func poll(t *testing.T, timeout time.Duration, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, msg := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("not within %v: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tabState reads a tab's three counters, status line and error line.
func tabState(tab context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[string](`["likes", "followers", "followings"].map(
		(id) => id + "=" + document.getElementById(id).textContent).join(" ") +
		" | " + document.getElementById("status").textContent + " | " + document.getElementById("error").textContent`))
}

// waitTab polls a tab until its counters read want.
func waitTab(t *testing.T, name string, tab context.Context, want string) time.Duration {
	t.Helper()
	return poll(t, 10*time.Second, func() (bool, string) {
		s, err := tabState(tab)
		return err == nil && strings.HasPrefix(s, want+" | live"), fmt.Sprintf("%s shows %q (err %v); want %q, live", name, s, err, want)
	})
}

// click clicks the button with this id, as a mouse does.
func click(t *testing.T, tab context.Context, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID(id))); err != nil {
		t.Fatalf("click #%s: %v", id, err)
	}
}

func TestE2E(t *testing.T) {
	begin := time.Now()
	browser := chromiumPath(t)
	dir := t.TempDir()
	pgmirror := build(t, dir, "pgmirror", "pgmirror")
	profile := build(t, dir, "pgmirror/examples/profile", "profile")
	t.Logf("built the binaries in %v", time.Since(begin).Round(time.Millisecond))

	// Postgres, the schema and the watch, as README.md does them.
	dsn := pgtest.Shared(t).CreateDB(t)
	runCommand(t, pgmirror, "migrate", "--dsn", dsn)
	db := testdb.Open(t, dsn)
	if _, err := db.Exec(pgtest.RepoFile(t, "examples/profile/schema.sql")); err != nil {
		t.Fatalf("schema.sql: %v", err)
	}
	out := runCommand(t, pgmirror, "watch", "--dsn", dsn, "--table", "profile", "--key", "username",
		"--prefix", "profile:", "--columns", "likes,followers,followings")
	if !strings.Contains(out, "watching profile in copy mode") {
		t.Fatalf("pgmirror watch said %q", out)
	}

	// The sidecar; ready once a GET is answered (not -LOADING).
	socket := filepath.Join(dir, "pgmirror.sock")
	startProcess(t, "pgmirror serve", nil, pgmirror, "serve", "--dsn", dsn, "--socket", socket, "--http", "")
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: socket, MaxRetries: -1})
	defer rdb.Close()
	poll(t, 30*time.Second, func() (bool, string) {
		err := rdb.Get(context.Background(), "profile:nobody").Err()
		return errors.Is(err, redis.Nil), fmt.Sprintf("sidecar not serving on %s: %v", socket, err)
	})

	// The app, on a free port it reports.
	urls := make(chan string, 1)
	listening := regexp.MustCompile(`listening on (http://\S+)/\?user=ada`)
	startProcess(t, "profile", func(line string) {
		if m := listening.FindStringSubmatch(line); m != nil {
			urls <- m[1]
		}
	}, profile, "-dsn", dsn, "-socket", socket, "-addr", "127.0.0.1:0")
	var base string
	select {
	case base = <-urls:
	case <-time.After(30 * time.Second):
		t.Fatal("the profile app did not report its address within 30s")
	}
	t.Logf("stack up (Postgres, migrate, watch, sidecar, app) at %v", time.Since(begin).Round(time.Millisecond))

	// The browser, with the page in two tabs.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser),
		chromedp.Headless,
		chromedp.NoSandbox, // as root Chromium refuses to start without it
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
	)...)
	defer cancelAlloc()
	tab1, cancel1 := chromedp.NewContext(allocCtx)
	defer cancel1()
	page := base + "/?user=e2e"
	tab2, cancel2 := chromedp.NewContext(tab1) // a second tab of the same browser
	defer cancel2()
	// The first Do on a context starts the browser or opens the tab, and
	// binds its life to the context it is given: no timeout there (the
	// test's -timeout bounds it).
	if err := chromedp.Do(tab1); err != nil {
		t.Fatalf("starting chromium (%s): %v", browser, err)
	}
	if err := chromedp.Do(tab2); err != nil {
		t.Fatalf("opening a second tab: %v", err)
	}
	for i, tab := range []context.Context{tab1, tab2} {
		ctx, cancel := context.WithTimeout(tab, 30*time.Second)
		err := chromedp.Do(ctx, chromedp.Navigate(page))
		cancel()
		if err != nil {
			t.Fatalf("opening %s in tab %d: %v", page, i+1, err)
		}
	}
	// A user without a row yet: the stream says null, the page shows zeros.
	waitTab(t, "tab 1", tab1, "likes=0 followers=0 followings=0")
	waitTab(t, "tab 2", tab2, "likes=0 followers=0 followings=0")
	t.Logf("browser up, both tabs live at %v", time.Since(begin).Round(time.Millisecond))

	// A click in tab 1 shows in tab 2.
	click(t, tab1, "inc_likes")
	took := waitTab(t, "tab 2", tab2, "likes=1 followers=0 followings=0")
	t.Logf("click in tab 1 -> counter in tab 2: %v (polled every 20 ms)", took.Round(time.Millisecond))
	waitTab(t, "tab 1", tab1, "likes=1 followers=0 followings=0")

	// And the other way round, several clicks.
	for i := 0; i < 3; i++ {
		click(t, tab2, "inc_followers")
	}
	click(t, tab2, "inc_followings")
	waitTab(t, "tab 1", tab1, "likes=1 followers=3 followings=1")
	waitTab(t, "tab 2", tab2, "likes=1 followers=3 followings=1")

	// A change made in SQL by anyone shows in both.
	if _, err := db.Exec(`UPDATE profile SET likes = 100 WHERE username = 'e2e'`); err != nil {
		t.Fatal(err)
	}
	waitTab(t, "tab 1", tab1, "likes=100 followers=3 followings=1")
	waitTab(t, "tab 2", tab2, "likes=100 followers=3 followings=1")

	if path := os.Getenv("E2E_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(tab2, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot of tab 2 in %s", path)
	}
	t.Logf("end to end in %v", time.Since(begin).Round(time.Millisecond))
}
