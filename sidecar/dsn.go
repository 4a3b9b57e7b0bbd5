package sidecar

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/lib/pq"
)

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
	err = errors.New(RedactSecrets(err.Error(), dsn))
	if s == nil || s.source == sourceDefault {
		return fmt.Errorf("invalid Postgres connection settings from the PG* environment variables: %w", err)
	}
	return &ValueError{Source: s.source, Value: redactDSN(dsn), Err: err}
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

// RedactSecrets replaces in s every password found in the DSNs, however it is spelled there.
// It guards what lib/pq and net/url put in their errors, which main prints and logs.
func RedactSecrets(s string, dsns ...string) string {
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

// DSNForLogs names the connection in logs and errors without its password.
func (c Config) DSNForLogs() string {
	if c.DSN == "" {
		return "(libpq defaults and PG* environment variables)"
	}
	return c.RedactedDSN()
}

// Redact removes the configured passwords from s: the last line of defence for logs and errors.
func (c Config) Redact(s string) string { return RedactSecrets(s, c.DSN, c.ListenDSN) }
