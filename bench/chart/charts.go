package main

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// chart is one rendered (or skipped) figure.
type chart struct {
	file  string // base name of the SVG
	title string // alt text in BENCHMARKS.md
	skip  string // why it was not drawn; "" when it was
}

// size of every SVG.
const (
	width  = 16 * vg.Centimeter
	height = 9 * vg.Centimeter
)

var clientCfgs = []struct{ cfg, label, pgbench string }{
	{"c1", "-c 1", "select_c1"},
	{"c50", "-c 50", "select_c50"},
	{"c50p16", "-c 50 -P 16", ""},
}

// throughput draws GET or SET requests/s of pgmirror and Redis, one panel
// per client setting (each on its own scale: pipelining is ten times the
// rest), with pgbench's figure of the same clients where the run has one.
func throughput(dir, out, mode string) (chart, error) {
	c := chart{file: mode + ".svg", title: fmt.Sprintf("%s throughput: pgmirror, Redis and pgbench per client setting", upper(mode))}
	var panels []*plot.Plot
	for _, cc := range clientCfgs {
		bars, err := throughputBars(dir, mode, cc.cfg, cc.pgbench)
		if err != nil || bars == nil {
			if err != nil {
				return c, err
			}
			continue
		}
		p := plot.New()
		p.Title.Text = upper(mode) + " " + cc.label
		if len(panels) == 0 {
			p.Y.Label.Text = "thousand per second"
		}
		var names []string
		for i, b := range bars {
			v := make(plotter.Values, len(bars))
			v[i] = b.v / 1000
			bc, err := plotter.NewBarChart(v, vg.Points(18))
			if err != nil {
				return c, err
			}
			bc.Color = plotutil.Color(b.color)
			bc.LineStyle.Width = 0
			p.Add(bc)
			names = append(names, b.name)
		}
		p.NominalX(names...)
		p.X.Tick.Label.Font.Size = vg.Points(7.5)
		p.Y.Tick.Marker = plainTicks{}
		p.Y.Min = 0
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		c.skip = fmt.Sprintf("no redis-benchmark %s results of both pgmirror and Redis", upper(mode))
		return c, nil
	}
	return c, saveRow(out, c.file, panels...)
}

type bar struct {
	name  string
	v     float64
	color int
}

// throughputBars is pgmirror, Redis and pgbench of one client setting; nil
// when the run lacks pgmirror's or Redis's figure.
func throughputBars(dir, mode, cfg, select_ string) ([]bar, error) {
	p, okP, err := rbRPS(dir, mode, cfg, "pgmirror")
	if err != nil {
		return nil, err
	}
	r, okR, err := rbRPS(dir, mode, cfg, "redis")
	if err != nil || !okP || !okR {
		return nil, err
	}
	bars := []bar{{"pgmirror", p, 0}, {"Redis", r, 1}}
	if mode == "get" && select_ != "" {
		if tps, ok := pgbenchTPS(dir, select_); ok {
			bars = append(bars, bar{"pgbench\nSELECT", tps, 2})
		}
	}
	if mode == "set" && cfg == "c50" {
		if tps, ok := pgbenchTPS(dir, "upsert_triggers_c50"); ok {
			bars = append(bars, bar{"upsert\n+ triggers", tps, 2})
		}
		if tps, ok := pgbenchTPS(dir, "upsert_plain_c50"); ok {
			bars = append(bars, bar{"upsert\nno triggers", tps, 3})
		}
	}
	return bars, nil
}

// propagationChart draws commit → visible in every sidecar against the bare
// pq.Listener's receipt of the same probes, p50 and p99, by sidecars.
func propagationChart(dir, out string) (chart, error) {
	c := chart{file: "propagation.svg", title: "Propagation: commit → visible in every sidecar against the raw NOTIFY floor"}
	var props []propagation
	ok, err := readJSON(filepath.Join(dir, "propagation.json"), &props)
	if err != nil {
		return c, err
	}
	lines := map[string]plotter.XYs{}
	names := []string{"pgmirror p99", "pgmirror p50", "bare pq.Listener p99", "bare pq.Listener p50"}
	for _, pr := range props {
		if pr.Probed.Probes == 0 {
			continue
		}
		x := float64(pr.Sidecars)
		for i, v := range []float64{pr.Probed.Visible.P99, pr.Probed.Visible.P50, pr.Probed.FloorProbes.P99, pr.Probed.FloorProbes.P50} {
			if v > 0 { // a log scale: a figure the run lacks is left out
				lines[names[i]] = append(lines[names[i]], plotter.XY{X: x, Y: v / 1000})
			}
		}
	}
	if !ok || len(lines) == 0 {
		c.skip = "propagation.json missing or without probed phases"
		return c, nil
	}
	p := plot.New()
	p.Title.Text = "Propagation: commit → visible in every sidecar vs the NOTIFY floor"
	p.X.Label.Text = "sidecars"
	p.Y.Label.Text = "ms after sent_at, log scale"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plainTicks{plot.LogTicks{Prec: -1}}
	p.Legend.Top = true
	p.Legend.Left = true
	for i, name := range names {
		if err := addLine(p, name, lines[name], i, i%2 == 1); err != nil {
			return c, err
		}
	}
	return c, save(p, out, c.file)
}

// fanoutChart draws Postgres CPU per write against listeners, the measured
// points of both write phases and the fitted law A + B·L.
func fanoutChart(path, out string) (chart, error) {
	c := chart{file: "fanout.svg", title: "Fan-out cost law: Postgres CPU per write against listeners, fitted line and measured points"}
	var f fanout
	ok, err := readJSON(path, &f)
	if err != nil {
		return c, err
	}
	pts := map[string]plotter.XYs{}
	for _, r := range f.Runs {
		for _, ph := range r.Phases {
			if ph.Writes == 0 || (ph.Name != "paced" && ph.Name != "unpaced") {
				continue
			}
			pts[ph.Name] = append(pts[ph.Name], plotter.XY{X: float64(r.Listeners), Y: ph.PGPerWriteUS})
		}
	}
	if !ok || len(pts) == 0 {
		c.skip = "fanout.json missing or without paced/unpaced phases"
		return c, nil
	}
	p := plot.New()
	p.Title.Text = "Fan-out: Postgres CPU per notifying write"
	p.X.Label.Text = "listeners (sidecars + 1)"
	p.Y.Label.Text = "µs of Postgres CPU per write"
	p.Legend.Top = true
	p.Legend.Left = true
	for i, name := range []string{"paced", "unpaced"} {
		if len(pts[name]) == 0 {
			continue
		}
		s, err := plotter.NewScatter(pts[name])
		if err != nil {
			return c, err
		}
		s.Color = plotutil.Color(i)
		s.Shape = plotutil.Shape(i)
		s.Radius = vg.Points(3.5)
		p.Add(s)
		p.Legend.Add(name+" writes (measured)", s)
	}
	if law := f.Fits.All; law.Points >= 2 {
		fn := plotter.NewFunction(func(l float64) float64 { return law.A + law.B*l })
		fn.Color = color.Gray{Y: 80}
		fn.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(fn)
		p.Legend.Add(fmt.Sprintf("fit %.0f µs + %.1f µs × L (R² %.2f)", law.A, law.B, law.R2), fn)
	}
	p.X.Min, p.Y.Min = 0, 0
	return c, save(p, out, c.file)
}

// warmstartChart draws, per warm-start run, the time to ready and VmRSS at
// ready against the rows loaded, with the raw keys+values for scale.
func warmstartChart(dir, out string) (chart, error) {
	c := chart{file: "warmstart.svg", title: "Warm start: time to ready and memory against rows"}
	var ws warmstart
	ok, err := readJSON(filepath.Join(dir, "warmstart.json"), &ws)
	if err != nil {
		return c, err
	}
	if !ok || len(ws.Runs) == 0 {
		c.skip = "warmstart.json missing or without runs"
		return c, nil
	}
	rows := float64(ws.Rows) / 1e6
	var ready, rss plotter.XYs
	for _, r := range ws.Runs {
		ready = append(ready, plotter.XY{X: rows, Y: r.ReadySeconds})
		rss = append(rss, plotter.XY{X: rows, Y: float64(r.RSSReady) / (1 << 20)})
	}
	raw := plotter.XYs{{X: 0, Y: 0}, {X: rows, Y: float64(ws.RawBytes) / (1 << 20)}}
	left := plot.New()
	left.Title.Text = "Warm start: process start → ready"
	left.X.Label.Text = "million rows of 100 bytes"
	left.Y.Label.Text = "seconds"
	if err := addPoints(left, "each run", ready, 0); err != nil {
		return c, err
	}
	right := plot.New()
	right.Title.Text = "VmRSS at ready"
	right.X.Label.Text = "million rows of 100 bytes"
	right.Y.Label.Text = "MiB"
	if err := addPoints(right, "VmRSS, each run", rss, 1); err != nil {
		return c, err
	}
	if err := addLine(right, "raw keys + values", raw, 2, true); err != nil {
		return c, err
	}
	for _, p := range []*plot.Plot{left, right} {
		p.X.Min, p.Y.Min = 0, 0
		p.X.Max = rows * 1.1
		p.Legend.Top, p.Legend.Left = true, true
	}
	return c, saveRow(out, c.file, left, right)
}
