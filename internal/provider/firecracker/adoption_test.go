//go:build linux

package firecracker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// guestPIDs lists the processes running inside a fake VM's guest root.
func guestPIDs(t *testing.T, sandboxDir string) []int {
	t.Helper()
	root := filepath.Join(sandboxDir, "fakevm-guest", "root")
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if r, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && r == root {
			out = append(out, pid)
		}
	}
	return out
}

func waitGone(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still there after 5s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Destroy leaves nothing: no VMM, no guest process, no state.
func TestDestroyLeavesNothing(t *testing.T) {
	p, _ := newFake(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{})
	dir := filepath.Join(p.sbDir, handleFor(id))
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A background command that would outlive a careless teardown.
	if _, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: provider.ShellArgv("sleep 300 >/dev/null 2>&1 &")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := len(guestPIDs(t, dir)); n < 2 {
		t.Fatalf("%d guest processes before Destroy, want the agent and the sleep", n)
	}
	if err := p.Destroy(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if alive(st.PID, st.PIDStart) {
		t.Error("the VMM survived Destroy")
	}
	waitGone(t, "guest processes", func() bool { return len(guestPIDs(t, dir)) == 0 })
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after Destroy: %v", err)
	}
	if _, err := p.Status(t.Context(), id); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("Status after Destroy: %v", err)
	}
	if err := p.Destroy(t.Context(), id); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}

// A restarted server adopts live VMs and removes dead and half-started
// ones.
func TestRestartCleansDeadVMs(t *testing.T) {
	state := shortDir(t)
	p1, _ := newFake(t, state)
	live := spawnT(t, p1, provider.Spec{})
	dead := spawnT(t, p1, provider.Spec{})
	deadDir := filepath.Join(p1.sbDir, handleFor(dead))
	st, _ := readState(deadDir)
	syscall.Kill(st.PID, syscall.SIGKILL)
	waitGone(t, "killed VMM", func() bool { return !alive(st.PID, st.PIDStart) })

	// A sandbox whose spawn never finished, with a process still running
	// (the server died mid-spawn).
	half := providertest.NewID()
	halfDir := filepath.Join(p1.sbDir, handleFor(half))
	if err := os.Mkdir(halfDir, 0o700); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	start, _ := procStartTime(sleeper.Process.Pid)
	if err := writeState(halfDir, vmState{ID: half, Handle: handleFor(half), Phase: phaseStarting, PID: sleeper.Process.Pid, PIDStart: start}); err != nil {
		t.Fatal(err)
	}
	// Junk that is no sandbox.
	junk := filepath.Join(p1.sbDir, "not-a-sandbox")
	os.Mkdir(junk, 0o700)

	p2, _ := newFake(t, state)
	list, err := p2.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, i := range list {
		ids = append(ids, i.ID)
	}
	if !slices.Contains(ids, live) || slices.Contains(ids, dead) || slices.Contains(ids, half) {
		t.Errorf("List after restart: %v; want %s only", ids, live)
	}
	for name, dir := range map[string]string{"dead": deadDir, "half-started": halfDir, "junk": junk} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s sandbox dir survived the restart: %v", name, err)
		}
	}
	waitGone(t, "half-started sandbox's process", func() bool {
		sleeper.Wait()
		return !alive(sleeper.Process.Pid, start)
	})
	if _, err := p2.Status(t.Context(), dead); !isGoneErr(err) {
		t.Errorf("Status of the dead sandbox: %v", err)
	}
	if got, err := p2.Status(t.Context(), live); err != nil || got.State != provider.StateRunning {
		t.Errorf("Status of the adopted sandbox: %+v, %v", got, err)
	}
}

func isGoneErr(err error) bool {
	return errors.Is(err, errdefs.ErrSandboxNotFound) || errors.Is(err, errdefs.ErrSandboxDestroyed)
}

func TestLogsShowConsole(t *testing.T) {
	p, _ := newFake(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{})
	lines, err := p.Logs(t.Context(), id, 50)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "agent serving") }) {
		t.Errorf("console log has no agent start line: %q", lines)
	}
}

// A spawn that collides with a sandbox directory it did not create (the
// same ID live in another provider instance) fails without touching it.
func TestSpawnConflictLeavesOthersAlone(t *testing.T) {
	state := shortDir(t)
	p1, _ := newFake(t, state)
	id := spawnT(t, p1, provider.Spec{})
	p2, _ := newFake(t, shortDir(t))
	p2.sbDir = p1.sbDir // same directory, but p2 has not adopted the VM
	if _, err := p2.Spawn(t.Context(), provider.Spec{ID: id, Image: testEnv.image}); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("Spawn of an ID whose directory exists: %v, want conflict", err)
	}
	if _, err := p1.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"true"}}, nil, nil); err != nil {
		t.Errorf("the existing sandbox broke: %v", err)
	}
}
