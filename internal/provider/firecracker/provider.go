// Package firecracker runs each sandbox in its own Firecracker microVM: its
// own kernel, the agent as init, reached through the VMM's hybrid-vsock
// socket. Root file systems are built from Docker images, directories or
// tarballs (BuildImage) and cloned per sandbox; the first cold boot of an
// image and machine shape leaves a base snapshot that later spawns restore
// from. Each VM lives in a state directory that lets a restarted server
// adopt it. docs/firecracker.md explains how to run it on a KVM host.
package firecracker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/logtail"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fcapi"
)

// Refresh is what a guest restored from a snapshot is given: every restore
// of one snapshot starts from the same memory, so the guest kernel's random
// state must be reseeded and its wall clock stepped forward.
type Refresh struct {
	// Entropy is fresh output of the host's CSPRNG, different for every
	// refresh.
	Entropy []byte
	// Now is the host's wall clock when the refresh was sent.
	Now time.Time
}

// RefreshFunc applies a Refresh to a guest through its agent.
type RefreshFunc func(ctx context.Context, g provider.Guest, r Refresh) error

// GuestRefresher is the agent-client method the default RefreshFunc uses:
// mix entropy into the guest kernel's pool and force a reseed of its CRNG,
// then set CLOCK_REALTIME to now. docs/firecracker.md specifies the agent
// endpoint behind it.
type GuestRefresher interface {
	Refresh(ctx context.Context, entropy []byte, now time.Time) error
}

// refreshEntropyBytes is how much entropy each refresh carries: 512 bits,
// twice what the kernel's CRNG is keyed with.
const refreshEntropyBytes = 64

// agentArgs follow the kernel command line's " -- " and become the init's
// arguments. --manage-guest: the agent is the guest's init, so it mounts
// /proc, /sys and /dev, brings up lo, and serves the snapshot refresh (it
// would infer as much from finding no /proc; saying it is plainer).
var agentArgs = "--listen vsock:" + strconv.Itoa(AgentVsockPort) + " --root / --manage-guest"

// The agent client is what refreshes restored guests by default.
var _ GuestRefresher = (*agent.Client)(nil)

// Provider implements provider.Provider with Firecracker microVMs. It also
// implements provider.Inventory and provider.SnapshotLister.
type Provider struct {
	provider.GuestRouter
	cfg      Config
	binary   string
	kernel   string
	bootArgs string
	log      *slog.Logger
	images   *imageCache
	snaps    *snapshotStore // nil when snapshots are off
	refresh  RefreshFunc
	sbDir    string

	mu        sync.Mutex
	vms       map[string]*vm
	destroyed map[string]bool
}

var (
	_ provider.Pauser         = (*Provider)(nil)
	_ provider.Provider       = (*Provider)(nil)
	_ provider.Inventory      = (*Provider)(nil)
	_ provider.SnapshotLister = (*Provider)(nil)
)

// vm is one sandbox.
type vm struct {
	// mu serialises Destroy, Pause and Resume against each other and
	// snapshotting, and guards what Pause to disk and Resume replace: st,
	// proc, api and agent.
	mu    sync.Mutex
	st    vmState
	dir   string
	proc  *vmmProcess
	api   *vmmClient
	agent *agent.Client
	ready bool // handed out by Spawn or adopted
	// owned: this VM's Spawn created dir, so a failed Spawn may remove it.
	owned bool
}

// New returns a provider for cfg, adopting the VMs a previous server left
// running under cfg.StateDir and removing the dead ones. It fails with
// errdefs.ErrProviderUnavailable when the firecracker binary, the kernel or
// the agent cannot be found; Check explains the host in full.
func New(cfg Config) (*Provider, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	binary, err := resolveBinary(cfg.Binary)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker binary")
	}
	if cfg.Kernel == "" {
		return nil, errdefs.New(errdefs.ErrProviderUnavailable, "firecracker: no guest kernel configured")
	}
	kernel, err := filepath.Abs(cfg.Kernel)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "firecracker: kernel path")
	}
	p := &Provider{
		cfg:       cfg,
		binary:    binary,
		kernel:    kernel,
		bootArgs:  cfg.BootArgs + " -- " + agentArgs,
		log:       cfg.Logger.With("provider", cfg.Name),
		sbDir:     cfg.SandboxesDir,
		vms:       map[string]*vm{},
		destroyed: map[string]bool{},
	}
	p.GuestRouter = provider.GuestRouter{Lookup: p.guest}
	if err := os.MkdirAll(p.sbDir, 0o700); err != nil {
		return nil, fmt.Errorf("firecracker: state dir: %w", err)
	}
	if p.images, err = newImageCache(cfg); err != nil {
		return nil, err
	}
	p.refresh = cfg.Refresh
	if p.refresh == nil {
		p.refresh = agentRefresh
	}
	if !cfg.NoSnapshots {
		kd, err := sha256File(kernel)
		if err != nil {
			return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker: reading the kernel")
		}
		bd, err := sha256File(binary)
		if err != nil {
			return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker: reading the binary")
		}
		machine := strings.Join([]string{kd, bd, p.bootArgs, strconv.FormatBool(!cfg.NoEntropyDevice)}, "\x00")
		if p.snaps, err = newSnapshotStore(filepath.Join(cfg.StateDir, "snapshots"), machine); err != nil {
			return nil, fmt.Errorf("firecracker: snapshots: %w", err)
		}
	}
	p.scan()
	return p, nil
}

// agentRefresh is the default RefreshFunc.
func agentRefresh(ctx context.Context, g provider.Guest, r Refresh) error {
	gr, ok := g.(GuestRefresher)
	if !ok {
		return errdefs.New(errdefs.ErrUnimplemented, "the agent client cannot refresh a restored guest")
	}
	return gr.Refresh(ctx, r.Entropy, r.Now)
}

func (p *Provider) Name() string { return p.cfg.Name }

func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{
		Isolation:      provider.IsolationVM,
		Streaming:      true,
		Stdin:          true,
		Signals:        true,
		Adoption:       true,
		Snapshots:      p.snaps != nil,
		Network:        false,
		ResourceLimits: true,
		Symlinks:       true,
		// The root drive is a file of disk_mb (at least the image's size).
		DiskLimit: true,
		Terminal:  true,
		Pause:     true,
	}
}

// Health reports whether VMs can start now: the binary, the kernel and
// (unless configured away for a fake VMM) a usable /dev/kvm.
func (p *Provider) Health(ctx context.Context) error {
	var problems []error
	if _, err := os.Stat(p.binary); err != nil {
		problems = append(problems, fmt.Errorf("firecracker binary: %w", err))
	}
	if f, err := os.Open(p.kernel); err != nil {
		problems = append(problems, fmt.Errorf("guest kernel: %w", err))
	} else {
		f.Close()
	}
	if !p.cfg.SkipKVMCheck {
		if err := checkKVM(); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, errors.Join(problems...), "firecracker")
	}
	return ctx.Err()
}

func (p *Provider) shapeOf(spec provider.Spec) shape {
	sh := shape{VCPUs: spec.VCPUs, MemoryMB: spec.MemoryMB, DiskMB: spec.DiskMB}
	if sh.VCPUs <= 0 {
		sh.VCPUs = p.cfg.VCPUs
	}
	if sh.MemoryMB <= 0 {
		sh.MemoryMB = p.cfg.MemoryMB
	}
	if sh.DiskMB < 0 {
		sh.DiskMB = 0
	}
	return sh
}

// Spawn builds (or finds) the image's root file system and starts a VM: a
// restore of the base snapshot when one matches the image and shape, else
// a cold boot, after which a base snapshot is taken for next time.
func (p *Provider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if spec.ID == "" {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "firecracker: a sandbox ID is required")
	}
	sh := p.shapeOf(spec)
	if sh.VCPUs > 32 {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "firecracker: at most 32 vCPUs, asked for %d", sh.VCPUs)
	}
	if sh.MemoryMB < 128 {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "firecracker: at least 128 MiB of memory, asked for %d", sh.MemoryMB)
	}
	if spec.Network != "" && spec.Network != "none" {
		return provider.Info{}, errdefs.New(errdefs.ErrUnimplemented, "firecracker: network %q is not supported (VMs have no network device)", spec.Network)
	}

	v := &vm{dir: filepath.Join(p.sbDir, handleFor(spec.ID))}
	p.mu.Lock()
	if _, ok := p.vms[spec.ID]; ok {
		p.mu.Unlock()
		return provider.Info{}, errdefs.New(errdefs.ErrConflict, "sandbox %s already exists", spec.ID)
	}
	p.vms[spec.ID] = v
	delete(p.destroyed, spec.ID)
	p.mu.Unlock()

	info, err := p.spawn(ctx, spec, sh, v)
	p.mu.Lock()
	if err == nil && p.vms[spec.ID] != v {
		// Destroyed while it was starting.
		err = errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed while it started", spec.ID)
	}
	if err != nil && p.vms[spec.ID] == v {
		delete(p.vms, spec.ID)
	}
	p.mu.Unlock()
	if err != nil {
		if v.owned {
			p.teardown(v)
		}
		return provider.Info{}, err
	}
	v.mu.Lock()
	v.ready = true
	v.mu.Unlock()
	return info, nil
}

func (p *Provider) spawn(ctx context.Context, spec provider.Spec, sh shape, v *vm) (provider.Info, error) {
	img, previous, err := p.images.ensure(ctx, spec.Image)
	if err != nil {
		return provider.Info{}, err
	}
	if previous != "" {
		// The image changed since it was last used: what was derived from
		// the old one is stale.
		if p.snaps != nil {
			if n := p.snaps.invalidateImage(previous); n > 0 {
				p.log.Info("firecracker: image changed, snapshots invalidated", "image", spec.Image, "count", n)
			}
		}
		p.images.remove(previous)
	}
	if err := os.Mkdir(v.dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return provider.Info{}, errdefs.New(errdefs.ErrConflict, "sandbox %s already has a state directory", spec.ID)
		}
		return provider.Info{}, fmt.Errorf("firecracker: sandbox state dir: %w", err)
	}
	v.owned = true
	v.st = vmState{
		ID: spec.ID, Handle: handleFor(spec.ID), Phase: phaseStarting,
		Image: spec.Image, ImageDigest: img.Digest,
		VCPUs: sh.VCPUs, MemoryMB: sh.MemoryMB, DiskMB: sh.DiskMB,
		Env: spec.Env, OwnerID: spec.OwnerID, Template: spec.Template, Instance: spec.Instance,
		Metadata: spec.Metadata, Created: time.Now().UTC(),
	}
	if err := writeState(v.dir, v.st); err != nil {
		return provider.Info{}, err
	}

	restored := false
	if p.snaps != nil {
		key := p.snaps.key(img.Digest, sh)
		if meta, ok := p.snaps.lookup(key); ok {
			start := time.Now()
			if err := p.restore(ctx, v, meta); err != nil {
				if cerr := context.Cause(ctx); cerr != nil {
					return provider.Info{}, fmt.Errorf("firecracker: restore abandoned: %w", cerr)
				}
				p.log.Warn("firecracker: snapshot restore failed, cold booting; snapshot dropped", "sandbox", spec.ID, "err", err)
				p.snaps.remove(key)
				if err := p.resetVM(v); err != nil {
					return provider.Info{}, err
				}
			} else {
				restored = true
				p.log.Debug("firecracker: restored", "sandbox", spec.ID, "took", time.Since(start))
			}
		}
	}
	if !restored {
		start := time.Now()
		if err := p.coldBoot(ctx, v, img, sh); err != nil {
			return provider.Info{}, err
		}
		p.log.Debug("firecracker: cold booted", "sandbox", spec.ID, "took", time.Since(start))
		if p.snaps != nil {
			p.takeBaseSnapshot(ctx, v, img, sh)
		}
	}
	v.st.Restored = restored
	v.st.Phase = phaseRunning
	if err := writeState(v.dir, v.st); err != nil {
		return provider.Info{}, err
	}
	return p.info(v, provider.StateRunning), nil
}

// readyCtx bounds the waits for the VMM and the agent.
func (p *Provider) readyCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.cfg.ReadyTimeout)
}

func (p *Provider) launch(ctx context.Context, v *vm) error {
	proc, err := startVMM(p.binary, v.dir, v.st.Handle)
	if err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker")
	}
	v.proc = proc
	v.st.PID, v.st.PIDStart = proc.pid, proc.start
	if err := writeState(v.dir, v.st); err != nil {
		return err
	}
	v.api = newVMMClient(filepath.Join(v.dir, apiSockName))
	rctx, cancel := p.readyCtx(ctx)
	defer cancel()
	return v.api.waitAPI(rctx, proc.exited)
}

func (p *Provider) coldBoot(ctx context.Context, v *vm, img Image, sh shape) error {
	drive := filepath.Join(v.dir, driveName)
	if err := cloneFile(img.Path, drive); err != nil {
		return fmt.Errorf("firecracker: cloning the root file system: %w", err)
	}
	if want := int64(sh.DiskMB) << 20; want > img.Size {
		if err := growExt4(ctx, drive, want); err != nil {
			return err
		}
	}
	if err := p.launch(ctx, v); err != nil {
		return err
	}
	steps := []func() error{
		func() error {
			return v.api.putMachineConfig(ctx, fcapi.MachineConfiguration{VCPUCount: sh.VCPUs, MemSizeMiB: sh.MemoryMB})
		},
		func() error {
			return v.api.putBootSource(ctx, fcapi.BootSource{KernelImagePath: p.kernel, BootArgs: p.bootArgs})
		},
		func() error {
			return v.api.putDrive(ctx, fcapi.Drive{DriveID: driveID, PathOnHost: driveName, IsRootDevice: true})
		},
		func() error {
			return v.api.putVsock(ctx, fcapi.Vsock{GuestCID: GuestCID, UDSPath: vsockName})
		},
	}
	if !p.cfg.NoEntropyDevice {
		steps = append(steps, func() error { return v.api.putEntropy(ctx) })
	}
	steps = append(steps, func() error { return v.api.instanceStart(ctx) })
	for _, step := range steps {
		if err := step(); err != nil {
			return p.bootErr(ctx, err)
		}
	}
	return p.connectAgent(ctx, v)
}

func (p *Provider) restore(ctx context.Context, v *vm, meta snapshotMeta) error {
	snapDir := p.snaps.path(meta.Key)
	if err := cloneFile(filepath.Join(snapDir, driveName), filepath.Join(v.dir, driveName)); err != nil {
		return fmt.Errorf("cloning the snapshot's drive: %w", err)
	}
	return p.load(ctx, v, snapDir)
}

// load starts a VMM in v's directory that resumes the full snapshot in
// snapDir onto v's drive and vsock socket, and refreshes the guest.
func (p *Provider) load(ctx context.Context, v *vm, snapDir string) error {
	if err := p.launch(ctx, v); err != nil {
		return err
	}
	if err := v.api.loadSnapshot(ctx, fcapi.SnapshotLoadParams{
		SnapshotPath: filepath.Join(snapDir, snapStateName),
		MemBackend:   &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: filepath.Join(snapDir, snapMemName)},
		ResumeVM:     true,
	}); err != nil {
		return err
	}
	if err := p.connectAgent(ctx, v); err != nil {
		return err
	}
	return p.refreshGuest(ctx, v)
}

func (p *Provider) refreshGuest(ctx context.Context, v *vm) error {
	seed := make([]byte, refreshEntropyBytes)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	rctx, cancel := p.readyCtx(ctx)
	defer cancel()
	if err := p.refresh(rctx, v.agent, Refresh{Entropy: seed, Now: time.Now()}); err != nil {
		return fmt.Errorf("refreshing the restored guest: %w", err)
	}
	return nil
}

func (p *Provider) connectAgent(ctx context.Context, v *vm) error {
	v.agent = agent.NewClient(agent.HybridVsockDialer(filepath.Join(v.dir, vsockName), AgentVsockPort), agent.WithLimits(p.cfg.AgentLimits))
	rctx, cancel := p.readyCtx(ctx)
	defer cancel()
	if err := v.agent.WaitReady(rctx); err != nil {
		if !v.proc.running() {
			return errdefs.New(errdefs.ErrProviderUnavailable, "firecracker exited while the guest booted (see the sandbox logs)")
		}
		return err
	}
	return nil
}

func (p *Provider) bootErr(ctx context.Context, err error) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return fmt.Errorf("firecracker: boot abandoned: %w", cerr)
	}
	if errdefs.Classify(err) != nil {
		return err
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker refused the VM")
}

// takeBaseSnapshot snapshots a freshly booted VM, before anything has run
// in it, for later spawns of the same image and shape. Failure costs only
// the speed-up, so it is logged, not returned, unless the VM is left
// unusable.
func (p *Provider) takeBaseSnapshot(ctx context.Context, v *vm, img Image, sh shape) {
	key := p.snaps.key(img.Digest, sh)
	if !p.snaps.claim(key) {
		return
	}
	defer p.snaps.release(key)
	start := time.Now()
	meta := snapshotMeta{Key: key, Image: img.Ref, ImageDigest: img.Digest, Shape: sh, Created: time.Now().UTC()}
	err := p.snaps.create(ctx, v.api, v.dir, meta)
	// A snapshot resets every vsock connection; pooled ones are dead.
	v.agent.Close()
	if err != nil {
		p.log.Warn("firecracker: base snapshot failed", "image", img.Ref, "err", err)
		return
	}
	// This VM goes on from the very state every restore starts from, so it
	// needs fresh entropy as much as they do.
	if err := p.refreshGuest(ctx, v); err != nil {
		p.log.Warn("firecracker: refreshing the snapshotted VM failed; dropping the snapshot", "err", err)
		p.snaps.remove(key)
		return
	}
	p.log.Info("firecracker: base snapshot taken", "image", img.Ref, "vcpus", sh.VCPUs, "memory_mb", sh.MemoryMB, "took", time.Since(start).Round(time.Millisecond))
}

// resetVM kills a failed restore attempt's VMM and empties the state
// directory for a cold boot, keeping state.json.
func (p *Provider) resetVM(v *vm) error {
	p.stopVM(v)
	for _, f := range []string{driveName, apiSockName, vsockName} {
		if err := os.Remove(filepath.Join(v.dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	v.proc, v.api, v.agent = nil, nil, nil
	return nil
}

func (p *Provider) stopVM(v *vm) {
	if v.agent != nil {
		v.agent.Close()
	}
	if v.api != nil {
		v.api.close()
	}
	if v.proc != nil {
		if err := v.proc.kill(10 * time.Second); err != nil {
			p.log.Error("firecracker: stopping VMM", "sandbox", v.st.ID, "err", err)
		}
	}
}

// teardown stops a VM and removes its state directory.
func (p *Provider) teardown(v *vm) {
	p.stopVM(v)
	if err := os.RemoveAll(v.dir); err != nil {
		p.log.Error("firecracker: removing sandbox state", "sandbox", v.st.ID, "err", err)
	}
}

func growExt4(ctx context.Context, path string, size int64) error {
	resize, err := exec.LookPath("resize2fs")
	if err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "resize2fs (e2fsprogs) is needed for a disk size")
	}
	if err := os.Truncate(path, size); err != nil {
		return err
	}
	// -f: the file system was made by mkfs and never mounted, so the
	// fsck resize2fs asks for would find nothing.
	if b, err := exec.CommandContext(ctx, resize, "-f", path).CombinedOutput(); err != nil {
		return fmt.Errorf("resize2fs: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// guest is GuestRouter's lookup.
func (p *Provider) guest(_ context.Context, id string) (provider.Guest, error) {
	v, err := p.lookup(id)
	if err != nil {
		return nil, err
	}
	v.mu.Lock() // Pause to disk and Resume replace the agent client
	defer v.mu.Unlock()
	if v.st.Phase == phaseSuspended {
		return nil, errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "sandbox %s is paused (its memory is on disk)", id),
			"resume it first")
	}
	return envGuest{Guest: v.agent, env: v.st.Env}, nil
}

// closeConns drops v's idle connections to the VMM and the agent.
func (v *vm) closeConns() {
	if v.agent != nil {
		v.agent.Close()
	}
	if v.api != nil {
		v.api.close()
	}
}

func (p *Provider) lookup(id string) (*vm, error) {
	p.mu.Lock()
	v, ok := p.vms[id]
	gone := p.destroyed[id]
	p.mu.Unlock()
	if !ok {
		if gone {
			return nil, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
		}
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	v.mu.Lock()
	ready := v.ready
	v.mu.Unlock()
	if !ready {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s is still starting", id)
	}
	// Another provider instance on the same state directory (a restarted
	// server) may have destroyed it.
	if _, err := os.Stat(filepath.Join(v.dir, stateName)); errors.Is(err, fs.ErrNotExist) {
		p.mu.Lock()
		if p.vms[id] == v {
			delete(p.vms, id)
		}
		p.destroyed[id] = true
		p.mu.Unlock()
		v.mu.Lock()
		v.closeConns()
		v.mu.Unlock()
		return nil, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
	}
	return v, nil
}

// envGuest applies the sandbox's environment (Spec.Env) to every command
// (a request's own variables win): a VM's init starts without it, so the
// agent cannot have it in its own environment. File modes need nothing
// here: the agent client applies provider.NormalizeMode itself.
type envGuest struct {
	provider.Guest
	env map[string]string
}

func (g envGuest) Exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if len(g.env) > 0 {
		merged := maps.Clone(g.env)
		maps.Copy(merged, req.Env)
		req.Env = merged
	}
	return g.Guest.Exec(ctx, req, stdout, stderr)
}

func (p *Provider) info(v *vm, state provider.State) provider.Info {
	return provider.Info{
		ID: v.st.ID, State: state, Image: v.st.Image, Handle: v.st.Handle,
		OwnerID: v.st.OwnerID, Template: v.st.Template, Instance: v.st.Instance,
		Metadata: maps.Clone(v.st.Metadata), Created: v.st.Created,
	}
}

// Status asks the VMM: running, paused, or (its process gone) stopped.
func (p *Provider) Status(ctx context.Context, id string) (provider.Info, error) {
	v, err := p.lookup(id)
	if err != nil {
		return provider.Info{}, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return p.info(v, p.vmState(ctx, v)), nil
}

// vmState is v's state; v.mu is held.
func (p *Provider) vmState(ctx context.Context, v *vm) provider.State {
	if v.st.Phase == phaseSuspended {
		return provider.StatePaused
	}
	if v.proc == nil || !v.proc.running() {
		return provider.StateStopped
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ii, err := v.api.describe(sctx)
	switch {
	case err != nil:
		return provider.StateError
	case ii.State == fcapi.StatePaused:
		return provider.StatePaused
	case ii.State == fcapi.StateRunning:
		return provider.StateRunning
	}
	return provider.StateCreating
}

// Pause pauses the VM (Firecracker's PATCH /vm Paused): its vCPUs stop,
// its memory stays in the VMM process. Status reports it paused, after a
// server restart too, since the VMM outlives the server. With
// Config.PauseToDisk it then writes the VM to disk and stops the VMM
// (suspend).
func (p *Provider) Pause(ctx context.Context, id string) error {
	v, err := p.lookup(id)
	if err != nil {
		return err
	}
	v.mu.Lock() // not while a destroy or a snapshot holds the VM
	defer v.mu.Unlock()
	if v.st.Phase == phaseSuspended {
		return nil
	}
	if err := p.setPaused(ctx, v, true); err != nil {
		return err
	}
	if p.cfg.PauseToDisk {
		return p.suspend(ctx, v)
	}
	return nil
}

// Resume resumes a paused VM and sets the guest's clock again, which
// stood still while it was paused. A VM paused to disk is loaded from its
// snapshot by a new VMM, whatever Config.PauseToDisk says now.
func (p *Provider) Resume(ctx context.Context, id string) error {
	v, err := p.lookup(id)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.st.Phase == phaseSuspended {
		return p.wake(ctx, v)
	}
	return p.setPaused(ctx, v, false)
}

// setPaused pauses or resumes v's VMM; v.mu is held.
func (p *Provider) setPaused(ctx context.Context, v *vm, pause bool) error {
	id := v.st.ID
	want, state := provider.StateRunning, fcapi.VMResumed
	if pause {
		want, state = provider.StatePaused, fcapi.VMPaused
	}
	switch cur := p.vmState(ctx, v); cur {
	case want:
		return nil
	case provider.StateStopped:
		return errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "sandbox %s is not running: its VMM exited", id),
			"destroy it and spawn a new one")
	}
	if err := v.api.setVMState(ctx, state); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker: set sandbox %s %s", id, state)
	}
	if !pause {
		if err := p.refreshGuest(ctx, v); err != nil {
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker: resume sandbox %s", id)
		}
	}
	return nil
}

// suspend writes the paused VM v to disk and stops its VMM, which frees
// its memory; v.mu is held. state.json says suspended from the moment the
// snapshot is complete, before the VMM is killed, so a crash at any point
// leaves either a paused VMM or a complete snapshot. A failed snapshot
// leaves the VM running, as it was before Pause.
func (p *Provider) suspend(ctx context.Context, v *vm) error {
	id := v.st.ID
	dir := filepath.Join(v.dir, pausedName)
	err := os.RemoveAll(dir) // a stale one from a crash mid-resume
	if err == nil {
		err = os.Mkdir(dir, 0o700)
	}
	if err == nil {
		err = fullSnapshot(ctx, v.api, dir)
	}
	// A snapshot resets every vsock connection; pooled ones are dead.
	v.agent.Close()
	if err == nil {
		v.st.Phase = phaseSuspended
		if err = writeState(v.dir, v.st); err != nil {
			v.st.Phase = phaseRunning
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		if rerr := p.setPaused(context.WithoutCancel(ctx), v, false); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker: pause sandbox %s to disk", id)
	}
	p.stopVM(v)
	if v.proc.running() {
		// The snapshot is the VM now; the next scan kills this VMM.
		p.log.Error("firecracker: the VMM of a sandbox paused to disk is still running", "sandbox", id, "pid", v.proc.pid)
	}
	v.proc, v.api, v.agent = nil, nil, nil
	v.st.PID, v.st.PIDStart = 0, 0
	if err := removeSockets(v.dir); err != nil {
		p.log.Warn("firecracker: removing a stopped VMM's sockets", "sandbox", id, "err", err)
	}
	if err := writeState(v.dir, v.st); err != nil {
		p.log.Warn("firecracker: recording the stopped VMM", "sandbox", id, "err", err)
	}
	return nil
}

// wake resumes v from the snapshot suspend wrote, in a new VMM; v.mu is
// held. The snapshot is removed only once state.json says running again:
// until then a crash leaves the sandbox suspended, and a failed load
// leaves it so too, its snapshot intact for the next try.
func (p *Provider) wake(ctx context.Context, v *vm) error {
	id := v.st.ID
	dir := filepath.Join(v.dir, pausedName)
	err := removeSockets(v.dir) // the new VMM must be able to create them
	if err == nil {
		err = p.load(ctx, v, dir)
	}
	if err == nil {
		v.st.Phase = phaseRunning
		if err = writeState(v.dir, v.st); err != nil {
			v.st.Phase = phaseSuspended
		}
	}
	if err != nil {
		p.stopVM(v)
		v.proc, v.api, v.agent = nil, nil, nil
		v.st.PID, v.st.PIDStart = 0, 0
		_ = removeSockets(v.dir)
		_ = writeState(v.dir, v.st)
		if cerr := context.Cause(ctx); cerr != nil {
			return fmt.Errorf("firecracker: resume of sandbox %s abandoned: %w", id, cerr)
		}
		if errdefs.Classify(err) == nil {
			err = errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "firecracker: resume sandbox %s from disk", id)
		}
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		p.log.Warn("firecracker: removing the snapshot of a resumed sandbox", "sandbox", id, "err", err)
	}
	return nil
}

// removeSockets removes a stopped VMM's API and vsock sockets, which a
// new VMM in the same directory creates again (Firecracker refuses an
// existing path).
func removeSockets(dir string) error {
	var errs []error
	for _, f := range []string{apiSockName, vsockName} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Destroy kills the VMM and removes the sandbox's state directory.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	p.mu.Lock()
	v, ok := p.vms[id]
	if ok {
		delete(p.vms, id)
	}
	p.destroyed[id] = true
	p.mu.Unlock()
	if !ok {
		// Nothing known, but a directory may be left from a crash.
		dir := filepath.Join(p.sbDir, handleFor(id))
		if st, err := readState(dir); err == nil && st.ID == id {
			p.teardown(&vm{st: st, dir: dir, proc: &vmmProcess{pid: st.PID, start: st.PIDStart}})
		}
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.ready {
		return nil // Spawn sees it is gone and tears it down
	}
	p.teardown(v)
	return nil
}

// Logs returns the tail of the VM's serial console (kernel and agent
// output).
func (p *Provider) Logs(_ context.Context, id string, n int) ([]string, error) {
	v, err := p.lookup(id)
	if err != nil {
		return nil, err
	}
	lines, err := logtail.TailFile(filepath.Join(v.dir, consoleName), n)
	if err != nil {
		return nil, fmt.Errorf("firecracker: reading console log: %w", err)
	}
	return lines, nil
}

// List reports every VM this provider runs, including ones adopted from a
// previous server; VMs whose VMM died are cleaned up and left out.
func (p *Provider) List(ctx context.Context) ([]provider.Info, error) {
	p.scan()
	p.mu.Lock()
	vms := slices.Collect(maps.Values(p.vms))
	p.mu.Unlock()
	var out []provider.Info
	for _, v := range vms {
		v.mu.Lock()
		if !v.ready {
			v.mu.Unlock()
			continue
		}
		state := p.vmState(ctx, v)
		if state == provider.StateStopped {
			p.log.Info("firecracker: VMM died, cleaning up", "sandbox", v.st.ID)
			p.mu.Lock()
			if p.vms[v.st.ID] == v {
				delete(p.vms, v.st.ID)
			}
			p.mu.Unlock()
			p.teardown(v)
			v.mu.Unlock()
			continue
		}
		out = append(out, p.info(v, state))
		v.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b provider.Info) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// scan adopts the running VMs found under the state directory that this
// provider does not know yet, and removes the dead and the half-started.
func (p *Provider) scan() {
	ents, err := os.ReadDir(p.sbDir)
	if err != nil {
		p.log.Error("firecracker: scanning state dir", "err", err)
		return
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(p.sbDir, e.Name())
		st, err := readState(dir)
		if err != nil || st.Handle != e.Name() {
			// Not ours to judge while a Spawn may be writing it: only
			// remove directories nobody is spawning into.
			if !p.spawning(dir) {
				p.log.Warn("firecracker: removing unreadable sandbox state", "dir", e.Name(), "err", err)
				_ = os.RemoveAll(dir)
			}
			continue
		}
		p.mu.Lock()
		_, known := p.vms[st.ID]
		p.mu.Unlock()
		if known {
			continue
		}
		v := &vm{st: st, dir: dir, proc: &vmmProcess{pid: st.PID, start: st.PIDStart}}
		switch {
		case st.Phase == phaseSuspended:
			if !p.adoptSuspended(v) {
				continue
			}
		case st.Phase != phaseRunning || !v.proc.running():
			p.log.Info("firecracker: removing dead sandbox", "sandbox", st.ID, "phase", st.Phase)
			p.teardown(v)
			continue
		default:
			// A crash after a resume from disk may have left its snapshot.
			_ = os.RemoveAll(filepath.Join(dir, pausedName))
			v.api = newVMMClient(filepath.Join(dir, apiSockName))
			v.agent = agent.NewClient(agent.HybridVsockDialer(filepath.Join(dir, vsockName), AgentVsockPort), agent.WithLimits(p.cfg.AgentLimits))
		}
		v.ready = true
		p.mu.Lock()
		if _, raced := p.vms[st.ID]; !raced {
			p.vms[st.ID] = v
			p.log.Info("firecracker: adopted running VM", "sandbox", st.ID, "pid", st.PID)
		}
		p.mu.Unlock()
	}
}

// adoptSuspended readies a sandbox found paused to disk for adoption: a
// VMM left by a crash mid-pause or mid-resume is killed (the snapshot is
// the VM), and one whose snapshot is gone is removed.
func (p *Provider) adoptSuspended(v *vm) bool {
	if err := v.proc.kill(10 * time.Second); err != nil {
		p.log.Error("firecracker: stopping the VMM of a sandbox paused to disk", "sandbox", v.st.ID, "err", err)
		return false
	}
	snap := filepath.Join(v.dir, pausedName)
	for _, f := range []string{filepath.Join(snap, snapStateName), filepath.Join(snap, snapMemName), filepath.Join(v.dir, driveName)} {
		if _, err := os.Stat(f); err != nil {
			p.log.Warn("firecracker: removing a sandbox paused to disk whose snapshot is incomplete", "sandbox", v.st.ID, "err", err)
			p.teardown(v)
			return false
		}
	}
	if v.st.PID != 0 {
		v.st.PID, v.st.PIDStart = 0, 0
		_ = removeSockets(v.dir)
		if err := writeState(v.dir, v.st); err != nil {
			p.log.Warn("firecracker: recording the stopped VMM", "sandbox", v.st.ID, "err", err)
		}
	}
	v.proc = nil
	p.log.Info("firecracker: adopted VM paused to disk", "sandbox", v.st.ID)
	return true
}

func (p *Provider) spawning(dir string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.vms {
		if v.dir == dir {
			return true
		}
	}
	return false
}

// Snapshots lists the base snapshots.
func (p *Provider) Snapshots(context.Context) ([]provider.Snapshot, error) {
	if p.snaps == nil {
		return []provider.Snapshot{}, nil
	}
	out := []provider.Snapshot{}
	for _, m := range p.snaps.list() {
		out = append(out, provider.Snapshot{Image: m.Image, Provider: p.cfg.Name, Created: m.Created})
	}
	return out, nil
}

// Close releases idle connections; VMs keep running (a new provider on the
// same state directory adopts them).
func (p *Provider) Close() error {
	p.mu.Lock()
	vms := slices.Collect(maps.Values(p.vms))
	p.mu.Unlock()
	for _, v := range vms {
		v.mu.Lock()
		v.closeConns()
		v.mu.Unlock()
	}
	return nil
}
