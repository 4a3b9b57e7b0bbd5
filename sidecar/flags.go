package sidecar

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"pgmirror/listener"
	"sort"
	"strings"
	"time"
)

// ValueError is an invalid setting; it names where the value came from so the operator can find it.
type ValueError struct {
	// Source is "flag --name" or "environment variable NAME".
	Source string
	// Value is the value as given, or redacted when it holds a secret.
	Value string
	// Err says what was expected.
	Err error
}

// Error says which setting is wrong, with what value, and what was expected.
func (e *ValueError) Error() string {
	return fmt.Sprintf("invalid value %q for %s: %v", e.Value, e.Source, e.Err)
}

// Unwrap returns what was expected, as an error.
func (e *ValueError) Unwrap() error { return e.Err }

// sourceDefault is the source of a setting that no flag or environment variable set.
const sourceDefault = "the default"

// setting ties one flag to its environment variables, its usage text and the Config field it fills.
type setting struct {
	name      string     // flag name, without dashes
	env       []string   // environment variables, the first one set wins
	typ       string     // placeholder shown in usage
	usage     string     // one line, bounds included
	value     flag.Value // bound to a Config field; Set validates
	serveOnly bool       // not a flag of `migrate`
	migrates  bool       // a flag of serve and migrate only, not of watch and unwatch
	secret    bool       // the value may hold a password: never echo it
	emptyEnv  bool       // an empty environment variable is a value ("" disables), not "unset"
	source    string     // where the current value came from, for error messages
}

// settings lists every setting bound to the fields of c, in usage order.
func settings(c *Config) []*setting {
	return []*setting{
		{name: "dsn", env: []string{"PGMIRROR_DSN", "DATABASE_URL"}, typ: "dsn", secret: true,
			usage: "Postgres connection, URL or key=value; libpq PG* variables fill what it leaves out",
			value: &stringValue{p: &c.DSN}},
		{name: "listen-dsn", env: []string{"PGMIRROR_LISTEN_DSN"}, typ: "dsn", secret: true, serveOnly: true,
			usage: "connection for the listener, straight to the primary when --dsn goes through a pooler (default: --dsn)",
			value: &stringValue{p: &c.ListenDSN}},
		{name: "socket", typ: "path", serveOnly: true,
			usage: "Unix socket for clients (at most 107 bytes)",
			value: &stringValue{p: &c.Socket, check: checkSocketPath}},
		{name: "socket-mode", typ: "mode", serveOnly: true,
			usage: "socket file mode, octal, at most 0777",
			value: &modeValue{p: &c.SocketMode}},
		{name: "namespace", typ: "prefix", serveOnly: true, emptyEnv: true,
			usage: "transparent key prefix: clients see and touch only keys under it (UTF-8, no NUL, under 4000 bytes)",
			value: &stringValue{p: &c.Namespace, check: CheckKeyPrefix}},
		{name: "requirepass", typ: "password", serveOnly: true, secret: true,
			usage: `password clients must give with AUTH or HELLO AUTH before other commands, as Redis's requirepass (default: none)`,
			value: &stringValue{p: &c.RequirePass}},
		{name: "http", typ: "host:port", serveOnly: true, emptyEnv: true,
			usage: `admin HTTP (/healthz /readyz /metrics); "" disables; port 0 picks a free one`,
			value: &stringValue{p: &c.HTTPAddr, check: checkHTTPAddr}},
		{name: "reload-interval", typ: "duration", serveOnly: true,
			usage: "periodic full reload, jittered; 0 disables, else at least 1s",
			value: &durationValue{p: &c.ReloadInterval, min: time.Second, zeroOK: true}},
		{name: "max-memory", typ: "size", serveOnly: true,
			usage: "memory budget of the whole mirror, values and key index (1MiB to 1TiB)",
			value: &sizeValue{p: &c.MaxMemory, min: MinMaxMemory, max: MaxMaxMemory}},
		{name: "max-staleness", typ: "duration", serveOnly: true,
			usage: "how long the listener may be down before --stale-reads applies",
			value: &durationValue{p: &c.MaxStaleness, zeroOK: true}},
		{name: "stale-reads", typ: "serve|error", serveOnly: true,
			usage: "once past --max-staleness, keep serving reads (serve) or answer an error (error)",
			value: &enumValue[StaleReads]{p: &c.StaleReads, allowed: []StaleReads{StaleReadsServe, StaleReadsError}}},
		{name: "max-clients", typ: "n", serveOnly: true,
			usage: "concurrent client connections (1 to 1000000)",
			value: &intValue{p: &c.MaxClients, min: 1, max: MaxMaxClients}},
		{name: "subscriber-buffer", typ: "n", serveOnly: true,
			usage: "keyspace notifications that may wait for one subscriber before it is disconnected (1 to 1000000)",
			value: &intValue{p: &c.SubscriberBuffer, min: 1, max: 1_000_000}},
		{name: "tracking-table-max-keys", typ: "n", serveOnly: true,
			usage: "keys CLIENT TRACKING remembers; past it keys are evicted by invalidating them (1 to 100000000)",
			value: &intValue{p: &c.TrackingTableMaxKeys, min: 1, max: 100_000_000}},
		{name: "max-client-buffers", typ: "size|auto", serveOnly: true,
			usage: "budget of all clients' buffers together (commands being read, replies and pushes waiting); past it the largest are disconnected; auto: the largest of 64MiB, --max-memory/4 and 4 x --max-value-size",
			value: &sizeValue{p: &c.MaxClientBuffers, min: MiB, max: MaxMaxMemory, auto: true}},
		{name: "client-output-timeout", typ: "duration", serveOnly: true,
			usage: "disconnect a client whose replies have not drained for this long (at least 1s)",
			value: &durationValue{p: &c.ClientOutputTimeout, min: time.Second}},
		{name: "loop-spin", typ: "duration", serveOnly: true,
			usage: "how long an event loop serving a few busy clients polls for their next command before it sleeps: less latency for a client waiting on each reply, for CPU (0: never; at most 1ms)",
			value: &durationValue{p: &c.LoopSpin, min: time.Microsecond, zeroOK: true}},
		{name: "write-inflight", typ: "n", serveOnly: true,
			usage: "write batches (group commits) running in Postgres at once, each on its own connection (1 to 16)",
			value: &intValue{p: &c.WriteInFlight, min: 1, max: 16}},
		{name: "write-linger", typ: "duration", serveOnly: true,
			usage: "hold a write batch until its oldest command waited this long (0: never), so more writes share a commit and a notification (0 to 100ms)",
			value: &durationValue{p: &c.WriteLinger, min: time.Microsecond, zeroOK: true}},
		{name: "max-db-conns", typ: "n", serveOnly: true,
			usage: "Postgres connections of the sidecar, besides the listener's; loaders and fetches get all but --write-inflight + 3 (5 to 10000)",
			value: &intValue{p: &c.MaxDBConns, min: 5, max: 10000}},
		{name: "loader-timeout", typ: "duration", serveOnly: true,
			usage: "bound of a loader's query (statement_timeout, set by the server) and of its wait for a connection (at least 10ms)",
			value: &durationValue{p: &c.LoaderTimeout, min: 10 * time.Millisecond}},
		{name: "script-timeout", typ: "duration", serveOnly: true,
			usage: "time limit of one Lua script run (EVAL); past it the run stops, its writes rolled back (1ms to 4s, below the write path's 5s)",
			value: &durationValue{p: &c.ScriptTimeout, min: time.Millisecond}},
		{name: "max-value-size", typ: "size", serveOnly: true,
			usage: "largest value a client may write (1B to 512MiB, and at most --max-memory)",
			value: &sizeValue{p: &c.MaxValueSize, min: 1, max: MaxMaxValueSize}},
		{name: "access-flush-interval", typ: "duration", serveOnly: true,
			usage: "period of the batched last_accessed_at update (at least 100ms)",
			value: &durationValue{p: &c.AccessFlushInterval, min: 100 * time.Millisecond}},
		{name: "refresh-interval", typ: "duration", serveOnly: true,
			usage: "period of the refresh worker (at least 1s)",
			value: &durationValue{p: &c.RefreshInterval, min: time.Second}},
		{name: "refresh-ahead", typ: "duration", serveOnly: true,
			usage: "recompute keys with a loader this long before they expire",
			value: &durationValue{p: &c.RefreshAhead, zeroOK: true}},
		{name: "refresh-window", typ: "duration", serveOnly: true,
			usage: "refresh only keys used within this window; 0 refreshes none",
			value: &durationValue{p: &c.RefreshWindow, zeroOK: true}},
		{name: "refresh-lock-stale", typ: "duration", serveOnly: true,
			usage: "a refresh lock older than this is abandoned and reclaimed (at least 1s)",
			value: &durationValue{p: &c.RefreshLockStale, min: time.Second}},
		{name: "serve-stale", typ: "duration", serveOnly: true,
			usage: "serve an expired value for at most this long while its refresh runs; 0 never",
			value: &durationValue{p: &c.ServeStale, zeroOK: true}},
		{name: "cleanup-interval", typ: "duration", serveOnly: true,
			usage: "period of the cleanup job (at least 1s)",
			value: &durationValue{p: &c.CleanupInterval, min: time.Second}},
		{name: "retention", typ: "duration", serveOnly: true,
			usage: "cleanup deletes keys unused for this long (at least 1m)",
			value: &durationValue{p: &c.Retention, min: time.Minute}},
		{name: "expired-grace", typ: "duration", serveOnly: true,
			usage: "cleanup deletes keys expired for this long",
			value: &durationValue{p: &c.ExpiredGrace, zeroOK: true}},
		{name: "unsigned-payloads", typ: "auto|accept|reject", serveOnly: true,
			usage: "apply notifications without a MAC (triggers older than migration 0005): auto while the database's " +
				"triggers do not sign, accept always (a fleet mid-upgrade), reject never (after the rollout)",
			value: &enumValue[listener.UnsignedPolicy]{p: &c.UnsignedPayloads,
				allowed: []listener.UnsignedPolicy{listener.UnsignedAuto, listener.UnsignedAccept, listener.UnsignedReject}}},
		{name: "no-flush", serveOnly: true,
			usage: "refuse FLUSHDB and FLUSHALL (for instance while sidecars older than migration 0010, which skip its flush record, still run)",
			value: &boolValue{p: &c.NoFlush}},
		{name: "migrate", serveOnly: true,
			usage: "run the migrations before serving",
			value: &boolValue{p: &c.Migrate}},
		{name: "allow-shared-schema", migrates: true,
			usage: "let migrate use a schema in which roles other than pgmirror's may CREATE (see docs/security.md)",
			value: &boolValue{p: &c.AllowSharedSchema}},
		{name: "log-level", typ: "level",
			usage: "trace, debug, info, warn or error",
			value: &enumValue[string]{p: &c.LogLevel, allowed: LogLevels}},
		{name: "log-json",
			usage: "log JSON lines instead of text",
			value: &boolValue{p: &c.LogJSON}},
	}
}

// appliesTo reports whether the setting is a flag of subcommand cmd.
func (s *setting) appliesTo(cmd string) bool {
	switch {
	case s.serveOnly:
		return cmd == "serve"
	case s.migrates:
		return cmd == "serve" || cmd == "migrate"
	}
	return true
}

// envName is the environment variable of a flag: PGMIRROR_ and the name in upper snake case.
func (s *setting) envNames() []string {
	if s.env != nil {
		return s.env
	}
	return []string{"PGMIRROR_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))}
}

// shown is the value as it may appear in messages: secrets are redacted.
func (s *setting) shown(v string) string {
	if s.secret {
		return redactDSN(v)
	}
	return v
}

// recordingValue remembers the first failing Set, because package flag flattens its error into text.
type recordingValue struct {
	flag.Value
	s      *setting
	failed **ValueError
}

func (v recordingValue) Set(str string) error {
	if err := v.Value.Set(str); err != nil {
		if *v.failed == nil {
			*v.failed = &ValueError{Source: "flag --" + v.s.name, Value: v.s.shown(str), Err: err}
		}
		return err
	}
	v.s.source = "flag --" + v.s.name
	return nil
}

// IsBoolFlag lets package flag accept a bare --migrate.
func (v recordingValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// UsageError is a command line that cannot be understood; main prints the usage with it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// ParseConfig reads the settings of subcommand cmd ("serve" or "migrate") from args, then env
// (os.Environ form) for each flag not given, then the defaults. It returns flag.ErrHelp for -h, a
// *ValueError for a bad value, an *UsageError for a malformed command line, and warnings about
// PGMIRROR_* variables that name no setting (a typo would otherwise be silently ignored).
// extra registers a subcommand's own flags (watch, unwatch) beside the settings.
func ParseConfig(cmd string, args []string, env []string, extra ...func(*flag.FlagSet)) (Config, []string, error) {
	c := DefaultConfig()
	var failed *ValueError
	fs := flag.NewFlagSet("pgmirror "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // main prints our own messages and usage, with -- names
	fs.Usage = func() {}
	all := settings(&c)
	for _, s := range all {
		if !s.appliesTo(cmd) {
			continue
		}
		s.source = sourceDefault
		fs.Var(recordingValue{Value: s.value, s: s, failed: &failed}, s.name, s.usage)
	}
	for _, register := range extra {
		register(fs)
	}

	if err := fs.Parse(args); err != nil {
		switch {
		case errors.Is(err, flag.ErrHelp):
			return Config{}, nil, flag.ErrHelp
		case failed != nil:
			return Config{}, nil, failed
		default:
			return Config{}, nil, &UsageError{Msg: dashDash(err.Error())}
		}
	}
	if fs.NArg() > 0 {
		return Config{}, nil, &UsageError{Msg: fmt.Sprintf("unexpected argument %q (pgmirror %s takes only flags)", fs.Arg(0), cmd)}
	}

	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	vars := envMap(env)
	for _, s := range all {
		if given[s.name] || !s.appliesTo(cmd) {
			continue
		}
		if err := s.setFromEnv(vars); err != nil {
			return Config{}, nil, err
		}
	}

	byName := map[string]*setting{}
	for _, s := range all {
		byName[s.name] = s
	}
	if err := c.validate(byName); err != nil {
		return Config{}, nil, err
	}
	return c, unknownEnv(env, all), nil
}

// setFromEnv applies the first of the setting's environment variables that is set.
func (s *setting) setFromEnv(vars map[string]string) error {
	for _, name := range s.envNames() {
		v, ok := vars[name]
		// Deployment templates often render an unset value as "", which should mean "default".
		if !ok || (v == "" && !s.emptyEnv) {
			continue
		}
		if err := s.value.Set(v); err != nil {
			return &ValueError{Source: "environment variable " + name, Value: s.shown(v), Err: err}
		}
		s.source = "environment variable " + name
		return nil
	}
	return nil
}

// envMap indexes env like os.Getenv does: the first of duplicate entries wins.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if _, dup := m[k]; ok && !dup {
			m[k] = v
		}
	}
	return m
}

// unknownEnv lists the PGMIRROR_* variables in env that belong to no setting.
func unknownEnv(env []string, all []*setting) []string {
	known := map[string]bool{}
	for _, s := range all {
		for _, name := range s.envNames() {
			known[name] = true
		}
	}
	var warnings []string
	for name := range envMap(env) {
		if strings.HasPrefix(name, "PGMIRROR_") && !known[name] {
			warnings = append(warnings, name)
		}
	}
	sort.Strings(warnings)
	return warnings
}

// dashDash rewrites package flag's "-name" in its messages as the "--name" our usage shows.
func dashDash(msg string) string {
	for _, prefix := range []string{"flag provided but not defined: -", "flag needs an argument: -"} {
		if rest, ok := strings.CutPrefix(msg, prefix); ok {
			return prefix[:len(prefix)-1] + "--" + strings.TrimPrefix(rest, "-")
		}
	}
	return msg
}
