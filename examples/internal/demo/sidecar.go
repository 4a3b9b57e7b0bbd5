package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/redis/go-redis/v9"

	"pgmirror/sidecar"
)

// Sidecar is one running sidecar, in this process or in a child process.
type Sidecar struct {
	Name   string
	Socket string
	Client *redis.Client // on Socket
	// In is the sidecar when it runs in this process; nil for a child.
	In *sidecar.Sidecar
	// Cmd is the child process; nil for a sidecar in this process.
	Cmd *exec.Cmd

	waited chan struct{} // closed when the child was reaped
}

// serveArgs are the flags of `pgmirror serve` for sidecar name: the demo's
// database (application_name = name), a socket in Dir, no admin HTTP
// server, then extra.
func (e *Env) serveArgs(name string, extra []string) (socket string, args []string) {
	socket = filepath.Join(e.Dir, name+".sock")
	args = append([]string{"--dsn", e.AppDSN(name), "--socket", socket, "--http", ""}, extra...)
	return socket, args
}

// StartSidecar runs a sidecar in this process, configured by the flags of
// `pgmirror serve` in args, and waits until it is ready. Its log (warnings
// and errors) goes to Dir/<name>.log. Close stops it.
func (e *Env) StartSidecar(ctx context.Context, name string, args ...string) (*Sidecar, error) {
	socket, all := e.serveArgs(name, args)
	cfg, _, err := sidecar.ParseConfig("serve", all, nil)
	if err != nil {
		return nil, fmt.Errorf("demo: sidecar %s: %w", name, err)
	}
	logf, err := os.Create(filepath.Join(e.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	e.onClose(logf.Close)
	log := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: logf})
	sc, err := sidecar.New(cfg, sidecar.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("demo: sidecar %s: %w", name, err)
	}
	s := &Sidecar{Name: name, Socket: socket, In: sc, Client: newClient(socket)}
	e.onClose(func() error { s.Client.Close(); return sc.Close() })
	if err := sc.Open(ctx); err != nil {
		return nil, fmt.Errorf("demo: sidecar %s: %w", name, err)
	}
	select {
	case <-sc.Mirror.Ready():
		return s, nil
	case err := <-sc.Err():
		return nil, fmt.Errorf("demo: sidecar %s: %w", name, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newClient(socket string) *redis.Client {
	return redis.NewClient(&redis.Options{Network: "unix", Addr: socket, PoolSize: 64, MaxRetries: -1,
		DialerRetries: 1, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second})
}

// childEnv marks a child process started by StartChild: RunChildIfAsked
// makes it a sidecar.
const childEnv = "PGMIRROR_DEMO_SIDECAR"

// StartChild runs a sidecar in a child process (this program again, see
// RunChildIfAsked), configured by the flags of `pgmirror serve` in args,
// and waits until it is ready. The child is in its own process group, so
// Ctrl-C reaches only this process, which stops it; it is killed if this
// process dies. Its log goes to Dir/<name>.log. Close stops it.
func (e *Env) StartChild(ctx context.Context, name string, args ...string) (*Sidecar, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	socket, all := e.serveArgs(name, args)
	logf, err := os.Create(filepath.Join(e.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, all...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startLocked(cmd); err != nil {
		logf.Close()
		return nil, fmt.Errorf("demo: start sidecar %s: %w", name, err)
	}
	s := &Sidecar{Name: name, Socket: socket, Cmd: cmd, Client: newClient(socket), waited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.waited) }()
	e.onClose(func() error { s.Client.Close(); return s.stopChild(10 * time.Second) })
	return s, s.waitChildReady(ctx)
}

// The parent-death signal fires when the *thread* that forked the child
// exits, and the runtime may retire an ordinary goroutine's thread; so, as
// internal/pgtest does for postmasters, every child is forked from one
// goroutine that locks its thread and never returns. A child then dies
// exactly when this process dies, however it dies.
var (
	spawnOnce sync.Once
	spawnCh   = make(chan func())
)

func startLocked(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked
			for fn := range spawnCh {
				fn()
			}
		}()
	})
	done := make(chan error, 1)
	spawnCh <- func() { done <- cmd.Start() }
	return <-done
}

// waitChildReady polls the child's socket, once it exists, until it answers
// a data command (before the first load it answers LOADING).
func (s *Sidecar) waitChildReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := errors.New("no socket yet")
		if _, serr := os.Stat(s.Socket); serr == nil { // else go-redis would log each failed dial
			err = s.Client.Exists(ctx, "demo:ready?").Err()
		}
		if err == nil {
			return nil
		}
		select {
		case <-s.waited:
			return fmt.Errorf("demo: sidecar %s exited: %s", s.Name, s.Cmd.ProcessState)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: sidecar %s not ready within 60s: %w", s.Name, err)
		}
	}
}

// Kill kills a child sidecar with SIGKILL, as a crash would, and waits
// until it is gone.
func (s *Sidecar) Kill() error {
	if s.Cmd == nil {
		return errors.New("demo: only a child sidecar can be killed")
	}
	_ = s.Cmd.Process.Kill()
	<-s.waited
	return nil
}

// stopChild asks a child to stop (SIGTERM), and kills it after timeout.
func (s *Sidecar) stopChild(timeout time.Duration) error {
	select {
	case <-s.waited:
		return nil
	default:
	}
	_ = s.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.waited:
		return nil
	case <-time.After(timeout):
		return s.Kill()
	}
}

// RunChildIfAsked makes this process a sidecar when StartChild started it,
// and exits when the sidecar stops; otherwise it returns at once. A demo's
// main, and its test's TestMain, call it first.
func RunChildIfAsked() {
	if os.Getenv(childEnv) == "" {
		return
	}
	os.Exit(runChild(os.Args[1:]))
}

func runChild(args []string) int {
	cfg, _, err := sidecar.ParseConfig("serve", args, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "sidecar", Level: hclog.Info, Output: os.Stderr})
	ctx, stop := Context()
	defer stop()
	sc, err := sidecar.New(cfg, sidecar.Options{Logger: log})
	if err != nil {
		log.Error("build", "error", err)
		return 1
	}
	defer sc.Close()
	if err := sc.Open(ctx); err != nil {
		log.Error("open", "error", err)
		return 1
	}
	select {
	case <-ctx.Done():
		return 0
	case err := <-sc.Err():
		log.Error("failed", "error", err)
		return 1
	}
}
