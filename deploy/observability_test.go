package deploy_test

// The dashboard and the alert rules against a live sidecar: every PromQL
// expression parses (Prometheus's own parser) and names only metrics, and
// labels, a sidecar exports, so neither can rot as metrics change; the
// dashboard has Grafana's model fields; the rules pass promtool and link
// runbooks that exist; the PodMonitor scrapes the pods the manifests run.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"pgmirror/internal/pgtest"
	"pgmirror/internal/sidecartest"
	"pgmirror/internal/testdb"
	"pgmirror/internal/testutil"
	"pgmirror/jobs"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	dashboardFile = "grafana/pgmirror.json"
	rulesFile     = "prometheus/rules.yaml"
	rulesTestFile = "prometheus/rules_test.yaml"
	runbookFile   = "../docs/operations.md"
)

// targetLabels are the labels a scrape adds to every series: Prometheus's
// own, the Prometheus Operator's for a PodMonitor, and the node that
// kubernetes/podmonitor.yaml relabels.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container", "endpoint", "node"}

// exported is what one scrape of a live sidecar holds: for each series name
// (a histogram's _bucket, _sum and _count apart), its label names and the
// values each takes.
type exported map[string]map[string]map[string]bool

// scrapeLiveSidecar starts a sidecar with its admin server and returns what
// its /metrics exports once every metric that waits for an event has one.
func scrapeLiveSidecar(t *testing.T) exported {
	t.Helper()
	dsn, _ := testdb.New(t)
	sc := sidecartest.Start(t, dsn, sidecartest.Config{HTTPAddr: "127.0.0.1:0",
		Jobs: jobs.Config{QueueSampleInterval: 100 * time.Millisecond}})
	if err := sc.Client.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + sc.Admin.ListenAddr() + "/metrics"
	var ex exported
	testutil.Eventually(t, 10*time.Second, func() (bool, string) {
		ex = scrapeMetrics(t, url)
		_, ok := ex["pgmirror_notification_queue_usage_ratio"]
		return ok, "no notification queue reading yet"
	})
	return ex
}

func scrapeMetrics(t *testing.T, url string) exported {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	ex := exported{}
	add := func(name string, m *dto.Metric, extra ...string) {
		if ex[name] == nil {
			ex[name] = map[string]map[string]bool{}
		}
		for _, lp := range m.GetLabel() {
			if ex[name][lp.GetName()] == nil {
				ex[name][lp.GetName()] = map[string]bool{}
			}
			ex[name][lp.GetName()][lp.GetValue()] = true
		}
		for _, l := range extra {
			ex[name][l] = map[string]bool{}
		}
	}
	for name, fam := range fams {
		for _, m := range fam.GetMetric() {
			switch fam.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return ex
}

// checkExpr parses expr as PromQL and checks that every metric it selects is
// exported, with the labels its matchers name and the values its equality
// matchers ask for. It returns the metric names.
func checkExpr(t *testing.T, where, expr string, ex exported) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse as PromQL: %v", where, expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name == "" {
			t.Errorf("%s: selector %s names no metric", where, vs)
			return nil
		}
		names = append(names, vs.Name)
		series, ok := ex[vs.Name]
		if !ok {
			t.Errorf("%s: metric %s is not exported by a sidecar", where, vs.Name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			checkMatcher(t, where, vs.Name, m, series)
		}
		return nil
	})
	return names
}

func checkMatcher(t *testing.T, where, metric string, m *labels.Matcher, series map[string]map[string]bool) {
	t.Helper()
	if m.Name == model.MetricNameLabel || slices.Contains(targetLabels, m.Name) {
		return
	}
	values, ok := series[m.Name]
	switch {
	case !ok:
		t.Errorf("%s: %s has no label %q", where, metric, m.Name)
	case m.Type == labels.MatchEqual && len(values) > 0 && !values[m.Value]:
		t.Errorf("%s: %s{%s} matches no series: %s=%q is not exported", where, metric, m, m.Name, m.Value)
	case m.Type == labels.MatchRegexp && len(values) > 0:
		matched := false
		for v := range values {
			matched = matched || m.Matches(v)
		}
		if !matched {
			t.Errorf("%s: %s{%s} matches no exported value of %s", where, metric, m, m.Name)
		}
	}
}

// grafanaVar is a Grafana template variable in a query: $name, ${name} or
// ${name:format}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)(?::\w+)?\}?`)

// expandGrafana replaces Grafana's variables by values PromQL accepts: the
// interval variables by a duration, the dashboard's own by a regexp.
func expandGrafana(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.Contains(v, "__") { // $__rate_interval, $__interval, $__range
			return "5m"
		}
		return ".*"
	})
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	Title         string                        `json:"title"`
	UID           string                        `json:"uid"`
	SchemaVersion int                           `json:"schemaVersion"`
	Time          *struct{}                     `json:"time"`
	Panels        []panel                       `json:"panels"`
	Templating    *struct{ List []templateVar } `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	GridPos    *gridPos    `json:"gridPos"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type gridPos struct{ H, W, X, Y int }

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type templateVar struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"` // a string, or {"query": ...} in newer models
	Datasource *datasource `json:"datasource"`
}

func loadDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d := &dashboard{}
	if err := json.Unmarshal(b, d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// rule is one rule of a Prometheus rule file.
type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	var out []rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", rulesFile)
	}
	return out
}

// Every query of the dashboard and every rule parses as PromQL and uses only
// what a live sidecar exports; the dashboard covers what issue 20 asks it to show.
func TestDashboardAndRulesUseExportedMetrics(t *testing.T) {
	ex := scrapeLiveSidecar(t)
	used := map[string]bool{}
	d := loadDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, n := range checkExpr(t, fmt.Sprintf("panel %q %s", p.Title, tg.RefID), expandGrafana(tg.Expr), ex) {
				used[n] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if q := varQuery(v); strings.HasPrefix(q, "label_values(") {
			sel, label := splitLabelValues(t, q)
			checkExpr(t, "variable "+v.Name, expandGrafana(sel), ex)
			if !slices.Contains(targetLabels, label) {
				t.Errorf("variable %s: label %q is not one the scrape adds", v.Name, label)
			}
		}
	}
	for _, want := range []string{
		"pgmirror_commands_total", "pgmirror_hits_total", "pgmirror_misses_total", "pgmirror_propagation_lag_seconds_bucket",
		"pgmirror_listener_connected", "pgmirror_listener_reconnects_total", "pgmirror_resyncs_total",
		"pgmirror_reload_drift_keys_total", "pgmirror_index_bytes", "pgmirror_value_bytes", "pgmirror_max_memory_bytes",
		"pgmirror_write_batch_duration_seconds_bucket", "pgmirror_writer_batch_errors_total", "pgmirror_loader_runs_total",
		"pgmirror_refreshes_total", "pgmirror_clients_connected", "pgmirror_notification_queue_usage_ratio",
	} {
		if !used[want] {
			t.Errorf("the dashboard shows no %s", want)
		}
	}
	for _, r := range loadRules(t) {
		checkExpr(t, "rule "+r.Alert+r.Record, r.Expr, ex)
	}
}

func varQuery(v templateVar) string {
	switch q := v.Query.(type) {
	case string:
		return q
	case map[string]any:
		s, _ := q["query"].(string)
		return s
	}
	return ""
}

// splitLabelValues splits label_values(selector, label).
func splitLabelValues(t *testing.T, q string) (selector, label string) {
	t.Helper()
	inner := strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
	i := strings.LastIndex(inner, ",")
	if i < 0 {
		t.Fatalf("%q: want label_values(selector, label)", q)
	}
	return strings.TrimSpace(inner[:i]), strings.TrimSpace(inner[i+1:])
}

// The dashboard has the fields of Grafana's dashboard model, panels on the
// 24-column grid without overlaps, every query on the data source variable,
// and every variable it uses defined.
func TestDashboardModel(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" || len(d.UID) > 40 || d.SchemaVersion < 30 || d.Time == nil || d.Templating == nil {
		t.Fatalf("%s: title %q, uid %q (at most 40 characters), schemaVersion %d (want 30 or later), time and templating required",
			dashboardFile, d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]templateVar{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds, ok := vars["datasource"]; !ok || ds.Type != "datasource" || varQuery(ds) != "prometheus" {
		t.Errorf("no template variable datasource of type datasource for prometheus")
	}
	ids := map[int]bool{}
	var placed []*gridPos
	for _, p := range d.Panels {
		name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID == 0 || ids[p.ID] || p.Type == "" || p.Title == "" {
			t.Errorf("%s: want a unique non-zero id, a type and a title", name)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("%s: gridPos %+v is not on Grafana's 24-column grid", name, g)
			continue
		}
		for _, o := range placed {
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("%s: gridPos %+v overlaps %+v", name, *g, *o)
			}
		}
		placed = append(placed, g)
		if p.Type == "row" {
			continue
		}
		checkPanelQueries(t, name, p, vars)
	}
}

func checkPanelQueries(t *testing.T, name string, p panel, vars map[string]templateVar) {
	t.Helper()
	if len(p.Targets) == 0 {
		t.Errorf("%s: no targets", name)
	}
	onVar := func(ds *datasource) bool { return ds != nil && ds.Type == "prometheus" && ds.UID == "${datasource}" }
	if !onVar(p.Datasource) {
		t.Errorf("%s: datasource %+v, want prometheus ${datasource}", name, p.Datasource)
	}
	refs := map[string]bool{}
	for _, tg := range p.Targets {
		if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] || !onVar(tg.Datasource) {
			t.Errorf("%s: target %q: want an expr, a unique refId and the datasource variable", name, tg.RefID)
		}
		refs[tg.RefID] = true
		for _, m := range grafanaVar.FindAllStringSubmatch(tg.Expr, -1) {
			if _, ok := vars[m[1]]; !ok && !strings.HasPrefix(m[1], "__") {
				t.Errorf("%s: target %s uses $%s, which the dashboard does not define", name, tg.RefID, m[1])
			}
		}
	}
}

// promtool accepts the rules and passes their unit tests; every alert has a
// severity, a summary and a runbook that docs/operations.md has.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make setup` (scripts/setup installs Debian's prometheus package, which has it)")
	}
	if out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", rulesFile, err, out)
	}
	// When each alert fires, and that one full queue alerts once (rules_test.yaml).
	if out, err := exec.Command(promtool, "test", "rules", rulesTestFile).CombinedOutput(); err != nil {
		t.Errorf("promtool test rules %s: %v\n%s", rulesTestFile, err, out)
	}
	anchors := markdownAnchors(t, runbookFile)
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range loadRules(t) {
		if r.Alert == "" {
			continue
		}
		if !strings.Contains(string(tests), "alertname: "+r.Alert+"\n") {
			t.Errorf("alert %s has no test in %s", r.Alert, rulesTestFile)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
			t.Errorf("alert %s: want a severity label and a summary", r.Alert)
		}
		url := r.Annotations["runbook_url"]
		anchor, ok := strings.CutPrefix(url, "docs/operations.md#")
		if !ok || !anchors[anchor] {
			t.Errorf("alert %s: runbook_url %q is not a section of docs/operations.md", r.Alert, url)
		}
	}
}

// markdownAnchors returns the anchors GitHub gives the headings of a Markdown file.
func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		out[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return out
}
