package localguest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// The test binary doubles as a helper process, chosen by this variable, so
// that a seccomp filter or an unmounted /proc never touches the tests
// themselves.
const (
	roleEnv    = "STACYVM_LOCALGUEST_TEST_ROLE"
	rootEnv    = "STACYVM_LOCALGUEST_TEST_ROOT"
	outsideEnv = "STACYVM_LOCALGUEST_TEST_OUTSIDE"
)

// exitNoRepro is the helper's exit code when the filter did not make
// os.Root.Chmod fail, so the situation under test could not be produced.
const exitNoRepro = 3

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := chmodRole(role); err != nil {
			fmt.Fprintln(os.Stderr, err)
			var nr noRepro
			if errors.As(err, &nr) {
				os.Exit(exitNoRepro)
			}
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type noRepro struct{ msg string }

func (n noRepro) Error() string { return n.msg }

// denyFchmodat2 installs, on every thread of this process, the behaviour
// of Docker 20.10's default seccomp profile under crun: fchmodat2 (a
// syscall newer than the profile) fails with EPERM instead of ENOSYS.
func denyFchmodat2() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return noRepro{fmt.Sprintf("prctl(PR_SET_NO_NEW_PRIVS): %v", err)}
	}
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_FCHMODAT2},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return noRepro{fmt.Sprintf("seccomp(SECCOMP_SET_MODE_FILTER): %v", errno)}
	}
	return nil
}

func chmodRole(role string) error {
	root, outside := os.Getenv(rootEnv), os.Getenv(outsideEnv)
	if role == "noproc" {
		// A private mount namespace (the parent asked for one): nothing
		// outside this process sees the unmount.
		if err := unix.Unmount("/proc", unix.MNT_DETACH); err != nil {
			return noRepro{fmt.Sprintf("unmounting /proc: %v", err)}
		}
		if _, err := os.Stat("/proc/self/fd"); err == nil {
			return noRepro{"/proc/self/fd still exists after unmounting /proc"}
		}
	}
	if err := denyFchmodat2(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "probe"), nil, 0o644); err != nil {
		return err
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Chmod("probe", 0o600); !errors.Is(err, syscall.EPERM) {
		return noRepro{fmt.Sprintf("os.Root.Chmod under the filter returned %v, not EPERM", err)}
	}

	// New creates /workspace and /tmp and must chmod them.
	g, err := New(Options{Root: root})
	if err != nil {
		return fmt.Errorf("New: %w", err)
	}
	defer g.Close()
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode() != fs.ModeDir|fs.ModeSticky|0o777 {
		return fmt.Errorf("/tmp made by New: %v, %v", fi.Mode(), err)
	}
	ctx := context.Background()
	if err := g.WriteFile(ctx, "/workspace/f", strings.NewReader("x"), 0o644); err != nil {
		return fmt.Errorf("WriteFile: %w", err)
	}
	checks := []struct {
		path string
		mode fs.FileMode
		want fs.FileMode
	}{
		{"/workspace/f", 0o4755, fs.ModeSetuid | 0o755},
		{"/workspace/f", 0o600, 0o600},
		{"/workspace", 0o1777, fs.ModeDir | fs.ModeSticky | 0o777},
		{"/workspace", 0o755, fs.ModeDir | 0o755},
	}
	for _, c := range checks {
		if err := g.Chmod(ctx, c.path, c.mode); err != nil {
			return fmt.Errorf("Chmod(%s, %#o): %w", c.path, uint32(c.mode), err)
		}
		fi, err := os.Lstat(filepath.Join(root, c.path))
		if err != nil || fi.Mode() != c.want {
			return fmt.Errorf("after Chmod(%s, %#o): %v, %v; want %v", c.path, uint32(c.mode), fi.Mode(), err, c.want)
		}
	}

	// A link planted in the sandbox towards a host file: through the
	// Guest it resolves inside the root (where nothing is), and the
	// fallback on its own refuses the link rather than follow it.
	if err := os.Symlink(outside, filepath.Join(root, "workspace", "out")); err != nil {
		return err
	}
	if err := g.Chmod(ctx, "/workspace/out", 0o777); !errors.Is(err, errdefs.ErrFileNotFound) {
		return fmt.Errorf("Chmod through a link to a host path: %v, want file not found", err)
	}
	if err := chmodFallback(g.root, "workspace/out", 0o777); err == nil {
		return errors.New("chmodFallback changed a symbolic link's target")
	}
	if fi, err := os.Stat(outside); err != nil || fi.Mode() != 0o600 {
		return fmt.Errorf("the host file outside the root changed: %v, %v", fi.Mode(), err)
	}
	return nil
}

func TestChmodWhenSeccompRefusesFchmodat2(t *testing.T) {
	tests := []struct {
		role string
		attr *syscall.SysProcAttr
		need string
	}{
		{"proc", nil, ""},
		// Without /proc the fallback opens the file and uses fchmod.
		{"noproc", &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}, "a private mount namespace (CAP_SYS_ADMIN)"},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			outside := filepath.Join(t.TempDir(), "host-file")
			must(t, os.WriteFile(outside, []byte("host"), 0o600))
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			// atexit_sleep_ms: the race detector otherwise idles a second at exit.
			cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", roleEnv+"="+tt.role, rootEnv+"="+root, outsideEnv+"="+outside)
			cmd.SysProcAttr = tt.attr
			out, err := cmd.CombinedOutput()
			if tt.attr != nil && errors.Is(err, syscall.EPERM) {
				t.Skipf("needs %s: %v", tt.need, err)
			}
			if ee, ok := errors.AsType[*exec.ExitError](err); ok && ee.ExitCode() == exitNoRepro {
				t.Skipf("cannot reproduce a seccomp profile that refuses fchmodat2 here: %s", out)
			}
			if err != nil {
				t.Fatalf("helper failed: %v\n%s", err, out)
			}
		})
	}
}
