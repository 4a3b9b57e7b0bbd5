package admin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"pgmirror/admin"
	"pgmirror/internal/pgtest"
	"pgmirror/internal/testutil"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testLogger logs at debug level into a buffer the test can inspect.
func testLogger() (hclog.Logger, *testutil.SyncBuffer) {
	buf := &testutil.SyncBuffer{}
	return hclog.New(&hclog.LoggerOptions{Name: "admin", Level: hclog.Debug, Output: buf}), buf
}

// local is the configuration of a server on 127.0.0.1:0.
func local() admin.Config {
	return admin.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second}
}

// serve opens srv (configured by local) and returns its base URL; it closes when the test ends.
func serve(t *testing.T, srv *admin.Server) string {
	t.Helper()
	if err := srv.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		select {
		case err := <-srv.Err():
			t.Errorf("serve: %v", err)
		default:
		}
	})
	return "http://" + srv.ListenAddr()
}

var client = &http.Client{Timeout: 10 * time.Second}

// get fetches url and returns the status code and body.
func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// readyz fetches /readyz and decodes its body.
func readyz(t testing.TB, base string) (int, admin.Status) {
	t.Helper()
	code, body := get(t, base+"/readyz")
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/readyz answered %d with a body that is not JSON: %q: %v", code, body, err)
	}
	return code, st
}

// families is a parsed scrape.
type families map[string]*dto.MetricFamily

// scrape fetches /metrics and parses it with expfmt's text parser.
func scrape(t testing.TB, base string) families {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the series of name with exactly labels
// (name=value pairs): a counter's or gauge's value, a histogram's count.
// A missing series fails the test.
func (f families) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := f.lookup(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, labels)
	}
	return v
}

func (f families) lookup(name string, labels ...string) (float64, bool) {
	fam, ok := f[name]
	if !ok {
		return 0, false
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
next:
	for _, m := range fam.GetMetric() {
		if len(m.GetLabel()) != len(want) {
			continue
		}
		for _, lp := range m.GetLabel() {
			if want[lp.GetName()] != lp.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

func runtimeVersion() string { return runtime.Version() }
