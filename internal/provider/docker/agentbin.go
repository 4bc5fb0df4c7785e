package docker

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// AgentBinaryName is the file name findAgent looks for.
const AgentBinaryName = "stacyvm-agent"

// agentHint tells an operator how to get an agent binary.
const agentHint = "build it with `CGO_ENABLED=0 go build -o stacyvm-agent ./cmd/stacyvm-agent` " +
	"and set the docker provider's agent_path, or install it next to the stacyvm binary"

// findAgent resolves the agent binary: configured path, else next to the
// running executable, else $PATH. It must be a static ELF for the daemon's
// architecture, because it runs inside images that may have no libc at all.
func findAgent(configured, daemonArch string) (string, error) {
	path := configured
	if path == "" {
		if exe, err := os.Executable(); err == nil {
			if cand := filepath.Join(filepath.Dir(exe), AgentBinaryName); isFile(cand) {
				path = cand
			}
		}
	}
	if path == "" {
		found, err := exec.LookPath(AgentBinaryName)
		if err != nil {
			return "", errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable,
				"docker: no %s binary next to this executable or on PATH", AgentBinaryName), agentHint)
		}
		path = found
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker: agent path")
	}
	if err := checkStaticELF(abs, daemonArch); err != nil {
		return "", errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker: agent binary %s", abs), agentHint)
	}
	return abs, nil
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// elfMachines maps dockerd's Architecture (uname -m) to ELF machine types.
var elfMachines = map[string]elf.Machine{
	"x86_64":  elf.EM_X86_64,
	"amd64":   elf.EM_X86_64,
	"aarch64": elf.EM_AARCH64,
	"arm64":   elf.EM_AARCH64,
	"riscv64": elf.EM_RISCV,
	"s390x":   elf.EM_S390,
	"ppc64le": elf.EM_PPC64,
	"ppc64":   elf.EM_PPC64,
}

func checkStaticELF(path, daemonArch string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("not a Linux executable: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked; it must be static (CGO_ENABLED=0)")
		}
	}
	if want, ok := elfMachines[daemonArch]; ok && f.Machine != want {
		return fmt.Errorf("built for %s but dockerd runs on %s", f.Machine, daemonArch)
	}
	return nil
}
