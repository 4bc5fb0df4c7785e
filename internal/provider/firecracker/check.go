package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// kvmDevice is a variable so that tests can point it elsewhere.
var kvmDevice = "/dev/kvm"

func hasVirtFlag(cpuinfo []byte) bool {
	for line := range bytes.Lines(cpuinfo) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || string(bytes.TrimSpace(k)) != "flags" {
			continue
		}
		for _, f := range strings.Fields(string(v)) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}

// Check reports every reason Firecracker cannot run on this host with cfg,
// for `stacyvm doctor` and for declining the provider at startup. It
// returns nil when nothing is missing, else an
// errdefs.ErrProviderUnavailable error whose message lists each problem.
func Check(ctx context.Context, cfg Config) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	cfg, cfgErr := cfg.withDefaults()
	if cfgErr != nil {
		add("%v", cfgErr)
	}
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		add("Firecracker runs on linux/amd64 and linux/arm64, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	if !cfg.SkipKVMCheck {
		if err := checkKVM(); err != nil {
			add("%v", err)
		}
	}
	if bin, err := resolveBinary(cfg.Binary); err != nil {
		add("firecracker binary %q not found (set the binary path or put firecracker on $PATH)", cfg.Binary)
	} else {
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(vctx, bin, "--version").CombinedOutput()
		cancel()
		if err != nil {
			add("%s --version failed: %v", bin, err)
		} else if !bytes.Contains(bytes.ToLower(out), []byte("firecracker")) {
			add("%s does not identify as Firecracker (--version printed %q)", bin, firstLine(out))
		}
	}
	switch {
	case cfg.Kernel == "":
		add("no guest kernel configured (an uncompressed vmlinux, see docs/firecracker.md)")
	default:
		if err := checkKernel(cfg.Kernel); err != nil {
			add("guest kernel %s: %v", cfg.Kernel, err)
		}
	}
	if _, err := resolveAgent(cfg.AgentPath); err != nil {
		add("%v", err)
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		add("mkfs.ext4 not found: install e2fsprogs (it builds root file systems)")
	}
	if cfgErr == nil {
		if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
			add("state dir: %v", err)
		} else if f, err := os.CreateTemp(cfg.StateDir, ".check-"); err != nil {
			add("state dir %s is not writable: %v", cfg.StateDir, err)
		} else {
			f.Close()
			os.Remove(f.Name())
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return errdefs.New(errdefs.ErrProviderUnavailable, "firecracker is unavailable: %s", strings.Join(problems, "; "))
}

// checkKernel makes sure the kernel is a readable file; on x86_64 it must
// be the uncompressed ELF vmlinux, not a bzImage.
func checkKernel(path string) error {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.ReadAt(magic, 0); err != nil {
		return fmt.Errorf("unreadable: %w", err)
	}
	if runtime.GOARCH == "amd64" && !bytes.Equal(magic, []byte("\x7fELF")) {
		return errors.New("not an ELF vmlinux (Firecracker on x86_64 boots uncompressed kernels, not bzImage)")
	}
	return nil
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(bytes.TrimSpace(b), []byte("\n"))
	return string(line)
}
