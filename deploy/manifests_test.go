package deploy_test

// The Kubernetes manifests and the Dockerfile cannot be run here (no cluster,
// no container engine), so these tests check what pgmirror needs of them by
// reading them: the sidecar's shape, probes, socket volume, security context
// and memory, and that the Dockerfile builds as the Makefile's static build.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// pgmirrorUser is the user id of the image (distroless "nonroot") and of the manifests.
const pgmirrorUser = 65532

// Minimal Kubernetes types: only what the checks read.

type manifest struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		podSpec  `yaml:",inline"` // kind Pod
		Template struct {         // kinds Job, DaemonSet, Deployment
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		Selector *struct { // kinds DaemonSet, Deployment
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		UpdateStrategy *struct { // kind DaemonSet
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
				MaxSurge       any `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"updateStrategy"`
	} `yaml:"spec"`
}

// pod returns the pod spec of a Pod or of the template of a Job, DaemonSet or Deployment.
func (m *manifest) pod() *podSpec {
	if m.Kind == "Pod" {
		return &m.Spec.podSpec
	}
	return &m.Spec.Template.Spec
}

type podSpec struct {
	RestartPolicy   string           `yaml:"restartPolicy"`
	SecurityContext *securityContext `yaml:"securityContext"`
	HostNetwork     bool             `yaml:"hostNetwork"`
	Volumes         []volume         `yaml:"volumes"`
	InitContainers  []container      `yaml:"initContainers"`
	Containers      []container      `yaml:"containers"`
}

type volume struct {
	Name     string    `yaml:"name"`
	EmptyDir *struct{} `yaml:"emptyDir"`
	HostPath *struct {
		Path string `yaml:"path"`
		Type string `yaml:"type"`
	} `yaml:"hostPath"`
}

type securityContext struct {
	RunAsNonRoot             *bool   `yaml:"runAsNonRoot"`
	RunAsUser                *int64  `yaml:"runAsUser"`
	RunAsGroup               *int64  `yaml:"runAsGroup"`
	FSGroup                  *int64  `yaml:"fsGroup"`
	SupplementalGroups       []int64 `yaml:"supplementalGroups"`
	ReadOnlyRootFilesystem   *bool   `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool   `yaml:"allowPrivilegeEscalation"`
	Capabilities             *struct {
		Drop []string `yaml:"drop"`
		Add  []string `yaml:"add"`
	} `yaml:"capabilities"`
}

type container struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Env           []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *securityContext `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

// isPgmirror says whether c runs pgmirror (its image is pgmirror's).
func (c *container) isPgmirror() bool { return strings.Contains(c.Image, "pgmirror") }

// flag returns the value of --name=value (or --name value) in c's arguments.
func (c *container) flag(name string) (string, bool) {
	args := append(slices.Clone(c.Command), c.Args...)
	for i, a := range args {
		for _, prefix := range []string{"--" + name, "-" + name} {
			if v, ok := strings.CutPrefix(a, prefix+"="); ok {
				return v, true
			}
			if a == prefix && i+1 < len(args) {
				return args[i+1], true
			}
		}
	}
	return "", false
}

func (c *container) mount(volume string) (string, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath, true
		}
	}
	return "", false
}

// monitorKinds are the kinds of the Prometheus Operator's objects: no workloads.
var monitorKinds = map[string]bool{"PodMonitor": true, "ServiceMonitor": true}

// loadManifests parses the workloads (every YAML document under kubernetes/
// but the monitoring objects, which run no pod).
func loadManifests(t *testing.T) []*manifest {
	t.Helper()
	var out []*manifest
	for _, m := range loadAll(t) {
		if !monitorKinds[m.Kind] {
			out = append(out, m)
		}
	}
	return out
}

// loadAll parses every YAML document under kubernetes/.
func loadAll(t *testing.T) []*manifest {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	yml, _ := filepath.Glob(filepath.Join("kubernetes", "*.yml"))
	files = append(files, yml...)
	if len(files) == 0 {
		t.Fatal("no manifests in kubernetes/")
	}
	var out []*manifest
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			m := &manifest{file: fmt.Sprintf("%s#%d", f, i)}
			err := dec.Decode(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", m.file, err)
			}
			if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
				t.Fatalf("%s: apiVersion, kind and metadata.name are required", m.file)
			}
			out = append(out, m)
		}
	}
	return out
}

func byKind(ms []*manifest, kind string) []*manifest {
	var out []*manifest
	for _, m := range ms {
		if m.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}

func TestManifestKinds(t *testing.T) {
	ms := loadAll(t)
	want := map[string]string{"Pod": "v1", "Job": "batch/v1", "DaemonSet": "apps/v1", "Deployment": "apps/v1",
		"PodMonitor": "monitoring.coreos.com/v1"}
	seen := map[string]bool{}
	for _, m := range ms {
		api, ok := want[m.Kind]
		if !ok {
			t.Errorf("%s: unexpected kind %q", m.file, m.Kind)
			continue
		}
		if m.APIVersion != api {
			t.Errorf("%s: kind %s has apiVersion %q, want %q", m.file, m.Kind, m.APIVersion, api)
		}
		seen[m.Kind] = true
	}
	for kind := range want {
		if !seen[kind] {
			t.Errorf("no %s among the manifests", kind)
		}
	}
}

func TestSidecarPod(t *testing.T) {
	pods := byKind(loadManifests(t), "Pod")
	if len(pods) == 0 {
		t.Fatal("no Pod")
	}
	for _, m := range pods {
		t.Run(m.file, func(t *testing.T) {
			spec := m.pod()
			for _, c := range spec.Containers {
				if c.isPgmirror() {
					t.Errorf("pgmirror is an ordinary container; it must be a native sidecar (an init container with restartPolicy: Always)")
				}
			}
			if len(spec.Containers) == 0 {
				t.Fatalf("no app container")
			}
			var sidecar *container
			for i := range spec.InitContainers {
				if spec.InitContainers[i].isPgmirror() {
					sidecar = &spec.InitContainers[i]
				}
			}
			if sidecar == nil {
				t.Fatalf("no pgmirror init container")
			}
			if sidecar.RestartPolicy != "Always" {
				t.Errorf("the pgmirror init container has restartPolicy %q, want Always (a native sidecar)", sidecar.RestartPolicy)
			}
			if len(sidecar.Args) == 0 || sidecar.Args[0] != "serve" {
				t.Errorf("sidecar args %q: want the serve command first", sidecar.Args)
			}
			checkProbes(t, sidecar)
			checkSocket(t, spec, sidecar)
			checkDSN(t, sidecar)
			checkMemory(t, sidecar)
		})
	}
}

// checkProbes: startup and readiness on /readyz, liveness on /healthz, all on the --http port.
func checkProbes(t *testing.T, c *container) {
	t.Helper()
	addr, ok := c.flag("http")
	if !ok {
		t.Fatalf("no --http: the default 127.0.0.1:9187 cannot be probed from the kubelet")
	}
	host, portText, found := strings.Cut(addr, ":")
	if !found || host == "127.0.0.1" || host == "localhost" {
		t.Fatalf("--http=%s: want :PORT (all interfaces), so the kubelet can probe it", addr)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		t.Fatalf("--http=%s: bad port", addr)
	}
	declared := false
	for _, p := range c.Ports {
		declared = declared || p.ContainerPort == port
	}
	if !declared {
		t.Errorf("port %d of --http is not among the container's ports", port)
	}
	for _, p := range []struct {
		name  string
		probe *probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/readyz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no %s with httpGet", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s path %q, want %q", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := resolvePort(c, p.probe.HTTPGet.Port); got != port {
			t.Errorf("%s port %v (%d), but --http=%s listens on %d", p.name, p.probe.HTTPGet.Port, got, addr, port)
		}
	}
}

// resolvePort turns a probe's port (a number or a port name) into a number; -1 if unknown.
func resolvePort(c *container, port any) int {
	switch p := port.(type) {
	case int:
		return p
	case string:
		if n, err := strconv.Atoi(p); err == nil {
			return n
		}
		for _, cp := range c.Ports {
			if cp.Name == p {
				return cp.ContainerPort
			}
		}
	}
	return -1
}

// checkSocket: the socket's directory is an emptyDir mounted by the sidecar and every app
// container, and the mode and fsGroup let another user connect.
func checkSocket(t *testing.T, spec *podSpec, sidecar *container) {
	t.Helper()
	socket, ok := sidecar.flag("socket")
	if !ok || !filepath.IsAbs(socket) {
		t.Fatalf("--socket=%q: want an absolute path on the shared volume (the default ./pgmirror.sock is on the read-only root)", socket)
	}
	dir := filepath.Dir(socket)
	volume := ""
	for _, m := range sidecar.VolumeMounts {
		if m.MountPath == dir {
			volume = m.Name
		}
	}
	if volume == "" {
		t.Fatalf("the socket's directory %s is not a volume mount of the sidecar", dir)
	}
	isEmptyDir := false
	for _, v := range spec.Volumes {
		if v.Name == volume && v.EmptyDir != nil {
			isEmptyDir = true
		}
	}
	if !isEmptyDir {
		t.Errorf("volume %q holding the socket is not an emptyDir", volume)
	}
	for _, c := range spec.Containers {
		if path, ok := c.mount(volume); !ok || !filepath.IsAbs(path) {
			t.Errorf("app container %q does not mount the socket volume %q (at an absolute path)", c.Name, volume)
		}
	}
	if mode, _ := sidecar.flag("socket-mode"); mode != "0660" {
		t.Errorf("--socket-mode=%q, want 0660 (the app connects through the group)", mode)
	}
	if spec.SecurityContext == nil || spec.SecurityContext.FSGroup == nil {
		t.Errorf("no pod securityContext.fsGroup: the app could not use the socket")
	}
}

// checkDSN: the DSN comes from a Secret, never from the manifest.
func checkDSN(t *testing.T, c *container) {
	t.Helper()
	if _, ok := c.flag("dsn"); ok {
		t.Errorf("--dsn on the command line: take it from a Secret (env PGMIRROR_DSN)")
	}
	fromSecret := false
	for _, e := range c.Env {
		if e.Name == "PGMIRROR_DSN" || e.Name == "DATABASE_URL" || e.Name == "PGMIRROR_LISTEN_DSN" || e.Name == "PGPASSWORD" {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.Value != "" {
				t.Errorf("env %s is not taken from a Secret", e.Name)
			}
		}
		if e.Name == "PGMIRROR_DSN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			fromSecret = true
		}
	}
	if !fromSecret {
		t.Errorf("no env PGMIRROR_DSN from a secretKeyRef")
	}
}

// checkMemory: --max-memory at most half the memory limit (the heap runs to about twice it).
func checkMemory(t *testing.T, c *container) {
	t.Helper()
	limit, err := parseQuantity(c.Resources.Limits["memory"])
	if err != nil {
		t.Fatalf("memory limit: %v", err)
	}
	if _, err := parseQuantity(c.Resources.Requests["memory"]); err != nil {
		t.Errorf("memory request: %v", err)
	}
	text, ok := c.flag("max-memory")
	if !ok {
		text = "256MiB" // pgmirror's default
	}
	budget, err := parseSize(text)
	if err != nil {
		t.Fatalf("--max-memory=%s: %v", text, err)
	}
	if 2*budget > limit {
		t.Errorf("--max-memory=%s is more than half the memory limit %s", text, c.Resources.Limits["memory"])
	}
}

// parseQuantity reads a Kubernetes memory quantity (binary or decimal suffix, or bytes).
func parseQuantity(q string) (int64, error) {
	return parseWithUnits(q, map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
		"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "": 1})
}

// parseSize reads a pgmirror size (README: bytes, KiB/MiB/GiB/TiB, KB/MB/GB).
func parseSize(s string) (int64, error) {
	return parseWithUnits(s, map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1, "": 1})
}

var quantityRE = regexp.MustCompile(`^([0-9]+)([A-Za-z]*)$`)

func parseWithUnits(s string, units map[string]int64) (int64, error) {
	m := quantityRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q: want a number with a unit", s)
	}
	unit, ok := units[m[2]]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q", s, m[2])
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return n * unit, nil
}

// Every container of every manifest runs as non-root, read-only, without privileges.
func TestSecurityContexts(t *testing.T) {
	for _, m := range loadManifests(t) {
		spec := m.pod()
		all := append(slices.Clone(spec.InitContainers), spec.Containers...)
		if len(all) == 0 {
			t.Errorf("%s: no containers", m.file)
		}
		for i, c := range all {
			name := m.file + " " + c.Name
			if m.Kind == "DaemonSet" && i < len(spec.InitContainers) && c.Name == dirSetupName {
				checkDirSetup(t, name, &c)
				continue
			}
			pod, sc := spec.SecurityContext, c.SecurityContext
			if pod == nil {
				pod = &securityContext{}
			}
			if sc == nil {
				t.Errorf("%s: no securityContext", name)
				continue
			}
			nonRoot := sc.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = pod.RunAsNonRoot
			}
			if nonRoot == nil || !*nonRoot {
				t.Errorf("%s: runAsNonRoot is not true", name)
			}
			user := sc.RunAsUser
			if user == nil {
				user = pod.RunAsUser
			}
			switch {
			case user == nil || *user == 0:
				t.Errorf("%s: runAsUser unset or 0", name)
			case c.isPgmirror() && *user != pgmirrorUser:
				t.Errorf("%s: pgmirror runs as %d, want the image's user %d", name, *user, pgmirrorUser)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem is not true", name)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", name)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", name)
			}
			if _, ok := c.Resources.Limits["memory"]; !ok {
				t.Errorf("%s: no memory limit", name)
			}
		}
	}
}

func TestMigrateJob(t *testing.T) {
	ms := loadManifests(t)
	jobs := byKind(ms, "Job")
	if len(jobs) == 0 {
		t.Fatal("no Job")
	}
	sidecarImages := map[string]bool{}
	for _, p := range append(byKind(ms, "Pod"), byKind(ms, "DaemonSet")...) {
		for _, c := range append(slices.Clone(p.pod().InitContainers), p.pod().Containers...) {
			if c.isPgmirror() {
				sidecarImages[c.Image] = true
			}
		}
	}
	migrates := 0
	for _, m := range jobs {
		spec := m.pod()
		if spec.RestartPolicy != "Never" && spec.RestartPolicy != "OnFailure" {
			t.Errorf("%s: restartPolicy %q, want Never or OnFailure", m.file, spec.RestartPolicy)
		}
		for _, c := range spec.Containers {
			if !c.isPgmirror() {
				continue
			}
			if len(c.Args) == 0 || c.Args[0] != "migrate" {
				t.Errorf("%s: container %s args %q, want the migrate command first", m.file, c.Name, c.Args)
				continue
			}
			migrates++
			checkDSN(t, &c)
			if len(sidecarImages) > 0 && !sidecarImages[c.Image] {
				t.Errorf("%s: migrate image %s differs from the sidecar's %v", m.file, c.Image, sidecarImages)
			}
		}
	}
	if migrates == 0 {
		t.Errorf("no Job runs pgmirror migrate")
	}
}

// goBuild is a `go build` command line: its environment assignments and arguments.
type goBuild struct {
	env    map[string]string
	flags  []string // every argument but -o and its value
	output string
}

// parseGoBuild finds `[NAME=value...] go build ...` in a shell command.
func parseGoBuild(command string) (goBuild, error) {
	words, err := shellWords(command)
	if err != nil {
		return goBuild{}, err
	}
	// The simple command holding go build, in a list joined by && or ;.
	var cmd []string
	for _, w := range append(words, "&&") {
		if w == "&&" || w == ";" || w == "||" {
			if i := slices.Index(cmd, "build"); i > 0 && strings.HasSuffix(cmd[i-1], "go") || i > 0 && cmd[i-1] == "$(GO)" {
				break
			}
			cmd = nil
			continue
		}
		cmd = append(cmd, w)
	}
	b := goBuild{env: map[string]string{}}
	for len(cmd) > 0 && strings.Contains(cmd[0], "=") && !strings.HasPrefix(cmd[0], "-") {
		k, v, _ := strings.Cut(cmd[0], "=")
		b.env[k] = v
		cmd = cmd[1:]
	}
	if len(cmd) < 2 || cmd[1] != "build" {
		return goBuild{}, fmt.Errorf("no go build in %q", command)
	}
	for i := 2; i < len(cmd); i++ {
		if cmd[i] == "-o" && i+1 < len(cmd) {
			b.output = cmd[i+1]
			i++
			continue
		}
		b.flags = append(b.flags, cmd[i])
	}
	return b, nil
}

// shellWords splits a POSIX shell command into words: quotes, backslashes and
// whitespace as sh reads them (no expansion). ${VAR} and $VAR are left as written.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] != '\n' {
				cur.WriteByte(s[i])
				inWord = true
			}
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == ';':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			words = append(words, ";")
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// repoFile reads a file of the repository root (the parent of deploy/).
func repoFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// makefileStaticBuild returns the Makefile's static build (the CGO_ENABLED=0 go build
// line), with make's variables expanded and $(VERSION) written ${VERSION}.
func makefileStaticBuild(t *testing.T) goBuild {
	t.Helper()
	text := strings.ReplaceAll(repoFile(t, "Makefile"), "\\\n", " ")
	vars := map[string]string{"GO": "go"}
	varRE := regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|\?=|=)\s*(.*)$`)
	var line string
	for _, l := range strings.Split(text, "\n") {
		if m := varRE.FindStringSubmatch(l); m != nil && m[1] != "GO" {
			vars[m[1]] = strings.TrimSpace(m[2])
		}
		if strings.HasPrefix(l, "\t") && strings.Contains(l, "CGO_ENABLED=0") && strings.Contains(l, " build ") {
			if line != "" {
				t.Fatalf("two static builds in the Makefile:\n%s\n%s", line, l)
			}
			line = strings.TrimSpace(l)
		}
	}
	if line == "" {
		t.Fatal("no `CGO_ENABLED=0 $(GO) build` line in the Makefile")
	}
	refRE := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for range 10 {
		line = refRE.ReplaceAllStringFunc(line, func(ref string) string {
			name := refRE.FindStringSubmatch(ref)[1]
			if name == "VERSION" {
				return "${VERSION}"
			}
			if v, ok := vars[name]; ok {
				return v
			}
			t.Fatalf("the static build line uses $(%s), which the Makefile does not set", name)
			return ""
		})
	}
	b, err := parseGoBuild(line)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// dockerfile is a parsed Dockerfile: instructions with continuations joined.
type dockerfile struct {
	args         map[string]string // ARG defaults
	instructions [][2]string       // keyword (upper case), rest
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	d := dockerfile{args: map[string]string{}}
	var cur string
	for _, l := range strings.Split(repoFile(t, "Dockerfile"), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		cur += l
		kw, rest, _ := strings.Cut(strings.TrimSpace(cur), " ")
		kw, rest = strings.ToUpper(kw), strings.TrimSpace(rest)
		d.instructions = append(d.instructions, [2]string{kw, rest})
		if kw == "ARG" {
			name, def, _ := strings.Cut(rest, "=")
			d.args[name] = def
		}
		cur = ""
	}
	return d
}

func TestDockerfileBuildsAsTheMakefile(t *testing.T) {
	want := makefileStaticBuild(t)
	if want.env["CGO_ENABLED"] != "0" {
		t.Fatalf("the Makefile's static build has CGO_ENABLED=%q", want.env["CGO_ENABLED"])
	}
	d := parseDockerfile(t)
	var builds []goBuild
	for _, in := range d.instructions {
		if in[0] != "RUN" || !strings.Contains(in[1], "go build") {
			continue
		}
		cmd := in[1]
		for strings.HasPrefix(cmd, "--") { // RUN options: --mount=..., --network=...
			_, cmd, _ = strings.Cut(cmd, " ")
			cmd = strings.TrimSpace(cmd)
		}
		cmd = regexp.MustCompile(`\$([A-Za-z_][A-Za-z0-9_]*)`).ReplaceAllString(cmd, "$${$1}") // $VERSION -> ${VERSION}
		cmd = strings.ReplaceAll(cmd, "${{", "${")
		b, err := parseGoBuild(cmd)
		if err != nil {
			t.Fatal(err)
		}
		builds = append(builds, b)
	}
	if len(builds) != 1 {
		t.Fatalf("want one RUN ... go build in the Dockerfile, found %d", len(builds))
	}
	got := builds[0]
	if got.env["CGO_ENABLED"] != "0" {
		t.Errorf("the Dockerfile builds with CGO_ENABLED=%q, want 0 (a static binary)", got.env["CGO_ENABLED"])
	}
	if !slices.Equal(got.flags, want.flags) {
		t.Errorf("the Dockerfile's go build arguments differ from the Makefile's static build:\n Dockerfile: %q\n   Makefile: %q", got.flags, want.flags)
	}
	if got.output == "" {
		t.Errorf("the Dockerfile's go build has no -o")
	}
}

func TestDockerfileImage(t *testing.T) {
	d := parseDockerfile(t)
	var froms []string
	user := ""
	for _, in := range d.instructions {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
			user = "" // USER applies per stage
		case "USER":
			user = in[1]
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build (builder, then runtime), found FROM %q", froms)
	}
	final := strings.Fields(froms[len(froms)-1])[0]
	switch {
	case strings.HasPrefix(final, "gcr.io/distroless/static") && strings.Contains(final, "nonroot"):
	case final == "scratch":
	default:
		t.Errorf("final stage FROM %s: want gcr.io/distroless/static...:nonroot or scratch", final)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("final stage USER %q: want a numeric non-root user (Kubernetes runAsNonRoot checks a number)", user)
	} else if n != pgmirrorUser {
		t.Errorf("final stage USER %d, the manifests run as %d", n, pgmirrorUser)
	}

	// The builder's Go must be at least go.mod's go line.
	builder := strings.Fields(froms[0])
	image := builder[len(builder)-1]
	for _, w := range builder {
		if strings.HasPrefix(w, "golang:") {
			image = w
		}
	}
	image = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?`).ReplaceAllStringFunc(image, func(ref string) string {
		name := strings.Trim(ref, "${}")
		return d.args[name]
	})
	m := regexp.MustCompile(`^golang:([0-9]+(?:\.[0-9]+)*)`).FindStringSubmatch(image)
	if m == nil {
		t.Fatalf("builder stage %q: want a golang:VERSION image", image)
	}
	goMod := regexp.MustCompile(`(?m)^go ([0-9.]+)\s*$`).FindStringSubmatch(repoFile(t, "go.mod"))
	if goMod == nil {
		t.Fatal("no go line in go.mod")
	}
	if versionLess(m[1], goMod[1]) {
		t.Errorf("builder image %s has Go %s, older than go.mod's go %s", image, m[1], goMod[1])
	}
}

// versionLess compares dotted versions numerically; "1.26" means the newest 1.26.x, so it is
// not less than any 1.26.y.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return false
}

func TestShellWords(t *testing.T) {
	for in, want := range map[string][]string{
		`CGO_ENABLED=0 go build -ldflags '-s -w -X main.version=${VERSION}' -o x .`: {"CGO_ENABLED=0", "go", "build", "-ldflags", "-s -w -X main.version=${VERSION}", "-o", "x", "."},
		`go build -ldflags "-s -w -X \"main.v=${V}\"" .`:                            {"go", "build", "-ldflags", `-s -w -X "main.v=${V}"`, "."},
		"a \\\n b; c && d": {"a", "b", ";", "c", "&&", "d"},
	} {
		got, err := shellWords(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("shellWords(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
