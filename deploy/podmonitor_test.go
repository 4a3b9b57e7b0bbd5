package deploy_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// podMonitor is the part of the Prometheus Operator's PodMonitor the test reads.
type podMonitor struct {
	Spec struct {
		NamespaceSelector struct {
			Any bool `yaml:"any"`
		} `yaml:"namespaceSelector"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port        string `yaml:"port"`
			Path        string `yaml:"path"`
			Relabelings []struct {
				SourceLabels []string `yaml:"sourceLabels"`
				TargetLabel  string   `yaml:"targetLabel"`
			} `yaml:"relabelings"`
		} `yaml:"podMetricsEndpoints"`
	} `yaml:"spec"`
}

// podLabels are the labels of the pods a manifest runs.
func (m *manifest) podLabels() map[string]string {
	if m.Kind == "Pod" {
		return m.Metadata.Labels
	}
	return m.Spec.Template.Metadata.Labels
}

// The PodMonitor scrapes /metrics on the --http port of every pgmirror the
// manifests run (as a native sidecar or per node), and of nothing else; it
// gives series the node label the dashboard groups by.
func TestPodMonitorScrapesTheSidecars(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("kubernetes", "podmonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pm podMonitor
	if err := yaml.Unmarshal(b, &pm); err != nil {
		t.Fatal(err)
	}
	if len(pm.Spec.Endpoints) != 1 || len(pm.Spec.Selector.MatchLabels) == 0 {
		t.Fatalf("want one podMetricsEndpoint and a label selector: %+v", pm.Spec)
	}
	ep := pm.Spec.Endpoints[0]
	if ep.Path != "/metrics" {
		t.Errorf("path %q, want /metrics", ep.Path)
	}
	node := false
	for _, r := range ep.Relabelings {
		node = node || (r.TargetLabel == "node" && len(r.SourceLabels) == 1 && r.SourceLabels[0] == "__meta_kubernetes_pod_node_name")
	}
	if !node {
		t.Errorf("no relabeling of __meta_kubernetes_pod_node_name to node: the dashboard groups by node")
	}
	served := 0
	for _, m := range loadManifests(t) {
		selected := true
		for k, v := range pm.Spec.Selector.MatchLabels {
			selected = selected && m.podLabels()[k] == v
		}
		sidecar := servingPgmirror(m)
		switch {
		case sidecar == nil && selected:
			t.Errorf("%s runs no pgmirror serve but the PodMonitor selects it", m.file)
		case sidecar != nil && !selected:
			t.Errorf("%s runs pgmirror but its pods' labels %v do not match the PodMonitor's %v", m.file, m.podLabels(), pm.Spec.Selector.MatchLabels)
		case sidecar != nil:
			served++
			checkScrapePort(t, m, sidecar, ep.Port)
		}
	}
	if served == 0 {
		t.Errorf("no manifest runs pgmirror serve")
	}
}

// servingPgmirror returns the container or native sidecar that runs pgmirror serve, if any.
func servingPgmirror(m *manifest) *container {
	spec := m.pod()
	for _, list := range [][]container{spec.InitContainers, spec.Containers} {
		for i := range list {
			if list[i].isPgmirror() && len(list[i].Args) > 0 && list[i].Args[0] == "serve" {
				return &list[i]
			}
		}
	}
	return nil
}

// checkScrapePort: the port the PodMonitor names is pgmirror's --http port,
// and no other container of the pod has a port of that name.
func checkScrapePort(t *testing.T, m *manifest, sidecar *container, port string) {
	t.Helper()
	addr, _ := sidecar.flag("http")
	_, httpPort, _ := strings.Cut(addr, ":")
	if got := resolvePort(sidecar, port); strconv.Itoa(got) != httpPort {
		t.Errorf("%s: the PodMonitor's port %q is %d in pgmirror's container, but --http=%s", m.file, port, got, addr)
	}
	spec := m.pod()
	for _, c := range append(append([]container{}, spec.InitContainers...), spec.Containers...) {
		if c.Name != sidecar.Name && resolvePort(&c, port) != -1 {
			t.Errorf("%s: container %s also has a port named %q: the PodMonitor would scrape it", m.file, c.Name, port)
		}
	}
}
