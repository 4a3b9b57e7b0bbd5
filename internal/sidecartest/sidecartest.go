// Package sidecartest runs whole pgmirror sidecars in a test process, built
// and opened by package sidecar exactly as the binary does, on a real Postgres.
package sidecartest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/sidecar"
)

// Config adjusts a sidecar; zero fields take test-friendly defaults.
type Config struct {
	// Mirror replaces the mirror's options (the wiring's hooks stay); zero
	// fields take the mirror's defaults.
	Mirror mirror.Options
	// Jobs replaces the jobs' configuration; zero fields take the defaults.
	Jobs   jobs.Config
	NoJobs bool // do not start the jobs
	// Listener and Loaders adjust those components before they open.
	Listener func(*listener.Listener)
	Loaders  func(*pgstore.Loaders)
	// MaxDBConns limits the pool as --max-db-conns does; 0: practically no limit.
	MaxDBConns int
	// LoaderTimeout is --loader-timeout; 0: the default.
	LoaderTimeout time.Duration
	// MaxValueSize is --max-value-size; 0: the default.
	MaxValueSize int64
	// HTTPAddr is --http; "" (the default here) disables the admin server.
	HTTPAddr string
	// Sidecar adjusts the rest of the configuration, last.
	Sidecar func(*sidecar.Config)
}

// unlimitedConns stands for "no limit" on the pool.
const unlimitedConns = 10000

// Sidecar is one running sidecar.
type Sidecar struct {
	*sidecar.Sidecar
	Socket string
	// Client is a go-redis client on Socket.
	Client *redis.Client
	stop   func()
}

// Start runs a sidecar on dsn (a migrated database) and waits until it is
// ready; it stops when the test ends (or at Stop).
func Start(t testing.TB, dsn string, cfg Config) *Sidecar {
	t.Helper()
	s := StartNoWait(t, dsn, cfg)
	select {
	case <-s.Mirror.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("sidecar not ready within 30s")
	}
	return s
}

// StartNoWait is Start without waiting for the first load.
func StartNoWait(t testing.TB, dsn string, cfg Config) *Sidecar {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgm")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sidecar{Socket: filepath.Join(dir, "s.sock")}
	sc, err := sidecar.New(config(dsn, s.Socket, cfg), sidecar.Options{Tune: tuning(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	s.Sidecar = sc
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		if s.Client != nil {
			s.Client.Close()
		}
		if err := sc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		select {
		case err := <-sc.Err():
			t.Errorf("sidecar failed: %v", err)
		default:
		}
		os.RemoveAll(dir)
	}
	t.Cleanup(s.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sc.Open(ctx); err != nil {
		t.Fatal(err)
	}
	s.Client = redis.NewClient(&redis.Options{Network: "unix", Addr: s.Socket, PoolSize: 64, MaxRetries: -1,
		ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second})
	return s
}

// config is the sidecar's configuration for cfg.
func config(dsn, socket string, cfg Config) sidecar.Config {
	c := sidecar.DefaultConfig()
	c.DSN, c.ListenDSN, c.Socket, c.HTTPAddr = dsn, dsn, socket, cfg.HTTPAddr
	c.MaxDBConns = unlimitedConns
	if cfg.MaxDBConns > 0 {
		c.MaxDBConns = cfg.MaxDBConns
	}
	if cfg.LoaderTimeout > 0 {
		c.LoaderTimeout = cfg.LoaderTimeout
	}
	if cfg.MaxValueSize > 0 {
		c.MaxValueSize = cfg.MaxValueSize
	}
	if cfg.Sidecar != nil {
		cfg.Sidecar(&c)
	}
	return c
}

// tuning applies cfg's component settings over the wiring's.
func tuning(cfg Config) sidecar.Tuning {
	return sidecar.Tuning{
		Mirror: func(o *mirror.Options) {
			wired := *o
			*o = cfg.Mirror
			o.OnKeyEvent, o.Loader, o.OnLoadersChanged, o.OnReload, o.Logger =
				wired.OnKeyEvent, wired.Loader, wired.OnLoadersChanged, wired.OnReload, wired.Logger
			if o.SentinelWait == 0 {
				o.SentinelWait = 5 * time.Second
			}
		},
		Jobs: func(j *jobs.Config) { *j = cfg.Jobs },
		Listener: func(l *listener.Listener) {
			l.PingInterval, l.MaxReconnect = 500*time.Millisecond, 500*time.Millisecond
			if cfg.Listener != nil {
				cfg.Listener(l)
			}
		},
		Loaders: cfg.Loaders,
		Writer:  func(w *pgstore.WriterOptions) { w.Timeout = 5 * time.Second },
		NoJobs:  cfg.NoJobs,
	}
}

// Stop stops the sidecar now (it is also stopped when the test ends).
func (s *Sidecar) Stop() { s.stop() }

// Eventually polls cond until it holds or fails the test at the deadline.
func Eventually(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
