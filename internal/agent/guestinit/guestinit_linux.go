package guestinit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ProcMounted reports whether a proc file system is mounted on /proc. A
// PID 1 without one was started by a kernel directly: it is a VM's init.
func ProcMounted() bool {
	var st unix.Statfs_t
	return unix.Statfs("/proc", &st) == nil && st.Type == unix.PROC_SUPER_MAGIC
}

// mount is one file system Setup provides.
type mount struct {
	target, fstype, source string
	flags                  uintptr
	data                   string
	magic                  int64
	mode                   os.FileMode // of the mount point, when Setup creates it
}

var mounts = []mount{
	{"/proc", "proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", unix.PROC_SUPER_MAGIC, 0o555},
	{"/sys", "sysfs", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", unix.SYSFS_MAGIC, 0o555},
	// /dev comes between these; see setupDev.
	{"/dev/pts", "devpts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620", unix.DEVPTS_SUPER_MAGIC, 0o755},
	{"/dev/shm", "tmpfs", "shm", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", unix.TMPFS_MAGIC, 0o1777},
}

// devLinks are the links a device manager would make and that devtmpfs
// lacks; shells need /dev/fd for process substitution.
var devLinks = []struct{ name, target string }{
	{"/dev/fd", "/proc/self/fd"},
	{"/dev/stdin", "/proc/self/fd/0"},
	{"/dev/stdout", "/proc/self/fd/1"},
	{"/dev/stderr", "/proc/self/fd/2"},
	{"/dev/ptmx", "pts/ptmx"},
}

// Setup prepares the guest for serving: it mounts proc on /proc, sysfs on
// /sys, a devtmpfs on /dev unless /dev/null already exists (a kernel built
// with CONFIG_DEVTMPFS_MOUNT mounts one itself), devpts on /dev/pts and a
// tmpfs on /dev/shm, adds the usual /dev links, and brings up the loopback
// interface. What is already in place is left alone, so Setup may run
// again. Failures are logged and Setup goes on; only a /dev without
// /dev/null is returned as an error, because no command can be started
// without it (os/exec opens it for every command without input).
func Setup(log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var devErr error
	for i, m := range mounts {
		if i == 2 {
			if devErr = setupDev(log); devErr != nil {
				log.Error("guest init: /dev", "err", devErr)
			}
		}
		if err := m.ensure(log); err != nil {
			log.Warn("guest init: mount failed", "target", m.target, "fstype", m.fstype, "err", err)
		}
	}
	for _, l := range devLinks {
		if _, err := os.Lstat(l.name); err == nil {
			continue
		}
		if err := os.Symlink(l.target, l.name); err != nil {
			log.Warn("guest init: link failed", "link", l.name, "err", err)
		}
	}
	if err := loopbackUp(); err != nil {
		log.Warn("guest init: bringing up lo failed", "err", err)
	} else {
		log.Debug("guest init: lo is up")
	}
	return devErr
}

// ensure mounts m unless a file system of its type is mounted there.
func (m mount) ensure(log *slog.Logger) error {
	if mountedAt(m.target, m.magic) {
		return nil
	}
	if err := os.Mkdir(m.target, m.mode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	log.Debug("guest init: mounted", "target", m.target, "fstype", m.fstype)
	return nil
}

// mountedAt reports whether a file system with the given magic number is
// mounted on dir: of that type, and on another device than dir's parent
// (a tmpfs /dev/shm must not be mistaken for a directory in a tmpfs /dev).
func mountedAt(dir string, magic int64) bool {
	var sfs unix.Statfs_t
	if unix.Statfs(dir, &sfs) != nil || int64(sfs.Type) != magic {
		return false
	}
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) != nil || unix.Stat(dir+"/..", &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev || st.Ino == parent.Ino // "/" is its own parent
}

// setupDev mounts a devtmpfs on /dev unless /dev/null is already there.
func setupDev(log *slog.Logger) error {
	if devNullOK() {
		return nil
	}
	if err := os.Mkdir("/dev", 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.Mount("devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
		return fmt.Errorf("no /dev/null, and mounting devtmpfs on /dev failed (a guest kernel needs CONFIG_DEVTMPFS): %w", err)
	}
	if !devNullOK() {
		return errors.New("devtmpfs is mounted on /dev but /dev/null is missing")
	}
	log.Debug("guest init: mounted", "target", "/dev", "fstype", "devtmpfs")
	return nil
}

func devNullOK() bool {
	var st unix.Stat_t
	return unix.Stat("/dev/null", &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR &&
		unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3
}

// loopbackUp sets IFF_UP on lo; the kernel then gives it 127.0.0.1 and ::1.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS lo: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS lo: %w", err)
	}
	return nil
}

// ClockTolerance is how far ahead of the host's time Refresh leaves the
// guest's clock. The host read its clock before the request crossed to the
// guest, so a guest clock that agrees with it reads slightly later; setting
// it back would make it wrong by the transit time and move CLOCK_REALTIME
// backwards for nothing. A clock behind the host's time, which is what a
// restored snapshot has, is always set.
const ClockTolerance = time.Second

// clockStep returns how far the guest clock at guest must move to read
// host, or 0 when it should be left alone.
func clockStep(guest, host time.Time) time.Duration {
	d := host.Sub(guest)
	if d > 0 || d < -ClockTolerance {
		return d
	}
	return 0
}

// randomDevice is where Refresh adds entropy (any fd of the random driver
// takes the ioctls).
const randomDevice = "/dev/urandom"

// Refresh reseeds the kernel's random state and corrects its wall clock:
// it mixes entropy into the input pool, crediting 8 bits per byte
// (RNDADDENTROPY), forces the CRNG to reseed from it now rather than at its
// next scheduled reseed (RNDRESEEDCRNG, Linux 4.17), then steps
// CLOCK_REALTIME to now unless the clock is already within ClockTolerance
// ahead of it. It returns how far the clock was stepped. It needs
// CAP_SYS_ADMIN and CAP_SYS_TIME; a kernel without RNDRESEEDCRNG is
// errdefs.ErrUnimplemented, since a guest whose CRNG keeps the snapshot's
// state must not be used.
func Refresh(entropy []byte, now time.Time) (time.Duration, error) {
	if len(entropy) == 0 {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, "refresh: no entropy")
	}
	f, err := os.OpenFile(randomDevice, os.O_RDONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("refresh: %w", err)
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("refresh: %w", err)
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = reseed(fd, entropy) }); err != nil {
		return 0, fmt.Errorf("refresh: %w", err)
	}
	if ioErr != nil {
		return 0, ioErr
	}

	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return 0, fmt.Errorf("refresh: reading the clock: %w", err)
	}
	step := clockStep(time.Unix(ts.Unix()), now)
	if step == 0 {
		return 0, nil
	}
	ts = unix.NsecToTimespec(now.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return 0, fmt.Errorf("refresh: setting the clock: %w", err)
	}
	return step, nil
}

// reseed issues RNDADDENTROPY with entropy, then RNDRESEEDCRNG.
func reseed(fd uintptr, entropy []byte) error {
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(entropy))
	binary.NativeEndian.PutUint32(info[0:], uint32(8*len(entropy)))
	binary.NativeEndian.PutUint32(info[4:], uint32(len(entropy)))
	copy(info[8:], entropy)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0])))
	runtime.KeepAlive(info)
	clear(info)
	if errno != 0 {
		return fmt.Errorf("refresh: RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, unix.RNDRESEEDCRNG, 0); errno != 0 {
		if errno == syscall.ENOTTY || errno == syscall.EINVAL {
			return errdefs.Wrap(errdefs.ErrUnimplemented, errno, "refresh: the guest kernel cannot reseed its CRNG on demand (RNDRESEEDCRNG needs Linux 4.17)")
		}
		return fmt.Errorf("refresh: RNDRESEEDCRNG: %w", errno)
	}
	return nil
}
