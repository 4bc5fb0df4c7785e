//go:build linux

package firecracker

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// Environment of the real-KVM conformance run; see docs/firecracker.md.
const (
	envFCBinary = "STACYVM_FC_BINARY" // firecracker executable
	envFCKernel = "STACYVM_FC_KERNEL" // uncompressed guest vmlinux
	envFCRootfs = "STACYVM_FC_ROOTFS" // image: Docker ref, directory, tarball or ext4 (with /bin/sh)
	envFCAgent  = "STACYVM_FC_AGENT"  // optional: static stacyvm-agent (default: built from this module)
)

// TestConformanceRealKVM runs the conformance suite on real Firecracker
// microVMs. It runs where /dev/kvm works and a firecracker binary, a
// guest kernel and a root file system are configured, and otherwise
// skips, naming each missing piece.
func TestConformanceRealKVM(t *testing.T) {
	var missing []string
	if err := checkKVM(); err != nil {
		missing = append(missing, "a usable /dev/kvm ("+err.Error()+")")
	}
	binary := os.Getenv(envFCBinary)
	if binary == "" {
		if p, err := exec.LookPath("firecracker"); err == nil {
			binary = p
		} else {
			missing = append(missing, envFCBinary+" (a firecracker binary; none on $PATH either)")
		}
	}
	kernel := os.Getenv(envFCKernel)
	if kernel == "" {
		missing = append(missing, envFCKernel+" (an uncompressed guest vmlinux)")
	}
	rootfs := os.Getenv(envFCRootfs)
	if rootfs == "" {
		missing = append(missing, envFCRootfs+" (a root file system image with /bin/sh and coreutils)")
	}
	if len(missing) > 0 {
		t.Skipf("real-KVM Firecracker test needs: %s", strings.Join(missing, "; "))
	}
	agentPath := os.Getenv(envFCAgent)
	if agentPath == "" {
		needEnv(t)
		agentPath = testEnv.agent
	}
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, stateDir string) provider.Provider {
			p, err := New(Config{
				Binary: binary, Kernel: kernel, AgentPath: agentPath, StateDir: stateDir,
				Logger: testLogger(t),
			})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			t.Cleanup(func() { p.Close() })
			return p
		},
		Image: rootfs,
	})
}
