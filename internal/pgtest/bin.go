package pgtest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// errNoBinaries is what a test sees on a machine without a server install;
// it says how to fix that rather than which lookups failed.
var errNoBinaries = errors.New("PostgreSQL server binaries not found (initdb/postgres); " +
	"run `make setup` or install Debian's postgresql package")

// debianBinGlob is where Debian's postgresql-NN packages put the server
// binaries; they are not on PATH there.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

var binDirOnce = sync.OnceValues(findBinDir)

// findBinDir returns a directory holding both initdb and postgres: the one
// initdb on PATH resolves to, else the newest Debian install.
func findBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		// Resolve symlinks such as /usr/local/bin/initdb so that postgres is
		// looked up next to the real initdb, from the same install.
		if real, err := filepath.EvalSymlinks(p); err == nil && hasServer(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if hasServer(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob(debianBinGlob)
	sort.Slice(dirs, func(i, j int) bool {
		return versionLess(filepath.Base(filepath.Dir(dirs[i])), filepath.Base(filepath.Dir(dirs[j])))
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if hasServer(dirs[i]) {
			return dirs[i], nil
		}
	}
	return "", errNoBinaries
}

// hasServer reports whether dir has executable initdb and postgres.
func hasServer(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// versionLess orders "9.6" < "10" < "15" numerically, component by component.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, errX := strconv.Atoi(as[i])
		y, errY := strconv.Atoi(bs[i])
		if errX != nil || errY != nil {
			return a < b
		}
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
