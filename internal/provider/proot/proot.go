//go:build linux

package proot

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/logtail"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Provider is the PRoot provider. It implements provider.Provider and
// provider.Inventory; every method is safe for concurrent use.
type Provider struct {
	provider.GuestRouter

	name      string
	imagesDir string
	stateDir  string
	prootPath string
	loaderEnv []string // PROOT_LOADER*: the loaders in stateDir (loader_linux.go)
	agentPath string
	max       int
	// privateUIDs: the server is root, so each sandbox runs as its own
	// unprivileged uid (uidBase + slot).
	privateUIDs bool
	uidBase     int
	ready       time.Duration
	agentLim    agent.Limits
	log         *slog.Logger

	mu        sync.Mutex
	live      map[string]*sandbox
	slots     map[int]string // slots of sandboxes being spawned, live or being destroyed
	destroyed map[string]bool

	hmu       sync.Mutex
	checkedAt time.Time
	checkErr  error
}

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Inventory = (*Provider)(nil)
)

// sandbox is a live sandbox this instance spawned or adopted.
type sandbox struct {
	st     state
	dir    string
	rootfs string
	files  *agent.Client // the host-side agent, confined to rootfs/: files
	logMu  sync.Mutex

	mu    sync.Mutex
	execs map[int]proc // PRoot processes of commands this instance started

	pauseMu sync.Mutex // serialises Pause and Resume
	stMu    sync.Mutex // guards st.Paused, which Pause and Resume change
}

func (sb *sandbox) paused() bool {
	sb.stMu.Lock()
	defer sb.stMu.Unlock()
	return sb.st.Paused
}

func (sb *sandbox) state() state {
	sb.stMu.Lock()
	defer sb.stMu.Unlock()
	return sb.st
}

func (sb *sandbox) setPaused(paused bool) {
	sb.stMu.Lock()
	defer sb.stMu.Unlock()
	sb.st.Paused = paused
}

func (sb *sandbox) alive() bool { return sb.st.Files.running() }

func (sb *sandbox) close() { sb.files.Close() }

func (sb *sandbox) track(t proc) {
	if !t.valid() {
		return
	}
	sb.mu.Lock()
	sb.execs[t.PID] = t
	sb.mu.Unlock()
}

func (sb *sandbox) untrack(t proc) {
	sb.mu.Lock()
	delete(sb.execs, t.PID)
	sb.mu.Unlock()
}

// logf appends a line to the console log.
func (sb *sandbox) logf(format string, args ...any) {
	line := stamp() + " " + strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", `\n`) + "\n"
	sb.logMu.Lock()
	defer sb.logMu.Unlock()
	f, err := os.OpenFile(filepath.Join(sb.dir, consoleFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return // best effort: the sandbox may be going away
	}
	defer f.Close()
	f.WriteString(line)
}

// tracers returns the PRoot processes of the sandbox's commands: those this
// instance started, and any an earlier instance left running.
func (sb *sandbox) tracers() []proc {
	sb.mu.Lock()
	out := slices.Collect(maps.Values(sb.execs))
	sb.mu.Unlock()
	for _, t := range findTracers(sb.rootfs) {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// New returns a PRoot provider, after checking that proot and the agent run
// on this host and re-attaching to the sandboxes a previous instance left
// running under StateDir (sandboxes whose processes died are removed). An
// error means the provider cannot run here; its message is the reason to
// show in `stacyvm doctor`.
func New(opts Options) (*Provider, error) {
	p := &Provider{
		name:      opts.Name,
		max:       opts.MaxSandboxes,
		uidBase:   opts.UIDBase,
		ready:     opts.ReadyTimeout,
		agentLim:  opts.AgentLimits,
		log:       opts.Logger,
		live:      map[string]*sandbox{},
		slots:     map[int]string{},
		destroyed: map[string]bool{},
	}
	if p.name == "" {
		p.name = DefaultName
	}
	if p.max == 0 {
		p.max = DefaultMaxSandboxes
	}
	if p.ready <= 0 {
		p.ready = DefaultReadyTimeout
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("provider", p.name)
	p.privateUIDs = os.Geteuid() == 0
	p.GuestRouter = provider.GuestRouter{Lookup: p.guest}

	var err error
	if p.prootPath, err = findProot(opts.ProotPath); err != nil {
		return nil, err
	}
	if p.agentPath, err = findAgent(opts.AgentPath); err != nil {
		return nil, err
	}
	if p.imagesDir, err = dirOption(opts.ImagesDir, "images_dir", "/var/lib/stacyvm/images", "XDG_DATA_HOME", ".local/share", "images"); err != nil {
		return nil, err
	}
	if p.stateDir, err = dirOption(opts.StateDir, "state_dir", defaultStateDir, "XDG_STATE_HOME", ".local/state", "proot"); err != nil {
		return nil, err
	}
	if err := p.prepareStateDir(); err != nil {
		return nil, err
	}
	if p.loaderEnv, err = extractLoaders(p.prootPath, p.stateDir); err != nil {
		p.log.Warn("cannot extract PRoot's loader: each proot writes its own to /tmp, and one killed with SIGKILL leaves it there", "err", err)
	}
	if p.uidBase <= 0 {
		p.uidBase = defaultUIDBase(p.stateDir)
	}
	if fi, err := os.Stat(p.imagesDir); err != nil || !fi.IsDir() {
		return nil, errdefs.WithHint(
			errdefs.New(errdefs.ErrProviderUnavailable, "proot: images directory %s does not exist", p.imagesDir),
			"create it and put one root file system directory per image in it (docs/proot.md)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	p.recover(ctx)
	return p, nil
}

// uidsPerProvider is the size of the uid range one provider's sandboxes
// use when the server is root.
const uidsPerProvider = 1 << 16

// defaultUIDBase picks one of 4096 uid ranges in the block systemd leaves
// unassigned (0x70000000-0x7FFFFFFF) by hashing the state directory: two
// servers, or two providers, on one host must not share sandbox uids,
// because Destroy kills every process of a sandbox's uid. The choice is
// stable across restarts, as adoption needs.
func defaultUIDBase(stateDir string) int {
	h := fnv.New32a()
	h.Write([]byte(stateDir))
	return DefaultUIDBase + int(h.Sum32()%4096)*uidsPerProvider
}

// findProot resolves the proot binary.
func findProot(path string) (string, error) {
	if path == "" {
		path = "proot"
	}
	found, err := exec.LookPath(path)
	if err != nil {
		return "", errdefs.WithHint(
			errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: the proot binary was not found"),
			"install PRoot (Debian/Ubuntu: apt-get install proot) or set proot_path")
	}
	return filepath.Abs(found)
}

// findAgent resolves the agent binary and checks it is statically linked:
// it runs inside images that may have no C library at all.
func findAgent(path string) (string, error) {
	if path == "" {
		if exe, err := os.Executable(); err == nil {
			cand := filepath.Join(filepath.Dir(exe), agentName)
			if fi, err := os.Stat(cand); err == nil && fi.Mode().IsRegular() {
				path = cand
			}
		}
	}
	if path == "" {
		path = agentName
	}
	found, err := exec.LookPath(path)
	if err != nil {
		return "", errdefs.WithHint(
			errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: the %s binary was not found", agentName),
			"build it with CGO_ENABLED=0 go build ./cmd/stacyvm-agent and put it next to stacyvm, or set agent_path")
	}
	found, err = filepath.Abs(found)
	if err != nil {
		return "", errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: agent path")
	}
	f, err := elf.Open(found)
	if err != nil {
		return "", errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: %s is not a Linux executable", found)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return "", errdefs.WithHint(
				errdefs.New(errdefs.ErrProviderUnavailable, "proot: %s is dynamically linked; sandboxes need a static agent", found),
				"rebuild it with CGO_ENABLED=0")
		}
	}
	return found, nil
}

// dirOption returns the configured directory, or the default: fixed for
// root, under $XDG_<...> or ~/<home> otherwise.
const defaultStateDir = "/var/lib/stacyvm/proot"

// DefaultStateDir is the state directory used when Options.StateDir is
// empty: /var/lib/stacyvm/proot as root, else under XDG_STATE_HOME or
// ~/.local/state.
func DefaultStateDir() (string, error) {
	return dirOption("", "state_dir", defaultStateDir, "XDG_STATE_HOME", ".local/state", "proot")
}

// DefaultImagesDir is the images directory used when Options.ImagesDir
// is empty: /var/lib/stacyvm/images as root, else under XDG_DATA_HOME or
// ~/.local/share.
func DefaultImagesDir() (string, error) {
	return dirOption("", "images_dir", "/var/lib/stacyvm/images", "XDG_DATA_HOME", ".local/share", "images")
}

func dirOption(v, key, rootDefault, xdgVar, homeRel, leaf string) (string, error) {
	if v == "" {
		switch {
		case os.Geteuid() == 0:
			v = rootDefault
		case os.Getenv(xdgVar) != "":
			v = filepath.Join(os.Getenv(xdgVar), "stacyvm", leaf)
		default:
			home, err := os.UserHomeDir()
			if err != nil {
				return "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "proot: %s is not set and there is no home directory", key)
			}
			v = filepath.Join(home, homeRel, "stacyvm", leaf)
		}
	}
	abs, err := filepath.Abs(v)
	if err != nil {
		return "", errdefs.Wrap(errdefs.ErrInvalidArgument, err, "proot: %s", key)
	}
	return abs, nil
}

// prepareStateDir creates StateDir and checks what the sandboxes need of
// it.
func (p *Provider) prepareStateDir() error {
	if strings.ContainsRune(p.stateDir, ':') {
		// PRoot's -b option splits host and guest paths at ':'.
		return errdefs.New(errdefs.ErrInvalidArgument, "proot: state_dir %s must not contain ':'", p.stateDir)
	}
	if n := len(p.stateDir) + typicalIDLen + socketOverhead; n > maxSocketPath {
		return errdefs.New(errdefs.ErrInvalidArgument,
			"proot: state_dir %s is %d bytes long; sandbox sockets under it need it at most %d (unix socket paths are at most %d bytes)",
			p.stateDir, len(p.stateDir), maxSocketPath-typicalIDLen-socketOverhead, maxSocketPath)
	}
	mode := fs.FileMode(0o700)
	if p.privateUIDs {
		// Sandbox uids must be able to reach their own directories.
		mode = 0o711
	}
	if err := os.MkdirAll(p.stateDir, mode); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: creating state_dir")
	}
	if err := os.Chmod(p.stateDir, mode); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: state_dir")
	}
	if !p.privateUIDs {
		return nil
	}
	for d := filepath.Dir(p.stateDir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: state_dir parent")
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return errdefs.WithHint(
				errdefs.New(errdefs.ErrProviderUnavailable,
					"proot: sandboxes run as unprivileged users and cannot reach state_dir %s: %s has mode %04o", p.stateDir, d, fi.Mode().Perm()),
				"chmod o+x that directory, or choose a state_dir whose parents are searchable by everyone")
		}
		if d == "/" {
			return nil
		}
	}
}

func (p *Provider) Name() string { return p.name }

// Capabilities: process-level isolation only (PRoot is not a security
// boundary), streamed output, adoption after a restart, symbolic links.
// Network is false because sandboxes always share the host's network: a
// spawn asking for network "none" fails rather than run unisolated.
// ResourceLimits is false: PRoot enforces no memory, CPU or process limits.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{
		Isolation: provider.IsolationProcess,
		Streaming: true,
		Stdin:     true,
		Adoption:  true,
		Symlinks:  true,
		Terminal:  true,
		Pause:     true,
	}
}

// Warning is what the server and `stacyvm doctor` print when the provider
// is enabled.
func (p *Provider) Warning() string {
	w := "PRoot is not a security boundary: it translates paths with ptrace, and code in a sandbox " +
		"that means to can reach host files (for example with system calls PRoot does not know, such as openat2). " +
		"Sandboxes share the host's network and have no memory, CPU or process limits."
	if p.privateUIDs {
		return w + " Each sandbox runs as its own unprivileged uid, which bounds what an escape can do."
	}
	return w + " The server is not root, so sandboxes run as the server's own user: an escape can do whatever that user can, " +
		"including signalling the server."
}

// healthTTL is how long a successful probe of proot is trusted.
const healthTTL = 30 * time.Second

// Health reports whether proot and the agent run on this host and the
// images and state directories are usable.
func (p *Provider) Health(ctx context.Context) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	for _, d := range []struct{ key, dir string }{{"images_dir", p.imagesDir}, {"state_dir", p.stateDir}} {
		if fi, err := os.Stat(d.dir); err != nil || !fi.IsDir() {
			return errdefs.New(errdefs.ErrProviderUnavailable, "proot: %s is missing", d.key)
		}
	}
	return nil
}

// check runs the agent under proot once (cached for healthTTL), which
// proves that proot starts, that ptrace is allowed here, and that the
// agent binary runs.
func (p *Provider) check(ctx context.Context) error {
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if p.checkErr == nil && !p.checkedAt.IsZero() && time.Since(p.checkedAt) < healthTTL {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.prootPath, "-v", "-1", p.agentPath, "--version")
	cmd.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, p.loaderEnv...)
	out, err := cmd.CombinedOutput()
	if err == nil && !strings.Contains(string(out), agentName) {
		err = fmt.Errorf("unexpected output %q", firstLine(out))
	}
	p.checkedAt, p.checkErr = time.Now(), nil
	if err != nil {
		p.checkErr = errdefs.WithHint(
			errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "proot: running the agent under proot failed (%s)", firstLine(out)),
			"check that ptrace is allowed on this host (containers often forbid it) and that proot and stacyvm-agent run")
	}
	return p.checkErr
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// recover re-attaches to the sandboxes under StateDir whose processes still
// run, and removes the others: those whose PRoot died, and those a crashed
// server left half made.
func (p *Provider) recover(ctx context.Context) {
	ents, err := os.ReadDir(p.stateDir)
	if err != nil {
		p.log.Warn("cannot list sandboxes", "err", err)
		return
	}
	for _, e := range ents {
		if !e.IsDir() || !validID.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(p.stateDir, e.Name())
		st, ok := readState(dir)
		if ok && st.Phase == phaseRunning && st.Files.running() {
			p.live[st.ID] = p.attach(dir, st)
			p.slots[st.Slot] = st.ID
			p.log.Info("re-attached to sandbox", "id", st.ID, "image", st.Image)
			continue
		}
		uid := -1
		if ok {
			uid = st.UID
		}
		if err := killProcs(ctx, findTracers(filepath.Join(dir, rootfsDir)), uid, st.Files); err != nil {
			p.log.Warn("cannot kill the processes of a dead sandbox", "id", e.Name(), "err", err)
			continue
		}
		if err := removeTree(dir); err != nil {
			p.log.Warn("cannot remove a dead sandbox", "id", e.Name(), "err", err)
			continue
		}
		p.log.Info("removed dead sandbox", "id", e.Name(), "phase", st.Phase)
	}
}

// attach returns the live sandbox of a state, with a file agent client
// that accepts only connections served by the sandbox's own agent process:
// the agent runs as the sandbox's user and so does sandbox code, which
// could put a link to another host socket where the agent's socket was.
func (p *Provider) attach(dir string, st state) *sandbox {
	return &sandbox{
		st:     st,
		dir:    dir,
		rootfs: filepath.Join(dir, rootfsDir),
		execs:  map[int]proc{},
		files: agent.NewClient(verifiedDialer(filepath.Join(dir, filesDir, socketName), func(pid int) bool {
			return pid == st.Files.PID && st.Files.running()
		}), agent.WithLimits(p.agentLim)),
	}
}

// verifiedDialer dials the unix socket at path and keeps the connection
// only if the process listening on it passes want.
func verifiedDialer(path string, want func(pid int) bool) agent.Dialer {
	dial := agent.UnixDialer(path)
	return func(ctx context.Context) (net.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			return nil, errdefs.New(errdefs.ErrProviderUnavailable, "proot: agent connection is not a unix socket")
		}
		pid, err := peerPID(uc)
		if err != nil || !want(pid) {
			c.Close()
			return nil, errdefs.New(errdefs.ErrProviderUnavailable, "proot: the agent socket is not served by the sandbox's own agent")
		}
		return c, nil
	}
}

func (sb *sandbox) info(s provider.State) provider.Info {
	return provider.Info{
		ID:       sb.st.ID,
		State:    s,
		Image:    sb.st.Image,
		Handle:   sb.st.ID,
		OwnerID:  sb.st.Owner,
		Instance: sb.st.Instance,
		Template: sb.st.Template,
		Metadata: maps.Clone(sb.st.Metadata),
		Created:  sb.st.Created,
	}
}

// lookup returns the sandbox id, attaching to it when another instance on
// the same StateDir spawned it. A sandbox whose directory disappeared was
// destroyed by another instance.
func (p *Provider) lookup(id string) (*sandbox, error) {
	if !validID.MatchString(id) {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	dir := filepath.Join(p.stateDir, id)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.destroyed[id] {
		return nil, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
	}
	if sb, ok := p.live[id]; ok {
		if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
			return sb, nil
		}
		delete(p.live, id)
		if p.slots[sb.st.Slot] == id {
			delete(p.slots, sb.st.Slot)
		}
		sb.close()
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	st, ok := readState(dir)
	if !ok || st.Phase != phaseRunning {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	sb := p.attach(dir, st)
	p.live[id] = sb
	if _, taken := p.slots[st.Slot]; !taken {
		p.slots[st.Slot] = id
	}
	return sb, nil
}

// running returns a sandbox whose processes are alive.
func (p *Provider) running(id string) (*sandbox, error) {
	sb, err := p.lookup(id)
	if err != nil {
		return nil, err
	}
	if !sb.alive() {
		return nil, errdefs.WithHint(
			errdefs.New(errdefs.ErrProviderUnavailable, "sandbox %s is not running: its PRoot or agent process exited", id),
			"destroy it and spawn a new one")
	}
	return sb, nil
}

// Status reports a sandbox as running while its processes live, and as
// error once PRoot or the file agent has exited under it.
func (p *Provider) Status(ctx context.Context, id string) (provider.Info, error) {
	sb, err := p.lookup(id)
	if err != nil {
		return provider.Info{}, err
	}
	switch {
	case !sb.alive():
		return sb.info(provider.StateError), nil
	case sb.paused():
		return sb.info(provider.StatePaused), nil
	}
	return sb.info(provider.StateRunning), nil
}

// List reports the running sandboxes under StateDir, including those
// another instance spawned, sorted by ID.
func (p *Provider) List(ctx context.Context) ([]provider.Info, error) {
	ents, err := os.ReadDir(p.stateDir)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: listing sandboxes")
	}
	var out []provider.Info
	for _, e := range ents {
		if !e.IsDir() || !validID.MatchString(e.Name()) {
			continue
		}
		p.mu.Lock()
		gone := p.destroyed[e.Name()]
		p.mu.Unlock()
		if gone {
			continue
		}
		st, ok := readState(filepath.Join(p.stateDir, e.Name()))
		if !ok || st.Phase != phaseRunning {
			continue
		}
		sb := sandbox{st: st}
		s := provider.StateRunning
		switch {
		case !sb.alive():
			s = provider.StateError
		case st.Paused:
			s = provider.StatePaused
		}
		out = append(out, sb.info(s))
	}
	slices.SortFunc(out, func(a, b provider.Info) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Destroy kills every process of the sandbox and removes its directory.
// Destroying an unknown or destroyed sandbox does nothing.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	if !validID.MatchString(id) {
		return nil
	}
	dir := filepath.Join(p.stateDir, id)
	p.mu.Lock()
	if p.destroyed[id] {
		p.mu.Unlock()
		return nil
	}
	sb, isLive := p.live[id]
	delete(p.live, id)
	_, statErr := os.Lstat(dir)
	spawning := false
	if !isLive {
		for _, owner := range p.slots {
			spawning = spawning || owner == id
		}
	}
	if sb != nil || statErr == nil || spawning {
		p.destroyed[id] = true
	}
	p.mu.Unlock()
	if sb != nil {
		sb.close()
	}
	if statErr != nil || spawning {
		// Nothing on disk, or a Spawn in progress that will see the
		// tombstone and clean up after itself.
		return nil
	}
	st, ok := readState(dir)
	if !ok && sb != nil {
		st, ok = sb.state(), true
	}
	uid := -1
	if ok {
		uid = st.UID
	}
	var tr []proc
	if sb != nil {
		tr = sb.tracers()
	} else {
		tr = findTracers(filepath.Join(dir, rootfsDir))
	}
	if err := killProcs(ctx, tr, uid, st.Files); err != nil {
		return fmt.Errorf("proot: destroying sandbox %s: %w", id, err)
	}
	if err := removeTree(dir); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: removing sandbox %s", id)
	}
	if ok {
		p.release(st.Slot, id)
	}
	p.log.Info("destroyed sandbox", "id", id)
	return nil
}

// Close releases this instance's connections and leaves every sandbox
// running, for the next instance to re-attach to, as a server shutdown
// would.
func (p *Provider) Close() error {
	p.mu.Lock()
	live := p.live
	p.live = map[string]*sandbox{}
	p.mu.Unlock()
	for _, sb := range live {
		sb.close()
	}
	return nil
}

// Logs returns up to the last n lines (all when n <= 0) of the sandbox's
// console log: lifecycle lines and whatever PRoot and the agents report.
func (p *Provider) Logs(ctx context.Context, id string, n int) ([]string, error) {
	sb, err := p.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.logMu.Lock()
	defer sb.logMu.Unlock()
	f, err := os.Open(filepath.Join(sb.dir, consoleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, p.gone(id, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id))
	}
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: reading the log of %s", id)
	}
	defer f.Close()
	lines, err := logtail.Tail(f, n)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "proot: reading the log of %s", id)
	}
	return lines, nil
}

// gone reports a failure that raced with Destroy as the sandbox being
// destroyed (or, destroyed by another instance, not found).
func (p *Provider) gone(id string, err error) error {
	if err == nil || errors.Is(err, errdefs.ErrFileNotFound) || !errors.Is(err, errdefs.ErrProviderUnavailable) && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	p.mu.Lock()
	destroyed := p.destroyed[id]
	p.mu.Unlock()
	if destroyed {
		return errdefs.Wrap(errdefs.ErrSandboxDestroyed, err, "sandbox %s was destroyed", id)
	}
	if _, serr := os.Stat(filepath.Join(p.stateDir, id, stateFile)); errors.Is(serr, fs.ErrNotExist) {
		return errdefs.Wrap(errdefs.ErrSandboxNotFound, err, "sandbox %s not found", id)
	}
	return err
}

// tailString returns the last n lines of a file for the server's log.
func tailString(path string, n int) string {
	lines, _ := logtail.TailFile(path, n)
	return strings.Join(lines, "\n")
}
