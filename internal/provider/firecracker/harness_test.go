//go:build linux

package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker/fakevmm"
)

// testEnv holds what TestMain prepared: the real agent and the FAKE VMM,
// built from this module, a busybox image directory and a placeholder
// kernel file. setupErr says what is missing when something could not be
// prepared; tests that need the environment skip naming it.
var testEnv struct {
	dir        string
	agent      string
	fakeVMM    string
	image      string // busybox root directory
	fakeKernel string
	setupErr   error
}

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "fctest")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		testEnv.dir = dir
		testEnv.setupErr = prepare(dir)
		code := m.Run()
		if left := killLeftoverVMMs(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "WARNING: tests left %d fake VMM(s) running, killed: %v\n", len(left), left)
		}
		return code
	}()
	os.Exit(code)
}

// killLeftoverVMMs kills the fake VMMs of this test binary still running
// (they run in sessions of their own, to outlive a server as real ones
// do) with their process groups (the agents in them), and returns their PIDs.
func killLeftoverVMMs() []int {
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	var left []int
	for _, exe := range procs {
		if target, err := os.Readlink(exe); err != nil || target != testEnv.fakeVMM {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(exe, "/proc/%d/exe", &pid); err != nil {
			continue
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		left = append(left, pid)
	}
	return left
}

func prepare(dir string) error {
	build := func(out, pkg string) error {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		// Static: the agent runs chrooted in a root without libc.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v: %s", pkg, err, b)
		}
		return nil
	}
	testEnv.agent = filepath.Join(dir, "stacyvm-agent")
	if err := build(testEnv.agent, "github.com/stacyvm/stacyvm/cmd/stacyvm-agent"); err != nil {
		return err
	}
	testEnv.fakeVMM = filepath.Join(dir, "fake-firecracker")
	if err := build(testEnv.fakeVMM, "github.com/stacyvm/stacyvm/internal/provider/firecracker/fakevmm/fake-firecracker"); err != nil {
		return err
	}
	testEnv.fakeKernel = filepath.Join(dir, "vmlinux-FAKE")
	if err := os.WriteFile(testEnv.fakeKernel, []byte("\x7fELF placeholder: the fake VMM boots no kernel\n"), 0o644); err != nil {
		return err
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install e2fsprogs", tool)
		}
	}
	img, err := makeBusyboxDir(filepath.Join(dir, "busybox-root"))
	if err != nil {
		return err
	}
	testEnv.image = img
	return nil
}

// makeBusyboxDir builds a minimal root directory from the host's static
// busybox (Debian package busybox-static).
func makeBusyboxDir(root string) (string, error) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox not found: install busybox-static")
	}
	out, err := exec.Command("file", "-L", bb).Output()
	if err == nil && !strings.Contains(string(out), "statically linked") {
		return "", fmt.Errorf("%s is not statically linked: install busybox-static", bb)
	}
	for _, d := range []string{"bin", "etc", "root", "tmp", "workspace"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return "", err
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		return "", err
	}
	list, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return "", fmt.Errorf("busybox --list: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(list)))
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || name == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", name)); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		return "", err
	}
	return root, nil
}

func needEnv(t testing.TB) {
	t.Helper()
	if testEnv.setupErr != nil {
		t.Skipf("fake VMM environment unavailable: %v", testEnv.setupErr)
	}
}

// testRefresher stands in for the agent's refresh endpoint, which the
// agent does not have yet: it writes what it was given into the guest, so
// tests can read back that every restored guest got its own entropy.
type testRefresher struct {
	mu    sync.Mutex
	seeds []string
}

const refreshMarker = "/run/stacyvm-test-refresh"

func (r *testRefresher) refresh(ctx context.Context, g provider.Guest, rf Refresh) error {
	if len(rf.Entropy) < 32 || rf.Now.IsZero() {
		return fmt.Errorf("refresh carries %d bytes of entropy and time %v", len(rf.Entropy), rf.Now)
	}
	seed := fmt.Sprintf("%x", rf.Entropy)
	r.mu.Lock()
	r.seeds = append(r.seeds, seed)
	r.mu.Unlock()
	return g.WriteFile(ctx, refreshMarker, strings.NewReader(seed), 0o600)
}

// fakeConfig is a provider configuration that runs the FAKE VMM.
func fakeConfig(t testing.TB, stateDir string) (Config, *testRefresher) {
	needEnv(t)
	r := &testRefresher{}
	return Config{
		Binary:       testEnv.fakeVMM,
		Kernel:       testEnv.fakeKernel,
		AgentPath:    testEnv.agent,
		StateDir:     stateDir,
		SkipKVMCheck: true,
		FreeMB:       64,
		ReadyTimeout: 10 * time.Second,
		Refresh:      r.refresh,
		Logger:       testLogger(t),
	}, r
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// shortDir returns a fresh directory with a short path: unix socket paths
// inside a state dir are limited.
func shortDir(t testing.TB) string {
	d, err := os.MkdirTemp("/tmp", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// newFake returns a provider on the FAKE VMM whose VMs are destroyed when
// t ends.
func newFake(t testing.TB, stateDir string) (*Provider, *testRefresher) {
	cfg, r := fakeConfig(t, stateDir)
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p, r
}

// journal collects the FAKE VMM's request journal for one test.
func journal(t testing.TB) func() []journalLine {
	t.Helper()
	p := filepath.Join(t.TempDir(), "journal.jsonl")
	t.Setenv(fakevmm.JournalEnv, p)
	return func() []journalLine {
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		var out []journalLine
		dec := json.NewDecoder(f)
		for {
			var l journalLine
			if err := dec.Decode(&l); err == io.EOF {
				return out
			} else if err != nil {
				t.Fatalf("journal: %v", err)
			}
			out = append(out, l)
		}
	}
}

type journalLine struct {
	VMM      string          `json:"vmm"`
	Method   string          `json:"method"`
	Path     string          `json:"path"`
	Body     json.RawMessage `json:"body"`
	Status   int             `json:"status"`
	Invalid  string          `json:"invalid_request"`
	BadReply string          `json:"invalid_reply"`
}

type unixStat struct{ allocated int64 }

// statBlocks reports the disk space a file really occupies.
func statBlocks(path string, st *unixStat) error {
	var s syscall.Stat_t
	if err := syscall.Stat(path, &s); err != nil {
		return err
	}
	st.allocated = s.Blocks * 512
	return nil
}
