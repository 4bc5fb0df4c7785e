package firecracker

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// writeDirTar writes dir as a tar stream in a fixed order with no
// host-dependent fields (user names, access and change times), so that the
// same tree always yields the same bytes: its sha256 is the tree's content
// digest.
func writeDirTar(ctx context.Context, dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
		h.ModTime = h.ModTime.Truncate(time.Second)
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// guestDirs are the mount points and directories the agent needs in every
// root file system, with their modes.
var guestDirs = []struct {
	name string
	mode fs.FileMode
}{
	{"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755},
	{"tmp", 0o777 | fs.ModeSticky}, {"etc", 0o755}, {"root", 0o700},
	{"sbin", 0o755}, {"workspace", 0o755},
}

// finishRoot makes a staged tree bootable by the agent: mount points,
// /workspace, and the agent itself at /sbin/stacyvm-agent.
func finishRoot(root *os.Root, agentPath string) error {
	for _, d := range guestDirs {
		if _, err := root.Lstat(d.name); err == nil {
			continue // present, possibly as a symlink (merged /usr): keep it
		}
		if err := root.Mkdir(d.name, 0o755); err != nil {
			return fmt.Errorf("creating /%s: %w", d.name, err)
		}
		if err := root.Chmod(d.name, d.mode); err != nil {
			return err
		}
	}
	_ = root.Remove(".dockerenv") // makes tools believe they run in Docker
	dst, err := agentTarget(root)
	if err != nil {
		return err
	}
	src, err := os.Open(agentPath)
	if err != nil {
		return fmt.Errorf("agent binary: %w", err)
	}
	defer src.Close()
	_ = root.Remove(dst)
	f, err := root.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return fmt.Errorf("installing the agent: %w", err)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return fmt.Errorf("installing the agent: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		_ = root.Lchown(dst, 0, 0)
	}
	return root.Chmod(dst, 0o755)
}

// agentTarget is GuestAgentPath inside root. A /sbin that is an absolute
// symlink (/sbin -> /usr/sbin) means that path inside the image; os.Root
// would refuse to follow it, so it is resolved here, once.
func agentTarget(root *os.Root) (string, error) {
	dir := strings.TrimPrefix(path.Dir(GuestAgentPath), "/")
	for range 8 {
		fi, err := root.Lstat(dir)
		if err != nil {
			return "", fmt.Errorf("/%s: %w", dir, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if !fi.IsDir() {
				return "", errdefs.New(errdefs.ErrInvalidArgument, "/%s in the image is not a directory", dir)
			}
			return path.Join(dir, path.Base(GuestAgentPath)), nil
		}
		target, err := root.Readlink(dir)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			dir = strings.TrimPrefix(path.Clean(target), "/")
		} else {
			dir = strings.TrimPrefix(path.Clean("/"+path.Join(path.Dir(dir), target)), "/")
		}
		if dir == "" {
			return "", errdefs.New(errdefs.ErrInvalidArgument, "/sbin in the image points at /")
		}
	}
	return "", errdefs.New(errdefs.ErrInvalidArgument, "/sbin in the image is a symlink loop")
}

// dirUsage sums apparent sizes under dir for sizing the file system.
func dirUsage(dir string) (bytes, entries int64, err error) {
	err = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		entries++
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			bytes += fi.Size()
		}
		return nil
	})
	return bytes, entries, err
}
