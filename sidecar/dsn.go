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

// dsnScanner walks a key=value DSN with lib/pq's quoting rules, copying it to out with the
// secret values replaced by xxxxx, and collecting the secret values (as written and as meant).
type dsnScanner struct {
	dsn     string
	i       int // the next byte to read
	out     strings.Builder
	copied  int // dsn[:copied] is in out already
	secrets []string
}

// scanKeyValueDSN returns dsn with its secret values replaced by xxxxx, and the secret values.
func scanKeyValueDSN(dsn string) (string, []string) {
	s := &dsnScanner{dsn: dsn}
	for {
		s.skipSpace()
		if s.i >= len(dsn) {
			break
		}
		keyStart := s.i
		for r, n := s.peek(); n > 0 && !unicode.IsSpace(r) && r != '='; r, n = s.peek() {
			s.i += n
		}
		key := dsn[keyStart:s.i]
		s.skipSpace()
		if r, n := s.peek(); n == 0 || r != '=' {
			return s.unparsable(keyStart, false, "unparsable")
		}
		s.i++
		s.skipSpace()
		valStart := s.i
		val, quoted, ok := s.readValue()
		if !ok {
			return s.unparsable(valStart, isSecretKey(key), "unterminated quote")
		}
		if isSecretKey(key) && s.i > valStart {
			s.redact(valStart, val, quoted)
		}
	}
	s.out.WriteString(dsn[s.copied:])
	return s.out.String(), s.secrets
}

func (s *dsnScanner) peek() (rune, int) {
	if s.i >= len(s.dsn) {
		return 0, 0
	}
	return utf8.DecodeRuneInString(s.dsn[s.i:])
}

func (s *dsnScanner) skipSpace() {
	for r, n := s.peek(); n > 0 && unicode.IsSpace(r); r, n = s.peek() {
		s.i += n
	}
}

// readEscaped consumes one rune, and the next one too when the first is a backslash.
// It copies bytes, not runes, so a password that is not valid UTF-8 is found as written.
func (s *dsnScanner) readEscaped(val *strings.Builder) bool {
	r, n := s.peek()
	if r == '\\' {
		s.i += n
		if _, n = s.peek(); n == 0 {
			return false
		}
	}
	val.WriteString(s.dsn[s.i : s.i+n])
	s.i += n
	return true
}

// readValue reads a quoted or bare value; ok is false for an unterminated quote.
func (s *dsnScanner) readValue() (val string, quoted, ok bool) {
	var b strings.Builder
	if r, n := s.peek(); n == 0 || r != '\'' {
		for r, n := s.peek(); n > 0 && !unicode.IsSpace(r); r, n = s.peek() {
			if !s.readEscaped(&b) {
				break
			}
		}
		return b.String(), false, true
	}
	s.i++
	for r, n := s.peek(); n > 0; r, n = s.peek() {
		if r == '\'' {
			s.i++
			return b.String(), true, true
		}
		if !s.readEscaped(&b) {
			break
		}
	}
	return "", true, false
}

// redact replaces the value that started at valStart, and remembers it.
func (s *dsnScanner) redact(valStart int, val string, quoted bool) {
	raw := s.dsn[valStart:s.i]
	s.out.WriteString(s.dsn[s.copied:valStart])
	if quoted {
		raw = raw[1 : len(raw)-1]
		s.out.WriteString("'" + redacted + "'")
	} else {
		s.out.WriteString(redacted)
	}
	s.copied = s.i
	s.secrets = append(s.secrets, val, raw)
}

// unparsable ends the scan: lib/pq will refuse the DSN, and the message must still not show
// a password, so the rest is hidden when it is or may hold one.
func (s *dsnScanner) unparsable(from int, secret bool, why string) (string, []string) {
	rest := s.dsn[from:]
	s.out.WriteString(s.dsn[s.copied:from])
	if !secret && !isSecretKey(rest) {
		s.out.WriteString(rest)
		return s.out.String(), s.secrets
	}
	s.out.WriteString(redacted + " (" + why + ")")
	s.secrets = append(s.secrets, rest, strings.TrimPrefix(rest, "'"))
	return s.out.String(), s.secrets
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
