package localguest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// maxSymlinks bounds link resolution, as Linux does (ELOOP after 40).
const maxSymlinks = 40

// SandboxPath returns p as a clean absolute sandbox path: relative paths
// resolve against provider.DefaultWorkDir and ".." never climbs above "/".
// An empty path or one containing a NUL byte is invalid.
func SandboxPath(p string) (string, error) {
	if p == "" {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "path is empty")
	}
	if strings.ContainsRune(p, 0) {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "path contains a NUL byte")
	}
	if !strings.HasPrefix(p, "/") {
		p = provider.DefaultWorkDir + "/" + p
	}
	return path.Clean(p), nil
}

// resolve maps a clean absolute sandbox path to a path relative to the root
// that contains no symbolic links (except the final element when
// followFinal is false), resolving links with the sandbox root as "/". The
// result is "." for the root itself. Components that do not exist are kept
// as they are, so the caller's operation reports the miss.
//
// The result is only a hint for os.Root: if the tree changes between resolve
// and the operation, os.Root still refuses to leave the root.
func (g *Guest) resolve(sp string, followFinal bool) (string, error) {
	todo := splitPath(sp)
	var done []string
	links := 0
	missing := false
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		if missing || (len(todo) == 0 && !followFinal) {
			done = append(done, c)
			continue
		}
		cand := joinRel(append(done, c))
		fi, err := g.root.Lstat(cand)
		if err != nil {
			// ENOENT, ENOTDIR, EACCES…: the operation itself will say so.
			missing = true
			done = append(done, c)
			continue
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		links++
		if links > maxSymlinks {
			return "", errdefs.New(errdefs.ErrInvalidArgument, "%s: too many levels of symbolic links", sp)
		}
		target, err := g.root.Readlink(cand)
		if err != nil {
			return "", classify("resolve", sp, err)
		}
		if strings.HasPrefix(target, "/") {
			done = done[:0]
		}
		todo = append(splitPath(target), todo...)
	}
	return joinRel(done), nil
}

func splitPath(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
}

func joinRel(parts []string) string {
	if len(parts) == 0 {
		return "."
	}
	return strings.Join(parts, "/")
}

// relToSandbox turns a resolved root-relative path back into a sandbox path.
func relToSandbox(rel string) string {
	if rel == "." {
		return "/"
	}
	return "/" + rel
}

// classify turns an error from a file operation into a classified error
// whose message names the sandbox path sp and never a host path.
func classify(op, sp string, err error) error {
	if err == nil {
		return nil
	}
	if errdefs.Classify(err) != nil {
		return err
	}
	cause := unwrapPathErr(err)
	var class *errdefs.Class
	switch {
	case errors.Is(cause, fs.ErrNotExist), errors.Is(cause, syscall.ENOTDIR):
		return errdefs.New(errdefs.ErrFileNotFound, "%s %s: no such file or directory", op, sp)
	case errors.Is(cause, syscall.ENOTEMPTY):
		return errdefs.New(errdefs.ErrConflict, "%s %s: directory not empty", op, sp)
	case errors.Is(cause, fs.ErrExist):
		return errdefs.New(errdefs.ErrConflict, "%s %s: file exists", op, sp)
	case errors.Is(cause, syscall.EISDIR):
		return errdefs.New(errdefs.ErrInvalidArgument, "%s %s: is a directory", op, sp)
	case errors.Is(cause, fs.ErrPermission), errors.Is(cause, syscall.EROFS):
		class = errdefs.ErrInvalidArgument
	case errors.Is(cause, syscall.ELOOP), errors.Is(cause, syscall.ENAMETOOLONG),
		errors.Is(cause, syscall.EINVAL), errors.Is(cause, syscall.EXDEV):
		class = errdefs.ErrInvalidArgument
	case errors.Is(cause, syscall.ENOSPC), errors.Is(cause, syscall.EDQUOT), errors.Is(cause, syscall.EFBIG):
		class = errdefs.ErrResourceLimit
	case errors.Is(cause, os.ErrClosed):
		class = errdefs.ErrProviderUnavailable
	}
	if class != nil {
		return errdefs.Wrap(class, cause, "%s %s", op, sp)
	}
	return &opError{op: op, path: sp, err: cause}
}

// opError is an unclassified failure (an internal error) with a message in
// sandbox terms.
type opError struct {
	op, path string
	err      error
}

func (e *opError) Error() string { return e.op + " " + e.path + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// unwrapPathErr drops the *PathError or *LinkError layer, whose path is a
// host path (or os.Root's name for it).
func unwrapPathErr(err error) error {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok {
		return le.Err
	}
	if se, ok := errors.AsType[*os.SyscallError](err); ok {
		return se.Err
	}
	return err
}

func notDir(op, sp string) error {
	return errdefs.New(errdefs.ErrInvalidArgument, "%s %s: not a directory", op, sp)
}

func isDir(op, sp string) error {
	return errdefs.New(errdefs.ErrInvalidArgument, "%s %s: is a directory", op, sp)
}

func notFound(op, sp string) error {
	return errdefs.New(errdefs.ErrFileNotFound, "%s %s: no such file or directory", op, sp)
}

// fileMode applies provider.NormalizeMode, the one rule for modes, naming
// the operation and the sandbox path when it refuses.
func fileMode(op, sp string, m fs.FileMode) (fs.FileMode, error) {
	out, err := provider.NormalizeMode(m)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", op, sp, err)
	}
	return out, nil
}
