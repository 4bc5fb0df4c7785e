// Package mock is StacyVM's test double provider. A sandbox is a directory
// on the host and its commands run ON THE HOST, as the server's user, with
// no isolation at all: any command can read and change anything that user
// can. File operations are confined to the sandbox directory (through
// package localguest), commands are not. Use it for tests and demos only;
// Capabilities reports provider.IsolationNone and Warning says so.
//
// Layout under Options.Dir, one directory per sandbox:
//
//	<id>/state.json   what Spawn was asked for, so a new instance adopts it
//	<id>/console.log  one line per spawn and per exec start and exit
//	<id>/root/        the sandbox's "/"
//
// A new Provider on the same Dir finds the live sandboxes again (Inventory);
// a sandbox directory removed from outside means the sandbox is gone.
package mock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/localguest"
	"github.com/stacyvm/stacyvm/internal/logtail"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Options configures the mock.
type Options struct {
	// Dir holds one directory per sandbox; it is created if missing.
	Dir string
	// Name is the provider's name; "" means "mock".
	Name string
}

const (
	stateFile   = "state.json"
	consoleFile = "console.log"
	rootDir     = "root"
)

// Provider is the mock provider. It implements provider.Provider and
// provider.Inventory.
type Provider struct {
	provider.GuestRouter
	name string
	dir  string

	mu         sync.Mutex
	live       map[string]*sandbox
	destroyed  map[string]bool
	health     error
	spawnDelay time.Duration
}

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Inventory = (*Provider)(nil)
	_ provider.Pauser    = (*Provider)(nil)
)

// state is what state.json holds.
type state struct {
	ID       string            `json:"id"`
	Image    string            `json:"image"`
	Owner    string            `json:"owner,omitempty"`
	Instance string            `json:"instance,omitempty"`
	Template string            `json:"template,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Created  time.Time         `json:"created"`
	// Paused survives a restart, so that Status still says so (the new
	// instance's commands start unfrozen; Resume clears it).
	Paused bool `json:"paused,omitempty"`
}

type sandbox struct {
	st    state
	dir   string
	guest *localguest.Guest
	logMu sync.Mutex
	gone  bool // set by Destroy: logging must not recreate the directory

	pauseMu sync.Mutex // serialises Pause and Resume; guards st.Paused with paused
	paused  atomic.Bool
}

// New returns a mock provider keeping its sandboxes under opts.Dir.
func New(opts Options) (*Provider, error) {
	if opts.Dir == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "mock: a state directory is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "mock: state directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "mock: create state directory")
	}
	name := opts.Name
	if name == "" {
		name = "mock"
	}
	p := &Provider{name: name, dir: dir, live: map[string]*sandbox{}, destroyed: map[string]bool{}}
	p.GuestRouter = provider.GuestRouter{Lookup: p.guest}
	return p, nil
}

func (p *Provider) Name() string { return p.name }

// Capabilities: no isolation, no limits; output streams, sandboxes survive
// a restart, and sandbox code can make symlinks. Network is false because
// the mock cannot honour Spec.Network "none": commands share the host's
// network whatever is asked.
func (p *Provider) Capabilities() provider.Capabilities {
	return provider.Capabilities{
		Isolation: provider.IsolationNone,
		Streaming: true,
		Stdin:     true,
		Signals:   true,
		Adoption:  true,
		Symlinks:  true,
		Terminal:  true,
		Pause:     true,
	}
}

// Warning is the text the server and `stacyvm doctor` print when the mock
// is enabled.
func (p *Provider) Warning() string {
	return "the mock provider runs sandbox commands directly on this host as the server's user, " +
		"with no isolation, no resource limits and the host's network: use it only for tests"
}

// SetHealth makes Health and Spawn fail with errdefs.ErrProviderUnavailable
// wrapping err, until called again with nil. For tests of callers.
func (p *Provider) SetHealth(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.health = err
}

// SetSpawnDelay makes every Spawn take at least d (honouring its context),
// to imitate a slow runtime. For tests of callers.
func (p *Provider) SetSpawnDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spawnDelay = d
}

func (p *Provider) Health(ctx context.Context) error {
	p.mu.Lock()
	herr := p.health
	p.mu.Unlock()
	if herr != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, herr, "mock provider is unhealthy")
	}
	if fi, err := os.Stat(p.dir); err != nil || !fi.IsDir() {
		return errdefs.New(errdefs.ErrProviderUnavailable, "mock provider: state directory is not usable")
	}
	return nil
}

// validID accepts IDs that are one safe path element.
func validID(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (p *Provider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if err := p.Health(ctx); err != nil {
		return provider.Info{}, err
	}
	if !validID(spec.ID) {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "mock: invalid sandbox id %q", spec.ID)
	}
	if spec.Image == "" {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "mock: image is required")
	}
	p.mu.Lock()
	delay, gone := p.spawnDelay, p.destroyed[spec.ID]
	p.mu.Unlock()
	if gone {
		return provider.Info{}, errdefs.New(errdefs.ErrConflict, "sandbox %s was destroyed; its id cannot be reused", spec.ID)
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return provider.Info{}, ctx.Err()
		case <-t.C:
		}
	}

	sdir := filepath.Join(p.dir, spec.ID)
	if err := os.Mkdir(sdir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return provider.Info{}, errdefs.New(errdefs.ErrConflict, "sandbox %s already exists", spec.ID)
		}
		return provider.Info{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "mock: create sandbox %s", spec.ID)
	}
	sb, err := p.create(sdir, spec)
	if err != nil {
		os.RemoveAll(sdir)
		return provider.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		sb.guest.Close()
		os.RemoveAll(sdir)
		return provider.Info{}, err
	}
	p.mu.Lock()
	p.live[spec.ID] = sb
	p.mu.Unlock()
	sb.logf("sandbox %s spawned from image %q (mock provider: no isolation)", spec.ID, spec.Image)
	return sb.info(), nil
}

// create fills a fresh sandbox directory. state.json is written last, so a
// directory without one is never taken for a sandbox.
func (p *Provider) create(sdir string, spec provider.Spec) (*sandbox, error) {
	root := filepath.Join(sdir, rootDir)
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "mock: create sandbox root")
	}
	st := state{
		ID:       spec.ID,
		Image:    spec.Image,
		Owner:    spec.OwnerID,
		Instance: spec.Instance,
		Template: spec.Template,
		Metadata: maps.Clone(spec.Metadata),
		Env:      maps.Clone(spec.Env),
		Created:  time.Now().UTC().Truncate(time.Millisecond),
	}
	if err := writeState(sdir, st); err != nil {
		return nil, err
	}
	return p.open(sdir, st)
}

// writeState replaces a sandbox directory's state file atomically.
func writeState(sdir string, st state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("mock: encode state: %w", err)
	}
	tmp := filepath.Join(sdir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "mock: write state")
	}
	if err := os.Rename(tmp, filepath.Join(sdir, stateFile)); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "mock: write state")
	}
	return nil
}

// open starts the guest of a sandbox directory holding state st.
func (p *Provider) open(sdir string, st state) (*sandbox, error) {
	root := filepath.Join(sdir, rootDir)
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	g, err := localguest.New(localguest.Options{
		Root:         root,
		MapExecPaths: true,
		// Commands run on the host: host PATH, and home and temp inside
		// the sandbox directory so that tools leave their files there.
		Env: []string{
			"PATH=" + path,
			"HOME=" + filepath.Join(root, "workspace"),
			"TMPDIR=" + filepath.Join(root, "tmp"),
			"LANG=C.UTF-8",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("mock: open sandbox %s: %w", st.ID, err)
	}
	sb := &sandbox{st: st, dir: sdir, guest: g}
	sb.paused.Store(st.Paused)
	return sb, nil
}

// readState reads a sandbox directory's state; ok is false when the
// directory is not (or no longer) a sandbox.
func readState(sdir string) (state, bool) {
	b, err := os.ReadFile(filepath.Join(sdir, stateFile))
	if err != nil {
		return state{}, false
	}
	var st state
	if json.Unmarshal(b, &st) != nil || st.ID != filepath.Base(sdir) {
		return state{}, false
	}
	return st, true
}

// lookup returns the live sandbox id, adopting it from disk when an
// earlier instance spawned it.
func (p *Provider) lookup(id string) (*sandbox, error) {
	if !validID(id) {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.destroyed[id] {
		return nil, errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
	}
	sdir := filepath.Join(p.dir, id)
	if sb, ok := p.live[id]; ok {
		if _, err := os.Stat(filepath.Join(sdir, stateFile)); err == nil {
			return sb, nil
		}
		// Removed behind our back: the sandbox is gone.
		delete(p.live, id)
		sb.guest.Close()
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	st, ok := readState(sdir)
	if !ok {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	sb, err := p.open(sdir, st)
	if err != nil {
		return nil, err
	}
	p.live[id] = sb
	return sb, nil
}

func (p *Provider) guest(ctx context.Context, id string) (provider.Guest, error) {
	sb, err := p.lookup(id)
	if err != nil {
		return nil, err
	}
	return &sandboxGuest{p: p, sb: sb}, nil
}

func (p *Provider) Status(ctx context.Context, id string) (provider.Info, error) {
	sb, err := p.lookup(id)
	if err != nil {
		return provider.Info{}, err
	}
	return sb.info(), nil
}

func (sb *sandbox) info() provider.Info {
	state := provider.StateRunning
	if sb.paused.Load() {
		state = provider.StatePaused
	}
	return provider.Info{
		ID:       sb.st.ID,
		State:    state,
		Image:    sb.st.Image,
		Handle:   sb.dir,
		OwnerID:  sb.st.Owner,
		Instance: sb.st.Instance,
		Template: sb.st.Template,
		Metadata: maps.Clone(sb.st.Metadata),
		Created:  sb.st.Created,
	}
}

// List reports every sandbox under Dir, including those an earlier
// instance spawned, sorted by ID.
func (p *Provider) List(ctx context.Context) ([]provider.Info, error) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "mock: list sandboxes")
	}
	var out []provider.Info
	for _, e := range entries {
		if !e.IsDir() || !validID(e.Name()) {
			continue
		}
		if p.isDestroyed(e.Name()) {
			continue
		}
		st, ok := readState(filepath.Join(p.dir, e.Name()))
		if !ok {
			continue
		}
		sb := &sandbox{st: st, dir: filepath.Join(p.dir, e.Name())}
		sb.paused.Store(st.Paused)
		out = append(out, sb.info())
	}
	slices.SortFunc(out, func(a, b provider.Info) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (p *Provider) isDestroyed(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.destroyed[id]
}

// Destroy kills the sandbox's commands and removes its directory.
// Destroying an unknown or destroyed sandbox does nothing.
func (p *Provider) Destroy(ctx context.Context, id string) error {
	if !validID(id) {
		return nil
	}
	sdir := filepath.Join(p.dir, id)
	p.mu.Lock()
	if p.destroyed[id] {
		p.mu.Unlock()
		return nil
	}
	sb := p.live[id]
	delete(p.live, id)
	_, statErr := os.Lstat(sdir)
	if sb != nil || statErr == nil {
		p.destroyed[id] = true
	}
	p.mu.Unlock()
	if sb != nil {
		sb.logMu.Lock()
		sb.gone = true
		sb.logMu.Unlock()
		sb.guest.Close()
	}
	if statErr != nil {
		return nil
	}
	// SIGKILL is asynchronous: a dying command may still create a file
	// while the tree is removed, so try again briefly.
	var err error
	for range 10 {
		if err = os.RemoveAll(sdir); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("mock: remove sandbox %s: %w", id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("mock: remove sandbox %s: %w", id, unwrapPath(err))
}

// Close stops every command of every sandbox this instance opened and
// releases them, leaving the sandboxes on disk for the next instance, as a
// server shutdown would.
func (p *Provider) Close() error {
	p.mu.Lock()
	live := p.live
	p.live = map[string]*sandbox{}
	p.mu.Unlock()
	for _, sb := range live {
		sb.guest.Close()
	}
	return nil
}

// Pause stops every command of the sandbox (SIGSTOP to each process
// group it started); Status reports it paused until Resume.
func (p *Provider) Pause(ctx context.Context, id string) error { return p.freeze(id, true) }

// Resume continues the commands Pause stopped.
func (p *Provider) Resume(ctx context.Context, id string) error { return p.freeze(id, false) }

func (p *Provider) freeze(id string, stop bool) error {
	sb, err := p.lookup(id)
	if err != nil {
		return err
	}
	sb.pauseMu.Lock()
	defer sb.pauseMu.Unlock()
	if sb.paused.Load() == stop {
		return nil
	}
	if err := sb.guest.Freeze(stop); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "mock: freeze sandbox %s", id)
	}
	st := sb.st
	st.Paused = stop
	if err := writeState(sb.dir, st); err != nil {
		// Undo, so that the processes and the state file agree.
		_ = sb.guest.Freeze(!stop)
		return err
	}
	sb.st.Paused = stop
	sb.paused.Store(stop)
	if stop {
		sb.logf("sandbox %s paused", id)
	} else {
		sb.logf("sandbox %s resumed", id)
	}
	return nil
}

// Logs returns up to the last n lines (all of them when n <= 0) of the
// sandbox's console log.
func (p *Provider) Logs(ctx context.Context, id string, n int) ([]string, error) {
	sb, err := p.lookup(id)
	if err != nil {
		return nil, err
	}
	sb.logMu.Lock()
	defer sb.logMu.Unlock()
	lines, err := logtail.TailFile(filepath.Join(sb.dir, consoleFile), n)
	if err != nil {
		return nil, fmt.Errorf("mock: read log of %s: %w", id, unwrapPath(err))
	}
	return lines, nil
}

func (sb *sandbox) logf(format string, args ...any) {
	line := time.Now().UTC().Format(time.RFC3339Nano) + " " + fmt.Sprintf(format, args...)
	line = strings.ReplaceAll(line, "\n", `\n`) + "\n"
	sb.logMu.Lock()
	defer sb.logMu.Unlock()
	if sb.gone {
		return
	}
	f, err := os.OpenFile(filepath.Join(sb.dir, consoleFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return // the log is best effort; the sandbox may be going away
	}
	defer f.Close()
	f.WriteString(line)
}

func unwrapPath(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok {
		return le.Err
	}
	return err
}
