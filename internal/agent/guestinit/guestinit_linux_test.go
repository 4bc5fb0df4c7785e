package guestinit

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a guest's init, chosen by this variable: it
// runs as PID 1 of new PID, mount and network namespaces, chroots into the
// directory named by rootEnv, and checks what Setup did there.
const (
	roleEnv = "STACYVM_GUESTINIT_TEST_ROLE"
	rootEnv = "STACYVM_GUESTINIT_TEST_ROOT"
)

func TestMain(m *testing.M) {
	if os.Getenv(roleEnv) == "init" {
		if err := initRole(os.Getenv(rootEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func initRole(root string) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("running as PID %d, not 1", os.Getpid())
	}
	// Chrooting after start keeps this (dynamically linked) binary's
	// libraries loaded: the root holds no programs.
	if err := syscall.Chroot(root); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if ProcMounted() {
		return errors.New("/proc is mounted before Setup")
	}
	if err := Setup(nil); err != nil {
		return fmt.Errorf("Setup: %w", err)
	}
	if !ProcMounted() {
		return errors.New("/proc is not mounted after Setup")
	}
	if self, err := os.Readlink("/proc/self"); err != nil || self != "1" {
		return fmt.Errorf("/proc/self = %q, %v: not this PID namespace's proc", self, err)
	}
	for dir, magic := range map[string]int64{
		"/proc": unix.PROC_SUPER_MAGIC, "/sys": unix.SYSFS_MAGIC,
		"/dev/pts": unix.DEVPTS_SUPER_MAGIC, "/dev/shm": unix.TMPFS_MAGIC,
	} {
		if !mountedAt(dir, magic) {
			return fmt.Errorf("nothing of type %#x is mounted on %s", magic, dir)
		}
	}
	if fi, err := os.Stat("/dev/shm"); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("/dev/shm: %v, %v; want 1777", fi.Mode(), err)
	}
	if !devNullOK() {
		return errors.New("no /dev/null")
	}
	if err := os.WriteFile("/dev/null", []byte("x"), 0); err != nil {
		return fmt.Errorf("writing /dev/null: %w", err)
	}
	if target, err := os.Readlink("/dev/fd"); err != nil || target != "/proc/self/fd" {
		return fmt.Errorf("/dev/fd -> %q, %v", target, err)
	}
	// sysfs mounted here shows this network namespace, whose lo started
	// down.
	b, err := os.ReadFile("/sys/class/net/lo/flags")
	if err != nil {
		return err
	}
	flags, err := strconv.ParseUint(strings.TrimSpace(string(b)), 0, 32)
	if err != nil || flags&unix.IFF_UP == 0 {
		return fmt.Errorf("lo flags %q: not up", b)
	}

	// A second Setup finds everything in place and mounts nothing.
	before, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if err := Setup(nil); err != nil {
		return fmt.Errorf("second Setup: %w", err)
	}
	after, _ := os.ReadFile("/proc/self/mountinfo")
	if string(before) != string(after) {
		return fmt.Errorf("second Setup changed the mounts:\n%s\n---\n%s", before, after)
	}
	return nil
}

func TestSetup(t *testing.T) {
	tests := []struct {
		name string
		// prepare fills the guest's root before its init starts.
		prepare func(t *testing.T, root string)
	}{
		// An empty root, as a kernel without CONFIG_DEVTMPFS_MOUNT leaves
		// it: Setup mounts a devtmpfs on /dev.
		{"empty root", func(*testing.T, string) {}},
		// /dev/null made beforehand (a kernel's automatic devtmpfs, or the
		// fake VMM's device nodes): /dev is left alone.
		{"dev populated", func(t *testing.T, root string) {
			if err := os.Mkdir(filepath.Join(root, "dev"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mknod(filepath.Join(root, "dev", "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
				t.Skipf("making a device node needs root: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			tt.prepare(t, root)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), roleEnv+"=init", rootEnv+"="+root, "GORACE=atexit_sleep_ms=0")
			cmd.SysProcAttr = &syscall.SysProcAttr{
				Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNET,
				// Unshareflags, not Cloneflags, for the mount namespace:
				// Go then makes every mount in it private, so nothing the
				// init mounts can propagate to the host.
				Unshareflags: syscall.CLONE_NEWNS,
			}
			out, err := cmd.CombinedOutput()
			if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
				t.Skipf("creating PID, mount and network namespaces needs CAP_SYS_ADMIN: %v", err)
			}
			if err != nil {
				t.Fatalf("guest init: %v\n%s", err, out)
			}
			// The mounts lived and died with the guest's namespace.
			if m := mountsUnder(t, root); len(m) > 0 {
				t.Errorf("mounts under the guest root remain on the host: %v", m)
			}
		})
	}
}

func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			out = append(out, fields[4])
		}
	}
	return out
}

func TestClockStep(t *testing.T) {
	host := time.Date(2025, 11, 28, 20, 0, 0, 0, time.UTC)
	tests := []struct {
		guest time.Time
		want  time.Duration
	}{
		{host.Add(-3 * time.Hour), 3 * time.Hour},     // a restored snapshot: behind
		{host.Add(-time.Nanosecond), time.Nanosecond}, // behind at all
		{host, 0},                           // exact
		{host.Add(2 * time.Millisecond), 0}, // ahead by the transit time
		{host.Add(ClockTolerance), 0},       // the edge
		{host.Add(ClockTolerance + 1), -(ClockTolerance + 1)}, // really ahead
		{host.Add(time.Hour), -time.Hour},
	}
	for _, tt := range tests {
		if got := clockStep(tt.guest, host); got != tt.want {
			t.Errorf("clockStep(host%+v) = %v, want %v", tt.guest.Sub(host), got, tt.want)
		}
	}
}

// TestRefresh runs the real system calls on this machine's kernel: 64
// bytes from the CSPRNG are credited to its pool (harmless), its CRNG is
// reseeded, and its clock is moved by a few milliseconds at most.
func TestRefresh(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("Refresh needs root (CAP_SYS_ADMIN for RNDADDENTROPY, CAP_SYS_TIME for clock_settime)")
	}
	entropy := make([]byte, 64)
	if _, err := io.ReadFull(rand.Reader, entropy); err != nil {
		t.Fatal(err)
	}

	// The host's time "a little later" than the guest's clock: the clock
	// is stepped forward by about that much, so reading it right after
	// the call cannot give an earlier time.
	target := time.Now().Add(3 * time.Millisecond)
	step, err := Refresh(entropy, target)
	after := time.Now()
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if step <= 0 || step > 3*time.Millisecond {
		t.Errorf("clock stepped by %v, want a little under 3ms", step)
	}
	if after.UnixNano() < target.UnixNano() {
		t.Errorf("the clock reads %v after being set to %v", after, target)
	}

	// A host time a little earlier than the clock (the request's transit
	// time) leaves it alone.
	step, err = Refresh(entropy, time.Now().Add(-5*time.Millisecond))
	if err != nil || step != 0 {
		t.Errorf("Refresh with the clock 5ms ahead: stepped %v, %v; want no step", step, err)
	}

	if _, err := Refresh(nil, time.Now()); err == nil {
		t.Error("Refresh without entropy succeeded")
	}
}
