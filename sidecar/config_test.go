package sidecar

import (
	"errors"
	"flag"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"pgmirror/listener"
)

// parse is ParseConfig for tests that expect success.
func parse(t *testing.T, cmd string, args []string, env ...string) Config {
	t.Helper()
	c, _, err := ParseConfig(cmd, args, env)
	if err != nil {
		t.Fatalf("ParseConfig(%q, %q, %q): %v", cmd, args, env, err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := parse(t, "serve", nil)
	// The documented defaults (README, Command line), written out rather than taken from the
	// constants they check.
	for _, tt := range []struct {
		field string
		got   any
		want  any
	}{
		{"DSN", c.DSN, ""},
		{"ListenDSN", c.ListenDSN, ""},
		{"Socket", c.Socket, "./pgmirror.sock"},
		{"SocketMode", c.SocketMode, os.FileMode(0o660)},
		{"Namespace", c.Namespace, ""},
		{"HTTPAddr", c.HTTPAddr, "127.0.0.1:9187"},
		{"ReloadInterval", c.ReloadInterval, 5 * time.Minute},
		{"MaxMemory", c.MaxMemory, int64(256 << 20)},
		{"MaxStaleness", c.MaxStaleness, 30 * time.Second},
		{"StaleReads", c.StaleReads, StaleReads("serve")},
		{"MaxClients", c.MaxClients, 10000},
		{"MaxDBConns", c.MaxDBConns, 10},
		{"LoaderTimeout", c.LoaderTimeout, 5 * time.Second},
		{"MaxValueSize", c.MaxValueSize, int64(16 << 20)},
		{"AccessFlushInterval", c.AccessFlushInterval, 5 * time.Second},
		{"RefreshInterval", c.RefreshInterval, 30 * time.Second},
		{"RefreshAhead", c.RefreshAhead, 10 * time.Second},
		{"RefreshWindow", c.RefreshWindow, 7 * 24 * time.Hour},
		{"RefreshLockStale", c.RefreshLockStale, 5 * time.Minute},
		{"ServeStale", c.ServeStale, time.Duration(0)},
		{"CleanupInterval", c.CleanupInterval, time.Minute},
		{"Retention", c.Retention, 7 * 24 * time.Hour},
		{"ExpiredGrace", c.ExpiredGrace, time.Hour},
		{"UnsignedPayloads", c.UnsignedPayloads, listener.UnsignedPolicy("auto")},
		{"Migrate", c.Migrate, false},
		{"LogLevel", c.LogLevel, "info"},
		{"LogJSON", c.LogJSON, false},
	} {
		if tt.got != tt.want {
			t.Errorf("default %s = %#v, want %#v", tt.field, tt.got, tt.want)
		}
	}
	if want := DefaultConfig(); !reflect.DeepEqual(c, want) {
		t.Errorf("parsed defaults differ from DefaultConfig():\n got %+v\nwant %+v", c, want)
	}
}

func TestEveryFlagAndVariable(t *testing.T) {
	// Each setting once by flag and once by variable, to a value other than its default.
	for _, tt := range []struct {
		flag, env, value string
		check            func(Config) bool
	}{
		{"dsn", "PGMIRROR_DSN", "host=/tmp dbname=a", func(c Config) bool { return c.DSN == "host=/tmp dbname=a" && c.ListenDSN == c.DSN }},
		{"listen-dsn", "PGMIRROR_LISTEN_DSN", "host=/primary", func(c Config) bool { return c.ListenDSN == "host=/primary" && c.DSN == "" }},
		{"socket", "PGMIRROR_SOCKET", "/run/pgm/s.sock", func(c Config) bool { return c.Socket == "/run/pgm/s.sock" }},
		{"socket-mode", "PGMIRROR_SOCKET_MODE", "0600", func(c Config) bool { return c.SocketMode == 0o600 }},
		{"namespace", "PGMIRROR_NAMESPACE", "app1:", func(c Config) bool { return c.Namespace == "app1:" }},
		{"requirepass", "PGMIRROR_REQUIREPASS", "s3cret", func(c Config) bool { return c.RequirePass == "s3cret" }},
		{"http", "PGMIRROR_HTTP", ":9187", func(c Config) bool { return c.HTTPAddr == ":9187" }},
		{"reload-interval", "PGMIRROR_RELOAD_INTERVAL", "0", func(c Config) bool { return c.ReloadInterval == 0 }},
		{"max-memory", "PGMIRROR_MAX_MEMORY", "1GiB", func(c Config) bool { return c.MaxMemory == 1<<30 }},
		{"max-staleness", "PGMIRROR_MAX_STALENESS", "2m", func(c Config) bool { return c.MaxStaleness == 2*time.Minute }},
		{"stale-reads", "PGMIRROR_STALE_READS", "error", func(c Config) bool { return c.StaleReads == StaleReadsError }},
		{"max-clients", "PGMIRROR_MAX_CLIENTS", "50", func(c Config) bool { return c.MaxClients == 50 }},
		{"max-value-size", "PGMIRROR_MAX_VALUE_SIZE", "1MiB", func(c Config) bool { return c.MaxValueSize == 1<<20 }},
		{"max-client-buffers", "PGMIRROR_MAX_CLIENT_BUFFERS", "100MiB", func(c Config) bool { return c.MaxClientBuffers == 100<<20 && c.ClientBuffers() == 100<<20 }},
		{"client-output-timeout", "PGMIRROR_CLIENT_OUTPUT_TIMEOUT", "5s", func(c Config) bool { return c.ClientOutputTimeout == 5*time.Second }},
		{"loop-spin", "PGMIRROR_LOOP_SPIN", "0", func(c Config) bool { return c.LoopSpin == 0 }},
		{"max-db-conns", "PGMIRROR_MAX_DB_CONNS", "25", func(c Config) bool { return c.MaxDBConns == 25 }},
		{"loader-timeout", "PGMIRROR_LOADER_TIMEOUT", "30s", func(c Config) bool { return c.LoaderTimeout == 30*time.Second }},
		{"script-timeout", "PGMIRROR_SCRIPT_TIMEOUT", "250ms", func(c Config) bool { return c.ScriptTimeout == 250*time.Millisecond }},
		{"access-flush-interval", "PGMIRROR_ACCESS_FLUSH_INTERVAL", "250ms", func(c Config) bool { return c.AccessFlushInterval == 250*time.Millisecond }},
		{"refresh-interval", "PGMIRROR_REFRESH_INTERVAL", "1m", func(c Config) bool { return c.RefreshInterval == time.Minute }},
		{"refresh-ahead", "PGMIRROR_REFRESH_AHEAD", "0", func(c Config) bool { return c.RefreshAhead == 0 }},
		{"refresh-window", "PGMIRROR_REFRESH_WINDOW", "1d12h", func(c Config) bool { return c.RefreshWindow == 36*time.Hour }},
		{"refresh-lock-stale", "PGMIRROR_REFRESH_LOCK_STALE", "90s", func(c Config) bool { return c.RefreshLockStale == 90*time.Second }},
		{"serve-stale", "PGMIRROR_SERVE_STALE", "15s", func(c Config) bool { return c.ServeStale == 15*time.Second }},
		{"cleanup-interval", "PGMIRROR_CLEANUP_INTERVAL", "10m", func(c Config) bool { return c.CleanupInterval == 10*time.Minute }},
		{"retention", "PGMIRROR_RETENTION", "30d", func(c Config) bool { return c.Retention == 30*24*time.Hour }},
		{"expired-grace", "PGMIRROR_EXPIRED_GRACE", "0", func(c Config) bool { return c.ExpiredGrace == 0 }},
		{"unsigned-payloads", "PGMIRROR_UNSIGNED_PAYLOADS", "reject", func(c Config) bool { return c.UnsignedPayloads == listener.UnsignedReject }},
		{"migrate", "PGMIRROR_MIGRATE", "true", func(c Config) bool { return c.Migrate }},
		{"log-level", "PGMIRROR_LOG_LEVEL", "debug", func(c Config) bool { return c.LogLevel == "debug" }},
		{"log-json", "PGMIRROR_LOG_JSON", "1", func(c Config) bool { return c.LogJSON }},
	} {
		t.Run(tt.flag, func(t *testing.T) {
			if c := parse(t, "serve", []string{"--" + tt.flag + "=" + tt.value}); !tt.check(c) {
				t.Errorf("--%s=%s gave %+v", tt.flag, tt.value, c)
			}
			if c := parse(t, "serve", nil, tt.env+"="+tt.value); !tt.check(c) {
				t.Errorf("%s=%s gave %+v", tt.env, tt.value, c)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		env   []string
		check func(Config) bool
	}{
		{"flag beats env", []string{"--reload-interval=1m"}, []string{"PGMIRROR_RELOAD_INTERVAL=2m"},
			func(c Config) bool { return c.ReloadInterval == time.Minute }},
		{"flag beats a bad env", []string{"--reload-interval=1m"}, []string{"PGMIRROR_RELOAD_INTERVAL=banana"},
			func(c Config) bool { return c.ReloadInterval == time.Minute }},
		{"env beats default", nil, []string{"PGMIRROR_MAX_CLIENTS=7"},
			func(c Config) bool { return c.MaxClients == 7 }},
		{"PGMIRROR_DSN beats DATABASE_URL", nil, []string{"DATABASE_URL=host=/b", "PGMIRROR_DSN=host=/a"},
			func(c Config) bool { return c.DSN == "host=/a" }},
		{"DATABASE_URL alone", nil, []string{"DATABASE_URL=postgres://u@h/db"},
			func(c Config) bool { return c.DSN == "postgres://u@h/db" && c.ListenDSN == c.DSN }},
		{"empty PGMIRROR_DSN falls through", nil, []string{"PGMIRROR_DSN=", "DATABASE_URL=host=/b"},
			func(c Config) bool { return c.DSN == "host=/b" }},
		{"--dsn beats both", []string{"--dsn", "host=/c"}, []string{"PGMIRROR_DSN=host=/a", "DATABASE_URL=host=/b"},
			func(c Config) bool { return c.DSN == "host=/c" }},
		{"listen-dsn kept apart", []string{"--dsn=host=/pooler"}, []string{"PGMIRROR_LISTEN_DSN=host=/primary"},
			func(c Config) bool { return c.DSN == "host=/pooler" && c.ListenDSN == "host=/primary" }},
		{"empty typed env is unset", nil, []string{"PGMIRROR_MAX_MEMORY=", "PGMIRROR_LOG_JSON="},
			func(c Config) bool { return c.MaxMemory == DefaultMaxMemory && !c.LogJSON }},
		{"empty PGMIRROR_HTTP disables", nil, []string{"PGMIRROR_HTTP="},
			func(c Config) bool { return c.HTTPAddr == "" }},
		{"--http= disables", []string{"--http="}, []string{"PGMIRROR_HTTP=:1"},
			func(c Config) bool { return c.HTTPAddr == "" }},
		{"first duplicate wins, as os.Getenv", nil, []string{"PGMIRROR_MAX_CLIENTS=1", "PGMIRROR_MAX_CLIENTS=2"},
			func(c Config) bool { return c.MaxClients == 1 }},
		{"bare bool flag", []string{"--migrate"}, []string{"PGMIRROR_MIGRATE=false"},
			func(c Config) bool { return c.Migrate }},
		{"bool flag false beats env", []string{"--log-json=false"}, []string{"PGMIRROR_LOG_JSON=true"},
			func(c Config) bool { return !c.LogJSON }},
		{"single dash works too", []string{"-max-clients", "3"}, nil,
			func(c Config) bool { return c.MaxClients == 3 }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if c := parse(t, "serve", tt.args, tt.env...); !tt.check(c) {
				t.Errorf("args %q env %q gave %+v", tt.args, tt.env, c)
			}
		})
	}
}

func TestMigrateFlags(t *testing.T) {
	c := parse(t, "migrate", []string{"--dsn=host=/x", "--log-level=warn", "--log-json"},
		"PGMIRROR_RELOAD_INTERVAL=banana") // not a setting of migrate, so not read
	if c.DSN != "host=/x" || c.LogLevel != "warn" || !c.LogJSON {
		t.Errorf("got %+v", c)
	}
	_, _, err := ParseConfig("migrate", []string{"--socket=/x"}, nil)
	var uerr *UsageError
	if !errors.As(err, &uerr) || !strings.Contains(err.Error(), "--socket") {
		t.Errorf("migrate --socket: got %v, want a usage error naming --socket", err)
	}
}

func TestInvalidValues(t *testing.T) {
	for _, tt := range []struct {
		args   []string
		env    []string
		source string // what the message must name
		value  string // the value it must quote
		want   string // part of what it says is expected
	}{
		{[]string{"--reload-interval=banana"}, nil, "flag --reload-interval", "banana", "want a duration like 30s or 5m"},
		{nil, []string{"PGMIRROR_RELOAD_INTERVAL=banana"}, "environment variable PGMIRROR_RELOAD_INTERVAL", "banana", "want a duration"},
		{[]string{"--reload-interval=-1s"}, nil, "flag --reload-interval", "-1s", "negative"},
		{[]string{"--reload-interval=10ms"}, nil, "flag --reload-interval", "10ms", "0 (disabled) or a duration of at least 1s"},
		{[]string{"--reload-interval=30"}, nil, "flag --reload-interval", "30", "want a duration"},
		{[]string{"--max-staleness=-5m"}, nil, "flag --max-staleness", "-5m", "negative"},
		{[]string{"--access-flush-interval=0"}, nil, "flag --access-flush-interval", "0", "at least 100ms"},
		{[]string{"--refresh-interval=0"}, nil, "flag --refresh-interval", "0", "at least 1s"},
		{nil, []string{"PGMIRROR_REFRESH_AHEAD=-1s"}, "environment variable PGMIRROR_REFRESH_AHEAD", "-1s", "negative"},
		{[]string{"--refresh-window=7days"}, nil, "flag --refresh-window", "7days", "want a duration"},
		{[]string{"--refresh-lock-stale=0"}, nil, "flag --refresh-lock-stale", "0", "at least 1s"},
		{[]string{"--serve-stale=-1s"}, nil, "flag --serve-stale", "-1s", "negative"},
		{[]string{"--cleanup-interval=0s"}, nil, "flag --cleanup-interval", "0s", "at least 1s"},
		{[]string{"--retention=30s"}, nil, "flag --retention", "30s", "at least 1m"},
		{[]string{"--expired-grace=x"}, nil, "flag --expired-grace", "x", "want a duration"},
		{[]string{"--max-memory=0"}, nil, "flag --max-memory", "0", "from 1MiB to 1TiB"},
		{[]string{"--max-memory=12XB"}, nil, "flag --max-memory", "12XB", "want a size like 256MiB"},
		{[]string{"--max-memory=-1MiB"}, nil, "flag --max-memory", "-1MiB", "negative"},
		{[]string{"--max-memory=2TiB"}, nil, "flag --max-memory", "2TiB", "from 1MiB to 1TiB"},
		{nil, []string{"PGMIRROR_MAX_MEMORY=256M"}, "environment variable PGMIRROR_MAX_MEMORY", "256M", "want a size"},
		{[]string{"--max-value-size=0"}, nil, "flag --max-value-size", "0", "from 1B to 512MiB"},
		{[]string{"--max-value-size=513MiB"}, nil, "flag --max-value-size", "513MiB", "from 1B to 512MiB"},
		{[]string{"--max-clients=0"}, nil, "flag --max-clients", "0", "from 1 to 1000000"},
		{[]string{"--max-client-buffers=512KiB"}, nil, "flag --max-client-buffers", "512KiB", "from 1MiB to 1TiB"},
		{[]string{"--client-output-timeout=0"}, nil, "flag --client-output-timeout", "0", "at least 1s"},
		{[]string{"--client-output-timeout=100ms"}, nil, "flag --client-output-timeout", "100ms", "at least 1s"},
		{[]string{"--loop-spin=500ns"}, nil, "flag --loop-spin", "500ns", "at least 1µs"},
		{[]string{"--max-db-conns=2"}, nil, "flag --max-db-conns", "2", "from 5 to 10000"},
		{nil, []string{"PGMIRROR_MAX_DB_CONNS=many"}, "environment variable PGMIRROR_MAX_DB_CONNS", "many", "whole number"},
		{[]string{"--loader-timeout=0"}, nil, "flag --loader-timeout", "0", "at least 10ms"},
		{[]string{"--max-clients=lots"}, nil, "flag --max-clients", "lots", "whole number"},
		{nil, []string{"PGMIRROR_MAX_CLIENTS=-3"}, "environment variable PGMIRROR_MAX_CLIENTS", "-3", "from 1 to"},
		{[]string{"--socket-mode=0999"}, nil, "flag --socket-mode", "0999", "octal"},
		{[]string{"--socket-mode=1777"}, nil, "flag --socket-mode", "1777", "at most 0777"},
		{nil, []string{"PGMIRROR_SOCKET_MODE=rw-rw----"}, "environment variable PGMIRROR_SOCKET_MODE", "rw-rw----", "octal"},
		{[]string{"--socket="}, nil, "flag --socket", "", "want a path"},
		{[]string{"--socket=/" + strings.Repeat("s", 200)}, nil, "flag --socket", "/sss", "at most 107 bytes"},
		{[]string{"--stale-reads=maybe"}, nil, "flag --stale-reads", "maybe", "one of serve, error"},
		{[]string{"--unsigned-payloads=sometimes"}, nil, "flag --unsigned-payloads", "sometimes", "one of auto, accept, reject"},
		{nil, []string{"PGMIRROR_STALE_READS=ignore"}, "environment variable PGMIRROR_STALE_READS", "ignore", "one of serve, error"},
		{[]string{"--log-level=verbose"}, nil, "flag --log-level", "verbose", "one of trace, debug, info, warn, error"},
		{nil, []string{"PGMIRROR_LOG_LEVEL=loud"}, "environment variable PGMIRROR_LOG_LEVEL", "loud", "one of trace"},
		{[]string{"--migrate=maybe"}, nil, "flag --migrate", "maybe", "want true or false"},
		{nil, []string{"PGMIRROR_MIGRATE=yes"}, "environment variable PGMIRROR_MIGRATE", "yes", "want true or false"},
		{nil, []string{"PGMIRROR_LOG_JSON=on"}, "environment variable PGMIRROR_LOG_JSON", "on", "want true or false"},
		{[]string{"--http=localhost"}, nil, "flag --http", "localhost", "host:port"},
		{[]string{"--http=:http"}, nil, "flag --http", ":http", "port number"},
		{[]string{"--http=:70000"}, nil, "flag --http", ":70000", "port number"},
		{nil, []string{"PGMIRROR_HTTP=127.0.0.1"}, "environment variable PGMIRROR_HTTP", "127.0.0.1", "host:port"},
		{[]string{"--namespace=a\x00b"}, nil, "flag --namespace", "a\x00b", "NUL"},
		{nil, []string{"PGMIRROR_NAMESPACE=\xff"}, "environment variable PGMIRROR_NAMESPACE", "\xff", "UTF-8"},
		{[]string{"--namespace=" + strings.Repeat("n", 4000)}, nil, "flag --namespace", "nnn", "fewer than 4000 bytes"},
		{[]string{"--dsn=host=x port=notaport"}, nil, "flag --dsn", "host=x port=notaport", ""},
		{nil, []string{"DATABASE_URL=postgres://u@h:badport/x"}, "environment variable DATABASE_URL", "postgres://u@h:badport/x", "invalid port"},
		{[]string{"--listen-dsn=mysql://x"}, nil, "flag --listen-dsn", "mysql://x", "missing"},
	} {
		name := strings.Join(append(append([]string{}, tt.args...), tt.env...), " ")
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			_, _, err := ParseConfig("serve", tt.args, tt.env)
			var verr *ValueError
			if !errors.As(err, &verr) {
				t.Fatalf("got %v, want a *ValueError", err)
			}
			if verr.Source != tt.source || !strings.HasPrefix(verr.Value, tt.value) {
				t.Errorf("source %q value %q, want %q %q", verr.Source, verr.Value, tt.source, tt.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.source) || !strings.Contains(msg, tt.want) {
				t.Errorf("message %q: want it to name %q and say %q", msg, tt.source, tt.want)
			}
		})
	}
}

func TestCrossChecks(t *testing.T) {
	_, _, err := ParseConfig("serve", []string{"--max-memory=8MiB"}, []string{"PGMIRROR_MAX_VALUE_SIZE=16MiB"})
	if err == nil || !strings.Contains(err.Error(), "--max-value-size 16MiB") ||
		!strings.Contains(err.Error(), "--max-memory 8MiB") || !strings.Contains(err.Error(), "environment variable PGMIRROR_MAX_VALUE_SIZE") {
		t.Errorf("got %v, want an error naming both sizes and where they came from", err)
	}
	parse(t, "serve", []string{"--max-memory=16MiB", "--max-value-size=16MiB"})

	// --max-client-buffers must hold one largest command; auto follows the other sizes.
	_, _, err = ParseConfig("serve", []string{"--max-value-size=64MiB", "--max-client-buffers=32MiB"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--max-client-buffers 32MiB (from flag --max-client-buffers)") {
		t.Errorf("budget under one value: %v", err)
	}
	for _, tt := range []struct {
		args []string
		want int64
	}{
		{nil, 64 << 20},
		{[]string{"--max-memory=1GiB"}, 256 << 20},
		{[]string{"--max-value-size=64MiB"}, 256 << 20},
		{[]string{"--max-memory=16MiB", "--max-value-size=1MiB"}, 64 << 20},
		{[]string{"--max-client-buffers=auto", "--max-memory=2GiB"}, 512 << 20},
		{[]string{"--max-client-buffers=18MiB"}, 18 << 20},
	} {
		if got := parse(t, "serve", tt.args).ClientBuffers(); got != tt.want {
			t.Errorf("%q: client buffers %d, want %d", tt.args, got, tt.want)
		}
	}
	// The writer's batches, a reload and the jobs keep --write-inflight + 3
	// connections; loaders and fetches need at least one more.
	_, _, err = ParseConfig("serve", []string{"--max-db-conns=6", "--write-inflight=3"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--max-db-conns 6") || !strings.Contains(err.Error(), "at least 7") {
		t.Errorf("got %v, want an error saying --max-db-conns must be at least 7", err)
	}
	parse(t, "serve", []string{"--max-db-conns=7", "--write-inflight=3"})
}

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: --bogus"},
		{[]string{"--socket"}, "flag needs an argument: --socket"},
		{[]string{"--max-clients=3", "extra"}, `unexpected argument "extra"`},
	} {
		_, _, err := ParseConfig("serve", tt.args, nil)
		var uerr *UsageError
		if !errors.As(err, &uerr) || err.Error() != tt.want && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want a usage error saying %q", tt.args, err, tt.want)
		}
	}
	for _, help := range []string{"-h", "--help", "-help"} {
		if _, _, err := ParseConfig("serve", []string{help}, nil); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: got %v, want flag.ErrHelp", help, err)
		}
	}
}

func TestUnknownEnvWarnings(t *testing.T) {
	_, warnings, err := ParseConfig("migrate", nil, []string{
		"PGMIRROR_MAX_MEMROY=1GiB", "PGMIRROR_SOCKET=/x", "PGMIRROR_DSN=host=/x", "PATH=/bin", "PGHOST=/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	// PGMIRROR_SOCKET is a setting of serve: a shared environment for both commands is normal.
	if want := []string{"PGMIRROR_MAX_MEMROY"}; !reflect.DeepEqual(warnings, want) {
		t.Errorf("warnings %q, want %q", warnings, want)
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"256MiB", 256 << 20, true},
		{"1GiB", 1 << 30, true},
		{"1048576", 1 << 20, true},
		{"1048576B", 1 << 20, true},
		{"16KiB", 16 << 10, true},
		{"2TiB", 2 << 40, true},
		{"512Mi", 512 << 20, true},
		{"256mib", 256 << 20, true},
		{"256 MiB", 256 << 20, true},
		{" 64MiB ", 64 << 20, true},
		{"1.5GiB", 3 << 29, true},
		{"0.5KiB", 512, true},
		{"1KB", 1000, true},
		{"10MB", 10_000_000, true},
		{"2GB", 2_000_000_000, true},
		{"0", 0, true},
		{"12XB", 0, false},
		{"-1MiB", 0, false},
		{"-1", 0, false},
		{"+1MiB", 0, false},
		{"256M", 0, false},
		{"256K", 0, false},
		{"MiB", 0, false},
		{"", 0, false},
		{"1e6", 0, false},
		{"1/2GiB", 0, false},
		{"1.GiB", 0, false},
		{"0x10", 0, false},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false},
		{"10000000TiB", 0, false},
	} {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	for _, n := range []int64{0, 1, 1000, 1023, 1024, 1536, 16 << 20, 256 << 20, 1 << 30, 1 << 40, 1e9, 5e12, 123456789} {
		s := formatSize(n)
		if got, err := parseSize(s); err != nil || got != n {
			t.Errorf("parseSize(formatSize(%d) = %q) = %d, %v", n, s, got, err)
		}
	}
	if got := formatSize(256 << 20); got != "256MiB" {
		t.Errorf("formatSize(256MiB) = %q", got)
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2s", 2 * time.Second, true},
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"250ms", 250 * time.Millisecond, true},
		{"1.5h", 90 * time.Minute, true},
		{"0", 0, true},
		{"7d", 7 * Day, true},
		{"1d12h", 36 * time.Hour, true},
		{"0.5d", 12 * time.Hour, true},
		{" 30s ", 30 * time.Second, true},
		{"banana", 0, false},
		{"30", 0, false},
		{"-1s", 0, false},
		{"+1s", 0, false},
		{"1d-1h", 0, false},
		{"d", 0, false},
		{"7days", 0, false},
		{"1w", 0, false},
		{"", 0, false},
		{"999999999d", 0, false},
	} {
		got, err := parseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestFormatDurationRoundTrips(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"}, {5 * time.Minute, "5m"}, {30 * time.Second, "30s"}, {time.Hour, "1h"},
		{90 * time.Minute, "1h30m"}, {7 * Day, "7d"}, {36 * time.Hour, "36h"},
		{100 * time.Millisecond, "100ms"}, {time.Minute + 500*time.Millisecond, "1m0.5s"},
	} {
		s := formatDuration(tt.d)
		if s != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, s, tt.want)
		}
		if got, err := parseDuration(s); err != nil || got != tt.d {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, tt.d)
		}
	}
}

func TestSocketMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want os.FileMode
		ok   bool
	}{
		{"0660", 0o660, true},
		{"660", 0o660, true},
		{"0o600", 0o600, true},
		{"0777", 0o777, true},
		{"0", 0, true},
		{"0000", 0, true},
		{"1777", 0, false},
		{"01000", 0, false},
		{"0888", 0, false},
		{"-660", 0, false},
		{"+660", 0, false},
		{"rw-rw----", 0, false},
		{"", 0, false},
		{"0x1ff", 0, false},
	} {
		var m os.FileMode
		err := (&modeValue{p: &m}).Set(tt.in)
		if (err == nil) != tt.ok || m != tt.want {
			t.Errorf("socket mode %q = %o, %v; want %o, ok=%v", tt.in, m, err, tt.want, tt.ok)
		}
	}
	if got := (&modeValue{p: new(os.FileMode(0o660))}).String(); got != "0660" {
		t.Errorf("String() = %q, want 0660", got)
	}
}

func TestEnums(t *testing.T) {
	for _, tt := range []struct {
		args  []string
		check func(Config) bool
	}{
		{[]string{"--stale-reads=serve"}, func(c Config) bool { return c.StaleReads == StaleReadsServe }},
		{[]string{"--stale-reads=error"}, func(c Config) bool { return c.StaleReads == StaleReadsError }},
		{[]string{"--stale-reads=ERROR"}, func(c Config) bool { return c.StaleReads == StaleReadsError }},
		{[]string{"--log-level=trace"}, func(c Config) bool { return c.LogLevel == "trace" }},
		{[]string{"--log-level=debug"}, func(c Config) bool { return c.LogLevel == "debug" }},
		{[]string{"--log-level=info"}, func(c Config) bool { return c.LogLevel == "info" }},
		{[]string{"--log-level=warn"}, func(c Config) bool { return c.LogLevel == "warn" }},
		{[]string{"--log-level=Error"}, func(c Config) bool { return c.LogLevel == "error" }},
	} {
		if c := parse(t, "serve", tt.args); !tt.check(c) {
			t.Errorf("%q gave %+v", tt.args, c)
		}
	}
}

func TestRedactedDSN(t *testing.T) {
	for _, tt := range []struct {
		dsn, want string
	}{
		{"", ""},
		{"postgres://user:pass@host/db?sslmode=disable", "postgres://user:xxxxx@host/db?sslmode=disable"},
		{"postgresql://user:p%40ss%2Fw@host:5433/db", "postgresql://user:xxxxx@host:5433/db"},
		{"postgres://user@host/db", "postgres://user@host/db"},
		{"postgres://host/db", "postgres://host/db"},
		{"postgres://u:s3cret@/x?host=/nonexistent", "postgres://u:xxxxx@/x?host=/nonexistent"},
		{"postgres://u@h/db?sslmode=require&password=secret&x=1", "postgres://u@h/db?sslmode=require&password=xxxxx&x=1"},
		{"postgres://u@h/db?sslpassword=keypass", "postgres://u@h/db?sslpassword=xxxxx"},
		// Unparsable URLs (an unescaped '/' or '#' in the password) lose the user info's password all the same.
		{"postgres://u:pa/ss@h:badport/db", "postgres://u:xxxxx@h:badport/db"},
		{"postgres://u:p#ss@h/db", "postgres://u:xxxxx@h/db"},
		{"host=h user=u password=secret dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password='se cret' dbname=d", "host=h password='xxxxx' dbname=d"},
		{`password='it\'s' host=h`, `password='xxxxx' host=h`},
		{`password=se\ cret host=h`, `password=xxxxx host=h`},
		{"password = secret host=h", "password = xxxxx host=h"},
		{"  host=h\tpassword=secret", "  host=h\tpassword=xxxxx"},
		{"host=h password=", "host=h password="},
		{"sslpassword=keypass host=h", "sslpassword=xxxxx host=h"},
		{"host=h password='unterminated secret", "host=h password=xxxxx (unterminated quote)"},
		{"host=h password secret", "host=h xxxxx (unparsable)"},
		{"host=/tmp dbname=x", "host=/tmp dbname=x"},
		{"password=pw host=h junk", "password=xxxxx host=h junk"},
		{"user=u password=pw junk password=more", "user=u password=xxxxx xxxxx (unparsable)"},
		{"mysql://x", "mysql://x"},
	} {
		if got := (Config{DSN: tt.dsn}).RedactedDSN(); got != tt.want {
			t.Errorf("RedactedDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
	}
	if got := (Config{ListenDSN: "user=u password=pw"}).RedactedListenDSN(); got != "user=u password=xxxxx" {
		t.Errorf("RedactedListenDSN = %q", got)
	}
}

func TestRedactSecrets(t *testing.T) {
	for _, tt := range []struct {
		dsn, msg, secret string
	}{
		{"postgres://u:s3cret@h:bad/x", `parse "postgres://u:s3cret@h:bad/x": invalid port`, "s3cret"},
		{"postgres://u:p%22w%22d@h/x", `parse "postgres://u:p\"w\"d@h/x"`, `p"w"d`},
		{"postgres://u:p%22w%22d@h/x", `failed for p"w"d`, `p"w"d`},
		{"host=h password='se cret'", `auth failed for "se cret"`, "se cret"},
		{`host=h password='a\"b'`, `{"error":"a\"b"}`, `a"b`},
		{"postgres://u@h/x?password=qp%20w", "password=qp%20w and qp w", "qp"},
	} {
		got := RedactSecrets(tt.msg, tt.dsn)
		if strings.Contains(got, tt.secret) {
			t.Errorf("RedactSecrets(%q, %q) = %q still holds %q", tt.msg, tt.dsn, got, tt.secret)
		}
	}
	if got := RedactSecrets("nothing to hide", "host=h password=", ""); got != "nothing to hide" {
		t.Errorf("an empty password must not redact anything: got %q", got)
	}
}

func TestInvalidDSNHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://u:s3cret@host:badport/x",
		"postgres://u:s3cret@h/x?port=bad",
		"host=h port=bad password=s3cret",
		"password=s3cret host=h port=bad",
	} {
		_, _, err := ParseConfig("serve", []string{"--dsn=" + dsn}, nil)
		if err == nil {
			t.Errorf("%q: no error", dsn)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: message %q shows the password", dsn, err)
		}
	}
}

// FuzzRedactedDSN checks that no password, however odd, survives redaction in either DSN form.
func FuzzRedactedDSN(f *testing.F) {
	for _, s := range []string{"s3cret", "se cret", `it's`, `back\slash`, "p@ss/w:rd#?", "ünï", "=", "'", "b'0\x83000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pass string) {
		// Short passwords collide with the rest of the DSN by chance; the property is about real ones.
		if len(pass) < 4 || strings.ContainsAny(pass, "\x00") {
			return
		}
		quoted := "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(pass) + "'"
		u := url.URL{Scheme: "postgres", User: url.UserPassword("alice", pass), Host: "db.example", Path: "/app"}
		for _, dsn := range []string{
			"host=db.example user=alice password=" + quoted + " dbname=app",
			"password=" + quoted,
			u.String(),
			"postgres://alice@db.example/app?password=" + url.QueryEscape(pass),
		} {
			if got := redactDSN(dsn); strings.Contains(got, pass) {
				t.Errorf("redactDSN(%q) = %q shows the password", dsn, got)
			}
			msg := "error: " + dsn + " / " + pass
			if got := RedactSecrets(msg, dsn); strings.Contains(got, pass) {
				t.Errorf("RedactSecrets(%q) = %q shows the password", msg, got)
			}
		}
	})
}
