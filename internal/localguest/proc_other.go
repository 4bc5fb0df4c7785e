//go:build !unix

package localguest

import (
	"io/fs"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"os"
	"syscall"
)

const openReadFlag = 0

// Without process groups only the direct child can be killed.
func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

func groupAlive(int) bool { return false }

func signalGroup(int, string) error {
	return errdefs.New(errdefs.ErrUnimplemented, "signals need process groups")
}

func freezeGroup(int, bool) error {
	return errdefs.New(errdefs.ErrUnimplemented, "freezing processes needs process groups")
}

func exitCode(ps *os.ProcessState) int { return ps.ExitCode() }

func hardLinks(fs.FileInfo) uint64 { return 1 }
