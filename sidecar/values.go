package sidecar

import (
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"pgmirror/mirror"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

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

// CheckKeyPrefix checks a key prefix (--namespace, a watch's --prefix): text Postgres can store that leaves room for keys.
func CheckKeyPrefix(s string) error {
	switch {
	case !utf8.ValidString(s):
		return errors.New("want valid UTF-8: keys are Postgres text")
	case strings.IndexByte(s, 0) >= 0:
		return errors.New("want no NUL byte: keys are Postgres text")
	case len(s) >= mirror.MaxKeyBytes:
		return fmt.Errorf("want fewer than %d bytes, the key length limit, so keys fit under it", mirror.MaxKeyBytes)
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
