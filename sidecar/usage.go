package sidecar

import (
	"fmt"
	"strings"
)

const valueNotes = `
A flag beats its environment variable, which beats the default. An empty environment
variable counts as unset, except PGMIRROR_HTTP and PGMIRROR_NAMESPACE, where "" is a value.
Durations are Go durations plus days: 30s, 5m, 1h30m, 7d, 1d12h; never negative.
Sizes are bytes, or a number with B, KiB, MiB, GiB, TiB (powers of 1024; Ki, Mi, Gi, Ti too)
or KB, MB, GB, TB (powers of 1000): 1048576, 256MiB, 1.5GiB.
Modes are octal: 0660 or 660. Booleans: true, false, 1, 0.
`

// FlagUsage returns the flags of subcommand cmd ("serve", "migrate", "watch" or "unwatch"), each
// with its environment variables, default and one line of help, followed by how values are written.
func FlagUsage(cmd string) string {
	var b strings.Builder
	c := DefaultConfig()
	for _, s := range settings(&c) {
		if !s.appliesTo(cmd) {
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
