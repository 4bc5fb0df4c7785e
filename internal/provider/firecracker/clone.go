package firecracker

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// cloneFile copies src to a new file dst: a reflink (FICLONE, copy on
// write, instant) where the file system supports it (XFS, btrfs, bcachefs,
// ZFS 2.2+), else a copy that keeps holes, so a mostly empty sparse image
// costs only its data.
func cloneFile(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := reflink(out, in); err == nil {
		return nil
	}
	return sparseCopy(in, out)
}

// sparseCopy copies the data segments of in (found with SEEK_DATA and
// SEEK_HOLE) and leaves the holes unwritten.
func sparseCopy(in, out *os.File) error {
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	inFD := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(inFD, off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			return nil // only a hole remains
		}
		if err != nil {
			return plainCopy(in, out)
		}
		hole, err := unix.Seek(inFD, data, unix.SEEK_HOLE)
		if err != nil {
			return plainCopy(in, out)
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

func copyRange(in, out *os.File, off, n int64) error {
	sr := io.NewSectionReader(in, off, n)
	_, err := io.Copy(&offsetWriter{f: out, off: off}, sr)
	return err
}

func plainCopy(in, out *os.File) error {
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return err
	}
	_, err := io.Copy(out, in)
	return err
}

type offsetWriter struct {
	f   *os.File
	off int64
}

func (w *offsetWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, err
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
