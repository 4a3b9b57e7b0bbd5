package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strings"

	"pgmirror/bench/internal/benchutil"
)

// Fit is y ≈ A + B·x by least squares.
type Fit struct {
	What   string    `json:"what"`
	A      float64   `json:"a"`
	B      float64   `json:"b"`
	R2     float64   `json:"r2"`
	Points int       `json:"points"`
	X      []float64 `json:"x"`
	Y      []float64 `json:"y"`
}

// Fits are the cost laws fitted from the rows, against L = listeners.
type Fits struct {
	PacedPerWrite   Fit `json:"paced_cpu_per_write_us"`
	UnpacedPerWrite Fit `json:"unpaced_cpu_per_write_us"`
	// Both phases together: the law the capacity budgets use.
	AllPerWrite Fit `json:"cpu_per_write_us"`
}

func fit(what string, xs, ys []float64) Fit {
	f := Fit{What: what, Points: len(xs), X: xs, Y: ys}
	if len(xs) < 2 {
		return f
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	n := float64(len(xs))
	mx, my = mx/n, my/n
	var sxy, sxx, syy float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
		syy += (ys[i] - my) * (ys[i] - my)
	}
	if sxx == 0 {
		return f
	}
	f.B = sxy / sxx
	f.A = my - f.B*mx
	var res float64
	for i := range xs {
		d := ys[i] - (f.A + f.B*xs[i])
		res += d * d
	}
	if syy > 0 {
		f.R2 = 1 - res/syy
	}
	return f
}

func fits(runs []Run) Fits {
	var px, py, ux, uy []float64
	for _, r := range runs {
		for _, p := range r.Phases {
			if p.Writes == 0 {
				continue
			}
			l := float64(r.Listeners)
			switch p.Name {
			case "paced":
				px, py = append(px, l), append(py, p.PGPerWriteUS)
			case "unpaced":
				ux, uy = append(ux, l), append(uy, p.PGPerWriteUS)
			}
		}
	}
	return Fits{
		PacedPerWrite:   fit("Postgres CPU per write, paced 1,000/s, µs", px, py),
		UnpacedPerWrite: fit("Postgres CPU per write, unpaced writers, µs", ux, uy),
		AllPerWrite:     fit("Postgres CPU per write, paced and unpaced, µs", append(px, ux...), append(py, uy...)),
	}
}

const (
	sectionTitle = "make bench-fanout results"
	sectionEnd   = "<!-- end of make bench-fanout results -->"
)

func ms(us float64) string {
	if us == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", us/1000)
}

func num(x float64, prec int) string {
	if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

// commas writes an integer with thousands separators.
func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func readTSV(path string) [][2]string {
	var out [][2]string
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "\t")
		out = append(out, [2]string{k, v})
	}
	return out
}

// render writes the report: the section of BENCHMARKS.md.
func render(cfg config, res *Results) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("## %s\n\n", sectionTitle)
	machine := readTSV(cfg.machine)
	get := func(k string) string {
		for _, kv := range machine {
			if kv[0] == k {
				return kv[1]
			}
		}
		return ""
	}
	if res.Quick {
		w("**A smoke run (`BENCH_QUICK=1`): fewer sidecars, shorter windows; not a measurement to quote.**\n\n")
	}
	w("Run on %s, %.0f s", res.Started.Format("2006-01-02 15:04 UTC"), res.Seconds)
	if d := get("machine"); d != "" {
		w("; %s", d)
	}
	w(".")
	if l0, l1 := get("load_start"), loadAvg(); l0 != "" {
		w(" Load average at the start %s, at the end %s (the host is shared).", l0, l1)
	}
	w("\n\n")
	w("One Postgres; N `pgmirror serve` processes, each with its own LISTEN connection, plus (for N > 0) one bare\n"+
		"`pq.Listener` that counts the notifications, so **listeners = N + 1**. *Paced*: %s single-row upserts/s\n"+
		"(`INSERT … ON CONFLICT DO UPDATE`, 100-byte values, one per transaction) over %d connections. *Unpaced*: %d\n"+
		"connections upserting as fast as they can. Windows of %s after %s of warm-up. *Visible in every\n"+
		"sidecar*: per probe (every %dth write, a new key), the last sidecar's keyspace notification of it minus the\n"+
		"payload's `sent_at` (the writer's `clock_timestamp()` in the trigger, just before the commit). *Received*:\n"+
		"notifications each sidecar counted over the phase against the bare listener's count (1 = every sidecar got\n"+
		"every one). *Converged*: sidecars whose value of every written key equals the table once a sentinel written\n"+
		"after the phase has reached them all. *Postgres CPU*: user + system time of the postmaster and all its\n"+
		"processes (`/proc`, including exited ones), over the window; *per delivered notification* divides it by\n"+
		"notifications × listeners, so it includes the writes' own work. CPU columns are in cores of %d; *machine busy*\n"+
		"counts everything on the host, other users' work included: the sidecars run on the same cores as Postgres\n"+
		"here, which a real fleet does not.\n\n",
		commas(int64(cfg.rate)), cfg.pacedConns, cfg.writers, cfg.paced, cfg.warmup, cfg.probeEvery, benchutil.NumCPU())

	// The main table.
	w("| sidecars | listeners | phase | writes/s | commit p50 / p99 ms | notifications | visible in every sidecar p50 / p99 / max ms (probes) | floor p99 ms | received | converged | Postgres cores | Postgres CPU per write µs | per delivered notification µs | sidecars' CPU | machine busy |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Runs {
		side := fmt.Sprint(r.Sidecars)
		if r.CapReason != "" {
			side = fmt.Sprintf("**%d** (%d asked)", r.Sidecars, r.Requested)
		}
		for _, p := range r.Phases {
			vis, recv, conv, floorP99, perDel := "—", "—", "—", "—", "—"
			if r.Sidecars > 0 && p.Probes > 0 {
				vis = fmt.Sprintf("%s / %s / %s (%d", ms(p.Visible.P50), ms(p.Visible.P99), ms(p.Visible.Max), p.Probes)
				if p.ProbesSeenByAll < p.Probes {
					vis += fmt.Sprintf(", %d not seen by all", p.Probes-p.ProbesSeenByAll)
				}
				vis += ")"
				recv = fmt.Sprintf("%.4f", p.ReceivedShare)
				conv = fmt.Sprintf("%d/%d", p.SidecarsConverged, r.Sidecars)
				if p.SettleTimeout {
					conv += " (sentinel timed out)"
				}
				floorP99 = ms(p.Floor.P99)
				perDel = num(p.PGPerDeliveredUS, 1)
			}
			notif := "—"
			if r.Listeners > 0 {
				notif = commas(p.Notifications)
			}
			w("| %s | %d | %s | %s | %s / %s | %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %.2f |\n",
				side, r.Listeners, p.Name, commas(int64(math.Round(p.WritesPerSec))), ms(p.Commit.P50), ms(p.Commit.P99),
				notif, vis, floorP99, recv, conv, p.PGCores, num(p.PGPerWriteUS, 0), perDel, num(p.SidecarCores, 2), p.MachineBusy)
		}
	}
	w("\n")
	var caps []string
	for _, r := range res.Runs {
		if r.CapReason != "" {
			caps = append(caps, fmt.Sprintf("%d sidecars were asked for and %d ran: %s.", r.Requested, r.Sidecars, r.CapReason))
		}
	}
	if len(caps) > 0 {
		w("**Fewer sidecars than asked:** %s\n\n", strings.Join(caps, " "))
	}
	var fleet []string
	for _, r := range res.Runs {
		if r.Sidecars == 0 {
			fleet = append(fleet, fmt.Sprintf("0 sidecars: Postgres idle %.3f cores", r.IdlePGCores))
			continue
		}
		fleet = append(fleet, fmt.Sprintf("%d: ready in %.1f s, %.0f MiB RSS each, %d Postgres processes, idle Postgres %.3f cores and sidecars %.3f cores",
			r.Sidecars, r.StartupSeconds, float64(r.RSSPerSidecar)/(1<<20), r.PGProcs, r.IdlePGCores, r.IdleSidecarCores))
	}
	w("Fleets (sidecar flags `%s`; `max_connections` %d): %s.\n\n", strings.Join(cfg.sidecarArgs, " "), maxConn(res), strings.Join(fleet, "; "))

	// The cost law.
	f := res.Fits
	if f.PacedPerWrite.Points < 2 || f.UnpacedPerWrite.Points < 2 {
		w("**Fitted cost law**: needs rows of at least two fleet sizes.\n\n")
	} else {
		renderFits(w, cfg, f)
	}

	for _, r := range res.Runs {
		if u := r.Update; u != nil {
			renderUpdate(w, u)
		}
	}
	for _, r := range res.Runs {
		if g := r.Grouped; g != nil {
			renderGrouped(w, g)
		}
	}

	if len(machine) > 0 {
		w("Machine and software:\n\n| | |\n|---|---|\n")
		for _, kv := range machine {
			switch kv[0] {
			case "load_start", "load_end", "machine":
				continue
			}
			w("| %s | %s |\n", kv[0], strings.ReplaceAll(kv[1], "|", "\\|"))
		}
		w("\n")
	}
	if cmds, err := os.ReadFile(cfg.commands); err == nil && len(cmds) > 0 {
		w("Commands (`$W` is the run's temporary directory):\n\n```\n%s```\n\n", cmds)
	}
	w("%s\n", sectionEnd)
	return b.String()
}

func renderFits(w func(string, ...any), cfg config, f Fits) {
	all := f.AllPerWrite
	w("**Fitted cost law** (least squares over the rows above, L = listeners):\n\n")
	w("- **Postgres CPU per single-row notifying write ≈ %.0f µs + %.1f µs × L** (paced and unpaced rows together,\n"+
		"  R² %.2f, %d rows; paced alone %.0f + %.1f × L, R² %.2f; unpaced alone %.0f + %.1f × L, R² %.2f). The constant is\n"+
		"  the write itself (statement, triggers, WAL, commit); each listener adds about %.0f µs per notification.\n",
		all.A, all.B, all.R2, all.Points, f.PacedPerWrite.A, f.PacedPerWrite.B, f.PacedPerWrite.R2,
		f.UnpacedPerWrite.A, f.UnpacedPerWrite.B, f.UnpacedPerWrite.R2, all.B)
	w("- So one Postgres core delivers about %s notifications × listeners per second, and sustains about\n"+
		"  1,000,000 / (%.0f + %.1f × L) such writes per second:", commas(int64(safeDiv(1e6, all.B))), all.A, all.B)
	for i, l := range []float64{1, 11, 51, 201} {
		sep := ","
		if i == 3 {
			sep = "."
		}
		w(" %s at L = %.0f%s", commas(int64(safeDiv(1e6, all.A+all.B*l))), l, sep)
	}
	w(" The unpaced rows cannot reach that here: the\n" +
		"  sidecars run on the same cores as Postgres (the *sidecars' CPU* column).\n\n")
}

// loadAvg is the 1, 5 and 15 minute load averages now.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func safeDiv(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func maxConn(res *Results) int {
	for _, r := range res.Runs {
		if r.MaxConnections > 0 {
			return r.MaxConnections
		}
	}
	return 0
}

func verdict(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**not met**"
}

// ratio prints a ratio with enough digits to tell small ones apart.
func ratio(x float64) string {
	switch {
	case x == 0:
		return "—"
	case x < 1:
		return fmt.Sprintf("%.2fx", x)
	}
	return fmt.Sprintf("%.1fx", x)
}

func renderUpdate(w func(string, ...any), u *UpdateCmp) {
	w("**Packed vs one notification per row**: a %s-row `UPDATE` of `cache_entries` (66-byte values) with %d sidecars\n"+
		"listening (%d listeners), in autocommit on a connection of its own; then a sentinel key is written, and\n"+
		"*converged* is the time from the UPDATE's commit returning until every sidecar has reported the sentinel (they\n"+
		"apply in commit order), after which every sidecar's %s values were compared with the table. *Packed*: the\n"+
		"statement triggers as `pgmirror migrate` installs them, on a connection that has written one row before (as\n"+
		"any pooled connection has), and *packed, new session* on a connection whose first statement is the UPDATE.\n"+
		"*Per row*: `pgmirror_20_notify_update` dropped and an `AFTER UPDATE FOR EACH ROW` trigger installed that calls\n"+
		"`%s` with the row's record alone; `pgmirror migrate` put the statement trigger back after every per-row\n"+
		"run (the trigger list was checked). Medians of %d runs each, the order rotating.\n\n",
		commas(int64(u.Rows)), u.Sidecars, u.Listeners, commas(int64(u.Rows)), u.PerRowTrigger, len(u.Runs)/len(updateVariants))
	w("| variant | rows | notifications (bound ceil(bytes / 7,900) + 1) | record bytes | statement ms | commit → every sidecar converged ms | Postgres CPU ms | of it the writing backend / delivery ms | sidecars' queue overflows (resyncs), all runs | sidecars converged |\n")
	w("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range u.Medians {
		conv := fmt.Sprintf("%.0f", m.ConvergeMS)
		if m.TimeOuts > 0 {
			conv += fmt.Sprintf(" (%d of %d runs timed out at %s)", m.TimeOuts, len(u.Runs)/len(updateVariants), u.Timeout)
		}
		w("| %s | %s | %s (%s) | %s | %.0f | %s | %.0f | %.0f / %.0f | %s (%d) | %d/%d |\n", m.Variant, commas(m.Rows), commas(m.Notifications),
			commas(m.Bound), commas(m.RecordBytes), m.StatementMS, conv, m.PGCPUMS, m.WriterCPUMS, m.DeliveryCPUMS, commas(m.Overflows), m.Reloads,
			m.SidecarsConverged, u.Sidecars)
	}
	packed, packedNew, perRow := u.median(varPacked), u.median(varPackedNew), u.median(varPerRow)
	w("| **per row / packed** | | %s | | %s | **%s** | **%s** | %s / **%s** | | |\n",
		ratio(safeDiv(float64(perRow.Notifications), float64(packed.Notifications))),
		ratio(safeDiv(perRow.StatementMS, packed.StatementMS)), ratio(u.ConvergeRatio), ratio(u.CPURatio),
		ratio(safeDiv(perRow.WriterCPUMS, packed.WriterCPUMS)), ratio(u.DeliveryRatio))
	w("| **per row / packed, new session** | | %s | | %s | **%s** | **%s** | %s / **%s** | | |\n\n",
		ratio(safeDiv(float64(perRow.Notifications), float64(packedNew.Notifications))),
		ratio(safeDiv(perRow.StatementMS, packedNew.StatementMS)), ratio(u.ConvergeNew), ratio(u.CPUNew),
		ratio(safeDiv(perRow.WriterCPUMS, packedNew.WriterCPUMS)), ratio(u.DeliveryRatioNew))
	w("Issue 10's targets: packed sends at most the bound (%s: %s ≤ %s); convergence ≥ 5x shorter packed: %s (%s; new\n"+
		"session %s); Postgres CPU ≥ 5x lower packed: %s (%s; new session %s), of which the delivery (everything but the\n"+
		"writing backend, whose statement work is the same either way): %s (%s; new session %s).",
		verdict(packed.Notifications <= packed.Bound && packedNew.Notifications <= packedNew.Bound), commas(packed.Notifications),
		commas(packed.Bound), verdict(u.ConvergeRatio >= 5), ratio(u.ConvergeRatio), ratio(u.ConvergeNew),
		verdict(u.CPURatio >= 5), ratio(u.CPURatio), ratio(u.CPUNew),
		verdict(u.DeliveryRatio >= 5), ratio(u.DeliveryRatio), ratio(u.DeliveryRatioNew))
	var runs []string
	for _, r := range u.Runs {
		conv := fmt.Sprintf("%.0f", r.ConvergeMS)
		if r.TimedOut {
			conv = "timed out"
		}
		runs = append(runs, fmt.Sprintf("%s #%d %s / %.0f / %.0f", r.Variant, r.Rep, conv, r.PGCPUMS, r.DeliveryCPUMS))
	}
	renderRuns(w, u.Notes, "Every run (converged ms / Postgres CPU ms / of it delivery):", runs)
}

// renderRuns ends a comparison's verdict paragraph: its notes, then every
// run, and a blank line.
func renderRuns(w func(string, ...any), notes []string, heading string, runs []string) {
	for _, n := range notes {
		w(" %s.", n)
	}
	w(" %s", heading)
	if len(runs) > 0 {
		w(" %s.", strings.Join(runs, "; "))
	}
	w("\n\n")
}

func renderGrouped(w func(string, ...any), g *GroupedCmp) {
	w("**Grouped writes**: %s writes/s with %d sidecars listening (%d listeners), the same 100-byte single-key\n"+
		"writes either as one `INSERT … ON CONFLICT` per transaction in SQL, or as `SET` through %d of the sidecars'\n"+
		"sockets (go-redis, %d connections each; %d concurrent writers either way), so each sidecar's group commit\n"+
		"batches what arrives while its batches run (one packed set of notifications per batch: migration 0004).",
		commas(int64(g.Rate)), g.Sidecars, g.Listeners, g.Targets, g.Conns, g.Targets*g.Conns)
	if g.Linger != "" {
		w(" The third variant goes through %d other sidecars started with `--write-linger=%s`, which holds a batch until\n"+
			"its oldest command has waited that long.", g.Targets, g.Linger)
	}
	w(" Medians of %d interleaved runs each; mean batch from the sidecars'\n"+
		"`pgmirror_writer_ops_total` / `pgmirror_writer_batches_total`.\n\n", len(g.Runs)/max(len(g.Medians), 1))
	w("| writes | writes/s | commit p50 / p99 ms | notifications per write | mean batch | visible in every sidecar p99 ms | Postgres cores | Postgres CPU per write µs | SQL / this | converged |\n")
	w("|---|---|---|---|---|---|---|---|---|---|\n")
	sql := g.Medians[0]
	for _, m := range g.Medians {
		var name string
		batch, r := "—", "—"
		switch m.Variant {
		case varSQL:
			name = "one per transaction (SQL)"
		case varSidecars:
			name = "through the sidecars (default flags)"
		default:
			name = "through the sidecars, `--write-linger=" + g.Linger + "`"
		}
		if m.MeanBatch > 0 {
			batch = fmt.Sprintf("%.2f", m.MeanBatch)
		}
		if m.Variant != varSQL {
			r = "**" + ratio(safeDiv(sql.PGPerWriteUS, m.PGPerWriteUS)) + "**"
		}
		w("| %s | %s | %s / %s | %.2f | %s | %s | %.2f | %.0f | %s | %d/%d |\n", name, commas(int64(math.Round(m.WritesPerSec))),
			ms(m.CommitP50US), ms(m.CommitP99US), m.NotifPerWrite, batch, ms(m.VisibleP99US), m.PGCores,
			m.PGPerWriteUS, r, m.SidecarsConverge, g.Sidecars)
	}
	w("\nIssue 10's target, Postgres CPU per write ≥ 3x lower grouped: %s with default flags (%s)", verdict(g.Ratio >= 3), ratio(g.Ratio))
	if len(g.Medians) > 2 {
		l := safeDiv(sql.PGPerWriteUS, g.Medians[2].PGPerWriteUS)
		w(", %s with `--write-linger=%s` (%s)", verdict(l >= 3), g.Linger, ratio(l))
	}
	w(".")
	var runs []string
	for _, r := range g.Runs {
		batch := ""
		if r.Phase.MeanBatch > 0 {
			batch = fmt.Sprintf(", batch %.2f", r.Phase.MeanBatch)
		}
		runs = append(runs, fmt.Sprintf("%s #%d %.0f µs/write at %.0f/s%s", r.Variant, r.Rep, r.Phase.PGPerWriteUS, r.Phase.WritesPerSec, batch))
	}
	renderRuns(w, g.Notes, "Every run:", runs)
}

// replaceSection replaces the section of path from its heading to its end
// marker with md, or inserts md before "## Go benchmarks" (or at the end).
func replaceSection(path, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	head := "## " + sectionTitle + "\n"
	if i := strings.Index(s, head); i >= 0 {
		j := strings.Index(s[i:], sectionEnd)
		if j < 0 {
			return fmt.Errorf("%s: %q without %q", path, head, sectionEnd)
		}
		end := i + j + len(sectionEnd)
		if end < len(s) && s[end] == '\n' {
			end++
		}
		s = s[:i] + md + s[end:]
	} else if i := strings.Index(s, "\n## Go benchmarks"); i >= 0 {
		s = s[:i+1] + md + "\n" + s[i+1:]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + md
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
