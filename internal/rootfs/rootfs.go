// Package rootfs unpacks root file system tar streams (docker exports,
// image tarballs) into a directory, confined by an os.Root: the
// Firecracker image builder and environment builds' PRoot artifacts share it.
package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Stats is what extraction learned about the tree.
type Stats struct {
	Bytes   int64 // regular file contents
	Entries int64
	Skipped int64 // device nodes and FIFOs: the guest's /dev is devtmpfs
}

// Extract unpacks a tar stream into root. Every path goes through an
// os.Root, so no entry (nor a symlink planted by an earlier entry) can
// write outside it. Ownership is kept when running as root.
func Extract(ctx context.Context, r io.Reader, root *os.Root) (Stats, error) {
	var st Stats
	asRoot := os.Geteuid() == 0
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return st, nil
		}
		if err != nil {
			return st, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "reading image tar stream")
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue // the root itself: its ownership is set by mkfs
		}
		if strings.HasPrefix(path.Base(name), ".wh.") {
			continue // layer whiteouts never belong in a root file system
		}
		st.Entries++
		mode := tarMode(h)
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return st, fmt.Errorf("creating %s: %w", dir, err)
			}
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return st, fmt.Errorf("creating %s: %w", name, err)
			}
			if err := root.Chmod(name, mode); err != nil {
				return st, err
			}
		case tar.TypeReg, tar.TypeGNUSparse:
			_ = removeNonDir(root, name)
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				return st, fmt.Errorf("creating %s: %w", name, err)
			}
			n, err := io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return st, fmt.Errorf("writing %s: %w", name, err)
			}
			st.Bytes += n
			if err := root.Chmod(name, mode); err != nil {
				return st, err
			}
		case tar.TypeSymlink:
			_ = removeNonDir(root, name)
			if err := root.Symlink(h.Linkname, name); err != nil {
				return st, fmt.Errorf("creating symlink %s: %w", name, err)
			}
		case tar.TypeLink:
			target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
			_ = removeNonDir(root, name)
			if err := root.Link(target, name); err != nil {
				return st, fmt.Errorf("creating hard link %s: %w", name, err)
			}
			continue // shares the target's inode: nothing more to set
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			st.Skipped++
			continue
		default:
			continue // xattr and other metadata records
		}
		if asRoot {
			if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
				return st, fmt.Errorf("chown %s: %w", name, err)
			}
			// chown clears set-id bits; put them back.
			if h.Typeflag != tar.TypeSymlink && mode&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
				if err := root.Chmod(name, mode); err != nil {
					return st, err
				}
			}
		}
		if h.Typeflag == tar.TypeReg {
			_ = root.Chtimes(name, h.ModTime, h.ModTime)
		}
	}
}

func removeNonDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if err != nil || fi.IsDir() {
		return err
	}
	return root.Remove(name)
}

func tarMode(h *tar.Header) fs.FileMode {
	m := fs.FileMode(h.Mode).Perm()
	if h.Mode&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if h.Mode&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if h.Mode&01000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}
