//go:build unix

package localguest

import (
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// openReadFlag keeps ReadFile from blocking forever should a FIFO replace the
// file between the type check and the open; it does nothing to regular files.
const openReadFlag = syscall.O_NONBLOCK

// sysProcAttr puts each command in its own process group so that a timeout
// or a cancel can kill everything it started.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// signalGroup sends the named signal (provider.TerminalSignals) to every
// process in the group.
func signalGroup(pgid int, name string) error {
	sig := unix.SignalNum("SIG" + name)
	if sig == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "signal %s does not exist here", name)
	}
	if err := syscall.Kill(-pgid, sig); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

// killGroup sends SIGKILL to every process in the group.
func killGroup(pgid int) error {
	err := syscall.Kill(-pgid, syscall.SIGKILL)
	if err == syscall.ESRCH {
		return os.ErrProcessDone
	}
	return err
}

// freezeGroup stops (SIGSTOP) or continues (SIGCONT) every process in the
// group.
func freezeGroup(pgid int, stop bool) error {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	err := syscall.Kill(-pgid, sig)
	if err == syscall.ESRCH {
		return nil // emptied meanwhile
	}
	return err
}

// groupAlive reports whether any process is still in the group.
func groupAlive(pgid int) bool {
	err := syscall.Kill(-pgid, 0)
	return err == nil || err == syscall.EPERM
}

// exitCode reports a signalled process as a shell does: 128 + the signal.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func hardLinks(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}
