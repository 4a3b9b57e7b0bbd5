package deploy_test

// The node-level deployment (kubernetes/daemonset.yaml and the app that uses
// it, kubernetes/node-app.yaml): one pgmirror per node, its socket in a
// hostPath directory that every app pod of the node mounts.

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dirSetupName is the DaemonSet's init container that gives the hostPath
// directory to pgmirror's user: the one container allowed to run as root.
const dirSetupName = "socket-dir"

// checkDirSetup: the directory setup runs as root with CAP_CHOWN alone and
// does nothing but chown and chmod.
func checkDirSetup(t *testing.T, name string, c *container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", name)
		return
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || !slices.Equal(sc.Capabilities.Add, []string{"CHOWN"}) {
		t.Errorf("%s: capabilities must drop ALL and add CHOWN only", name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", name)
	}
	if _, ok := c.Resources.Limits["memory"]; !ok {
		t.Errorf("%s: no memory limit", name)
	}
	for _, step := range dirSetupSteps(c) {
		if f := strings.Fields(step); len(f) == 0 || (f[0] != "chown" && f[0] != "chmod") {
			t.Errorf("%s: runs %q; it may only chown and chmod", name, step)
		}
	}
}

// dirSetupSteps returns the commands of `sh -c "a && b && c"`.
func dirSetupSteps(c *container) []string {
	cmd := append(slices.Clone(c.Command), c.Args...)
	if len(cmd) < 3 || cmd[0] != "sh" || cmd[1] != "-c" {
		return []string{strings.Join(cmd, " ")}
	}
	var steps []string
	for _, s := range strings.Split(cmd[2], "&&") {
		steps = append(steps, strings.TrimSpace(s))
	}
	return steps
}

// nodeSocket is what the DaemonSet offers the node's pods.
type nodeSocket struct {
	hostDir   string // the hostPath directory
	socket    string // the socket's name in it
	user, grp int64  // pgmirror's user and group
}

func daemonSets(t *testing.T) []*manifest {
	t.Helper()
	ds := byKind(loadManifests(t), "DaemonSet")
	if len(ds) == 0 {
		t.Fatal("no DaemonSet among the manifests")
	}
	return ds
}

func TestDaemonSet(t *testing.T) {
	for _, m := range daemonSets(t) {
		t.Run(m.file, func(t *testing.T) { checkDaemonSet(t, m) })
	}
}

// checkDaemonSet checks one DaemonSet and returns the socket it offers.
func checkDaemonSet(t *testing.T, m *manifest) nodeSocket {
	t.Helper()
	var ns nodeSocket
	if m.APIVersion != "apps/v1" {
		t.Errorf("apiVersion %q, want apps/v1", m.APIVersion)
	}
	if m.Spec.Selector == nil || len(m.Spec.Selector.MatchLabels) == 0 {
		t.Errorf("no spec.selector.matchLabels")
	} else {
		for k, v := range m.Spec.Selector.MatchLabels {
			if m.Spec.Template.Metadata.Labels[k] != v {
				t.Errorf("selector %s=%s does not match the template's labels %v", k, v, m.Spec.Template.Metadata.Labels)
			}
		}
	}
	// One node at a time, and never a second pgmirror on a node: it would find the first
	// answering on the socket and refuse to start.
	us := m.Spec.UpdateStrategy
	switch {
	case us == nil || us.Type != "RollingUpdate":
		t.Errorf("updateStrategy: want type RollingUpdate")
	case us.RollingUpdate == nil:
		t.Errorf("updateStrategy.rollingUpdate: want maxUnavailable and maxSurge 0")
	default:
		if s := intOrString(us.RollingUpdate.MaxSurge); s != "" && s != "0" && s != "0%" {
			t.Errorf("updateStrategy.rollingUpdate.maxSurge %s: two pgmirror pods on one node would share the socket path", s)
		}
		if u := intOrString(us.RollingUpdate.MaxUnavailable); u == "" || u == "0" || u == "0%" {
			t.Errorf("updateStrategy.rollingUpdate.maxUnavailable %q: want at least 1 (maxSurge must be 0)", u)
		}
	}
	spec := m.pod()
	if spec.HostNetwork {
		t.Errorf("hostNetwork: pgmirror needs no host network; its admin port is probed on the pod's address")
	}
	var pg *container
	for i := range spec.Containers {
		if spec.Containers[i].isPgmirror() {
			if pg != nil {
				t.Fatalf("two pgmirror containers")
			}
			pg = &spec.Containers[i]
		}
	}
	for _, c := range spec.InitContainers {
		if c.isPgmirror() {
			t.Errorf("pgmirror as an init container: in a DaemonSet it is the pod's own container")
		}
	}
	if pg == nil {
		t.Fatalf("no pgmirror container")
	}
	if len(pg.Args) == 0 || pg.Args[0] != "serve" {
		t.Errorf("args %q: want the serve command first", pg.Args)
	}
	checkProbes(t, pg)
	checkDSN(t, pg)
	checkMemory(t, pg)

	// The socket: an absolute --socket in a mounted hostPath directory, mode 0660.
	socket, ok := pg.flag("socket")
	if !ok || !filepath.IsAbs(socket) {
		t.Fatalf("--socket=%q: want an absolute path in the hostPath directory", socket)
	}
	mountDir := filepath.Dir(socket)
	ns.socket = filepath.Base(socket)
	var vol *volume
	for _, vm := range pg.VolumeMounts {
		if vm.MountPath == mountDir {
			for i := range spec.Volumes {
				if spec.Volumes[i].Name == vm.Name {
					vol = &spec.Volumes[i]
				}
			}
		}
	}
	if vol == nil || vol.HostPath == nil {
		t.Fatalf("the socket's directory %s is not a hostPath volume mounted by pgmirror", mountDir)
	}
	ns.hostDir = vol.HostPath.Path
	if !filepath.IsAbs(ns.hostDir) || filepath.Clean(ns.hostDir) == "/" {
		t.Errorf("hostPath %q: want an absolute directory of its own", ns.hostDir)
	}
	if vol.HostPath.Type != "DirectoryOrCreate" && vol.HostPath.Type != "Directory" {
		t.Errorf("hostPath type %q: want DirectoryOrCreate (or Directory where nodes provide it)", vol.HostPath.Type)
	}
	if mode, _ := pg.flag("socket-mode"); mode != "0660" {
		t.Errorf("--socket-mode=%q, want 0660 (app pods connect through the group)", mode)
	}

	// pgmirror's user and group, and the directory given to them.
	ns.user, ns.grp = pgmirrorUser, pgmirrorUser
	for _, sc := range []*securityContext{spec.SecurityContext, pg.SecurityContext} {
		if sc != nil && sc.RunAsUser != nil {
			ns.user = *sc.RunAsUser
		}
		if sc != nil && sc.RunAsGroup != nil {
			ns.grp = *sc.RunAsGroup
		}
	}
	if vol.HostPath.Type == "DirectoryOrCreate" {
		// The kubelet creates it root:root 0755, and fsGroup does not apply to hostPath:
		// an init container must give it to pgmirror.
		var setup *container
		for i := range spec.InitContainers {
			if spec.InitContainers[i].Name == dirSetupName {
				setup = &spec.InitContainers[i]
			}
		}
		if setup == nil {
			t.Fatalf("no init container %q to give the hostPath directory to pgmirror's user", dirSetupName)
		}
		at, ok := setup.mount(vol.Name)
		if !ok {
			t.Fatalf("%s does not mount the socket volume", dirSetupName)
		}
		owner, mode := "", ""
		for _, step := range dirSetupSteps(setup) {
			f := strings.Fields(step)
			if len(f) == 3 && f[2] == at {
				switch f[0] {
				case "chown":
					owner = f[1]
				case "chmod":
					mode = f[1]
				}
			}
		}
		if want := fmt.Sprintf("%d:%d", ns.user, ns.grp); owner != want {
			t.Errorf("%s leaves the directory owned by %q, want %s (pgmirror's user and group)", dirSetupName, owner, want)
		}
		bits, err := strconv.ParseUint(mode, 8, 32)
		switch {
		case err != nil:
			t.Errorf("%s: chmod %q: want an octal mode", dirSetupName, mode)
		case bits&0o700 != 0o700:
			t.Errorf("chmod %s: pgmirror's user needs rwx on the directory", mode)
		case bits&0o010 == 0:
			t.Errorf("chmod %s: the group needs x on the directory, or app pods cannot reach the socket", mode)
		case bits&0o002 != 0:
			t.Errorf("chmod %s: the directory is world-writable", mode)
		}
	}
	return ns
}

// socketOf reads the socket a DaemonSet offers, without checking it.
func socketOf(m *manifest) (nodeSocket, bool) {
	ns := nodeSocket{user: pgmirrorUser, grp: pgmirrorUser}
	spec := m.pod()
	for _, c := range spec.Containers {
		socket, ok := c.flag("socket")
		if !c.isPgmirror() || !ok {
			continue
		}
		ns.socket = filepath.Base(socket)
		for _, sc := range []*securityContext{spec.SecurityContext, c.SecurityContext} {
			if sc != nil && sc.RunAsUser != nil {
				ns.user = *sc.RunAsUser
			}
			if sc != nil && sc.RunAsGroup != nil {
				ns.grp = *sc.RunAsGroup
			}
		}
		for _, vm := range c.VolumeMounts {
			if vm.MountPath != filepath.Dir(socket) {
				continue
			}
			for _, v := range spec.Volumes {
				if v.Name == vm.Name && v.HostPath != nil {
					ns.hostDir = v.HostPath.Path
					return ns, true
				}
			}
		}
	}
	return ns, false
}

// intOrString prints an IntOrString field as written ("" if unset).
func intOrString(v any) string {
	if v == nil {
		return ""
	}
	return strings.TrimSpace(fmt.Sprint(v))
}

// TestNodeApps: every workload that mounts the DaemonSet's directory can reach the socket:
// it mounts the directory (read-only, never the socket file), runs with the socket's group,
// and points its client at the socket.
func TestNodeApps(t *testing.T) {
	ms := loadManifests(t)
	var sockets []nodeSocket
	for _, m := range daemonSets(t) {
		if ns, ok := socketOf(m); ok {
			sockets = append(sockets, ns) // TestDaemonSet checks the rest
		}
	}
	apps := 0
	for _, m := range ms {
		if m.Kind == "DaemonSet" || m.Kind == "Job" {
			continue
		}
		spec := m.pod()
		for _, v := range spec.Volumes {
			if v.HostPath == nil {
				continue
			}
			var ns *nodeSocket
			for i := range sockets {
				if filepath.Clean(sockets[i].hostDir) == filepath.Clean(v.HostPath.Path) {
					ns = &sockets[i]
				}
			}
			if ns == nil {
				if strings.Contains(v.HostPath.Path, "pgmirror") {
					t.Errorf("%s: hostPath %s is not the directory of a pgmirror DaemonSet (%v)", m.file, v.HostPath.Path, sockets)
				}
				continue
			}
			apps++
			if v.HostPath.Type != "Directory" {
				t.Errorf("%s: hostPath type %q: want Directory (the DaemonSet creates it; the pod waits for it)", m.file, v.HostPath.Type)
			}
			groups := map[int64]bool{}
			if sc := spec.SecurityContext; sc != nil {
				for _, g := range sc.SupplementalGroups {
					groups[g] = true
				}
				if sc.FSGroup != nil {
					groups[*sc.FSGroup] = true
				}
				if sc.RunAsGroup != nil {
					groups[*sc.RunAsGroup] = true
				}
			}
			if !groups[ns.grp] {
				t.Errorf("%s: the pod does not run with group %d (supplementalGroups): the socket is mode 0660", m.file, ns.grp)
			}
			mounted := 0
			for _, c := range spec.Containers {
				at, ok := c.mount(v.Name)
				if !ok {
					continue
				}
				mounted++
				for _, vm := range c.VolumeMounts {
					if vm.Name == v.Name && !vm.ReadOnly {
						t.Errorf("%s %s: mount the socket directory readOnly: true (connecting needs no write access to the directory)", m.file, c.Name)
					}
				}
				want := filepath.Join(at, ns.socket)
				uses := false
				for _, e := range c.Env {
					uses = uses || strings.Contains(e.Value, want)
				}
				for _, a := range append(slices.Clone(c.Command), c.Args...) {
					uses = uses || strings.Contains(a, want)
				}
				if !uses {
					t.Errorf("%s %s: nothing in its env or args names the socket %s", m.file, c.Name, want)
				}
			}
			if mounted == 0 {
				t.Errorf("%s: no container mounts the pgmirror socket volume %q", m.file, v.Name)
			}
		}
	}
	if apps == 0 {
		t.Errorf("no example app mounts the DaemonSet's socket directory")
	}
}
