package listener

import (
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
		"unknown format":        "pgm2 1\nD 1 YQ==",
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
	if _, err := Decode("pgm2 1\nD 1 YQ=="); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("unknown format error = %v, want ErrUnknownFormat", err)
	}
}

// FuzzDecode checks that Decode never panics and is strict: whatever it
// accepts is canonical, so Encode gives back the same bytes.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"pgm1 1732380000123456 77\nS 7 - a2V5 dmFsdWU=\nF 9 -5 Ymln\nD 10 Z29uZQ==\nT 12\nN tok",
		"pgm1 0 77\nS 1 0  ",
		"pgm1 -1 77\nD 1 YQ==",
		"pgm2 1\nD 1 YQ==",
		"pgm1 5 77\nD 1 YQ\r==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Decode(s)
		if err != nil {
			return
		}
		if got := Encode(p); got != s {
			t.Fatalf("Decode accepted a non-canonical payload:\n in  %q\n out %q", s, got)
		}
		for _, c := range p.Changes {
			if len(c.Key) > 4000 {
				t.Fatalf("accepted a key of %d bytes", len(c.Key))
			}
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	var p Payload
	p.SentAt = 1732380000123456
	for i := 0; i < 60; i++ {
		p.Changes = append(p.Changes, mirror.Change{Op: mirror.OpSet, Version: int64(1000 + i),
			Key: "user:" + strings.Repeat("x", 10), Value: []byte(strings.Repeat("v", 80)), Expires: mirror.NoExpiry})
	}
	s := Encode(p)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(s); err != nil {
			b.Fatal(err)
		}
	}
}
