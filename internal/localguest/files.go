package localguest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

const copyBufSize = 128 << 10

// WriteFile streams r into the file at p. Parents are created (0755); the
// content goes to a temporary file in the same directory that is renamed
// over p once complete, so readers never see half a file (and other hard
// links to the old file keep the old content). A final link at p is followed,
// inside the sandbox. mode 0 means 0644; the mode is applied exactly,
// regardless of the umask.
func (g *Guest) WriteFile(ctx context.Context, p string, r io.Reader, mode fs.FileMode) error {
	sp, err := SandboxPath(p)
	if err != nil {
		return err
	}
	if mode == 0 {
		mode = 0o644
	}
	perm, err := fileMode("write", sp, mode)
	if err != nil {
		return err
	}
	rel, err := g.resolve(sp, true)
	if err != nil {
		return err
	}
	return g.writeRel(ctx, sp, rel, r, perm)
}

func (g *Guest) writeRel(ctx context.Context, sp, rel string, r io.Reader, perm fs.FileMode) (err error) {
	if rel == "." {
		return isDir("write", sp)
	}
	dir := parentRel(rel)
	if err := g.mkdirAll("write", sp, dir); err != nil {
		return err
	}
	if fi, err := g.root.Lstat(rel); err == nil && fi.IsDir() {
		return isDir("write", sp)
	}
	tmp := path.Join(dir, ".stacyvm-write-"+randHex())
	f, err := g.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return classify("write", sp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			g.root.Remove(tmp)
		}
	}()
	buf := make([]byte, copyBufSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, werr := f.Write(buf[:n]); werr != nil {
				return classify("write", sp, werr)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if errdefs.Classify(rerr) != nil || errors.Is(rerr, context.Canceled) || errors.Is(rerr, context.DeadlineExceeded) {
				return rerr
			}
			return fmt.Errorf("write %s: reading content: %w", sp, rerr)
		}
	}
	if err := f.Chmod(perm); err != nil {
		return classify("write", sp, err)
	}
	if err := f.Close(); err != nil {
		return classify("write", sp, err)
	}
	if err := g.root.Rename(tmp, rel); err != nil {
		return classify("write", sp, err)
	}
	return nil
}

// mkdirAll creates dir and its parents; a parent that exists as something
// other than a directory makes the request invalid.
func (g *Guest) mkdirAll(op, sp, dir string) error {
	if dir == "." {
		return nil
	}
	err := g.root.MkdirAll(dir, 0o755)
	if err == nil {
		return nil
	}
	cause := unwrapPathErr(err)
	if errors.Is(cause, syscall.ENOTDIR) || errors.Is(cause, fs.ErrExist) {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s %s: a parent is not a directory", op, sp)
	}
	return classify(op, sp, err)
}

// ReadFile opens the regular file at p. The ReadCloser is an *os.File, so
// the caller can hand it to sendfile.
func (g *Guest) ReadFile(ctx context.Context, p string) (io.ReadCloser, error) {
	sp, err := SandboxPath(p)
	if err != nil {
		return nil, err
	}
	rel, err := g.resolve(sp, true)
	if err != nil {
		return nil, err
	}
	f, err := g.root.OpenFile(rel, os.O_RDONLY|openReadFlag, 0)
	if err != nil {
		return nil, classify("read", sp, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, classify("read", sp, err)
	}
	if err := g.checkRegular("read", sp, fi); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkRegular accepts a regular file, and on a confined root only one with a
// single link: a hard link made by sandbox code can share its inode with a
// host file outside the root, and nothing inside the root tells which.
func (g *Guest) checkRegular(op, sp string, fi fs.FileInfo) error {
	switch {
	case fi.IsDir():
		return isDir(op, sp)
	case !fi.Mode().IsRegular():
		return errdefs.New(errdefs.ErrInvalidArgument, "%s %s: not a regular file", op, sp)
	case g.confined && hardLinks(fi) > 1:
		return errdefs.WithHint(
			errdefs.New(errdefs.ErrInvalidArgument, "%s %s: file has %d hard links", op, sp, hardLinks(fi)),
			"this sandbox is a host directory, where a hard link may lead outside it; copy the file instead of linking it")
	}
	return nil
}

// ListFiles lists the direct children of the directory at p, sorted by name.
// Children are described as StatFile would (a link is reported as a link).
func (g *Guest) ListFiles(ctx context.Context, p string) ([]provider.FileInfo, error) {
	sp, err := SandboxPath(p)
	if err != nil {
		return nil, err
	}
	rel, err := g.resolve(sp, true)
	if err != nil {
		return nil, err
	}
	f, err := g.root.OpenFile(rel, os.O_RDONLY|openReadFlag, 0)
	if err != nil {
		return nil, classify("list", sp, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, classify("list", sp, err)
	}
	if !fi.IsDir() {
		return nil, notDir("list", sp)
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		return nil, classify("list", sp, err)
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	out := make([]provider.FileInfo, 0, len(entries))
	for i, e := range entries {
		if i%256 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		info, err := e.Info()
		if err != nil {
			continue // removed since ReadDir
		}
		out = append(out, fileInfo(path.Join(sp, e.Name()), info))
	}
	return out, nil
}

// StatFile describes the file at p itself: a final symbolic link is not
// followed (Lstat semantics), so a link reports fs.ModeSymlink.
func (g *Guest) StatFile(ctx context.Context, p string) (provider.FileInfo, error) {
	sp, err := SandboxPath(p)
	if err != nil {
		return provider.FileInfo{}, err
	}
	rel, err := g.resolve(sp, false)
	if err != nil {
		return provider.FileInfo{}, err
	}
	fi, err := g.root.Lstat(rel)
	if err != nil {
		return provider.FileInfo{}, classify("stat", sp, err)
	}
	return fileInfo(sp, fi), nil
}

func fileInfo(sp string, fi fs.FileInfo) provider.FileInfo {
	return provider.FileInfo{
		Path:    sp,
		Size:    fi.Size(),
		Mode:    fi.Mode(),
		IsDir:   fi.IsDir(),
		ModTime: fi.ModTime().UTC(),
	}
}

// DeleteFile removes the file, link or directory at p (a final link is
// removed, not its target). A non-empty directory needs recursive; an empty
// one does not. The sandbox root cannot be deleted.
func (g *Guest) DeleteFile(ctx context.Context, p string, recursive bool) error {
	sp, err := SandboxPath(p)
	if err != nil {
		return err
	}
	rel, err := g.resolve(sp, false)
	if err != nil {
		return err
	}
	if rel == "." {
		return errdefs.New(errdefs.ErrInvalidArgument, "delete %s: cannot delete the sandbox root", sp)
	}
	fi, err := g.root.Lstat(rel)
	if err != nil {
		return classify("delete", sp, err)
	}
	if fi.IsDir() && recursive {
		if err := g.root.RemoveAll(rel); err != nil {
			return classify("delete", sp, err)
		}
		return nil
	}
	if err := g.root.Remove(rel); err != nil {
		cause := unwrapPathErr(err)
		if fi.IsDir() && (errors.Is(cause, syscall.ENOTEMPTY) || errors.Is(cause, fs.ErrExist)) {
			return errdefs.WithHint(
				errdefs.New(errdefs.ErrConflict, "delete %s: directory not empty", sp),
				"pass recursive=true to delete a directory and everything in it")
		}
		return classify("delete", sp, err)
	}
	return nil
}

// MoveFile renames oldPath to newPath, creating newPath's parents. A final
// link at either path is the link itself. An existing file at newPath is
// replaced; an existing directory there, or any existing file when moving a
// directory, is a conflict. Across file systems a regular file or a link is
// copied and then removed; a directory is refused.
func (g *Guest) MoveFile(ctx context.Context, oldPath, newPath string) error {
	so, err := SandboxPath(oldPath)
	if err != nil {
		return err
	}
	sn, err := SandboxPath(newPath)
	if err != nil {
		return err
	}
	ro, err := g.resolve(so, false)
	if err != nil {
		return err
	}
	rn, err := g.resolve(sn, false)
	if err != nil {
		return err
	}
	if ro == "." || rn == "." {
		return errdefs.New(errdefs.ErrInvalidArgument, "move %s to %s: cannot move the sandbox root", so, sn)
	}
	fi, err := g.root.Lstat(ro)
	if err != nil {
		return classify("move", so, err)
	}
	if ro == rn {
		return nil
	}
	if fi.IsDir() && strings.HasPrefix(rn, ro+"/") {
		return errdefs.New(errdefs.ErrInvalidArgument, "move %s to %s: cannot move a directory into itself", so, sn)
	}
	if dfi, err := g.root.Lstat(rn); err == nil && (dfi.IsDir() || fi.IsDir()) {
		return errdefs.New(errdefs.ErrConflict, "move %s to %s: destination exists", so, sn)
	}
	if err := g.mkdirAll("move", sn, parentRel(rn)); err != nil {
		return err
	}
	err = g.root.Rename(ro, rn)
	if err == nil {
		return nil
	}
	if !errors.Is(unwrapPathErr(err), syscall.EXDEV) {
		return classify("move", so, err)
	}
	return g.moveAcross(ctx, so, sn, ro, rn, fi)
}

// moveAcross moves a file between file systems (say /tmp on a tmpfs and a
// bind-mounted /workspace), where rename cannot.
func (g *Guest) moveAcross(ctx context.Context, so, sn, ro, rn string, fi fs.FileInfo) error {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := g.root.Readlink(ro)
		if err != nil {
			return classify("move", so, err)
		}
		g.root.Remove(rn) // replaced, as rename would
		if err := g.root.Symlink(target, rn); err != nil {
			return classify("move", sn, err)
		}
	case fi.Mode().IsRegular():
		f, err := g.root.OpenFile(ro, os.O_RDONLY|openReadFlag, 0)
		if err != nil {
			return classify("move", so, err)
		}
		err = g.writeRel(ctx, sn, rn, f, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
		f.Close()
		if err != nil {
			return err
		}
	default:
		return errdefs.New(errdefs.ErrInvalidArgument, "move %s to %s: cannot move this kind of file across file systems", so, sn)
	}
	if err := g.root.Remove(ro); err != nil {
		return classify("move", so, err)
	}
	return nil
}

// Chmod sets the mode of the file at p, following a final link. The mode
// is anything provider.NormalizeMode accepts.
func (g *Guest) Chmod(ctx context.Context, p string, mode fs.FileMode) error {
	sp, err := SandboxPath(p)
	if err != nil {
		return err
	}
	perm, err := fileMode("chmod", sp, mode)
	if err != nil {
		return err
	}
	rel, err := g.resolve(sp, true)
	if err != nil {
		return err
	}
	fi, err := g.root.Lstat(rel)
	if err != nil {
		return classify("chmod", sp, err)
	}
	if fi.Mode().IsRegular() {
		if err := g.checkRegular("chmod", sp, fi); err != nil {
			return err
		}
	}
	if err := g.chmodRel(rel, perm); err != nil {
		return classify("chmod", sp, err)
	}
	return nil
}

// chmodRel is os.Root.Chmod with a fallback for seccomp profiles that
// refuse fchmodat2 with EPERM rather than ENOSYS (Docker 20.10's default
// profile under crun): os.Root only falls back to another way on ENOSYS.
// A genuine EPERM (not the owner) fails the fallback the same way.
func (g *Guest) chmodRel(rel string, mode fs.FileMode) error {
	err := g.root.Chmod(rel, mode)
	if err == nil || !errors.Is(unwrapPathErr(err), syscall.EPERM) {
		return err
	}
	if ferr := chmodFallback(g.root, rel, mode); !errors.Is(ferr, errNoFallback) {
		return ferr
	}
	return err
}

// errNoFallback: chmodFallback does not apply; the caller's own error
// stands.
var errNoFallback = errors.New("no other way to change the mode")

func parentRel(rel string) string {
	dir := path.Dir(rel)
	if dir == "" {
		return "."
	}
	return dir
}

func randHex() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
