//go:build linux

package firecracker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

func TestCheckNamesEveryProblem(t *testing.T) {
	needEnv(t)
	good, _ := fakeConfig(t, shortDir(t))
	bzImage := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(bzImage, []byte("MZ\x00\x00compressed kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Check(t.Context(), good); err != nil {
		t.Fatalf("Check of a complete (fake VMM) configuration: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*Config)
		want   []string
	}{
		{"no kernel", func(c *Config) { c.Kernel = "" }, []string{"no guest kernel configured"}},
		{"kernel missing", func(c *Config) { c.Kernel = "/nonexistent/vmlinux" }, []string{"guest kernel /nonexistent/vmlinux", "no such file"}},
		{"kernel not ELF", func(c *Config) { c.Kernel = bzImage }, []string{"not an ELF vmlinux"}},
		{"binary missing", func(c *Config) { c.Binary = "/nonexistent/firecracker" }, []string{`firecracker binary "/nonexistent/firecracker" not found`}},
		{"binary is not firecracker", func(c *Config) { c.Binary = testEnv.agent }, []string{"--version"}},
		{"agent missing", func(c *Config) { c.AgentPath = "/nonexistent/agent" }, []string{"agent binary"}},
		{"state dir too long", func(c *Config) { c.StateDir = "/tmp/" + strings.Repeat("x", 100) }, []string{"unix socket paths"}},
		{"several at once", func(c *Config) { c.Kernel = ""; c.Binary = "/nonexistent/fc" }, []string{"no guest kernel", "not found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.modify(&cfg)
			err := Check(t.Context(), cfg)
			if !errors.Is(err, errdefs.ErrProviderUnavailable) {
				t.Fatalf("Check = %v, want class provider unavailable", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestCheckKVM(t *testing.T) {
	old := kvmDevice
	t.Cleanup(func() { kvmDevice = old })
	kvmDevice = filepath.Join(t.TempDir(), "kvm")
	if err := checkKVM(); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing device: %v", err)
	}
	kvmDevice = "/dev/null" // exists, opens, but is no KVM
	if err := checkKVM(); err == nil || !strings.Contains(err.Error(), "KVM_GET_API_VERSION") {
		t.Errorf("non-KVM device: %v", err)
	}
	needEnv(t)
	cfg, _ := fakeConfig(t, shortDir(t))
	cfg.SkipKVMCheck = false
	kvmDevice = filepath.Join(t.TempDir(), "kvm")
	if err := Check(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Check without KVM: %v", err)
	}
}

func TestHasVirtFlag(t *testing.T) {
	tests := map[string]bool{
		"processor\t: 0\nflags\t\t: fpu vme vmx sse\n":    true,
		"processor\t: 0\nflags\t\t: fpu svm sse\n":        true,
		"processor\t: 0\nflags\t\t: fpu hypervisor sse\n": false,
		"processor\t: 0\n":    false,
		"flags\t\t: vmxnet\n": false,
	}
	for in, want := range tests {
		if got := hasVirtFlag([]byte(in)); got != want {
			t.Errorf("hasVirtFlag(%q) = %v, want %v", in, got, want)
		}
	}
}
