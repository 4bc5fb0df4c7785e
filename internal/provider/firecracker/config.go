package firecracker

import (
	"errors"
	"fmt"
	"github.com/stacyvm/stacyvm/internal/agent"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Config configures the Firecracker provider. Only Kernel is required on a
// KVM host; see docs/firecracker.md.
type Config struct {
	// Name is the provider's registry name; "firecracker" when empty.
	Name string
	// Binary is the firecracker executable; empty means "firecracker" on
	// $PATH.
	Binary string
	// Kernel is the uncompressed guest kernel (vmlinux) every VM boots.
	Kernel string
	// BootArgs replaces the default kernel command line. The agent's own
	// arguments are appended after " -- ", so they must not be in it.
	BootArgs string
	// AgentPath is the static stacyvm-agent binary installed into every
	// root file system at /sbin/stacyvm-agent. Empty means stacyvm-agent
	// next to the running executable, then on $PATH.
	AgentPath string
	// StateDir holds image caches, snapshots and one directory per sandbox.
	// Default: $XDG_RUNTIME_DIR or /run, then stacyvm/firecracker. It must
	// be short: unix socket paths inside it are limited to 107 bytes.
	StateDir string
	// SandboxesDir holds one directory per sandbox (default
	// StateDir/sandboxes). A server gives each instance its own, so that two
	// servers on one host never see each other's VMs; images and snapshots
	// are content-addressed caches that servers and build-image share.
	SandboxesDir string
	// MemoryMB and VCPUs apply when a Spec leaves them zero. Defaults 512
	// and 1.
	MemoryMB int
	VCPUs    int
	// FreeMB is the free space every root file system gets beyond its
	// content (sparse: it costs disk only when written). Default 1024.
	FreeMB int
	// NoSnapshots turns base snapshots off. With them (the default), the
	// first cold boot of an image and machine shape leaves a snapshot that
	// later spawns of it restore from.
	NoSnapshots bool
	// PauseToDisk makes Pause free the VM's memory: after pausing the VM,
	// it has Firecracker write a full snapshot into the sandbox's
	// directory and stops the VMM; Resume starts a new VMM from that
	// snapshot. Without it a paused VM keeps its memory in the VMM.
	PauseToDisk bool
	// NoEntropyDevice leaves out the virtio-rng device (for Firecracker
	// builds older than 1.4, which lack PUT /entropy).
	NoEntropyDevice bool
	// SkipKVMCheck makes Health and Check ignore /dev/kvm. It exists for a
	// fake VMM that needs no KVM (tests); a real Firecracker fails at
	// InstanceStart without KVM anyway.
	SkipKVMCheck bool
	// ReadyTimeout bounds how long Spawn waits for the VMM's API and the
	// agent. Default 30s.
	ReadyTimeout time.Duration
	// Refresh fixes up a guest restored from a snapshot (fresh entropy,
	// corrected clock). Nil means the agent client's Refresh method (POST
	// /v1/guest/refresh); tests replace it.
	Refresh RefreshFunc
	// DockerHost is the daemon address used to export Docker images (""
	// means DOCKER_HOST, then the default socket).
	DockerHost string
	Logger     *slog.Logger
	// AgentLimits bound what the host accepts from each sandbox's agent
	// (exec grace past a command's timeout, reply sizes); zero fields take
	// agent.DefaultLimits.
	AgentLimits agent.Limits
}

// Defaults.
const (
	DefaultMemoryMB = 512
	DefaultVCPUs    = 1
	DefaultFreeMB   = 1024
	// AgentVsockPort is where stacyvm-agent listens inside the guest.
	AgentVsockPort = 1024
	// GuestCID is the guest's vsock context ID; the first one free for guests.
	GuestCID = 3
	// GuestAgentPath is where BuildImage installs the agent.
	GuestAgentPath = "/sbin/stacyvm-agent"
	// DefaultBootArgs is the kernel command line without the agent's
	// arguments: serial console, no PCI probing, root drive writable,
	// the agent as init.
	DefaultBootArgs = "console=ttyS0 reboot=k panic=1 pci=off rw init=" + GuestAgentPath
)

// maxSandboxesDir keeps SandboxesDir + "/" + a 16-byte handle + "/fc.sock"
// within the 107 bytes a unix socket path may have.
const maxSandboxesDir = 107 - len("/") - handleLen - len("/"+apiSockName)

// DefaultStateDir is the state directory used when Config.StateDir is
// empty: under XDG_RUNTIME_DIR, else /run.
func DefaultStateDir() string {
	base := os.Getenv("XDG_RUNTIME_DIR")
	if base == "" {
		base = "/run"
	}
	return filepath.Join(base, "stacyvm", "firecracker")
}

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		c.Name = "firecracker"
	}
	if c.Binary == "" {
		c.Binary = "firecracker"
	}
	if c.BootArgs == "" {
		c.BootArgs = DefaultBootArgs
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir()
	}
	abs, err := filepath.Abs(c.StateDir)
	if err != nil {
		return c, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "firecracker: state dir")
	}
	c.StateDir = abs
	if c.SandboxesDir == "" {
		c.SandboxesDir = filepath.Join(c.StateDir, "sandboxes")
	}
	if c.SandboxesDir, err = filepath.Abs(c.SandboxesDir); err != nil {
		return c, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "firecracker: sandboxes dir")
	}
	if len(c.SandboxesDir) > maxSandboxesDir {
		return c, errdefs.New(errdefs.ErrInvalidArgument,
			"firecracker: the sandboxes dir is %d bytes long, at most %d fit unix socket paths", len(c.SandboxesDir), maxSandboxesDir)
	}
	if c.MemoryMB <= 0 {
		c.MemoryMB = DefaultMemoryMB
	}
	if c.VCPUs <= 0 {
		c.VCPUs = DefaultVCPUs
	}
	if c.FreeMB <= 0 {
		c.FreeMB = DefaultFreeMB
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// resolveBinary finds an executable by path or on $PATH.
func resolveBinary(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", err
	}
	return filepath.Abs(p)
}

// resolveAgent finds the agent binary: configured path, next to the
// running executable, then $PATH.
func resolveAgent(configured string) (string, error) {
	if configured != "" {
		if _, err := os.Stat(configured); err != nil {
			return "", fmt.Errorf("agent binary: %w", err)
		}
		return filepath.Abs(configured)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "stacyvm-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("stacyvm-agent")
	if err != nil {
		return "", errors.New("stacyvm-agent not found next to the server binary or on $PATH (set the agent path)")
	}
	return filepath.Abs(p)
}
