// Package localguest implements provider.Guest on the local machine: the
// inside of a sandbox, written once. The mock provider uses it with a host
// directory as the sandbox root; the in-sandbox agent serves it over HTTP
// with root "/".
//
// Every file operation goes through an os.Root opened on the sandbox root,
// and symbolic links are resolved as if that root were "/" (chroot
// semantics: an absolute link target and ".." are interpreted inside the
// sandbox). No request path and no link planted by sandbox code can reach a
// file outside the root. docs/provider-contract.md states the rules.
package localguest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Options configures a Guest.
type Options struct {
	// Root is the host directory that is the sandbox's "/" ("/" inside a
	// real sandbox).
	Root string
	// Env is the base environment of every command ("K=V"). Nil means a sane
	// default: PATH, HOME=/root, LANG=C.UTF-8.
	Env []string
	// MapExecPaths, when true (the mock), maps ExecRequest.WorkDir, a
	// sandbox path, under Root for the process's working directory. Commands
	// still run on the host, unconfined.
	MapExecPaths bool
}

// DefaultEnv is the base environment used when Options.Env is nil.
var DefaultEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
}

// Guest is a provider.Guest whose sandbox is a directory tree on this
// machine. It is safe for concurrent use.
type Guest struct {
	root    *os.Root
	hostDir string // absolute Root, only for the working directory of commands
	env     []string
	mapExec bool
	// confined: Root is a subtree of a larger file system, so a hard link
	// inside it may share its inode with a file outside.
	confined bool

	mu     sync.Mutex
	closed bool
	groups map[int]struct{} // process groups that may still have members
}

var _ provider.Guest = (*Guest)(nil)

// New opens an os.Root on opts.Root and creates /workspace and /tmp in it
// when they are missing.
func New(opts Options) (*Guest, error) {
	if opts.Root == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "localguest: root directory is required")
	}
	abs, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "localguest: root directory")
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "localguest: root directory")
		}
		return nil, fmt.Errorf("localguest: open root: %w", err)
	}
	g := &Guest{
		root:     root,
		hostDir:  abs,
		env:      opts.Env,
		mapExec:  opts.MapExecPaths,
		confined: abs != string(filepath.Separator),
		groups:   map[int]struct{}{},
	}
	if g.env == nil {
		g.env = DefaultEnv
	}
	for _, d := range []struct {
		name string
		mode fs.FileMode
	}{{"workspace", 0o755}, {"tmp", 0o777 | fs.ModeSticky}} {
		if _, err := root.Lstat(d.name); err == nil {
			continue
		}
		if err := root.Mkdir(d.name, d.mode.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
			root.Close()
			return nil, fmt.Errorf("localguest: create /%s: %w", d.name, unwrapPathErr(err))
		}
		// Mkdir is subject to the umask and drops the sticky bit.
		if err := g.chmodRel(d.name, d.mode); err != nil {
			root.Close()
			return nil, fmt.Errorf("localguest: chmod /%s: %w", d.name, unwrapPathErr(err))
		}
	}
	return g, nil
}

// Freeze stops (SIGSTOP) or continues (SIGCONT) every command still
// running, each whole process group, background children included. A
// command that left its group (setsid) is not reached: localguest is not
// a container.
func (g *Guest) Freeze(stop bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errdefs.New(errdefs.ErrProviderUnavailable, "the sandbox is shutting down")
	}
	var errs []error
	for pgid := range g.groups {
		if err := freezeGroup(pgid, stop); err != nil {
			errs = append(errs, fmt.Errorf("process group %d: %w", pgid, err))
		}
	}
	return errors.Join(errs...)
}

// Close kills every command still running (each whole process group,
// including background children whose leader has exited) and closes the
// root. Operations after Close fail.
func (g *Guest) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	groups := g.groups
	g.groups = nil
	g.mu.Unlock()
	for pgid := range groups {
		killGroup(pgid)
	}
	return g.root.Close()
}
