// Package docker is the Docker provider: each sandbox is a container on a
// local dockerd (runc, crun or gVisor's runsc), and every command and file
// operation goes through the StacyVM agent running inside it as PID 1.
//
// The agent binary enters the container as a read-only bind mount, so any
// image works unmodified. It listens on a unix socket in a per-sandbox host
// directory bind-mounted at /run/stacyvm; the host connects to that socket.
// This works with and without a network, and with runsc when dockerd passes
// it --host-uds=create (docs/docker.md).
//
// The provider keeps no state of its own beyond that socket directory:
// container labels say everything needed to find and adopt a sandbox
// after a restart.
package docker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Paths inside every container.
const (
	agentTarget  = "/.stacyvm/stacyvm-agent"
	socketTarget = "/run/stacyvm"
	socketName   = "agent.sock"
)

// Provider runs sandboxes as Docker containers. It is safe for concurrent
// use.
type Provider struct {
	provider.GuestRouter

	cfg       Config
	cli       *client.Client
	runtime   string // resolved: never empty
	agentPath string
	isolation provider.Isolation
	// diskLimit says whether the storage driver can cap a container's
	// writable layer; diskWhyNot says why not.
	diskLimit  bool
	diskWhyNot string

	mu   sync.Mutex
	live map[string]*sandbox // by sandbox ID; a cache, rebuilt from dockerd on a miss
	// gone remembers recently destroyed IDs, so that operations on them fail
	// with ErrSandboxDestroyed rather than the vaguer ErrSandboxNotFound.
	gone map[string]time.Time
}

type sandbox struct {
	containerID string
	sockDir     string // host directory mounted at /run/stacyvm
	// guest needs no environment from the provider: dockerd starts the
	// agent with the image's ENV plus Spec.Env, and the agent starts
	// every command from its own environment.
	guest *agent.Client
}

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Inventory = (*Provider)(nil)
	_ provider.Pauser    = (*Provider)(nil)
)

// goneTTL is how long a destroyed ID is remembered.
const goneTTL = time.Hour

// dockerHint is advice for an operator whose daemon cannot be reached.
const dockerHint = "start dockerd (scripts/ci/docker-up.sh does it for development) " +
	"or point the docker provider's host (or DOCKER_HOST) at a running daemon"

// New connects to dockerd and checks everything Spawn will need: the
// daemon answers, the runtime is registered, the agent binary is usable
// and the state directory is writable. Its error says which one failed and
// is classified errdefs.ErrProviderUnavailable (or ErrInvalidArgument for a
// bad Config), so that the registry can record why the provider declined.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	opts := []client.Opt{client.FromEnv}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.New(opts...)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "docker: client for host %q", cfg.Host)
	}
	p := &Provider{cfg: cfg, cli: cli, live: map[string]*sandbox{}, gone: map[string]time.Time{}}
	p.GuestRouter = provider.GuestRouter{Lookup: p.lookup}
	if err := p.init(ctx); err != nil {
		cli.Close()
		return nil, err
	}
	return p, nil
}

func (p *Provider) init(ctx context.Context) error {
	if err := p.ping(ctx); err != nil {
		return err
	}
	res, err := p.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return classify(err, "docker: daemon info")
	}
	info := res.Info
	p.runtime = p.cfg.Runtime
	if p.runtime == "" {
		p.runtime = info.DefaultRuntime
	}
	rt, ok := info.Runtimes[p.runtime]
	if !ok {
		names := slices.Sorted(maps.Keys(info.Runtimes))
		return errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable,
			"docker: runtime %q is not registered with dockerd (it has %s)", p.runtime, strings.Join(names, ", ")),
			`register it under "runtimes" in /etc/docker/daemon.json and reload dockerd`)
	}
	p.diskLimit, p.diskWhyNot = diskQuota(info.Driver, info.DriverStatus, localMounts(p.cli.DaemonHost()), info.DockerRootDir)
	p.isolation = provider.IsolationContainer
	if p.runtime == "runsc" || filepath.Base(rt.Path) == "runsc" {
		p.isolation = provider.IsolationUserKernel
	}
	if n := p.cfg.Network; n != "none" && n != "bridge" {
		if _, err := p.cli.NetworkInspect(ctx, n, client.NetworkInspectOptions{}); err != nil {
			if isNotFound(err) {
				return errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable, "docker: network %q does not exist", n),
					"create it with `docker network create "+n+"` or configure none or bridge")
			}
			return classify(err, "docker: inspect network %q", n)
		}
	}
	if p.agentPath, err = findAgent(p.cfg.AgentPath, info.Architecture); err != nil {
		return err
	}
	if err := ensurePrivateDir(filepath.Join(p.cfg.StateDir, "sandboxes")); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker: state directory")
	}
	return nil
}

// ensurePrivateDir creates dir and makes its last element 0700: the socket
// directories inside it are world-writable for the sandbox's sake, and this
// is what keeps other host users out of them.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// Close releases the provider's connections. Sandboxes keep running.
func (p *Provider) Close() error {
	p.mu.Lock()
	for _, sb := range p.live {
		sb.guest.Close()
	}
	p.live = map[string]*sandbox{}
	p.mu.Unlock()
	return p.cli.Close()
}

// Name returns the configured provider name ("docker" by default).
func (p *Provider) Name() string { return p.cfg.Name }

// Runtime returns the OCI runtime sandboxes are created with.
func (p *Provider) Runtime() string { return p.runtime }

// Capabilities: containers (or a user-space kernel under runsc), with
// streaming exec, adoption, networking and enforced limits.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{
		Isolation:      p.isolation,
		Streaming:      true,
		Stdin:          true,
		Signals:        true,
		Adoption:       true,
		Network:        true,
		ResourceLimits: true,
		Symlinks:       true,
		DiskLimit:      p.diskLimit,
		Terminal:       true,
		Pause:          true,
	}
}

// Health pings dockerd and checks that the agent binary is still there.
func (p *Provider) Health(ctx context.Context) error {
	if err := p.ping(ctx); err != nil {
		return err
	}
	if err := checkStaticELF(p.agentPath, ""); err != nil {
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, noPath(err), "docker: agent binary"), agentHint)
	}
	return nil
}

func (p *Provider) ping(ctx context.Context) error {
	if _, err := p.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		if cerr := context.Cause(ctx); cerr != nil {
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, cerr, "docker: dockerd did not answer a ping")
		}
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "docker: dockerd unreachable"), dockerHint)
	}
	return nil
}

// Spawn pulls the image if needed, creates and starts the container, and
// returns once its agent answers. On any failure it removes what it made.
func (p *Provider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if err := checkID(spec.ID); err != nil {
		return provider.Info{}, err
	}
	if spec.Image == "" {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "docker: image is required")
	}
	if spec.MemoryMB < 0 || spec.VCPUs < 0 || spec.DiskMB < 0 {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "docker: negative resource in spec")
	}
	if spec.DiskMB > 0 && !p.diskLimit {
		return provider.Info{}, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented,
			"docker: disk_mb cannot be enforced: %s", p.diskWhyNot),
			"omit disk_mb, or run dockerd with overlay2 on xfs mounted with pquota, btrfs, zfs or devicemapper")
	}
	network := p.cfg.Network
	switch spec.Network {
	case "":
	case "none":
		network = "none"
	case "bridge":
		if network == "none" {
			network = "bridge"
		}
	default:
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "docker: network %q: want none or bridge", spec.Network)
	}
	env, err := envList(spec.Env)
	if err != nil {
		return provider.Info{}, err
	}
	if p.cfg.nonRoot() && spec.Env["HOME"] == "" {
		// The agent's default HOME is /root, which a non-root user cannot
		// write; its workspace is its own.
		env = append(env, "HOME="+provider.DefaultWorkDir)
	}
	if err := p.ensureImage(ctx, spec.Image); err != nil {
		return provider.Info{}, err
	}

	sockDir, err := p.claimSocketDir(ctx, spec.ID)
	if err != nil {
		return provider.Info{}, err
	}
	created := time.Now().UTC()
	config, hostConfig := p.containerConfig(spec, env, network, sockDir, created)
	res, err := p.create(ctx, spec.ID, config, hostConfig)
	if err != nil {
		if !errors.Is(err, errdefs.ErrConflict) {
			os.RemoveAll(sockDir)
		}
		return provider.Info{}, err
	}
	for _, w := range res.Warnings {
		p.cfg.Logger.Warn("docker: create warning", "sandbox", spec.ID, "warning", w)
	}
	sb := &sandbox{containerID: res.ID, sockDir: sockDir}
	sb.guest = agent.NewClient(p.dialer(spec.ID, res.ID, filepath.Join(sockDir, socketName)), agent.WithLimits(p.cfg.AgentLimits))
	if ctx.Err() != nil {
		// The caller gave up while the container was being created.
		p.cleanup(spec.ID, sb)
		return provider.Info{}, fmt.Errorf("docker: spawn %s: %w", spec.ID, context.Cause(ctx))
	}

	if err := p.start(ctx, spec.ID, sb); err != nil {
		p.cleanup(spec.ID, sb)
		return provider.Info{}, err
	}
	p.mu.Lock()
	p.live[spec.ID] = sb
	delete(p.gone, spec.ID)
	p.mu.Unlock()
	info := infoFromLabels(config.Labels, res.ID, created)
	info.State = provider.StateRunning
	info.Runtime = p.runtime
	return info, nil
}

// dockerCallTimeout bounds the dockerd calls that run on a context of
// their own because abandoning them would leak (create, cleanup).
const dockerCallTimeout = time.Minute

// create creates the sandbox's container. dockerd completes a create even
// when its client hangs up, and a client that hung up never learns the new
// container's ID: so the call does not take the caller's cancellation (the
// caller checks it once dockerd has answered), and a create that failed
// anyway is followed by a lookup by the container's deterministic name.
func (p *Provider) create(ctx context.Context, id string, config *container.Config, hostConfig *container.HostConfig) (client.ContainerCreateResult, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dockerCallTimeout)
	defer cancel()
	res, err := p.cli.ContainerCreate(cctx, client.ContainerCreateOptions{
		Name:       containerName(id),
		Config:     config,
		HostConfig: hostConfig,
	})
	if err == nil {
		return res, nil
	}
	err = classify(err, "docker: create container for %s", id)
	if !errors.Is(err, errdefs.ErrConflict) {
		// The name is taken by nothing else (a conflict would say so), so a
		// container under it carrying this sandbox's labels is the one this
		// create made before it failed: a timeout, a dropped connection.
		p.removeLeftover(id)
	}
	return res, err
}

// removeLeftover removes sandbox id's container if there is one; it runs
// on a context of its own, after the caller may have given up.
func (p *Provider) removeLeftover(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	ctr, err := p.inspect(ctx, id)
	if err != nil {
		return
	}
	if _, err := p.cli.ContainerRemove(ctx, ctr.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
		p.cfg.Logger.Warn("docker: removing the container of a failed create", "sandbox", id, "err", err)
	}
}

// claimSocketDir creates the sandbox's socket directory. One that already
// exists is a leftover of a crashed spawn unless a container of that ID
// exists, in which case the ID is taken.
func (p *Provider) claimSocketDir(ctx context.Context, id string) (string, error) {
	dir := p.socketDir(id)
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		if _, ierr := p.cli.ContainerInspect(ctx, containerName(id), client.ContainerInspectOptions{}); ierr == nil {
			return "", errdefs.New(errdefs.ErrConflict, "docker: sandbox %s already exists", id)
		}
		if err = os.RemoveAll(dir); err == nil {
			err = os.Mkdir(dir, 0o700)
		}
	}
	if err != nil {
		return "", fmt.Errorf("docker: socket directory for %s: %w", id, noPath(err))
	}
	// The agent may run as any user the image names; the 0700 parent keeps
	// everyone else on the host out.
	if err := os.Chmod(dir, 0o777); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("docker: socket directory for %s: %w", id, noPath(err))
	}
	return dir, nil
}

func (p *Provider) socketDir(id string) string {
	return filepath.Join(p.cfg.StateDir, "sandboxes", id)
}

func (p *Provider) containerConfig(spec provider.Spec, env []string, network, sockDir string, created time.Time) (*container.Config, *container.HostConfig) {
	labels := p.labels(spec, created)

	memMB := spec.MemoryMB
	if memMB == 0 {
		memMB = p.cfg.MemoryMB
	}
	vcpus := spec.VCPUs
	if vcpus == 0 {
		vcpus = p.cfg.VCPUs
	}
	mem := int64(memMB) << 20
	pids := p.cfg.PidsLimit
	noInit := false

	config := &container.Config{
		Image:      spec.Image,
		Hostname:   spec.ID,
		User:       p.cfg.User,
		Env:        env,
		WorkingDir: provider.DefaultWorkDir,
		// The agent replaces the image's entrypoint and command: it is the
		// container's PID 1, reaps orphans, and runs every command.
		Entrypoint: []string{agentTarget, "--listen", "unix:" + socketTarget + "/" + socketName, "--root", "/"},
		Cmd:        []string{},
		Labels:     labels,
	}
	hostConfig := &container.HostConfig{
		Mounts: []mount.Mount{
			{Type: mount.TypeBind, Source: p.agentPath, Target: agentTarget, ReadOnly: true},
			{Type: mount.TypeBind, Source: sockDir, Target: socketTarget},
		},
		NetworkMode:    container.NetworkMode(network),
		Runtime:        p.runtime,
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: p.cfg.ReadOnlyRoot,
		Init:           &noInit,
		LogConfig: container.LogConfig{
			Type:   "json-file",
			Config: map[string]string{"max-size": "4m", "max-file": "1"},
		},
		Resources: container.Resources{
			Memory:     mem,
			MemorySwap: mem, // no swap on top of the limit
			NanoCPUs:   int64(vcpus) * 1e9,
			PidsLimit:  &pids,
		},
	}
	if spec.DiskMB > 0 {
		hostConfig.StorageOpt = storageOpt(spec.DiskMB)
	}
	size := strconv.Itoa(p.cfg.TmpfsMB) + "m"
	tmpfs := map[string]string{}
	if p.cfg.ReadOnlyRoot {
		tmpfs["/tmp"] = "rw,nosuid,nodev,exec,mode=1777,size=" + size
	}
	if p.cfg.nonRoot() || p.cfg.ReadOnlyRoot {
		// The image's /workspace (or the one dockerd creates) belongs to
		// root, so a non-root user gets its own.
		opts := "rw,nosuid,nodev,exec,mode=0755,size=" + size
		if uid, gid := p.cfg.uidGID(); uid > 0 {
			opts += ",uid=" + strconv.Itoa(uid) + ",gid=" + strconv.Itoa(gid)
		}
		tmpfs[provider.DefaultWorkDir] = opts
	}
	if len(tmpfs) > 0 {
		hostConfig.Tmpfs = tmpfs
	}
	return config, hostConfig
}

// start starts the container and waits for its agent. If the container
// exits first (a crashing agent, an image for another architecture) it
// fails at once with the container's last log lines.
func (p *Provider) start(ctx context.Context, id string, sb *sandbox) error {
	if _, err := p.cli.ContainerStart(ctx, sb.containerID, client.ContainerStartOptions{}); err != nil {
		return classify(err, "docker: start container for %s", id)
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rctx, stop := context.WithTimeoutCause(rctx, p.cfg.ReadyTimeout,
		fmt.Errorf("agent did not answer within %s", p.cfg.ReadyTimeout))
	defer stop()
	exited := p.cli.ContainerWait(rctx, sb.containerID, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	go func() {
		select {
		case r := <-exited.Result:
			cancel(fmt.Errorf("container exited with status %d", r.StatusCode))
		case <-exited.Error:
		case <-rctx.Done():
		}
	}()
	err := sb.guest.WaitReady(rctx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("docker: spawn %s: %w", id, context.Cause(ctx))
	}
	cause := context.Cause(rctx)
	if cause == nil {
		// WaitReady gave up on its own; give the exit watcher a moment
		// to say why.
		select {
		case <-rctx.Done():
			cause = context.Cause(rctx)
		case <-time.After(2 * time.Second):
			cause = err
		}
	}
	lctx, lcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer lcancel()
	if lines, lerr := p.Logs(lctx, id, 10); lerr == nil && len(lines) > 0 {
		cause = fmt.Errorf("%w; container log: %s", cause, strings.Join(lines, " | "))
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, cause, "docker: sandbox %s agent did not start", id)
}

// cleanup removes what a failed Spawn made, even if the caller gave up.
func (p *Provider) cleanup(id string, sb *sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerCallTimeout)
	defer cancel()
	sb.guest.Close()
	if _, err := p.cli.ContainerRemove(ctx, sb.containerID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
		p.cfg.Logger.Warn("docker: removing failed sandbox", "sandbox", id, "err", err)
	}
	os.RemoveAll(sb.sockDir)
}

// dialer connects to a sandbox's agent. When the socket does not answer it
// asks dockerd why, so that a removed or stopped container reads as such
// rather than as an unreachable agent.
func (p *Provider) dialer(id, containerID, sock string) agent.Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dialUnix(ctx, sock)
		if err == nil || ctx.Err() != nil {
			return c, err
		}
		res, ierr := p.cli.ContainerInspect(ctx, containerID, client.ContainerInspectOptions{})
		switch {
		case isNotFound(ierr):
			p.forget(id)
			return nil, p.missing(id)
		case ierr == nil && res.Container.State != nil && !res.Container.State.Running:
			p.forget(id)
			return nil, notRunning(id, res.Container.State.Status)
		}
		return nil, err
	}
}

// noPath drops the host path from a file system error: these errors can
// reach API clients, who have no business knowing the host's layout.
func noPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// maxSocketPath is the longest path connect(2) takes for a unix socket;
// dialUnix's /proc/self/fd address never comes near it, so a deep
// state_dir is fine.
const maxSocketPath = 107

func notRunning(id string, state container.ContainerState) error {
	return errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "sandbox %s is not running (container %s)", id, state),
		"destroy it and spawn a new one")
}

// forget drops a cached sandbox whose container went away behind our back.
func (p *Provider) forget(id string) {
	p.mu.Lock()
	sb := p.live[id]
	delete(p.live, id)
	p.mu.Unlock()
	if sb != nil {
		sb.guest.Close()
	}
}

// missing is the error for an ID with no container.
func (p *Provider) missing(id string) error {
	p.mu.Lock()
	_, gone := p.gone[id]
	p.mu.Unlock()
	if gone {
		return errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
	}
	return errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
}

// lookup finds the agent of a sandbox: from the cache, or by inspecting its
// container, which is how a new Provider re-attaches to sandboxes that a
// previous one spawned.
func (p *Provider) lookup(ctx context.Context, id string) (provider.Guest, error) {
	p.mu.Lock()
	sb := p.live[id]
	p.mu.Unlock()
	if sb != nil {
		return sb.guest, nil
	}
	if checkID(id) != nil {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	ctr, err := p.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	if ctr.State == nil || !ctr.State.Running {
		status := container.ContainerState("unknown")
		if ctr.State != nil {
			status = ctr.State.Status
		}
		return nil, notRunning(id, status)
	}
	sockDir := ""
	for _, m := range ctr.Mounts {
		if m.Destination == socketTarget {
			sockDir = m.Source
		}
	}
	if sockDir == "" {
		return nil, fmt.Errorf("docker: container of sandbox %s has no agent socket mount", id)
	}
	sb = &sandbox{containerID: ctr.ID, sockDir: sockDir}
	sb.guest = agent.NewClient(p.dialer(id, ctr.ID, filepath.Join(sockDir, socketName)), agent.WithLimits(p.cfg.AgentLimits))
	p.mu.Lock()
	if cur := p.live[id]; cur != nil {
		sb.guest.Close()
		sb = cur
	} else {
		p.live[id] = sb
	}
	p.mu.Unlock()
	return sb.guest, nil
}

// inspect returns the container of sandbox id if this provider owns it.
func (p *Provider) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	res, err := p.cli.ContainerInspect(ctx, containerName(id), client.ContainerInspectOptions{})
	if isNotFound(err) {
		return container.InspectResponse{}, p.missing(id)
	}
	if err != nil {
		return container.InspectResponse{}, classify(err, "docker: inspect sandbox %s", id)
	}
	ctr := res.Container
	if ctr.Config == nil || ctr.Config.Labels[LabelProvider] != p.cfg.Name || ctr.Config.Labels[LabelID] != id {
		// Same name, someone else's container: not ours to show or touch.
		return container.InspectResponse{}, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	return ctr, nil
}

// Status reports dockerd's view of the sandbox's container.
func (p *Provider) Status(ctx context.Context, id string) (provider.Info, error) {
	if checkID(id) != nil {
		return provider.Info{}, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	ctr, err := p.inspect(ctx, id)
	if err != nil {
		return provider.Info{}, err
	}
	created, _ := time.Parse(time.RFC3339Nano, ctr.Created)
	info := infoFromLabels(ctr.Config.Labels, ctr.ID, created)
	info.State = provider.StateError
	if ctr.State != nil {
		info.State = stateOf(ctr.State.Status)
	}
	if ctr.HostConfig != nil {
		info.Runtime = ctr.HostConfig.Runtime
	}
	return info, nil
}

// Pause freezes every process of the sandbox's container (dockerd's pause:
// the cgroup freezer under runc and crun, the sandbox's own under runsc).
func (p *Provider) Pause(ctx context.Context, id string) error {
	return p.freeze(ctx, id, true)
}

// Resume thaws a container Pause froze.
func (p *Provider) Resume(ctx context.Context, id string) error {
	return p.freeze(ctx, id, false)
}

// freeze pauses or unpauses the container. dockerd records a container's
// paused state from the runtime's events, after its pause or unpause call
// has returned, so its view is trusted only once it has caught up: a call
// is followed by a wait for the state it asked for, and a call that fails
// counts as done when that state turns up anyway (it was paused already,
// or dockerd had not yet recorded the previous change).
func (p *Provider) freeze(ctx context.Context, id string, pause bool) error {
	if checkID(id) != nil {
		return errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	ctr, err := p.inspect(ctx, id)
	if err != nil {
		return err
	}
	if ctr.State == nil || !ctr.State.Running {
		status := container.ContainerState("unknown")
		if ctr.State != nil {
			status = ctr.State.Status
		}
		return notRunning(id, status)
	}
	op := "resume"
	if pause {
		op = "pause"
		_, err = p.cli.ContainerPause(ctx, ctr.ID, client.ContainerPauseOptions{})
	} else {
		_, err = p.cli.ContainerUnpause(ctx, ctr.ID, client.ContainerUnpauseOptions{})
	}
	settled, werr := p.waitPaused(ctx, id, pause)
	switch {
	case settled:
		return nil
	case err != nil:
		return classify(err, "docker: %s sandbox %s", op, id)
	case werr != nil:
		return werr
	}
	return errdefs.New(errdefs.ErrProviderUnavailable, "docker: %s sandbox %s: dockerd did not record it within %s", op, id, freezeSettle)
}

// freezeSettle bounds the wait for dockerd to record a pause or unpause.
const freezeSettle = 5 * time.Second

// waitPaused waits until dockerd reports the container paused (or not),
// at most freezeSettle.
func (p *Provider) waitPaused(ctx context.Context, id string, paused bool) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, freezeSettle)
	defer cancel()
	delay := time.Millisecond
	for {
		ctr, err := p.inspect(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return false, nil
			}
			return false, err
		}
		if ctr.State != nil && ctr.State.Paused == paused {
			return true, nil
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// Destroy removes the container (killing it) and its socket directory.
// Unknown IDs, and IDs whose container is already gone, are not an error.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	if checkID(id) != nil {
		return nil // no sandbox can have this ID; and it must not reach a path
	}
	p.mu.Lock()
	sb := p.live[id]
	delete(p.live, id)
	p.gone[id] = time.Now()
	for gid, at := range p.gone {
		if time.Since(at) > goneTTL {
			delete(p.gone, gid)
		}
	}
	p.mu.Unlock()
	if sb != nil {
		sb.guest.Close()
	}

	dirs := []string{p.socketDir(id)}
	ctr, err := p.inspect(ctx, id)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
	case err != nil:
		return err
	default:
		if ctr.State != nil && ctr.State.Paused {
			// runsc cannot kill a paused sandbox; thaw it first. A failure
			// shows in the removal below.
			_, _ = p.cli.ContainerUnpause(ctx, ctr.ID, client.ContainerUnpauseOptions{})
		}
		if _, err := p.cli.ContainerRemove(ctx, ctr.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			return classify(err, "docker: remove sandbox %s", id)
		}
		// A container spawned by a provider with another state_dir keeps
		// its socket elsewhere; remove that too, but only if it has the
		// shape this package gives socket directories.
		for _, m := range ctr.Mounts {
			if m.Destination == socketTarget && filepath.Base(m.Source) == id &&
				filepath.Base(filepath.Dir(m.Source)) == "sandboxes" && m.Source != dirs[0] {
				dirs = append(dirs, m.Source)
			}
		}
	}
	var errs []error
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, noPath(err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docker: remove socket directory of %s: %w", id, err)
	}
	return nil
}

// List returns every container this provider created, running or not.
// Containers of a test run (label stacyvm.test) are listed only by the
// providers of that run, so that a server sharing dockerd with tests never
// adopts or sweeps their containers, nor a test a server's.
func (p *Provider) List(ctx context.Context) ([]provider.Info, error) {
	res, err := p.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", LabelProvider+"="+p.cfg.Name),
	})
	if err != nil {
		return nil, classify(err, "docker: list containers")
	}
	out := make([]provider.Info, 0, len(res.Items))
	for _, c := range res.Items {
		if checkID(c.Labels[LabelID]) != nil || c.Labels[LabelTest] != p.cfg.Labels[LabelTest] {
			continue
		}
		info := infoFromLabels(c.Labels, c.ID, time.Unix(c.Created, 0))
		info.State = stateOf(c.State)
		info.Runtime = c.Labels[LabelRuntime]
		out = append(out, info)
	}
	return out, nil
}

// envList turns Spec.Env into the container's environment, sorted so that
// the container config does not depend on map order.
func envList(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env))
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "docker: invalid environment variable %q", k)
		}
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, nil
}
