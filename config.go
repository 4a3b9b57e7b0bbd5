package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/lib/pq"

	"pgmirror/listener"
	"pgmirror/pgstore"
)

// Defaults of the settings of SPEC §3, named so that tests and later components can refer to them.
const (
	DefaultSocket              = "./pgmirror.sock"
	DefaultSocketMode          = os.FileMode(0o660)
	DefaultNamespace           = ""
	DefaultHTTPAddr            = "127.0.0.1:9187"
	DefaultReloadInterval      = 5 * time.Minute
	DefaultMaxMemory           = 256 * MiB
	DefaultMaxStaleness        = 30 * time.Second
	DefaultStaleReads          = StaleReadsServe
	DefaultMaxClients          = 10000
	DefaultSubscriberBuffer    = 4096
	DefaultMaxClientBuffers    = 0 // auto: see AutoMaxClientBuffers
	DefaultClientOutputTimeout = 30 * time.Second
	DefaultWriteInFlight       = 1
	DefaultMaxDBConns          = pgstore.DefaultMaxConns
	DefaultLoaderTimeout       = pgstore.DefaultLoaderTimeout
	MaxWriteLinger             = 100 * time.Millisecond
	DefaultMaxValueSize        = 16 * MiB
	DefaultAccessFlushInterval = 5 * time.Second
	DefaultRefreshInterval     = 30 * time.Second
	DefaultRefreshAhead        = 10 * time.Second
	DefaultRefreshWindow       = 7 * Day
	DefaultRefreshLockStale    = 5 * time.Minute
	DefaultServeStale          = time.Duration(0)
	DefaultCleanupInterval     = time.Minute
	DefaultRetention           = 7 * Day
	DefaultExpiredGrace        = time.Hour
	DefaultMigrate             = false
	DefaultAllowSharedSchema   = false
	DefaultUnsignedPayloads    = listener.UnsignedAuto
	DefaultLogLevel            = "info"
	DefaultLogJSON             = false
)

// Units of sizes and durations that are not in the standard library.
const (
	KiB = int64(1) << 10
	MiB = int64(1) << 20
	GiB = int64(1) << 30
	TiB = int64(1) << 40

	Day = 24 * time.Hour
)

// Bounds of the settings; each one keeps a typo from turning into an outage.
const (
	// MinMaxMemory is the smallest mirror budget: below it ristretto's own overhead dominates.
	MinMaxMemory = MiB
	// MaxMaxMemory catches a unit typo (GiB for MiB) before the sidecar claims the node's memory.
	MaxMaxMemory = TiB
	// MaxMaxValueSize is Redis's proto-max-bulk-len default, well under Postgres's 1GB field limit
	// once a value is base64-encoded or escaped on its way through the protocol.
	MaxMaxValueSize = 512 * MiB
	// MaxMaxClients is far above what one sidecar should serve, and keeps file descriptors bounded.
	MaxMaxClients = 1_000_000
	// MinAutoClientBuffers is the least --max-client-buffers=auto gives: the fixed part of the
	// container headroom docs/operations.md asks for (1.5 x --max-memory + 64 MiB).
	MinAutoClientBuffers = 64 * MiB
	// MaxKeyBytes is the key length limit of cache_entries (SPEC §4); a namespace must leave room for keys.
	MaxKeyBytes = 4000
	// maxSocketPath is sun_path on Linux (108 bytes) minus its terminating NUL.
	maxSocketPath = 107
)

// StaleReads says what reads do once the listener has been down longer than MaxStaleness.
type StaleReads string

// The values of StaleReads.
const (
	// StaleReadsServe keeps serving the mirror, which may miss recent changes.
	StaleReadsServe StaleReads = "serve"
	// StaleReadsError answers reads with an error until the listener is back.
	StaleReadsError StaleReads = "error"
)

// LogLevels are the values --log-level accepts, from most to least verbose.
var LogLevels = []string{"trace", "debug", "info", "warn", "error"}

// Config is every setting of SPEC §3, already validated, with typed values.
type Config struct {
	// DSN is the Postgres connection string (URL or key=value); empty means libpq's PG* variables and defaults.
	DSN string
	// ListenDSN is the connection for the LISTEN session; it equals DSN unless set, because a pooler cannot LISTEN.
	ListenDSN string
	// Socket is the path of the Unix socket clients connect to.
	Socket string
	// SocketMode is the permission bits of the socket file.
	SocketMode os.FileMode
	// Namespace is a key prefix added and removed transparently; clients only see keys under it.
	Namespace string
	// HTTPAddr is the host:port of the admin HTTP server; empty disables it.
	HTTPAddr string
	// ReloadInterval is the period of full reloads (jittered by the reloader); 0 disables them.
	ReloadInterval time.Duration
	// MaxMemory is the byte budget of the whole mirror: values and the key index.
	MaxMemory int64
	// MaxStaleness is how long the listener may be down before StaleReads applies.
	MaxStaleness time.Duration
	// StaleReads is what reads do once the listener has been down longer than MaxStaleness.
	StaleReads StaleReads
	// MaxClients is the number of concurrent client connections accepted.
	MaxClients int
	// WriteInFlight is how many write batches may run in Postgres at once,
	// each on its own connection (batches in flight never share a key).
	WriteInFlight int
	// WriteLinger holds a write batch back until its oldest command has
	// waited this long, so more writes share a commit and a notification.
	WriteLinger time.Duration
	// MaxDBConns bounds the sidecar's Postgres connections (the listener's
	// comes on top); loaders and fetches may use all but those kept for the
	// writer, reloads and jobs (pgstore.ReservedConns).
	MaxDBConns int
	// LoaderTimeout bounds a loader computation's statements (server-side
	// statement_timeout) and its wait for a connection.
	LoaderTimeout time.Duration
	// SubscriberBuffer is how many keyspace notifications may wait for one
	// subscriber before it is disconnected.
	SubscriberBuffer int
	// MaxClientBuffers is the budget of all clients' buffers together (commands being read,
	// replies and pushes waiting); past it the largest consumers are disconnected. 0 is "auto":
	// see ClientBuffers.
	MaxClientBuffers int64
	// ClientOutputTimeout disconnects a client whose replies have not drained for this long.
	ClientOutputTimeout time.Duration
	// MaxValueSize is the largest value, in bytes, a client may write.
	MaxValueSize int64
	// AccessFlushInterval is the period of the batched last_accessed_at update.
	AccessFlushInterval time.Duration
	// RefreshInterval is the period of the refresh worker.
	RefreshInterval time.Duration
	// RefreshAhead is how long before expiry a key with a loader is recomputed.
	RefreshAhead time.Duration
	// RefreshWindow is how recently a key must have been used to be worth refreshing.
	RefreshWindow time.Duration
	// RefreshLockStale is the age after which a refresh lock is considered abandoned and reclaimed.
	RefreshLockStale time.Duration
	// ServeStale is how long an expired value may be served while its refresh runs; 0 never.
	ServeStale time.Duration
	// CleanupInterval is the period of the cleanup job.
	CleanupInterval time.Duration
	// Retention is how long an unused key is kept before cleanup deletes it.
	Retention time.Duration
	// ExpiredGrace is how long an expired key is kept before cleanup deletes it.
	ExpiredGrace time.Duration
	// UnsignedPayloads says whether notification payloads without a MAC
	// (format 1, from triggers older than migration 0005) are applied.
	UnsignedPayloads listener.UnsignedPolicy
	// Migrate runs the migrations before serving.
	Migrate bool
	// AllowSharedSchema lets migrate use a schema in which roles other than
	// pgmirror's may create objects (docs/security.md); refused by default.
	AllowSharedSchema bool
	// LogLevel is one of LogLevels.
	LogLevel string
	// LogJSON selects hclog's JSON format instead of its text format.
	LogJSON bool
}

// DefaultConfig returns the configuration used when no flag or environment variable is set.
func DefaultConfig() Config {
	return Config{
		Socket:              DefaultSocket,
		SocketMode:          DefaultSocketMode,
		Namespace:           DefaultNamespace,
		HTTPAddr:            DefaultHTTPAddr,
		ReloadInterval:      DefaultReloadInterval,
		MaxMemory:           DefaultMaxMemory,
		MaxStaleness:        DefaultMaxStaleness,
		StaleReads:          DefaultStaleReads,
		MaxClients:          DefaultMaxClients,
		SubscriberBuffer:    DefaultSubscriberBuffer,
		MaxClientBuffers:    DefaultMaxClientBuffers,
		ClientOutputTimeout: DefaultClientOutputTimeout,
		WriteInFlight:       DefaultWriteInFlight,
		MaxDBConns:          DefaultMaxDBConns,
		LoaderTimeout:       DefaultLoaderTimeout,
		MaxValueSize:        DefaultMaxValueSize,
		AccessFlushInterval: DefaultAccessFlushInterval,
		RefreshInterval:     DefaultRefreshInterval,
		RefreshAhead:        DefaultRefreshAhead,
		RefreshWindow:       DefaultRefreshWindow,
		RefreshLockStale:    DefaultRefreshLockStale,
		ServeStale:          DefaultServeStale,
		CleanupInterval:     DefaultCleanupInterval,
		Retention:           DefaultRetention,
		ExpiredGrace:        DefaultExpiredGrace,
		UnsignedPayloads:    DefaultUnsignedPayloads,
		Migrate:             DefaultMigrate,
		AllowSharedSchema:   DefaultAllowSharedSchema,
		LogLevel:            DefaultLogLevel,
		LogJSON:             DefaultLogJSON,
	}
}

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

// settings lists every setting of SPEC §3 bound to the fields of c, in usage order.
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
			value: &stringValue{p: &c.Namespace, check: checkNamespace}},
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
		{name: "max-client-buffers", typ: "size|auto", serveOnly: true,
			usage: "budget of all clients' buffers together (commands being read, replies and pushes waiting); past it the largest are disconnected; auto: the largest of 64MiB, --max-memory/4 and 4 x --max-value-size",
			value: &sizeValue{p: &c.MaxClientBuffers, min: MiB, max: MaxMaxMemory, auto: true}},
		{name: "client-output-timeout", typ: "duration", serveOnly: true,
			usage: "disconnect a client whose replies have not drained for this long (at least 1s)",
			value: &durationValue{p: &c.ClientOutputTimeout, min: time.Second}},
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

// errUsage is a command line that cannot be understood; main prints the usage with it.
type errUsage struct{ msg string }

func (e *errUsage) Error() string { return e.msg }

// parseConfig reads the settings of subcommand cmd ("serve" or "migrate") from args, then env
// (os.Environ form) for each flag not given, then the defaults. It returns flag.ErrHelp for -h, a
// *ValueError for a bad value, an *errUsage for a malformed command line, and warnings about
// PGMIRROR_* variables that name no setting (a typo would otherwise be silently ignored).
// extra registers a subcommand's own flags (watch, unwatch) beside the settings.
func parseConfig(cmd string, args []string, env []string, extra ...func(*flag.FlagSet)) (Config, []string, error) {
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
			return Config{}, nil, &errUsage{msg: dashDash(err.Error())}
		}
	}
	if fs.NArg() > 0 {
		return Config{}, nil, &errUsage{msg: fmt.Sprintf("unexpected argument %q (pgmirror %s takes only flags)", fs.Arg(0), cmd)}
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

// validate checks what no single value can check alone, and resolves ListenDSN.
func (c *Config) validate(byName map[string]*setting) error {
	if c.MaxValueSize > c.MaxMemory {
		return fmt.Errorf("--max-value-size %s (from %s) is larger than --max-memory %s (from %s): no such value could be cached",
			formatSize(c.MaxValueSize), byName["max-value-size"].source, formatSize(c.MaxMemory), byName["max-memory"].source)
	}
	if least := c.MaxValueSize + 2*MiB; c.MaxClientBuffers != 0 && c.MaxClientBuffers < least {
		return fmt.Errorf("--max-client-buffers %s (from %s) is less than --max-value-size + 2MiB (%s): a client sending one largest value would be disconnected",
			formatSize(c.MaxClientBuffers), byName["max-client-buffers"].source, formatSize(least))
	}
	if c.WriteLinger > MaxWriteLinger {
		return fmt.Errorf("--write-linger %s (from %s) is over %s: every write would wait that long; use a few milliseconds at most",
			formatDuration(c.WriteLinger), byName["write-linger"].source, formatDuration(MaxWriteLinger))
	}
	if reserved := pgstore.ReservedConns(c.WriteInFlight); c.MaxDBConns <= reserved {
		return fmt.Errorf("--max-db-conns %d (from %s) leaves no connection for loaders and fetches: the writer "+
			"(--write-inflight %d), a reload and the jobs keep %d; set it to at least %d",
			c.MaxDBConns, byName["max-db-conns"].source, c.WriteInFlight, reserved, reserved+1)
	}
	if err := checkDSN(c.DSN, byName["dsn"]); err != nil {
		return err
	}
	if c.ListenDSN == "" {
		c.ListenDSN = c.DSN
	} else if err := checkDSN(c.ListenDSN, byName["listen-dsn"]); err != nil {
		return err
	}
	return nil
}

// ClientBuffers returns MaxClientBuffers, resolving "auto".
func (c Config) ClientBuffers() int64 {
	if c.MaxClientBuffers == 0 {
		return AutoMaxClientBuffers(c.MaxMemory, c.MaxValueSize)
	}
	return c.MaxClientBuffers
}

// AutoMaxClientBuffers is --max-client-buffers=auto: the largest of 64 MiB, a quarter of
// --max-memory and four largest values. The container limit docs/operations.md asks for leaves
// 0.5 x --max-memory + 64 MiB beside the mirror; client buffers may take about half of it, and
// at least four clients may send or hold a largest value at once.
func AutoMaxClientBuffers(maxMemory, maxValueSize int64) int64 {
	return max(MinAutoClientBuffers, maxMemory/4, 4*maxValueSize)
}

// checkDSN parses dsn as lib/pq will, so a malformed one stops the process before it starts.
// Like a connection, it reads the PG* variables of the process environment.
func checkDSN(dsn string, s *setting) error {
	_, err := pq.NewConfig(dsn)
	if err == nil {
		return nil
	}
	// A url.Error quotes the whole URL, password included; its inner error says what is wrong.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	err = errors.New(redactSecrets(err.Error(), dsn))
	if s == nil || s.source == sourceDefault {
		return fmt.Errorf("invalid Postgres connection settings from the PG* environment variables: %w", err)
	}
	return &ValueError{Source: s.source, Value: redactDSN(dsn), Err: err}
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

// stringValue is a string flag with an optional check.
type stringValue struct {
	p     *string
	check func(string) error
}

func (v *stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}

func (v *stringValue) Set(s string) error {
	if v.check != nil {
		if err := v.check(s); err != nil {
			return err
		}
	}
	*v.p = s
	return nil
}

func checkSocketPath(s string) error {
	switch {
	case s == "":
		return errors.New("want a path for the Unix socket")
	case len(s) > maxSocketPath:
		return fmt.Errorf("a Unix socket path may have at most %d bytes, this one has %d: use a shorter (or relative) path", maxSocketPath, len(s))
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("a path cannot contain a NUL byte")
	}
	return nil
}

func checkNamespace(s string) error {
	switch {
	case !utf8.ValidString(s):
		return errors.New("want valid UTF-8: keys are Postgres text")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("want no NUL byte: keys are Postgres text")
	case len(s) >= MaxKeyBytes:
		return fmt.Errorf("want fewer than %d bytes, the key length limit, so keys fit under it", MaxKeyBytes)
	}
	return nil
}

func checkHTTPAddr(s string) error {
	if s == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf(`want host:port like 127.0.0.1:9187 or :9187, or "" to disable`)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" || n > 65535 {
		return fmt.Errorf("want a port number from 0 to 65535 after the colon, like 127.0.0.1:9187")
	}
	return nil
}

// boolValue is a boolean flag read with strconv.ParseBool, from the command line and the environment alike.
type boolValue struct{ p *bool }

func (v *boolValue) String() string {
	if v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.New("want true or false (also 1/0, t/f)")
	}
	*v.p = b
	return nil
}

func (v *boolValue) IsBoolFlag() bool { return true }

// intValue is an integer flag within [min, max].
type intValue struct {
	p        *int
	min, max int
}

func (v *intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("want a whole number from %d to %d", v.min, v.max)
	}
	if n < v.min || n > v.max {
		return fmt.Errorf("want a whole number from %d to %d", v.min, v.max)
	}
	*v.p = n
	return nil
}

// enumValue is a flag that takes one of a few words, case-insensitively.
type enumValue[T ~string] struct {
	p       *T
	allowed []T
}

func (v *enumValue[T]) String() string {
	if v.p == nil {
		return ""
	}
	return string(*v.p)
}

func (v *enumValue[T]) Set(s string) error {
	want := strings.ToLower(strings.TrimSpace(s))
	words := make([]string, len(v.allowed))
	for i, a := range v.allowed {
		if string(a) == want {
			*v.p = a
			return nil
		}
		words[i] = string(a)
	}
	return fmt.Errorf("want one of %s", strings.Join(words, ", "))
}

// modeValue is a file mode given in octal, with or without a leading 0 or 0o.
type modeValue struct{ p *os.FileMode }

func (v *modeValue) String() string {
	if v.p == nil {
		return "0000"
	}
	return fmt.Sprintf("%04o", uint32(*v.p))
}

func (v *modeValue) Set(s string) error {
	t := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0o"), "0O")
	n, err := strconv.ParseUint(t, 8, 32)
	if err != nil || t == "" || t[0] == '+' || t[0] == '-' {
		return errors.New("want an octal file mode like 0660")
	}
	if n > 0o777 {
		return errors.New("want an octal file mode of at most 0777 (permission bits only)")
	}
	*v.p = os.FileMode(n)
	return nil
}

// durationValue is a non-negative duration in Go syntax, plus a leading number of days ("7d", "1d12h").
type durationValue struct {
	p      *time.Duration
	min    time.Duration // smallest value other than 0; 0 means "greater than 0"
	zeroOK bool          // 0 is allowed (it means "off")
}

func (v *durationValue) String() string {
	if v.p == nil {
		return "0"
	}
	return formatDuration(*v.p)
}

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	switch {
	case d == 0 && v.zeroOK:
	case d == 0 && v.min == 0:
		return errors.New("want a duration greater than 0, like 30s or 5m")
	case d < v.min && v.zeroOK:
		return fmt.Errorf("want 0 (disabled) or a duration of at least %s", formatDuration(v.min))
	case d < v.min:
		return fmt.Errorf("want a duration of at least %s", formatDuration(v.min))
	}
	*v.p = d
	return nil
}

var (
	daysRE   = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)d(.*)$`)
	errWantD = errors.New("want a duration like 30s or 5m (units ns, us, ms, s, m, h, d)")
)

// parseDuration accepts what time.ParseDuration accepts, without a sign, plus days: the
// defaults of --retention and --refresh-window are 7d, and nobody wants to type 168h.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("want a duration like 30s or 5m; negative durations are not allowed")
	}
	if strings.HasPrefix(s, "+") {
		return 0, errWantD
	}
	var days time.Duration
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseFloat(m[1], 64)
		if err != nil || n*float64(Day) > float64(1<<62) {
			return 0, errWantD
		}
		days = time.Duration(n * float64(Day))
		s = m[2]
		if s == "" {
			return days, nil
		}
		if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
			return 0, errWantD
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > 1<<62 {
		return 0, errWantD
	}
	return days + d, nil
}

// formatDuration prints d so that parseDuration reads it back, without time.Duration's "0s" tails.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	if d%Day == 0 {
		return strconv.FormatInt(int64(d/Day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// sizeValue is a byte count within [min, max].
type sizeValue struct {
	p        *int64
	min, max int64
	auto     bool // "auto" is a value, stored as 0
}

func (v *sizeValue) String() string {
	if v.p == nil {
		return "0"
	}
	if v.auto && *v.p == 0 {
		return "auto"
	}
	return formatSize(*v.p)
}

func (v *sizeValue) Set(s string) error {
	if v.auto && strings.EqualFold(strings.TrimSpace(s), "auto") {
		*v.p = 0
		return nil
	}
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	if n < v.min || n > v.max {
		return fmt.Errorf("want a size from %s to %s", formatSize(v.min), formatSize(v.max))
	}
	*v.p = n
	return nil
}

// sizeUnits maps lower-case unit names to bytes. Binary units are the documented ones; the
// Kubernetes spellings (Mi) are accepted because the pod spec next to this flag uses them, and
// KB/MB/GB mean powers of 1000 as in SI and Kubernetes (M). A bare K/M/G is refused as ambiguous.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
	"ki": KiB, "mi": MiB, "gi": GiB, "ti": TiB,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}

var (
	sizeRE     = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)$`)
	errWantSiz = errors.New("want a size like 256MiB: bytes, or a number with B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB: powers of 1000)")
)

// parseSize reads a byte count like "1048576", "256MiB" or "1.5GiB"; fractions of a byte are dropped.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("want a size like 256MiB; negative sizes are not allowed")
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, errWantSiz
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, errWantSiz
	}
	r, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, errWantSiz
	}
	r.Mul(r, new(big.Rat).SetInt64(unit))
	n := new(big.Int).Quo(r.Num(), r.Denom())
	if !n.IsInt64() {
		return 0, errors.New("size too large")
	}
	return n.Int64(), nil
}

// formatSize prints n in the largest unit that divides it, so parseSize reads it back exactly.
func formatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
		if n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// RedactedDSN renders the DSN for logs with any password replaced by xxxxx.
func (c Config) RedactedDSN() string { return redactDSN(c.DSN) }

// RedactedListenDSN renders the listener's DSN for logs with any password replaced by xxxxx.
func (c Config) RedactedListenDSN() string { return redactDSN(c.ListenDSN) }

const redacted = "xxxxx"

// isURLDSN says whether lib/pq reads dsn as a URL rather than as key=value pairs.
func isURLDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// isSecretKey says whether a connection parameter holds a secret: password, and sslpassword
// (the passphrase of the client key).
func isSecretKey(key string) bool { return strings.Contains(strings.ToLower(key), "password") }

// redactDSN replaces the passwords in a URL or key=value DSN by xxxxx.
func redactDSN(dsn string) string {
	if isURLDSN(dsn) {
		return redactURLDSN(dsn)
	}
	out, _ := scanKeyValueDSN(dsn)
	return out
}

var urlQueryPasswordRE = regexp.MustCompile(`(?i)([?&][^=&]*password[^=&]*=)[^&#]*`)

func redactURLDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		// Unparsable (say, an unescaped '/' in the password): cut the user info by hand,
		// erring on the side of hiding too much.
		scheme, rest, _ := strings.Cut(dsn, "://")
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			user, _, hasPass := strings.Cut(rest[:at], ":")
			if hasPass {
				rest = user + ":" + redacted + rest[at:]
			}
		}
		return urlQueryPasswordRE.ReplaceAllString(scheme+"://"+rest, "${1}"+redacted)
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	// Edit the raw query rather than re-encoding it, so the rest of the DSN reads as given.
	u.RawQuery = urlQueryPasswordRE.ReplaceAllString("?"+u.RawQuery, "${1}"+redacted)[1:]
	return u.String()
}

// scanKeyValueDSN walks a key=value DSN with lib/pq's quoting rules, returning it with the secret
// values replaced by xxxxx, and the secret values themselves (as written and as meant).
func scanKeyValueDSN(dsn string) (string, []string) {
	var (
		out     strings.Builder
		secrets []string
		copied  int // dsn[:copied] is in out already
		i       int
	)
	peek := func() (rune, int) {
		if i >= len(dsn) {
			return 0, 0
		}
		return utf8.DecodeRuneInString(dsn[i:])
	}
	skipSpace := func() {
		for r, n := peek(); n > 0 && unicode.IsSpace(r); r, n = peek() {
			i += n
		}
	}
	// readEscaped consumes one rune, and the next one too when the first is a backslash.
	// It copies bytes, not runes, so a password that is not valid UTF-8 is found as written.
	readEscaped := func(val *strings.Builder) bool {
		r, n := peek()
		if r == '\\' {
			i += n
			if _, n = peek(); n == 0 {
				return false
			}
		}
		val.WriteString(dsn[i : i+n])
		i += n
		return true
	}
	// unparsable ends the scan: lib/pq will refuse the DSN, and the message must still not show
	// a password, so the rest is hidden when it is or may hold one.
	unparsable := func(from int, secret bool, why string) (string, []string) {
		rest := dsn[from:]
		out.WriteString(dsn[copied:from])
		if !secret && !isSecretKey(rest) {
			out.WriteString(rest)
			return out.String(), secrets
		}
		out.WriteString(redacted + " (" + why + ")")
		secrets = append(secrets, rest, strings.TrimPrefix(rest, "'"))
		return out.String(), secrets
	}

	for {
		skipSpace()
		if i >= len(dsn) {
			break
		}
		keyStart := i
		for r, n := peek(); n > 0 && !unicode.IsSpace(r) && r != '='; r, n = peek() {
			i += n
		}
		key := dsn[keyStart:i]
		skipSpace()
		if r, n := peek(); n == 0 || r != '=' {
			return unparsable(keyStart, false, "unparsable")
		}
		i++
		skipSpace()
		valStart := i
		var val strings.Builder
		quoted := false
		if r, n := peek(); n > 0 && r == '\'' {
			quoted = true
			i++
			closed := false
			for r, n := peek(); n > 0; r, n = peek() {
				if r == '\'' {
					i++
					closed = true
					break
				}
				if !readEscaped(&val) {
					break
				}
			}
			if !closed {
				return unparsable(valStart, isSecretKey(key), "unterminated quote")
			}
		} else {
			for r, n := peek(); n > 0 && !unicode.IsSpace(r); r, n = peek() {
				if !readEscaped(&val) {
					break
				}
			}
		}
		if !isSecretKey(key) || i == valStart {
			continue
		}
		raw := dsn[valStart:i]
		out.WriteString(dsn[copied:valStart])
		if quoted {
			raw = raw[1 : len(raw)-1]
			out.WriteString("'" + redacted + "'")
		} else {
			out.WriteString(redacted)
		}
		copied = i
		secrets = append(secrets, val.String(), raw)
	}
	out.WriteString(dsn[copied:])
	return out.String(), secrets
}

// dsnSecrets returns the passwords in dsn, in every spelling an error message might quote.
func dsnSecrets(dsn string) []string {
	var found []string
	if isURLDSN(dsn) {
		_, rest, _ := strings.Cut(dsn, "://")
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pass, ok := strings.Cut(rest[:at], ":"); ok {
				found = append(found, pass)
				if auth, _, _ := strings.Cut(rest[:at], "/"); auth != rest[:at] {
					_, narrow, _ := strings.Cut(auth, ":")
					found = append(found, narrow)
				}
			}
		}
		if u, err := url.Parse(dsn); err == nil {
			if pass, ok := u.User.Password(); ok {
				found = append(found, pass)
			}
		}
		for _, m := range urlQueryPasswordRE.FindAllString(dsn, -1) {
			_, v, _ := strings.Cut(m, "=")
			found = append(found, v)
			if dec, err := url.QueryUnescape(v); err == nil {
				found = append(found, dec)
			}
		}
	} else {
		_, found = scanKeyValueDSN(dsn)
	}
	var all []string
	for _, s := range found {
		if s == "" {
			continue
		}
		q := strconv.Quote(s)
		all = append(all, s, q[1:len(q)-1])
		if j, err := json.Marshal(s); err == nil {
			all = append(all, string(j[1:len(j)-1]))
		}
	}
	return all
}

// redactSecrets replaces in s every password found in the DSNs, however it is spelled there.
// It guards what lib/pq and net/url put in their errors, which main prints and logs.
func redactSecrets(s string, dsns ...string) string {
	var secrets []string
	for _, dsn := range dsns {
		secrets = append(secrets, dsnSecrets(dsn)...)
	}
	// Longest first, so a password that contains another is replaced whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, redacted)
		}
	}
	return s
}

const summary = `pgmirror mirrors the PostgreSQL table cache_entries into memory and serves it
over a Unix socket in the Redis protocol, so any Redis client can read it.

Usage:
  pgmirror serve   [flags]   run the sidecar (also the default with no command)
  pgmirror migrate [flags]   apply migrations and triggers.sql; idempotent, safe from many pods at once
  pgmirror watch   [flags]   keep the cache entries under a prefix in step with a table (copy or invalidate)
  pgmirror unwatch [flags]   stop watching a table
  pgmirror version           print the version
  pgmirror help [command]    print the flags of a command

Exit status: 0 success, 1 runtime failure, 2 bad command line or environment.
`

const valueNotes = `
A flag beats its environment variable, which beats the default. An empty environment
variable counts as unset, except PGMIRROR_HTTP and PGMIRROR_NAMESPACE, where "" is a value.
Durations are Go durations plus days: 30s, 5m, 1h30m, 7d, 1d12h; never negative.
Sizes are bytes, or a number with B, KiB, MiB, GiB, TiB (powers of 1024; Ki, Mi, Gi, Ti too)
or KB, MB, GB, TB (powers of 1000): 1048576, 256MiB, 1.5GiB.
Modes are octal: 0660 or 660. Booleans: true, false, 1, 0.
`

// usage returns the help text of topic: "serve", "migrate", "watch", "unwatch" or "help" (the command summary).
func usage(topic string) string {
	var b strings.Builder
	switch topic {
	case "serve":
		b.WriteString(summary)
		b.WriteString("\nFlags of serve:\n")
	case "watch", "unwatch":
		b.WriteString(watchUsage(topic))
		b.WriteString("\nConnection and log flags of " + topic + ":\n")
	case "migrate":
		b.WriteString("Usage: pgmirror migrate [flags]\n\n")
		b.WriteString("Apply the embedded migrations and triggers.sql, each at most once, in one transaction\n")
		b.WriteString("under an advisory lock, so many pods may run it at once. Prints each step it applies.\n")
		b.WriteString("\nFlags of migrate:\n")
	default:
		b.WriteString(summary)
		b.WriteString("\nRun 'pgmirror help serve', 'pgmirror help migrate', 'pgmirror help watch' or\n'pgmirror help unwatch' for their flags.\n")
		return b.String()
	}
	c := DefaultConfig()
	for _, s := range settings(&c) {
		if !s.appliesTo(topic) {
			continue
		}
		fmt.Fprintf(&b, "  --%s", s.name)
		if s.typ != "" {
			fmt.Fprintf(&b, " %s", s.typ)
		}
		fmt.Fprintf(&b, "  (env %s", strings.Join(s.envNames(), ", then "))
		if def := s.value.String(); def != "" {
			fmt.Fprintf(&b, "; default %s", def)
		}
		fmt.Fprintf(&b, ")\n        %s\n", s.usage)
	}
	b.WriteString(valueNotes)
	return b.String()
}
