// Command pgmirror is a sidecar that mirrors the PostgreSQL table cache_entries into memory and
// serves it over a Unix socket in the Redis protocol. The command owns the process: the command
// line, signals and exit codes (main.go), and one file per subcommand (serve.go, migrate.go,
// watch.go for watch and unwatch, usage.go for help); package sidecar wires the components.
package main

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hashicorp/go-hclog"
	_ "github.com/lib/pq" // registers the "postgres" driver

	"pgmirror/sidecar"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// triggersSQL is installed by migrate; it is embedded so the binary carries the schema it expects.
//
//go:embed triggers.sql
var triggersSQL string

// Exit codes of the process.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure: Postgres unreachable for migrate, a migration failed
	exitUsage   = 2 // a bad command line or environment; nothing was started
)

func main() {
	// Catch SIGHUP before anything else: its default action would kill a sidecar being started.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default action, so a second Ctrl-C stops a stuck shutdown.
	go func() {
		<-ctx.Done()
		stop()
	}()

	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		os.Exit(m.reportParseError(err))
	}
	if m.Command == "serve" {
		go func() {
			for range hup {
				m.RequestResync()
			}
		}()
	} else {
		// One-shot commands keep the conventional meaning of a hang-up: stop.
		signal.Reset(syscall.SIGHUP)
	}

	err := m.Run(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintf(m.Stderr, "pgmirror: %s\n", m.redact(err.Error()))
		os.Exit(exitFailure)
	}
}

// Main is the whole program, so tests can run it in-process: NewMain, ParseFlags, Run, Close.
type Main struct {
	// Command is the subcommand: serve, migrate, watch, unwatch, version or help.
	Command string
	// Config is the validated configuration of serve and migrate.
	Config sidecar.Config
	// Watch is what watch and unwatch were asked to do.
	Watch WatchSpec
	// Logger writes to Stderr; ParseFlags configures it from Config.
	Logger hclog.Logger
	// DB is the Postgres pool of migrate, watch and unwatch, opened by Run.
	DB *sql.DB

	// Stdout receives the output of version, help and migrate.
	Stdout io.Writer
	// Stderr receives logs and error messages.
	Stderr io.Writer
	// Env is the environment settings are read from, in os.Environ form.
	Env []string

	sidecar   atomic.Pointer[sidecar.Sidecar] // serve's sidecar, read by the SIGHUP handler
	helpTopic string                          // the usage ParseFlags selected, for -h and help
}

// NewMain returns a Main with the default configuration, reading the process's environment.
func NewMain() *Main {
	return &Main{
		Command: "serve",
		Config:  sidecar.DefaultConfig(),
		Logger:  hclog.NewNullLogger(),
		Stdout:  os.Stdout,
		Stderr:  os.Stderr,
		Env:     os.Environ(),
	}
}

// ParseFlags selects the subcommand from args (without the program name) and reads its
// configuration; any error means exit 2, except flag.ErrHelp, which means print Usage and exit 0.
func (m *Main) ParseFlags(args []string) error {
	cmd, rest := "serve", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, rest = args[0], args[1:]
	} else if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		cmd, rest = "version", args[1:]
	}
	m.Command, m.helpTopic = cmd, cmd

	switch cmd {
	case "serve", "migrate":
		cfg, unknown, err := sidecar.ParseConfig(cmd, rest, m.Env)
		if err != nil {
			return err
		}
		m.Config = cfg
		m.Logger = m.newLogger()
		for _, name := range unknown {
			m.Logger.Warn("ignoring environment variable that names no setting", "name", name)
		}
		return nil
	case "watch", "unwatch":
		return m.parseWatch(cmd, rest)
	case "version":
		if len(rest) > 0 {
			if isHelpFlag(rest[0]) {
				return flag.ErrHelp
			}
			return &sidecar.UsageError{Msg: "pgmirror version takes no arguments"}
		}
		return nil
	case "help":
		switch {
		case len(rest) == 0 || len(rest) == 1 && isHelpFlag(rest[0]):
			m.helpTopic = "serve"
		case len(rest) == 1 && (rest[0] == "serve" || rest[0] == "migrate" || rest[0] == "watch" || rest[0] == "unwatch"):
			m.helpTopic = rest[0]
		case len(rest) == 1 && (rest[0] == "version" || rest[0] == "help"):
			m.helpTopic = "help"
		default:
			m.helpTopic = "help"
			return &sidecar.UsageError{Msg: fmt.Sprintf("no help for %q", strings.Join(rest, " "))}
		}
		return nil
	default:
		m.helpTopic = "help"
		return &sidecar.UsageError{Msg: fmt.Sprintf("unknown command %q", cmd)}
	}
}

// newLogger builds the hclog logger Config asks for, writing to Stderr through a password filter.
func (m *Main) newLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "pgmirror",
		Level:      hclog.LevelFromString(m.Config.LogLevel),
		JSONFormat: m.Config.LogJSON,
		Output:     &redactingWriter{w: m.Stderr, redact: m.redact},
	})
}

// redact removes the configured passwords from s: the last line of defence for logs and errors.
func (m *Main) redact(s string) string {
	return sidecar.RedactSecrets(s, m.Config.DSN, m.Config.ListenDSN)
}

// Run runs the selected subcommand until it finishes or ctx is cancelled.
func (m *Main) Run(ctx context.Context) error {
	switch m.Command {
	case "version":
		fmt.Fprintf(m.Stdout, "pgmirror %s (%s)\n", version, runtime.Version())
		return nil
	case "help":
		fmt.Fprint(m.Stdout, m.Usage())
		return nil
	case "migrate":
		return m.runMigrate(ctx)
	case "watch", "unwatch":
		return m.runWatch(ctx)
	default:
		return m.runServe(ctx)
	}
}

// Sidecar is serve's sidecar, once built; nil before and after.
func (m *Main) Sidecar() *sidecar.Sidecar { return m.sidecar.Load() }

// RequestResync asks for a full reload of the mirror, as SIGHUP and PGMIRROR.RESYNC do.
func (m *Main) RequestResync() {
	if sc := m.sidecar.Load(); sc != nil {
		sc.RequestResync()
	}
}

// Close releases what Run opened.
func (m *Main) Close() error {
	var errs []error
	if sc := m.sidecar.Swap(nil); sc != nil {
		errs = append(errs, sc.Close())
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
		m.DB = nil
	}
	return errors.Join(errs...)
}

// redactingWriter passes log lines through redact; hclog writes each line with one Write.
type redactingWriter struct {
	w      io.Writer
	redact func(string) string
}

func (rw *redactingWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
