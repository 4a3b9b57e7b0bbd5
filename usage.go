package main

import (
	"errors"
	"flag"
	"fmt"
	"pgmirror/sidecar"
	"strings"
)

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
	b.WriteString(sidecar.FlagUsage(topic))
	return b.String()
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
	var uerr *sidecar.UsageError
	if errors.As(err, &uerr) {
		fmt.Fprint(m.Stderr, "\n"+m.Usage())
	} else {
		fmt.Fprintf(m.Stderr, "Run 'pgmirror help %s' for the flags and their environment variables.\n", m.helpTopic)
	}
	return exitUsage
}
