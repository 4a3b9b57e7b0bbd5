package listener

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"pgmirror/mirror"
)

// Channel is the NOTIFY channel the triggers of triggers.sql send on.
const Channel = "pgmirror"

// Format1 is the format field that starts every payload of format 1.
const Format1 = "pgm1"

// MaxPayload is the budget the triggers pack payloads into: Postgres refuses
// payloads of 8000 bytes or more.
const MaxPayload = 7999

// ErrUnknownFormat means the payload was written by a newer (or foreign)
// trigger version; the sidecar cannot apply it and must resync.
var ErrUnknownFormat = errors.New("unknown notification payload format")

var b64 = base64.StdEncoding.Strict()

// Payload is one decoded notification: the changes of one statement (or a
// part of them) with the writer's send time and transaction id.
type Payload = mirror.Batch

// Decode parses a payload of format 1 (see triggers.sql). It is strict: what
// it accepts, Encode writes back byte for byte.
func Decode(s string) (Payload, error) {
	var p Payload
	head, body, ok := strings.Cut(s, "\n")
	format, rest, _ := strings.Cut(head, " ")
	if format != Format1 {
		return p, fmt.Errorf("%w: %.20q", ErrUnknownFormat, format)
	}
	sent, xid, _ := strings.Cut(rest, " ")
	var err error
	if p.SentAt, err = parseInt(sent); err != nil {
		return p, fmt.Errorf("payload header: sent_at: %w", err)
	}
	x, err := parseInt(xid)
	if err == nil && x < 0 {
		err = errors.New("negative")
	}
	if err != nil {
		return p, fmt.Errorf("payload header: xid: %w", err)
	}
	p.Xid = uint64(x)
	if !ok {
		return p, errors.New("payload has no records")
	}
	p.Changes = make([]mirror.Change, 0, strings.Count(body, "\n")+1)
	for i := 0; ; i++ {
		line, rest, more := strings.Cut(body, "\n")
		c, err := decodeRecord(line)
		if err != nil {
			return p, fmt.Errorf("payload record %d: %w", i, err)
		}
		p.Changes = append(p.Changes, c)
		if !more {
			return p, nil
		}
		body = rest
	}
}

func decodeRecord(line string) (mirror.Change, error) {
	var c mirror.Change
	if line == "L" {
		return mirror.Change{Op: mirror.OpLoaders}, nil
	}
	if len(line) < 2 || line[1] != ' ' {
		return c, fmt.Errorf("malformed record %.20q", line)
	}
	c.Op = mirror.Op(line[0])
	f := fields{rest: line[2:]}
	switch c.Op {
	case mirror.OpSet, mirror.OpFetch:
		c.Version = f.version()
		c.Expires = f.expiry()
		c.Key = f.key(c.Op == mirror.OpFetch)
		if c.Op == mirror.OpSet {
			c.Value = f.bytes("value", true)
		}
	case mirror.OpDelete:
		c.Version = f.version()
		c.Key = f.key(true)
	case mirror.OpTruncate:
		c.Version = f.version()
		f.end()
	case mirror.OpSentinel:
		c.Token = f.token()
	default:
		return c, fmt.Errorf("unknown record type %q", line[0])
	}
	return c, f.err
}

// fields reads space-separated fields of one record, keeping the first error.
type fields struct {
	rest string
	done bool
	err  error
}

func (f *fields) next(name string, last bool) string {
	if f.err != nil {
		return ""
	}
	if f.done {
		f.err = fmt.Errorf("missing %s", name)
		return ""
	}
	if last {
		if strings.IndexByte(f.rest, ' ') >= 0 {
			f.err = fmt.Errorf("extra field after %s", name)
			return ""
		}
		f.done = true
		return f.rest
	}
	v, rest, ok := strings.Cut(f.rest, " ")
	f.rest, f.done = rest, !ok
	return v
}

func (f *fields) end() {
	if f.err == nil && !f.done {
		f.err = errors.New("extra field")
	}
	f.done = true
}

func (f *fields) version() int64 {
	v, err := parseInt(f.next("version", false))
	if err == nil && v <= 0 {
		err = errors.New("not positive")
	}
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("version: %w", err)
	}
	return v
}

func (f *fields) expiry() int64 {
	s := f.next("expiry", false)
	if s == "-" {
		return mirror.NoExpiry
	}
	v, err := parseInt(s)
	if err == nil && v == mirror.NoExpiry {
		err = errors.New("out of range")
	}
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("expiry: %w", err)
	}
	return v
}

func (f *fields) key(last bool) string {
	s := f.next("key", last)
	if f.err != nil {
		return ""
	}
	// Most keys are short: decode on the stack, then one allocation for
	// the string.
	var buf [128]byte
	var dst []byte
	if n := b64.DecodedLen(len(s)); n <= len(buf) {
		dst = buf[:n]
	} else {
		dst = make([]byte, n)
	}
	n, err := f.decode(dst, s, "key")
	if err == nil && n > 4000 {
		f.err = fmt.Errorf("key of %d bytes exceeds 4000", n)
	}
	return string(dst[:n])
}

func (f *fields) bytes(name string, last bool) []byte {
	s := f.next(name, last)
	if f.err != nil {
		return nil
	}
	dst := make([]byte, b64.DecodedLen(len(s)))
	n, _ := f.decode(dst, s, name)
	return dst[:n]
}

// decode decodes standard, padded base64 without line breaks (the
// decoder itself skips '\r' and '\n'; records are split at '\n' already).
func (f *fields) decode(dst []byte, s, name string) (int, error) {
	n, err := b64.Decode(dst, []byte(s))
	if err == nil && strings.IndexByte(s, '\r') >= 0 {
		err = errors.New("line break inside base64")
	}
	if err != nil {
		f.err = fmt.Errorf("%s: %w", name, err)
	}
	return n, err
}

func (f *fields) token() string {
	s := f.next("token", true)
	if f.err == nil && !validToken(s) {
		f.err = fmt.Errorf("sentinel token %.20q: want 1-64 characters of [A-Za-z0-9_-]", s)
	}
	return s
}

func validToken(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parseInt accepts only the canonical decimal form Postgres writes: no sign
// but a leading minus, no leading zeros, no spaces.
func parseInt(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%.24q is not an integer", s)
	}
	// Canonical: ParseInt took no '+', and no leading zero ("0" and "-0"
	// aside, which only "0" is).
	digits := strings.TrimPrefix(s, "-")
	if s[0] == '+' || (len(digits) > 1 && digits[0] == '0') || s == "-0" {
		return 0, fmt.Errorf("%.24q is not in canonical form", s)
	}
	return v, nil
}

// Encode writes p in format 1, the inverse of Decode. The triggers build
// payloads in SQL; Encode is for sentinels and tests.
func Encode(p Payload) string {
	var b strings.Builder
	b.WriteString(Format1)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(p.SentAt, 10))
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(p.Xid, 10))
	for _, c := range p.Changes {
		b.WriteByte('\n')
		b.WriteByte(byte(c.Op))
		if c.Op == mirror.OpLoaders {
			continue
		}
		b.WriteByte(' ')
		switch c.Op {
		case mirror.OpSet, mirror.OpFetch:
			b.WriteString(strconv.FormatInt(c.Version, 10))
			b.WriteByte(' ')
			if c.Expires == mirror.NoExpiry {
				b.WriteByte('-')
			} else {
				b.WriteString(strconv.FormatInt(c.Expires, 10))
			}
			b.WriteByte(' ')
			b.WriteString(b64.EncodeToString([]byte(c.Key)))
			if c.Op == mirror.OpSet {
				b.WriteByte(' ')
				b.WriteString(b64.EncodeToString(c.Value))
			}
		case mirror.OpDelete:
			b.WriteString(strconv.FormatInt(c.Version, 10))
			b.WriteByte(' ')
			b.WriteString(b64.EncodeToString([]byte(c.Key)))
		case mirror.OpTruncate:
			b.WriteString(strconv.FormatInt(c.Version, 10))
		case mirror.OpSentinel:
			b.WriteString(c.Token)
		}
	}
	return b.String()
}
