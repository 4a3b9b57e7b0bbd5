// Command pgmirror is a sidecar that mirrors the PostgreSQL table cache_entries into memory and
// serves it over a Unix socket in the Redis protocol. This file wires the components and owns
// the process: subcommands, signals and exit codes.
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
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	_ "github.com/lib/pq" // registers the "postgres" driver

	"pgmirror/admin"
	"pgmirror/jobs"
	"pgmirror/listener"
	"pgmirror/migrations"
	"pgmirror/mirror"
	"pgmirror/pgstore"
	"pgmirror/unixsock"
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

// Timings of connecting to Postgres.
const (
	// connectBackoffMin is the first wait after a failed connection attempt; it doubles each time.
	connectBackoffMin = 100 * time.Millisecond
	// connectBackoffMax caps the wait, so a recovered Postgres is noticed within seconds.
	connectBackoffMax = 5 * time.Second
	// connectAttemptTimeout bounds one attempt, including a server that accepts and never answers.
	connectAttemptTimeout = 10 * time.Second
	// shutdownTimeout bounds how long in-flight commands may take to finish on SIGTERM.
	shutdownTimeout = 10 * time.Second
	// adminShutdownTimeout bounds how long a scrape or probe in flight may delay the stop.
	adminShutdownTimeout = 2 * time.Second
	// migratePingTimeout bounds how long `pgmirror migrate` waits for Postgres before failing.
	migratePingTimeout = 10 * time.Second
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
	Config Config
	// Watch is what watch and unwatch were asked to do.
	Watch WatchSpec
	// Logger writes to Stderr; ParseFlags configures it from Config.
	Logger hclog.Logger
	// DB is the Postgres pool, opened by Run.
	DB *sql.DB
	// Store is the SQL data access over DB.
	Store *pgstore.Store
	// Mirror is the in-memory mirror, opened by serve.
	Mirror *mirror.Mirror
	// Listener feeds Mirror from the LISTEN connection (--listen-dsn).
	Listener *listener.Listener
	// Writer runs client writes in Postgres (group commit).
	Writer *pgstore.Writer
	// Loaders computes absent keys with cache_loaders' SQL.
	Loaders *pgstore.Loaders
	// Jobs runs access-time flushes, refreshes and cleanup.
	Jobs *jobs.Jobs
	// Server serves clients on the Unix socket.
	Server *unixsock.Server
	// Admin serves /healthz, /readyz and /metrics on --http.
	Admin *admin.Server

	// Stdout receives the output of version, help and migrate.
	Stdout io.Writer
	// Stderr receives logs and error messages.
	Stderr io.Writer
	// Env is the environment settings are read from, in os.Environ form.
	Env []string

	stopListener context.CancelFunc
	listenerErr  chan error    // a listener that cannot run (LISTEN refused) ends serve
	listenerDone chan struct{} // closed when the listener goroutine returned
	serverErr    chan error    // the socket server failed
	adminErr     chan error    // the admin HTTP server failed

	gate      *pgstore.Gate // loaders' and fetches' share of the pool (openDB)
	helpTopic string        // the usage ParseFlags selected, for -h and help
	serving   bool          // Run started serving, so Close reports the stop
}

// NewMain returns a Main with the default configuration, reading the process's environment.
func NewMain() *Main {
	return &Main{
		Command: "serve",
		Config:  DefaultConfig(),
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
		cfg, unknown, err := parseConfig(cmd, rest, m.Env)
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
			return &errUsage{msg: "pgmirror version takes no arguments"}
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
			return &errUsage{msg: fmt.Sprintf("no help for %q", strings.Join(rest, " "))}
		}
		return nil
	default:
		m.helpTopic = "help"
		return &errUsage{msg: fmt.Sprintf("unknown command %q", cmd)}
	}
}

func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "--h":
		return true
	}
	return false
}

// Usage returns the help text of the subcommand ParseFlags selected.
func (m *Main) Usage() string { return usage(m.helpTopic) }

// reportParseError prints what ParseFlags returned and returns the exit code.
func (m *Main) reportParseError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(m.Stdout, m.Usage())
		return exitOK
	}
	fmt.Fprintf(m.Stderr, "pgmirror: %s\n", m.redact(err.Error()))
	var uerr *errUsage
	if errors.As(err, &uerr) {
		fmt.Fprint(m.Stderr, "\n"+m.Usage())
	} else {
		fmt.Fprintf(m.Stderr, "Run 'pgmirror help %s' for the flags and their environment variables.\n", m.helpTopic)
	}
	return exitUsage
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
func (m *Main) redact(s string) string { return redactSecrets(s, m.Config.DSN, m.Config.ListenDSN) }

// dsnForLogs names the connection in logs without its password.
func (m *Main) dsnForLogs() string {
	if m.Config.DSN == "" {
		return "(libpq defaults and PG* environment variables)"
	}
	return m.Config.RedactedDSN()
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

// runServe runs the sidecar until ctx is cancelled.
func (m *Main) runServe(ctx context.Context) error {
	m.serving = true
	m.Logger.Info("starting", "version", version, "socket", m.Config.Socket)
	if err := m.openDB(); err != nil {
		return err
	}
	// The socket opens first, so clients get LOADING rather than a refused
	// connection while Postgres is reached and the mirror loads.
	if err := m.openServer(); err != nil {
		return err
	}
	if err := m.connect(ctx); err != nil {
		if ctx.Err() != nil {
			m.Logger.Info("shutting down before Postgres was reached", "reason", context.Cause(ctx))
			return nil
		}
		return err
	}
	if m.Config.Migrate {
		res, err := m.migrate(ctx)
		if err != nil {
			return err
		}
		for _, file := range res.Applied {
			m.Logger.Info("migration applied", "file", file)
		}
		m.Logger.Info("schema ready", "migrations_applied", len(res.Applied), "triggers_updated", res.TriggersUpdated,
			"privilege_fixes", len(res.Secured))
	}
	if err := m.Store.CheckPrimary(ctx); err != nil {
		return err
	}
	if err := m.Store.CheckSchema(ctx); err != nil {
		return err
	}
	if err := m.Loaders.Reload(ctx); err != nil {
		return err
	}
	m.startSync()
	if err := m.Jobs.Open(); err != nil {
		return err
	}
	// TODO(later issues): open the admin HTTP server and the jobs here; Close closes them in reverse.

	select {
	case <-ctx.Done():
		m.Logger.Info("shutting down", "reason", context.Cause(ctx))
		return nil
	case err := <-m.listenerErr:
		return err
	case err := <-m.serverErr:
		return err
	case err := <-m.adminErr:
		return err
	}
}

// openServer creates the mirror (loading, not yet syncing), the writer and
// the socket server, and starts serving.
func (m *Main) openServer() error {
	// The admin server binds first, so a bad --http fails before anything is served; it
	// exists before the mirror and the listener, whose reloads and lag it observes.
	m.Admin = &admin.Server{
		Addr:         m.Config.HTTPAddr,
		Logger:       m.Logger.Named("http"),
		MaxStaleness: m.Config.MaxStaleness,
		Version:      version,
	}
	if err := m.Admin.Listen(); err != nil {
		return err
	}
	m.Store = pgstore.New(m.DB, m.Logger.Named("store"))
	m.Store.Gate, m.Store.GateWait = m.gate, m.Config.LoaderTimeout
	m.Loaders = pgstore.NewLoaders(m.DB, m.Logger.Named("loaders"))
	m.Loaders.Gate, m.Loaders.Timeout = m.gate, m.Config.LoaderTimeout
	mir, err := mirror.New(m.Store, mirror.Options{
		MaxMemory:      m.Config.MaxMemory,
		ManageGC:       true,
		MaxStaleness:   max(m.Config.MaxStaleness, time.Nanosecond), // 0: stale at once (0 means "default" to mirror)
		StaleError:     m.Config.StaleReads == StaleReadsError,
		ReloadInterval: m.Config.ReloadInterval,
		Loader:         m.Loaders,
		ServeStale:     m.Config.ServeStale,
		Logger:         m.Logger.Named("mirror"),
	})
	if err != nil {
		return err
	}
	m.Mirror = mir
	adm := m.Admin
	mir.Handle(func(ev mirror.Event) {
		if ev.Kind == mirror.KindReload {
			adm.ObserveReload(ev.Reason, ev.Reload, ev.Err)
		}
	})
	m.Jobs = jobs.New(m.Store, m.Loaders, mir, jobs.Config{
		AccessFlushInterval: m.Config.AccessFlushInterval,
		RefreshInterval:     m.Config.RefreshInterval,
		RefreshAhead:        m.Config.RefreshAhead,
		RefreshWindow:       m.Config.RefreshWindow,
		RefreshLockStale:    m.Config.RefreshLockStale,
		CleanupInterval:     m.Config.CleanupInterval,
		Retention:           m.Config.Retention,
		ExpiredGrace:        m.Config.ExpiredGrace,
		Logger:              m.Logger.Named("jobs"),
	})
	m.Listener = &listener.Listener{DSN: m.Config.ListenDSN, Sink: mir, Logger: m.Logger.Named("listener"),
		OnLag: m.Admin.ObserveLag, Unsigned: m.Config.UnsignedPayloads}
	m.Writer = pgstore.NewWriter(m.DB, mir, pgstore.WriterOptions{
		MaxValueSize: m.Config.MaxValueSize,
		InFlight:     m.Config.WriteInFlight,
		Linger:       m.Config.WriteLinger,
		Log:          m.Logger.Named("writer"),
	})
	unixsock.Version = version
	m.Server = &unixsock.Server{
		Socket:           m.Config.Socket,
		SocketMode:       m.Config.SocketMode,
		MaxClients:       m.Config.MaxClients,
		SubscriberBuffer: m.Config.SubscriberBuffer,
		MaxValueSize:     m.Config.MaxValueSize,
		MaxClientBuffers: m.Config.ClientBuffers(),
		OutputTimeout:    m.Config.ClientOutputTimeout,
		Namespace:        m.Config.Namespace,
		Mirror:           mir,
		Writer:           m.Writer,
		Logger:           m.Logger.Named("socket"),
		Info:             m.listenerInfo,
	}
	mir.Handle(m.Server.HandleMirrorEvent)
	if err := m.Server.Listen(); err != nil {
		return err
	}
	m.serverErr = make(chan error, 1)
	srv, errc := m.Server, m.serverErr // not m's fields: Close may clear them before the goroutine runs
	go func() {
		if err := srv.Serve(); err != nil {
			errc <- err
		}
	}()
	m.serveAdmin()
	return nil
}

// serveAdmin gives the admin server its sources and starts it; the sources
// are set before it serves and never change after.
func (m *Main) serveAdmin() {
	m.Admin.Mirror = m.Mirror.Stats
	m.Admin.Listener = m.Listener.Stats
	m.Admin.Socket = m.Server.Stats
	m.Admin.Commands = unixsock.CommandCalls
	m.Admin.Writer = m.Writer.Stats
	j := m.Jobs
	m.Admin.Jobs = func() admin.JobStats {
		st := j.Stats()
		return admin.JobStats{
			LoaderRuns:     st.LoaderRuns,
			LoaderFailures: st.LoaderFailures,
			AccessFlushes:  st.AccessFlushes,
			AccessRows:     st.AccessRows,
			Refreshes: map[string]int64{
				"ok":      st.Refreshed,
				"removed": st.RefreshRemoved,
				"fenced":  st.RefreshFenced,
				"error":   st.RefreshFailed,
			},
			CleanupDeletions: st.CleanupDeleted,
		}
	}
	m.adminErr = make(chan error, 1)
	srv, errc := m.Admin, m.adminErr // not m's fields: Close may clear them before the goroutine runs
	go func() {
		if err := srv.Serve(); err != nil {
			errc <- err
		}
	}()
}

// listenerInfo adds the listener's counters to INFO.
func (m *Main) listenerInfo() [][2]string {
	if m.Listener == nil {
		return nil
	}
	st := m.Listener.Stats()
	last := "never"
	if !st.LastNotification.IsZero() {
		last = st.LastNotification.UTC().Format(time.RFC3339Nano)
	}
	return [][2]string{
		{"notifications_received", fmt.Sprint(st.Received)},
		{"notifications_undecodable", fmt.Sprint(st.DecodeErrors)},
		{"notification_queue_overflows", fmt.Sprint(st.Overflows)},
		{"listener_reconnects", fmt.Sprint(st.Reconnects)},
		{"last_notification", last},
		{"lag_ms", fmt.Sprintf("%.3f", float64(st.Lag.Microseconds())/1000)},
	}
}

// startSync starts the mirror's background work and the listener, which
// LISTENs first and then asks the mirror to load.
func (m *Main) startSync() {
	mir := m.Mirror
	_ = mir.Open() // fails only when opened twice
	lctx, cancel := context.WithCancel(context.Background())
	m.stopListener = cancel
	m.listenerErr = make(chan error, 1)
	m.listenerDone = make(chan struct{})
	go func() {
		defer close(m.listenerDone)
		if err := m.Listener.Run(lctx); err != nil {
			m.listenerErr <- err
		}
	}()
	go func() {
		select {
		case <-mir.Ready():
			st := mir.Stats()
			m.Logger.Info("ready", "entries", st.Entries, "load_took", st.LastReloadTook.Round(time.Millisecond))
		case <-lctx.Done():
		}
	}()
}

// RequestResync asks for a full reload of the mirror, as SIGHUP and PGMIRROR.RESYNC do.
func (m *Main) RequestResync() {
	m.Logger.Info("resync requested")
	if m.Mirror != nil {
		m.Mirror.RequestResync("SIGHUP")
	}
}

// openDB creates the pool, limited to --max-db-conns connections of which
// loaders and fetches may use all but those the writer, reloads and jobs
// keep; it does not connect, so it fails only on a malformed DSN.
func (m *Main) openDB() error {
	db, err := sql.Open("postgres", m.Config.DSN)
	if err != nil {
		return fmt.Errorf("open Postgres (%s): %s", m.dsnForLogs(), m.redact(err.Error()))
	}
	gate, err := pgstore.LimitPool(db, m.Config.MaxDBConns, m.Config.WriteInFlight)
	if err != nil {
		db.Close()
		return fmt.Errorf("--max-db-conns: %w", err)
	}
	m.DB, m.gate = db, gate
	m.Logger.Debug("Postgres pool", "max_conns", m.Config.MaxDBConns, "loader_and_fetch_conns", gate.Cap())
	return nil
}

// connect waits until Postgres answers, retrying with exponential backoff, because a sidecar
// usually starts before or beside its database and must not crash-loop meanwhile.
func (m *Main) connect(ctx context.Context) error {
	m.Logger.Info("connecting to Postgres", "dsn", m.dsnForLogs())
	delay := connectBackoffMin
	for attempt := 1; ; attempt++ {
		serverVersion, err := m.serverVersion(ctx)
		if err == nil {
			m.Logger.Info("connected", "server_version", serverVersion, "attempt", attempt)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m.Logger.Warn("cannot connect to Postgres, will retry",
			"attempt", attempt, "error", m.redact(err.Error()), "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, connectBackoffMax)
	}
}

// serverVersion runs one bounded connection attempt. lib/pq honours ctx only while dialing, so
// the query runs aside and a cancelled ctx returns at once even if the handshake hangs.
func (m *Main) serverVersion(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, connectAttemptTimeout)
	defer cancel()
	type result struct {
		version string
		err     error
	}
	done := make(chan result, 1)
	db := m.DB
	go func() {
		var r result
		r.err = db.QueryRowContext(ctx, "SHOW server_version").Scan(&r.version)
		done <- r
	}()
	select {
	case r := <-done:
		return r.version, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// runMigrate is `pgmirror migrate`: one bounded attempt to reach Postgres, then the migrations.
func (m *Main) runMigrate(ctx context.Context) error {
	if err := m.openDB(); err != nil {
		return err
	}
	pingCtx, cancel := context.WithTimeout(ctx, migratePingTimeout)
	defer cancel()
	if _, err := m.serverVersion(pingCtx); err != nil {
		return fmt.Errorf("migrate: cannot reach Postgres (%s): %s", m.dsnForLogs(), m.redact(err.Error()))
	}
	res, err := m.migrate(ctx)
	if err != nil {
		return err
	}
	printMigrateResult(m.Stdout, res)
	return nil
}

// migrate applies the embedded migrations and triggers.sql to DB.
func (m *Main) migrate(ctx context.Context) (migrations.Result, error) {
	// An empty script would be recorded as installed and leave the sidecars without notifications.
	if strings.TrimSpace(triggersSQL) == "" {
		return migrations.Result{}, errors.New("migrate: this binary was built with an empty triggers.sql")
	}
	res, err := migrations.ApplyWith(ctx, m.DB, triggersSQL, migrations.Options{
		Log:               m.Logger.Named("migrate"),
		AllowSharedSchema: m.Config.AllowSharedSchema,
	})
	if err != nil {
		return res, fmt.Errorf("migrate: %s", m.redact(err.Error()))
	}
	return res, nil
}

// printMigrateResult tells the operator what migrate did, one step a line.
func printMigrateResult(w io.Writer, res migrations.Result) {
	if !res.Changed() {
		fmt.Fprintln(w, "nothing to do: schema up to date")
		return
	}
	for _, file := range res.Applied {
		fmt.Fprintf(w, "applied %s\n", file)
	}
	if res.TriggersUpdated {
		fmt.Fprintln(w, "triggers.sql installed")
	} else {
		fmt.Fprintln(w, "triggers.sql up to date")
	}
	for _, fix := range res.Secured {
		fmt.Fprintf(w, "secured: %s\n", fix)
	}
}

// Close releases what Run opened, in reverse order of opening.
func (m *Main) Close() error {
	var errs []error
	if m.Admin != nil {
		// First, so probes and scrapes stop before the components they read.
		ctx, cancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
		errs = append(errs, m.Admin.Shutdown(ctx))
		cancel()
		m.Admin = nil
	}
	if m.Server != nil {
		// Stop accepting, let in-flight commands finish and answer, remove the socket.
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		errs = append(errs, m.Server.Shutdown(ctx))
		cancel()
		m.Server = nil
	}
	if m.Jobs != nil {
		errs = append(errs, m.Jobs.Close()) // flushes the last access times
		m.Jobs = nil
	}
	if m.Writer != nil {
		errs = append(errs, m.Writer.Close())
		m.Writer = nil
	}
	if m.stopListener != nil {
		m.stopListener()
		<-m.listenerDone
		m.stopListener = nil
	}
	if m.Mirror != nil {
		errs = append(errs, m.Mirror.Close())
		m.Mirror = nil
	}
	if m.DB != nil {
		errs = append(errs, m.DB.Close())
		m.DB = nil
	}
	if m.serving {
		m.serving = false
		m.Logger.Info("stopped")
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
