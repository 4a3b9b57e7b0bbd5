package listener

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"pgmirror/mirror"
)

func TestDecodeRecords(t *testing.T) {
	in := "pgm1 1732380000123456 77\n" +
		"S 7 - a2V5 dmFsdWU=\n" +
		"S 8 1732380001000000 ZW1wdHk= \n" +
		"F 9 -5 Ymln\n" +
		"D 10 Z29uZQ==\n" +
		"D 11 \n" +
		"T 12\n" +
		"L\n" +
		"N tok_en-1"
	p, err := Decode(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Payload{SentAt: 1732380000123456, Xid: 77, Changes: []mirror.Change{
		{Op: mirror.OpSet, Version: 7, Key: "key", Value: []byte("value"), Expires: mirror.NoExpiry},
		{Op: mirror.OpSet, Version: 8, Key: "empty", Value: []byte{}, Expires: 1732380001000000},
		{Op: mirror.OpFetch, Version: 9, Key: "big", Expires: -5},
		{Op: mirror.OpDelete, Version: 10, Key: "gone"},
		{Op: mirror.OpDelete, Version: 11, Key: ""},
		{Op: mirror.OpTruncate, Version: 12},
		{Op: mirror.OpLoaders},
		{Op: mirror.OpSentinel, Token: "tok_en-1"},
	}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", p, want)
	}
	if got := Encode(p); got != in {
		t.Fatalf("Encode(Decode(x)) = %q, want %q", got, in)
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := map[string]string{
		"unknown format":        "pgm3 1\nD 1 YQ==",
		"no header time":        "pgm1\nD 1 YQ==",
		"no xid":                "pgm1 5\nD 1 YQ==",
		"negative xid":          "pgm1 5 -3\nD 1 YQ==",
		"xid leading zero":      "pgm1 5 03\nD 1 YQ==",
		"no records":            "pgm1 5 77",
		"empty record":          "pgm1 5 77\n",
		"unknown op":            "pgm1 5 77\nX 1 YQ==",
		"no space after op":     "pgm1 5 77\nD1 YQ==",
		"zero version":          "pgm1 5 77\nD 0 YQ==",
		"negative version":      "pgm1 5 77\nD -1 YQ==",
		"plus sign":             "pgm1 5 77\nD +1 YQ==",
		"leading zero":          "pgm1 5 77\nD 01 YQ==",
		"missing key":           "pgm1 5 77\nD 1",
		"extra field":           "pgm1 5 77\nD 1 YQ== YQ==",
		"bad base64":            "pgm1 5 77\nD 1 Y*==",
		"unpadded base64":       "pgm1 5 77\nD 1 YQ",
		"non-canonical base64":  "pgm1 5 77\nD 1 YR==",
		"carriage return":       "pgm1 5 77\nD 1 YQ\r==",
		"set without value":     "pgm1 5 77\nS 1 - YQ==",
		"fetch with value":      "pgm1 5 77\nF 1 - YQ== YQ==",
		"bad expiry":            "pgm1 5 77\nS 1 soon YQ== YQ==",
		"expiry at max":         "pgm1 5 77\nS 1 9223372036854775807 YQ== YQ==",
		"truncate with key":     "pgm1 5 77\nT 1 YQ==",
		"sentinel bad token":    "pgm1 5 77\nN a b",
		"sentinel empty token":  "pgm1 5 77\nN ",
		"loaders with a field":  "pgm1 5 77\nL 1",
		"loaders with a space":  "pgm1 5 77\nL ",
		"trailing newline":      "pgm1 5 77\nT 1\n",
		"double space":          "pgm1 5 77\nD  1 YQ==",
		"key over 4000 bytes":   "pgm1 5 77\nD 1 " + b64.EncodeToString([]byte(strings.Repeat("k", 4001))),
		"version overflow":      "pgm1 5 77\nD 9223372036854775808 YQ==",
		"space in header":       "pgm1  5\nD 1 YQ==",
		"header without format": "5\nD 1 YQ==",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if p, err := Decode(in); err == nil {
				t.Fatalf("Decode(%q) = %+v, want an error", in, p)
			}
		})
	}
	if _, err := Decode("pgm3 1\nD 1 YQ=="); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("unknown format error = %v, want ErrUnknownFormat", err)
	}
}

// testKey is a key for signed test payloads.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestDecodeSigned(t *testing.T) {
	want := Payload{SentAt: 1732380000123456, Xid: 77, Changes: []mirror.Change{
		{Op: mirror.OpSet, Version: 7, Key: "key", Value: []byte("value"), Expires: mirror.NoExpiry},
		{Op: mirror.OpDelete, Version: 10, Key: "gone"},
		{Op: mirror.OpTruncate, Version: 12},
		{Op: mirror.OpLoaders},
	}}
	in := EncodeSigned(want, 3, testKey, 2, 5)
	p, h, err := DecodeFull(in)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, want) || h.Format != 2 || h.KeyID != 3 || h.Part != 2 || h.Parts != 5 || h.Skipped != 0 {
		t.Fatalf("decoded %+v %+v", p, h)
	}
	if !h.Verify(testKey) || h.Verify([]byte("another key")) {
		t.Fatal("the MAC verifies under the wrong key, or not under the right one")
	}
	if got := EncodeSigned(p, h.KeyID, testKey, h.Part, h.Parts); got != in {
		t.Fatalf("EncodeSigned(Decode(x)) = %q, want %q", got, in)
	}
	// Any change of a signed byte breaks the MAC.
	for i := len(Format2) + 1 + macHex + 1; i < len(in); i++ {
		b := []byte(in)
		b[i] ^= 1
		if _, h, err := DecodeFull(string(b)); err == nil && h.Verify(testKey) {
			t.Fatalf("flipping byte %d of %q left a verifying payload", i, in)
		}
	}
}

// TestDecodeSkipsLaterKinds: records of kinds a later version adds are
// skipped in format 2 (refused in format 1, which is frozen).
func TestDecodeSkipsLaterKinds(t *testing.T) {
	p := Payload{SentAt: 5, Xid: 9, Changes: []mirror.Change{{Op: mirror.OpDelete, Version: 1, Key: "a"}}}
	signed := EncodeSigned(p, 1, testKey, 1, 1)
	in := signed + "\nX 1 2 3\nq\nZ some fields"
	got, h, err := DecodeFull(in)
	if err != nil {
		t.Fatal(err)
	}
	if h.Skipped != 3 || !reflect.DeepEqual(got.Changes, p.Changes) {
		t.Fatalf("decoded %+v, skipped %d; want the delete and 3 skipped", got, h.Skipped)
	}
	for _, bad := range []string{"\n1 x", "\nXY", "\n", "\n\u00e9 x"} {
		if _, err := Decode(signed + bad); err == nil {
			t.Errorf("format 2 with record %q accepted", bad)
		}
	}
	if _, err := Decode(Encode(p) + "\nX 1"); err == nil {
		t.Error("format 1 accepted a record of an unknown kind")
	}
}

func TestDecodeSignedRejects(t *testing.T) {
	mac := strings.Repeat("ab", 32)
	cases := map[string]string{
		"short mac":         "pgm2 abc 1 5 77 1/1\nD 1 YQ==",
		"upper-case mac":    "pgm2 " + strings.ToUpper(mac) + " 1 5 77 1/1\nD 1 YQ==",
		"no kid":            "pgm2 " + mac + "\nD 1 YQ==",
		"zero kid":          "pgm2 " + mac + " 0 5 77 1/1\nD 1 YQ==",
		"kid too large":     "pgm2 " + mac + " 2147483648 5 77 1/1\nD 1 YQ==",
		"no parts":          "pgm2 " + mac + " 1 5 77\nD 1 YQ==",
		"part zero":         "pgm2 " + mac + " 1 5 77 0/1\nD 1 YQ==",
		"part above parts":  "pgm2 " + mac + " 1 5 77 3/2\nD 1 YQ==",
		"parts not numbers": "pgm2 " + mac + " 1 5 77 a/b\nD 1 YQ==",
		"parts leading 0":   "pgm2 " + mac + " 1 5 77 01/2\nD 1 YQ==",
		"extra header":      "pgm2 " + mac + " 1 5 77 1/1 x\nD 1 YQ==",
		"no records":        "pgm2 " + mac + " 1 5 77 1/1",
		"bad record":        "pgm2 " + mac + " 1 5 77 1/1\nD 0 YQ==",
		"negative xid":      "pgm2 " + mac + " 1 5 -1 1/1\nD 1 YQ==",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if p, err := Decode(in); err == nil {
				t.Fatalf("Decode(%q) = %+v, want an error", in, p)
			}
		})
	}
}

// FuzzDecode checks that Decode never panics and is strict: whatever it
// accepts is canonical, so Encode (format 1) or the signed encoding with
// the same MAC (format 2, when no record was skipped) gives back the same
// bytes; and that a MAC verifies only under the key it was made with.
func FuzzDecode(f *testing.F) {
	signed := EncodeSigned(Payload{SentAt: 1732380000123456, Xid: 77, Changes: []mirror.Change{
		{Op: mirror.OpSet, Version: 7, Key: "key", Value: []byte("value"), Expires: mirror.NoExpiry},
		{Op: mirror.OpTruncate, Version: 12}}}, 2, testKey, 1, 3)
	for _, s := range []string{
		"pgm1 1732380000123456 77\nS 7 - a2V5 dmFsdWU=\nF 9 -5 Ymln\nD 10 Z29uZQ==\nT 12\nN tok",
		"pgm1 0 77\nS 1 0  ",
		"pgm1 -1 77\nD 1 YQ==",
		"pgm2 1\nD 1 YQ==",
		"pgm1 5 77\nD 1 YQ\r==",
		"pgm1 5 77\nM 3 bmV3cw== aGVsbG8=",
		signed,
		signed + "\nX 1\nL",
		"pgm2 " + strings.Repeat("0", 64) + " 1 5 77 2/2\nD 1 YQ==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, h, err := DecodeFull(s)
		if err != nil {
			return
		}
		for _, c := range p.Changes {
			if len(c.Key) > 4000 {
				t.Fatalf("accepted a key of %d bytes", len(c.Key))
			}
		}
		if h.Format == 1 {
			if got := Encode(p); got != s {
				t.Fatalf("Decode accepted a non-canonical payload:\n in  %q\n out %q", s, got)
			}
			return
		}
		if h.Part < 1 || h.Part > h.Parts || h.KeyID < 1 {
			t.Fatalf("accepted header %+v", h)
		}
		if h.Signed != s[len(Format2)+1+macHex+1:] {
			t.Fatalf("signed text %q is not the payload after the MAC", h.Signed)
		}
		if h.Skipped == 0 {
			again := Format2 + " " + hex.EncodeToString(h.MAC[:]) + " " + signedText(p, h.KeyID, h.Part, h.Parts)
			if again != s {
				t.Fatalf("Decode accepted a non-canonical payload:\n in  %q\n out %q", s, again)
			}
		}
		if len(p.Changes) == 0 {
			return // every record skipped: nothing to sign again
		}
		resigned := EncodeSigned(p, h.KeyID, testKey, h.Part, h.Parts)
		if _, h2, err := DecodeFull(resigned); err != nil || !h2.Verify(testKey) || h2.Verify(testKey[1:]) {
			t.Fatalf("re-signed payload %q: %v, or verifies under the wrong key", resigned, err)
		}
	})
}

// benchPayload is a payload of 60 sets of 80-byte values, as a bulk
// update of small rows packs them.
func benchPayload() Payload {
	var p Payload
	p.SentAt = 1732380000123456
	for i := 0; i < 60; i++ {
		p.Changes = append(p.Changes, mirror.Change{Op: mirror.OpSet, Version: int64(1000 + i),
			Key: "user:" + strings.Repeat("x", 10), Value: []byte(strings.Repeat("v", 80)), Expires: mirror.NoExpiry})
	}
	return p
}

func BenchmarkDecode(b *testing.B) {
	s := Encode(benchPayload())
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is the MAC check alone, per payload.
func BenchmarkVerify(b *testing.B) {
	s := EncodeSigned(benchPayload(), 1, testKey, 1, 1)
	h, _, err := decodeHeader(s)
	if err != nil {
		b.Fatal(err)
	}
	m := hmac.New(sha256.New, testKey)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		if !h.verifyWith(m) {
			b.Fatal("does not verify")
		}
	}
}

// BenchmarkDecodeVerify is what the listener does per signed payload:
// parse the header, verify the MAC under a keyed HMAC it keeps, decode the
// records; for a large packed payload and for a one-row one.
func BenchmarkDecodeVerify(b *testing.B) {
	one := Payload{SentAt: 1732380000123456, Xid: 9000, Changes: []mirror.Change{{Op: mirror.OpSet, Version: 1,
		Key: "user:1234", Value: []byte(strings.Repeat("v", 80)), Expires: mirror.NoExpiry}}}
	for name, p := range map[string]Payload{"60 records": benchPayload(), "1 record": one} {
		b.Run(name, func(b *testing.B) {
			s := EncodeSigned(p, 1, testKey, 1, 1)
			m := hmac.New(sha256.New, testKey)
			b.SetBytes(int64(len(s)))
			b.ReportAllocs()
			for b.Loop() {
				h, body, err := decodeHeader(s)
				if err != nil || !h.verifyWith(m) {
					b.Fatal(err)
				}
				var out Payload
				if _, err := decodeBody(body, &out, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
