package main

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// checkSVG fails unless path is well-formed XML with an <svg> root whose
// text contains every one of want.
func checkSVG(t *testing.T, path string, want ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	root := ""
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: not valid XML: %v", path, err)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = x.Name.Local
			}
		case xml.CharData:
			text.Write(x)
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", path, root)
	}
	for _, w := range want {
		if !strings.Contains(text.String(), w) {
			t.Errorf("%s: no text %q", path, w)
		}
	}
}

// TestBenchCharts renders every chart of make bench from a fixture results
// directory shaped like bench/run.sh's, and checks each SVG and its series.
func TestBenchCharts(t *testing.T) {
	out := t.TempDir()
	charts, err := render("bench", "testdata/bench", "", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range charts {
		if c.skip != "" {
			t.Errorf("%s skipped: %s", c.file, c.skip)
		}
	}
	checkSVG(t, filepath.Join(out, "get.svg"), "pgmirror", "Redis", "pgbench", "SELECT", "GET -c 1", "GET -c 50", "GET -c 50 -P 16")
	checkSVG(t, filepath.Join(out, "set.svg"), "pgmirror", "Redis", "upsert", "+ triggers", "no triggers")
	checkSVG(t, filepath.Join(out, "propagation.svg"), "pgmirror p99", "pgmirror p50", "bare pq.Listener p99", "sidecars")
	checkSVG(t, filepath.Join(out, "warmstart.svg"), "each run", "VmRSS, each run", "raw keys + values", "rows")
}

// TestFanoutChart renders the fan-out cost law from a fixture fanout.json.
func TestFanoutChart(t *testing.T) {
	out := t.TempDir()
	if _, err := render("fanout", "", "testdata/fanout.json", out); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, filepath.Join(out, "fanout.svg"), "paced writes (measured)", "unpaced writes (measured)",
		"fit 532 µs + 61.3 µs × L (R² 0.98)", "listeners")
}

// TestMissingFiguresSkip: a run without propagation, warm start or SET
// results draws what it has, skips the rest with a reason and removes an
// older SVG of a skipped chart.
func TestMissingFiguresSkip(t *testing.T) {
	dir, out := t.TempDir(), t.TempDir()
	for _, f := range []string{"rb_get_c1_pgmirror_1.csv", "rb_get_c1_redis_1.csv", "pgbench_select_c1.out"} {
		b, err := os.ReadFile(filepath.Join("testdata/bench", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stale := filepath.Join(out, "warmstart.svg")
	if err := os.WriteFile(stale, []byte("<svg/>"), 0o644); err != nil {
		t.Fatal(err)
	}
	charts, err := render("bench", dir, "", out)
	if err != nil {
		t.Fatal(err)
	}
	skipped := map[string]bool{}
	for _, c := range charts {
		skipped[c.file] = c.skip != ""
	}
	want := map[string]bool{"get.svg": false, "set.svg": true, "propagation.svg": true, "warmstart.svg": true}
	for f, s := range want {
		if skipped[f] != s {
			t.Errorf("%s skipped = %v, want %v", f, skipped[f], s)
		}
	}
	checkSVG(t, filepath.Join(out, "get.svg"), "pgmirror", "Redis", "pgbench", "SELECT", "GET -c 1")
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale %s kept (%v)", stale, err)
	}
	if _, err := render("fanout", "", filepath.Join(dir, "fanout.json"), out); err != nil {
		t.Fatalf("fanout without fanout.json: %v", err)
	}
}

// TestInsertCharts: the links go under the section's heading, relative to
// BENCHMARKS.md, a skipped chart is a comment, and a second run replaces
// the first run's links instead of adding to them; other sections stay.
func TestInsertCharts(t *testing.T) {
	root := t.TempDir()
	md := filepath.Join(root, "BENCHMARKS.md")
	orig := "# Benchmarks\n\n## make bench results\n\n<!-- Written by bench/run.sh -->\n\n| table |\n\n" +
		"<!-- end of make bench results -->\n\n## make bench-fanout results\n\nfan-out table\n"
	if err := os.WriteFile(md, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "bench", "charts")
	charts := []chart{{file: "get.svg", title: "GET throughput"}, {file: "warmstart.svg", skip: "warmstart.json missing"}}
	for range 2 {
		if err := insertCharts(md, "make bench results", out, charts); err != nil {
			t.Fatal(err)
		}
	}
	if err := insertCharts(md, "make bench-fanout results", out, []chart{{file: "fanout.svg", title: "Fan-out"}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(md)
	got := string(b)
	want := "# Benchmarks\n\n## make bench results\n\n" + chartsBegin + "\n\n![GET throughput](bench/charts/get.svg)\n\n" +
		"<!-- warmstart.svg not drawn: warmstart.json missing -->\n\n" + chartsEnd + "\n\n" +
		"<!-- Written by bench/run.sh -->\n\n| table |\n\n<!-- end of make bench results -->\n\n" +
		"## make bench-fanout results\n\n" + chartsBegin + "\n\n![Fan-out](bench/charts/fanout.svg)\n\n" + chartsEnd +
		"\n\nfan-out table\n"
	if got != want {
		t.Errorf("BENCHMARKS.md:\n%s\nwant:\n%s", got, want)
	}
	if err := insertCharts(md, "no such section", out, charts); err == nil {
		t.Error("a missing section is not an error")
	}
}
