package localguest

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// chmodFallback changes the mode of rel without fchmodat2. It opens rel
// through the root with O_PATH (os.Root adds O_NOFOLLOW, and O_PATH needs
// no permission on the file and has no side effects on devices), refuses a
// symbolic link, and changes the mode of the inode it holds through
// /proc/self/fd/N, which names that inode and no path. Without a usable
// /proc, a regular file or directory is opened for reading and changed with
// fchmod. Neither way follows a link out of the root.
func chmodFallback(root *os.Root, rel string, mode fs.FileMode) error {
	f, err := root.OpenFile(rel, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		// The caller resolved the final link; a link here was put in
		// place since. Changing its target would follow it.
		return &fs.PathError{Op: "chmod", Path: rel, Err: syscall.ELOOP}
	}
	want, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errNoFallback
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cerr = chmodProcFD(int(fd), want, unixMode(mode))
	}); err != nil {
		return err
	}
	if !errors.Is(cerr, errNoProc) {
		return cerr
	}
	if !fi.Mode().IsRegular() && !fi.IsDir() {
		return errNoFallback
	}
	// O_NONBLOCK: a FIFO swapped in meanwhile must not block the open.
	rf, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer rf.Close()
	rfi, err := rf.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(fi, rfi) {
		return &fs.PathError{Op: "chmod", Path: rel, Err: syscall.ESTALE}
	}
	return rf.Chmod(mode)
}

// errNoProc: /proc/self/fd cannot be used here.
var errNoProc = errors.New("/proc/self/fd is unavailable")

// chmodProcFD changes the mode of the file open as fd, through its
// /proc/self/fd entry, after checking that the entry leads to that very
// file (a /proc mounted by sandbox code could lead elsewhere).
func chmodProcFD(fd int, want *syscall.Stat_t, mode uint32) error {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return errNoProc
		}
		return &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		return errNoProc
	}
	// flags 0: x/sys/unix uses the old fchmodat system call, which the
	// seccomp profiles in question allow, and follows the /proc magic
	// link to the inode.
	if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
		return &fs.PathError{Op: "chmod", Path: p, Err: err}
	}
	return nil
}

// unixMode converts a normalised Go mode to chmod(2) bits.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}
