// Command chart draws the SVG charts of BENCHMARKS.md from the result files
// of one run of bench/run.sh (make bench) or bench/fanout.sh (make
// bench-fanout), the same files their tables are made of, and with
// -benchmarks puts links to them at the top of that run's section:
//
//	chart bench  -dir RESULTS -out bench/charts [-benchmarks BENCHMARKS.md]
//	chart fanout -json RESULTS/fanout.json -out bench/charts [-benchmarks BENCHMARKS.md]
//
// bench draws get.svg and set.svg (requests/s of pgmirror, Redis and
// pgbench per client setting), propagation.svg (commit → visible in every
// sidecar against the bare pq.Listener) and warmstart.svg (time to ready and
// VmRSS against rows); fanout draws fanout.svg (Postgres CPU per write
// against listeners, the measured points and the fitted law). A chart whose
// figures the run does not have is skipped with a message (and an older
// SVG of that name removed), never an error.
//
// It lives in its own module so that the sidecar's module does not depend
// on gonum.org/v1/plot.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("chart: ")
	if len(os.Args) < 2 || (os.Args[1] != "bench" && os.Args[1] != "fanout") {
		log.Fatal("usage: chart bench -dir RESULTS -out DIR [-benchmarks FILE] | chart fanout -json FILE -out DIR [-benchmarks FILE]")
	}
	kind := os.Args[1]
	fs := flag.NewFlagSet(kind, flag.ExitOnError)
	dir := fs.String("dir", "", "results directory of bench/run.sh (chart bench)")
	js := fs.String("json", "", "fanout.json of bench/fanout.sh (chart fanout)")
	out := fs.String("out", "", "directory for the SVGs")
	md := fs.String("benchmarks", "", "BENCHMARKS.md whose section of this run gets the charts (empty: draw only)")
	_ = fs.Parse(os.Args[2:])
	if *out == "" || (kind == "bench" && *dir == "") || (kind == "fanout" && *js == "") {
		fs.Usage()
		os.Exit(2)
	}
	charts, err := render(kind, *dir, *js, *out)
	if err != nil {
		log.Fatal(err)
	}
	if *md != "" {
		if err := insertCharts(*md, sectionOf(kind), *out, charts); err != nil {
			log.Fatal(err)
		}
		log.Printf("charts linked from the section %q of %s", sectionOf(kind), *md)
	}
}

// render draws the charts of kind into out and reports each one.
func render(kind, dir, js, out string) ([]chart, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	type drawFn func() (chart, error)
	var fns []drawFn
	if kind == "bench" {
		fns = []drawFn{
			func() (chart, error) { return throughput(dir, out, "get") },
			func() (chart, error) { return throughput(dir, out, "set") },
			func() (chart, error) { return propagationChart(dir, out) },
			func() (chart, error) { return warmstartChart(dir, out) },
		}
	} else {
		fns = []drawFn{func() (chart, error) { return fanoutChart(js, out) }}
	}
	var charts []chart
	for _, fn := range fns {
		c, err := fn()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
		path := filepath.Join(out, c.file)
		if c.skip != "" {
			log.Printf("skipped %s: %s", path, c.skip)
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				return nil, err
			}
		} else {
			log.Printf("drew %s", path)
		}
		charts = append(charts, c)
	}
	return charts, nil
}

func sectionOf(kind string) string {
	if kind == "bench" {
		return "make bench results"
	}
	return "make bench-fanout results"
}

const (
	chartsBegin = "<!-- charts: drawn by bench/chart from the result files of the run below -->"
	chartsEnd   = "<!-- end of charts -->"
)

// insertCharts puts links to the drawn charts right under the heading of
// section in md, replacing the links an earlier call put there.
func insertCharts(md, section, out string, charts []chart) error {
	b, err := os.ReadFile(md)
	if err != nil {
		return err
	}
	s := string(b)
	head := "## " + section + "\n"
	i := strings.Index(s, head)
	if i < 0 {
		return fmt.Errorf("%s: no section %q", md, section)
	}
	body := i + len(head)
	next := strings.Index(s[body:], "\n## ")
	if next < 0 {
		next = len(s) - body
	}
	if j := strings.Index(s[body:body+next], chartsBegin); j >= 0 {
		k := strings.Index(s[body+j:], chartsEnd)
		if k < 0 {
			return fmt.Errorf("%s: %q without %q", md, chartsBegin, chartsEnd)
		}
		end := body + j + k + len(chartsEnd)
		s = s[:body+j] + strings.TrimLeft(s[end:], "\n")
	}
	rel, err := filepath.Rel(filepath.Dir(md), out)
	if err != nil {
		return err
	}
	var blk strings.Builder
	blk.WriteString(chartsBegin + "\n\n")
	for _, c := range charts {
		if c.skip != "" {
			fmt.Fprintf(&blk, "<!-- %s not drawn: %s -->\n\n", c.file, c.skip)
			continue
		}
		fmt.Fprintf(&blk, "![%s](%s)\n\n", c.title, filepath.ToSlash(filepath.Join(rel, c.file)))
	}
	blk.WriteString(chartsEnd + "\n\n")
	rest := strings.TrimLeft(s[body:], "\n")
	s = s[:body] + "\n" + blk.String() + rest
	return os.WriteFile(md, []byte(s), 0o644)
}
