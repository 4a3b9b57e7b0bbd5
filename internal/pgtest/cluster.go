package pgtest

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// template is this process's pristine initdb output. Copying it takes tens
// of milliseconds where initdb takes about a second, which adds up when
// every test gets its own cluster.
var template struct {
	mu   sync.Mutex
	root string // temporary directory holding data/; "" until made
	err  error
}

// templateDataDir returns the template data directory, running initdb on
// first use.
func templateDataDir(binDir string, cred *syscall.Credential) (string, error) {
	template.mu.Lock()
	defer template.mu.Unlock()
	if template.root == "" && template.err == nil {
		template.root, template.err = makeTempDir(cred)
		if template.err == nil {
			template.err = initdb(binDir, cred, filepath.Join(template.root, "data"))
		}
	}
	return filepath.Join(template.root, "data"), template.err
}

// removeTemplate deletes the template; later clusters would make a new one.
func removeTemplate() {
	template.mu.Lock()
	defer template.mu.Unlock()
	if template.root != "" {
		os.RemoveAll(template.root)
	}
	template.root, template.err = "", nil
}

// initdb creates a cluster in dataDir with a superuser "postgres" that any
// local connection may use without a password.
func initdb(binDir string, cred *syscall.Credential, dataDir string) error {
	cmd := exec.Command(filepath.Join(binDir, "initdb"),
		"-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
		"--no-sync") // the cluster is thrown away; fsyncing it is wasted time
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// SIGKILL: initdb holds nothing worth shutting down cleanly.
	err := spawn(cmd, syscall.SIGKILL, cred)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %v\n%s", err, out.Bytes())
	}
	return nil
}

// copyTree copies the data directory src to dst, keeping permissions
// (postgres insists on 0700 for the data directory) and, under root, making
// the postgres user the owner.
func copyTree(src, dst string, cred *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			err = os.Mkdir(target, info.Mode().Perm())
		case d.Type().IsRegular():
			err = copyFile(path, target, info.Mode().Perm())
		default:
			return fmt.Errorf("pgtest: unexpected file type in template: %s", path)
		}
		if err == nil && cred != nil {
			err = os.Lchown(target, int(cred.Uid), int(cred.Gid))
		}
		return err
	})
}

// copyFile copies one regular file.
func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
