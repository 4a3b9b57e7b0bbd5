package pgtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// dirPrefix names every temporary directory the harness makes, so a
	// later run can find the ones a crashed run left behind.
	dirPrefix = "pgmirror-pgtest-"
	// ownerFile records "pid starttime" of the process that made the
	// directory; the start time tells a reused pid apart.
	ownerFile = "owner"
	// maxBaseLen keeps <base>/pgmirror-pgtest-NNNNNNNNNN/.s.PGSQL.NNNNN
	// within the 107 bytes a unix socket path may have.
	maxBaseLen = 60
	// orphanAge is how old a directory without a readable owner file must
	// be before it counts as stale (it may be one being created right now).
	orphanAge = 10 * time.Minute
)

// baseTempDir picks where temporary directories go: os.TempDir() unless its
// path is too long for a socket path, or (under root) the postgres user
// could not reach it.
func baseTempDir(cred *syscall.Credential) string {
	d := os.TempDir()
	if len(d) > maxBaseLen || (cred != nil && !traversableByAll(d)) {
		return "/tmp"
	}
	return d
}

// traversableByAll reports whether every directory on path has o+x.
func traversableByAll(path string) bool {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// makeTempDir creates a private directory recorded as owned by this process
// and, under root, handed to the postgres user that initdb runs as.
func makeTempDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp(baseTempDir(cred), dirPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	self, _ := readProc(os.Getpid())
	owner := fmt.Sprintf("%d %d\n", os.Getpid(), self.start)
	err = os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o644)
	if err == nil && cred != nil {
		// 0700 owned by postgres is enough: root reaches the socket anyway.
		err = os.Chown(dir, int(cred.Uid), int(cred.Gid))
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("pgtest: %w", err)
	}
	return dir, nil
}

// sweepStale removes the temporary directories of earlier runs whose owner
// process is gone, stopping any postmaster that somehow survived in one.
func sweepStale() {
	bases := []string{os.TempDir()}
	if bases[0] != "/tmp" {
		bases = append(bases, "/tmp")
	}
	for _, base := range bases {
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			dir := filepath.Join(base, e.Name())
			if e.IsDir() && strings.HasPrefix(e.Name(), dirPrefix) && isStale(dir) {
				stopStalePostmaster(filepath.Join(dir, "data"))
				os.RemoveAll(dir) // best effort: it may belong to another user
			}
		}
	}
}

// isStale reports whether dir's owner process is dead.
func isStale(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, ownerFile))
	var pid int
	var start uint64
	if err == nil {
		_, err = fmt.Sscan(string(b), &pid, &start)
	}
	if err != nil {
		fi, err := os.Stat(dir)
		return err == nil && time.Since(fi.ModTime()) > orphanAge
	}
	info, ok := readProc(pid)
	return !ok || info.start != start || info.state == 'Z'
}

// stopStalePostmaster stops the postmaster of dataDir if one still runs.
// Parent-death signals make that unexpected, hence no more than a safety net.
func stopStalePostmaster(dataDir string) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil || pid <= 0 {
		return
	}
	// A postmaster's working directory is its data directory; checking it
	// guards against signalling an unrelated process that reused the pid.
	real, _ := filepath.EvalSymlinks(dataDir)
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != real || !alive(pid) {
		return
	}
	syscall.Kill(pid, syscall.SIGQUIT)
	if !waitGone([]int{pid}, 10*time.Second) {
		syscall.Kill(pid, syscall.SIGKILL)
		waitGone([]int{pid}, 5*time.Second)
	}
}
