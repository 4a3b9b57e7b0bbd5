package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"sync"
	"syscall"
)

// spawnRequest asks the spawner thread to start one command.
type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   = make(chan spawnRequest)
)

// spawn starts cmd with the parent-death signal sig and, under root, the
// credentials of the postgres user.
//
// The kernel delivers the parent-death signal when the *thread* that forked
// the child exits, not the process. An ordinary goroutine may fork from a
// thread the runtime later retires, which would kill the child mid-test, so
// every fork happens on one goroutine that locks its thread and never
// returns: the signal then fires exactly when the test binary dies, however
// it dies (panic, os.Exit, SIGKILL), and no cleanup code has to run.
//
// Go applies Credential (setuid) before PR_SET_PDEATHSIG in the child
// (syscall/exec_linux.go, forkAndExecInChild1), which matters because a
// credential change clears the parent-death signal.
func spawn(cmd *exec.Cmd, sig syscall.Signal, cred *syscall.Credential) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig:  sig,
		Credential: cred,
		// Own process group: a ^C in the terminal reaches only the test
		// binary, whose cleanup (or death) then shuts the cluster down once.
		Setpgid: true,
	}
	spawnOnce.Do(func() { go spawner() })
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawnCh <- req
	return <-req.done
}

// spawner forks every child from its own locked thread; see spawn.
func spawner() {
	runtime.LockOSThread() // never unlocked, and the goroutine never returns
	for req := range spawnCh {
		req.done <- req.cmd.Start()
	}
}

var serverCredential = sync.OnceValues(lookupCredential)

// lookupCredential returns nil when not root, else the credentials of the
// unprivileged postgres user, since initdb and postgres refuse to run as root.
func lookupCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, and PostgreSQL refuses to run as root, "+
			"but there is no unprivileged \"postgres\" user to run it as (%v); "+
			"install Debian's postgresql package (it creates one) or run the tests as a non-root user", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgtest: user postgres has non-numeric uid %q / gid %q", u.Uid, u.Gid)
	}
	// Groups left empty: setgroups(0) drops root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
