//go:build linux

package fakevmm

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// writeTree writes the guest's file tree as a tar stream: what a real
// VM's snapshot keeps of its files in guest memory. /dev and the vsock
// stand-ins are left out (the fake makes them again at boot), and so are
// sockets, FIFOs and devices, which a restored guest opens anew anyway.
// The guest's mounts (/proc, /sys...) are in its own mount namespace, so
// the walk sees only their empty mount points.
func writeTree(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		if rel == "dev" || rel == guestVsockDir {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		switch {
		case fi.Mode().IsRegular(), fi.IsDir():
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		default:
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// readTree unpacks the tar stream at offset in the file at path into the
// empty directory root, confined to it.
func readTree(path string, offset int64, root string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	tr := tar.NewReader(f)
	type dirTimes struct {
		name string
		hdr  *tar.Header
	}
	var dirs []dirTimes
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("guest memory: %w", err)
		}
		name := filepath.FromSlash(hdr.Name)
		m := hdr.FileInfo().Mode()
		mode := m.Perm() | m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := r.Mkdir(name, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirTimes{name, hdr})
		case tar.TypeSymlink:
			if err := r.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			w, err := r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, cerr := io.Copy(w, tr)
			if err := errors.Join(cerr, w.Close()); err != nil {
				return err
			}
		default:
			continue
		}
		if err := r.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeSymlink {
			continue
		}
		// Chmod after Lchown: a chown clears set-id bits.
		if err := r.Chmod(name, mode); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := r.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		}
	}
	// Directory times last: filling a directory changes its mtime.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := r.Chtimes(dirs[i].name, dirs[i].hdr.ModTime, dirs[i].hdr.ModTime); err != nil {
			return err
		}
	}
	return nil
}
