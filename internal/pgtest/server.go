package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures a cluster; the zero value gives the defaults.
type Options struct {
	// Settings are extra server settings, passed as -c name=value after the
	// harness's own so that they win (pg_stat_statements stays preloaded).
	Settings map[string]string
	// MaxConnections is max_connections; zero means 200.
	MaxConnections int
}

// Server is one throwaway cluster; its methods are safe for concurrent use.
type Server struct {
	binDir  string
	root    string // temporary directory: socket, log, owner file, data/
	dataDir string
	logPath string
	cred    *syscall.Credential // nil: run as ourselves
	opts    Options
	port    int // fixed once Start returns, so that Start after Stop reuses it

	mu     sync.Mutex
	pm     *postmaster // nil while stopped
	closed bool
}

// postmaster is one run of the server process.
type postmaster struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result, valid after done is closed
}

const (
	readyTimeout    = 30 * time.Second
	pollInterval    = 20 * time.Millisecond
	shutdownTimeout = 60 * time.Second
	portAttempts    = 5
)

// errPortInUse marks a start that failed because the TCP port was taken
// between choosing it and postgres binding it.
var errPortInUse = errors.New("TCP port in use")

// Start initialises and starts a new cluster; the caller must Close it.
func Start(opts Options) (*Server, error) {
	binDir, err := binDirOnce()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	sweepStale()
	tmpl, err := templateDataDir(binDir, cred)
	if err != nil {
		return nil, err
	}
	root, err := makeTempDir(cred)
	if err != nil {
		return nil, err
	}
	s := &Server{binDir: binDir, root: root, dataDir: filepath.Join(root, "data"),
		logPath: filepath.Join(root, "postgres.log"), cred: cred, opts: opts}
	err = copyTree(tmpl, s.dataDir, cred)
	if err == nil {
		err = s.launchOnFreePort()
	}
	if err == nil {
		err = s.execSQL("postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
	}
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// launchOnFreePort starts the postmaster on a free port, trying another one
// if somebody else binds the chosen port first.
func (s *Server) launchOnFreePort() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range portAttempts {
		if s.port, err = freePort(); err != nil {
			return err
		}
		if err = s.launch(); !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return err
}

// launch starts the postmaster and waits until it accepts connections.
// s.mu must be held.
func (s *Server) launch() error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)

	cmd := exec.Command(filepath.Join(s.binDir, "postgres"), s.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = s.root // postgres needs a working directory it may read
	pm := &postmaster{cmd: cmd, done: make(chan struct{})}
	// SIGQUIT is immediate shutdown: the postmaster takes its backends and
	// shared memory with it when the test binary dies.
	if err := spawn(cmd, syscall.SIGQUIT, s.cred); err != nil {
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	go func() {
		pm.err = cmd.Wait()
		close(pm.done)
	}()
	if err := s.waitReady(pm); err != nil {
		crash(pm)
		tail := logTail(s.logPath, logStart)
		if strings.Contains(tail, "could not create any TCP/IP sockets") {
			err = fmt.Errorf("%w: %v", errPortInUse, err)
		}
		return fmt.Errorf("pgtest: postgres did not start: %w\nserver log:\n%s", err, tail)
	}
	s.pm = pm
	return nil
}

// args is the postmaster command line.
func (s *Server) args() []string {
	maxConns := s.opts.MaxConnections
	if maxConns == 0 {
		maxConns = 200
	}
	set := map[string]string{
		"listen_addresses":         "127.0.0.1", // TCP too, for tests that proxy it
		"unix_socket_directories":  s.root,
		"logging_collector":        "off", // log to stderr, i.e. the log file
		"shared_preload_libraries": "pg_stat_statements",
		"pg_stat_statements.track": "all",
		"max_connections":          strconv.Itoa(maxConns),
	}
	for k, v := range s.opts.Settings {
		set[k] = v
	}
	if !strings.Contains(set["shared_preload_libraries"], "pg_stat_statements") {
		set["shared_preload_libraries"] += ",pg_stat_statements"
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys) // a stable command line is easier to read in ps
	args := []string{"-D", s.dataDir, "-p", strconv.Itoa(s.port)}
	for _, k := range keys {
		args = append(args, "-c", k+"="+set[k])
	}
	return args
}

// waitReady polls until a connection succeeds, the postmaster exits, or the
// deadline passes.
func (s *Server) waitReady(pm *postmaster) error {
	db, err := sql.Open("postgres", s.DSN("postgres"))
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not accepting connections after %v: %v", readyTimeout, err)
		}
		select {
		case <-pm.done:
			return fmt.Errorf("postgres exited: %v", pm.err)
		case <-tick.C:
		}
	}
}

// logTail returns the end of what the server logged since offset from.
func logTail(path string, from int64) string {
	const max = 8 << 10
	b, _ := os.ReadFile(path)
	if from > int64(len(b)) {
		from = 0
	}
	b = b[from:]
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}
