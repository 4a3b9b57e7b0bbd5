package listener

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"strconv"
	"strings"
	"unsafe"

	"pgmirror/mirror"
)

// Channel is the NOTIFY channel the triggers of triggers.sql send on.
const Channel = "pgmirror"

// The format fields that start payloads. The triggers send Format2 (signed)
// once migration 0005 gave them a key; Format1 is unsigned, and what a
// sidecar sends itself as a sentinel.
const (
	Format1 = "pgm1"
	Format2 = "pgm2"
)

// MaxPayload is the budget the triggers pack payloads into: Postgres refuses
// payloads of 8000 bytes or more.
const MaxPayload = 7999

// MaxHeader is the longest header of format 2: "pgm2 ", the MAC, and kid,
// sent_at, xid and part/parts at their widest, with their spaces.
const MaxHeader = 144

// macHex is the length of the MAC in a header: HMAC-SHA256, hex.
const macHex = 2 * sha256.Size

// ErrUnknownFormat means the payload was written by a newer (or foreign)
// trigger version; the sidecar cannot apply it.
var ErrUnknownFormat = errors.New("unknown notification payload format")

var b64 = base64.StdEncoding.Strict()

// Payload is one decoded notification: the changes of one statement (or a
// part of them) with the writer's send time and transaction id.
type Payload = mirror.Batch

// Header is what a payload says about itself besides its changes.
type Header struct {
	Format int // 1 or 2
	// The rest is of format 2 only.
	KeyID       int64    // the key (pgmirror_secret.kid) the MAC is under
	MAC         [32]byte // HMAC-SHA256 of Signed
	Part, Parts int      // this payload is part Part of Parts of one publish
	Skipped     int      // records of kinds this version does not know, skipped
	// Signed is the text the MAC covers: the payload after "pgm2 " mac " ".
	Signed string
}

// Verify reports whether h's MAC is right under key, in constant time.
func (h *Header) Verify(key []byte) bool {
	m := hmac.New(sha256.New, key)
	return h.verifyWith(m)
}

// verifyWith is Verify with a keyed HMAC the caller keeps between calls.
func (h *Header) verifyWith(m hash.Hash) bool {
	if h.Format != 2 {
		return false
	}
	m.Reset()
	// Without copying the payload: Write neither keeps nor modifies p.
	m.Write(unsafe.Slice(unsafe.StringData(h.Signed), len(h.Signed)))
	var sum [sha256.Size]byte
	return hmac.Equal(m.Sum(sum[:0]), h.MAC[:])
}

// MACPrefix is the MAC's first 8 bytes as a number: what the mirror
// remembers of an applied payload to recognise a replay of it.
func (h *Header) MACPrefix() uint64 { return binary.BigEndian.Uint64(h.MAC[:8]) }

// Decode parses a payload of format 1 or 2 (see triggers.sql) and returns
// its changes; it does not check a MAC (Header.Verify does).
// It is strict: what it accepts, Encode (format 1) or EncodeSigned (format
// 2, with no record skipped) writes back byte for byte.
func Decode(s string) (Payload, error) {
	p, _, err := DecodeFull(s)
	return p, err
}

// DecodeFull is Decode that also returns the header.
func DecodeFull(s string) (Payload, Header, error) {
	h, body, err := decodeHeader(s)
	if err != nil {
		return Payload{}, h.Header, err
	}
	var p Payload
	p.SentAt, p.Xid = h.sentAt, h.xid
	h.Skipped, err = decodeBody(body, &p, h.Format == 2)
	return p, h.Header, err
}

// parsedHeader is a Header with the fields Decode moves into the Payload.
type parsedHeader struct {
	Header
	sentAt int64
	xid    uint64
}

// decodeHeader parses the header of a payload of either format; body is
// what follows its newline. Checking a MAC needs nothing more, so a
// forgery costs no decoding of its records.
func decodeHeader(s string) (h parsedHeader, body string, err error) {
	head, body, ok := strings.Cut(s, "\n")
	format, rest, _ := strings.Cut(head, " ")
	switch format {
	case Format1:
		h.Format, h.Part, h.Parts = 1, 1, 1
	case Format2:
		h.Format = 2
		if err := h.parseSignature(rest); err != nil {
			return h, "", err
		}
		h.Signed = s[len(Format2)+1+macHex+1:]
		rest = rest[macHex+1:]
		kid, r, _ := strings.Cut(rest, " ")
		if h.KeyID, err = parseInt(kid); err == nil && (h.KeyID <= 0 || h.KeyID > math.MaxInt32) {
			err = errors.New("out of range")
		}
		if err != nil {
			return h, "", fmt.Errorf("payload header: kid: %w", err)
		}
		rest = r
	default:
		return h, "", fmt.Errorf("%w: %.20q", ErrUnknownFormat, format)
	}
	sent, rest, _ := strings.Cut(rest, " ")
	if h.sentAt, err = parseInt(sent); err != nil {
		return h, "", fmt.Errorf("payload header: sent_at: %w", err)
	}
	xid := rest
	if h.Format == 2 {
		var parts string
		xid, parts, _ = strings.Cut(rest, " ")
		if err := h.parseParts(parts); err != nil {
			return h, "", err
		}
	}
	x, err := parseInt(xid)
	if err == nil && x < 0 {
		err = errors.New("negative")
	}
	if err != nil {
		return h, "", fmt.Errorf("payload header: xid: %w", err)
	}
	h.xid = uint64(x)
	if !ok {
		return h, "", errors.New("payload has no records")
	}
	return h, body, nil
}

// parseSignature reads the MAC that starts rest: 64 lowercase hex digits
// and a space.
func (h *parsedHeader) parseSignature(rest string) error {
	if len(rest) < macHex+1 || rest[macHex] != ' ' {
		return errors.New("payload header: mac: want 64 hex digits")
	}
	for i := 0; i < macHex; i++ {
		if c := rest[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return errors.New("payload header: mac: want 64 lowercase hex digits")
		}
	}
	_, err := hex.Decode(h.MAC[:], []byte(rest[:macHex]))
	return err
}

// parseParts reads "part/parts".
func (h *parsedHeader) parseParts(s string) error {
	a, b, ok := strings.Cut(s, "/")
	part, err1 := parseInt(a)
	parts, err2 := parseInt(b)
	if !ok || err1 != nil || err2 != nil || part < 1 || part > parts || parts > math.MaxInt32 {
		return fmt.Errorf("payload header: parts %.24q: want part/parts, 1 <= part <= parts", s)
	}
	h.Part, h.Parts = int(part), int(parts)
	return nil
}

// decodeBody appends the records of body to p. Records of kinds this
// version does not know are skipped when skipUnknown (format 2, which
// later versions extend) and refused otherwise; it returns how many it
// skipped.
func decodeBody(body string, p *Payload, skipUnknown bool) (int, error) {
	p.Changes = make([]mirror.Change, 0, strings.Count(body, "\n")+1)
	skipped := 0
	for i := 0; ; i++ {
		line, rest, more := strings.Cut(body, "\n")
		if skipUnknown && laterKind(line) {
			skipped++
		} else {
			c, err := decodeRecord(line)
			if err != nil {
				return skipped, fmt.Errorf("payload record %d: %w", i, err)
			}
			p.Changes = append(p.Changes, c)
		}
		if !more {
			return skipped, nil
		}
		body = rest
	}
}

// laterKind reports whether line is a record of a kind a later version
// added: an ASCII letter this version does not know, alone or followed by a
// space and fields.
func laterKind(line string) bool {
	if line == "" || len(line) > 1 && line[1] != ' ' {
		return false
	}
	c := line[0]
	if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
		return false
	}
	switch mirror.Op(c) {
	case mirror.OpSet, mirror.OpFetch, mirror.OpDelete, mirror.OpTruncate, mirror.OpSentinel, mirror.OpLoaders,
		mirror.OpFlush, mirror.OpMessage:
		return false
	}
	return true
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
	case mirror.OpFlush:
		c.Version = f.version()
		c.Key, c.Keep = f.flushPrefixes()
	case mirror.OpSentinel:
		c.Token = f.token()
	case mirror.OpMessage:
		// "M " id " " channel64 " " message64: id (a sequence's value)
		// makes every message's payload unique, so that Postgres does not
		// fold two equal messages of one transaction into one, nor the
		// replay guard take the second for a replay.
		c.Version = f.version()
		c.Key = string(f.bytes("channel", false))
		c.Value = f.bytes("message", true)
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
	if err == nil && n > mirror.MaxKeyBytes {
		f.err = fmt.Errorf("key of %d bytes exceeds %d", n, mirror.MaxKeyBytes)
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
	writeRecords(&b, p.Changes)
	return b.String()
}

// EncodeSigned writes p in format 2 as part part of parts, signed with key
// kid, as the triggers do; for tests and tools.
func EncodeSigned(p Payload, kid int64, key []byte, part, parts int) string {
	return sign(key, signedText(p, kid, part, parts))
}

// sign prefixes signed with the format field and its MAC under key.
func sign(key []byte, signed string) string {
	m := hmac.New(sha256.New, key)
	io.WriteString(m, signed)
	return Format2 + " " + hex.EncodeToString(m.Sum(nil)) + " " + signed
}

// signedText is the part of a payload of format 2 its MAC covers.
func signedText(p Payload, kid int64, part, parts int) string {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(kid, 10))
	b.WriteByte(' ')
	b.WriteString(strconv.FormatInt(p.SentAt, 10))
	b.WriteByte(' ')
	b.WriteString(strconv.FormatUint(p.Xid, 10))
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(part))
	b.WriteByte('/')
	b.WriteString(strconv.Itoa(parts))
	writeRecords(&b, p.Changes)
	return b.String()
}

// writeRecords writes each change as a record, each after a newline.
func writeRecords(b *strings.Builder, changes []mirror.Change) {
	for _, c := range changes {
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
		case mirror.OpFlush:
			writeFlush(b, c)
		case mirror.OpSentinel:
			b.WriteString(c.Token)
		case mirror.OpMessage:
			b.WriteString(strconv.FormatInt(c.Version, 10))
			b.WriteByte(' ')
			b.WriteString(b64.EncodeToString([]byte(c.Key)))
			b.WriteByte(' ')
			b.WriteString(b64.EncodeToString(c.Value))
		}
	}
}

// flushPrefixes reads the fields of a flush record after its version: the
// prefix ("-" for none: every key) and the prefixes it left in place, each
// in base64 and not empty.
func (f *fields) flushPrefixes() (prefix string, keep []string) {
	if s := f.rest; !f.done && (s == "-" || strings.HasPrefix(s, "- ")) {
		f.next("prefix", false)
	} else if prefix = f.key(false); f.err == nil && prefix == "" {
		f.err = errors.New("empty prefix: want -")
	}
	for f.err == nil && !f.done {
		k := f.key(false)
		if f.err == nil && k == "" {
			f.err = errors.New("empty kept prefix")
		}
		keep = append(keep, k)
	}
	return prefix, keep
}

// writeFlush writes the fields of a flush record (see flushPrefixes).
func writeFlush(b *strings.Builder, c mirror.Change) {
	b.WriteString(strconv.FormatInt(c.Version, 10))
	b.WriteByte(' ')
	if c.Key == "" {
		b.WriteByte('-')
	} else {
		b.WriteString(b64.EncodeToString([]byte(c.Key)))
	}
	for _, k := range c.Keep {
		b.WriteByte(' ')
		b.WriteString(b64.EncodeToString([]byte(k)))
	}
}
