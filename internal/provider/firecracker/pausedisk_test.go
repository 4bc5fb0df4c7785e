//go:build linux

package firecracker

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// newPauseToDisk returns a provider on the FAKE VMM that pauses to disk.
func newPauseToDisk(t *testing.T, stateDir string) (*Provider, *testRefresher) {
	t.Helper()
	cfg, r := fakeConfig(t, stateDir)
	cfg.PauseToDisk = true
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p, r
}

// TestConformancePauseToDisk runs the conformance suite's Pause cases with
// pause to disk on.
func TestConformancePauseToDisk(t *testing.T) {
	needEnv(t)
	entries := journal(t)
	providertest.RunPause(t, providertest.Harness{
		New: func(t *testing.T, stateDir string) provider.Provider {
			p, _ := newPauseToDisk(t, stateDir)
			return p
		},
		Image:               testEnv.image,
		PauseKeepsFilesOnly: "the FAKE VMM's snapshots hold the guest's files, not its processes",
	})
	checkJournal(t, entries())
}

func writeGuest(t *testing.T, p *Provider, id, path, content string) {
	t.Helper()
	if err := p.WriteFile(t.Context(), id, path, strings.NewReader(content), 0o644); err != nil {
		t.Fatalf("WriteFile %s: %v", path, err)
	}
}

// checkSuspended fails t unless the sandbox in dir is paused to disk: no
// VMM, no guest process, a complete snapshot in its own directory.
func checkSuspended(t *testing.T, dir string, vmm vmState) {
	t.Helper()
	if alive(vmm.PID, vmm.PIDStart) {
		t.Errorf("the VMM (pid %d) still runs while paused to disk: its memory is not freed", vmm.PID)
	}
	waitGone(t, "guest processes while paused to disk", func() bool { return len(guestPIDs(t, dir)) == 0 })
	waitGone(t, "processes in the sandbox's directory while paused to disk", func() bool { return len(processesIn(dir)) == 0 })
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != phaseSuspended || st.PID != 0 {
		t.Errorf("state.json while paused to disk: phase %q, pid %d; want %q and no pid", st.Phase, st.PID, phaseSuspended)
	}
	for _, f := range []string{snapStateName, snapMemName} {
		if _, err := os.Stat(filepath.Join(dir, pausedName, f)); err != nil {
			t.Errorf("snapshot file while paused to disk: %v", err)
		}
	}
}

// Pause to disk frees the VM's memory (its VMM and guest are gone, the
// snapshot is in the sandbox's own directory) and Resume brings back its
// files, in a new VMM that loaded that snapshot and a guest that was
// refreshed; the snapshot is removed afterwards.
func TestPauseToDiskAndResume(t *testing.T) {
	entries := journal(t)
	p, r := newPauseToDisk(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{Env: map[string]string{"KEEP": "env"}})
	dir := filepath.Join(p.sbDir, handleFor(id))
	writeGuest(t, p, id, "/workspace/before-pause", "kept across the pause")
	before, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	seeds := len(r.seeds)
	if len(processesIn(dir)) == 0 {
		t.Fatal("no process runs in the sandbox's directory before the pause: processesIn finds no VMM")
	}

	if err := p.Pause(t.Context(), id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	checkSuspended(t, dir, before)
	if info, err := p.Status(t.Context(), id); err != nil || info.State != provider.StatePaused {
		t.Errorf("Status while paused to disk = %+v, %v; want paused", info, err)
	}
	list, err := p.List(t.Context())
	if err != nil || !slices.ContainsFunc(list, func(i provider.Info) bool { return i.ID == id && i.State == provider.StatePaused }) {
		t.Errorf("List while paused to disk = %+v, %v; want it paused", list, err)
	}
	if _, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Exec while paused to disk: %v, want a conflict", err)
	}
	if err := p.Pause(t.Context(), id); err != nil {
		t.Errorf("second Pause: %v, want nil (idempotent)", err)
	}

	if err := p.Resume(t.Context(), id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got := readGuest(t, p, id, "/workspace/before-pause"); got != "kept across the pause" {
		t.Errorf("file written before the pause reads %q after Resume", got)
	}
	if got := mustExecOut(t, p, id, "echo $KEEP"); got != "env\n" {
		t.Errorf("the sandbox's environment after Resume: %q", got)
	}
	after, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after.Phase != phaseRunning || !alive(after.PID, after.PIDStart) || after.PID == before.PID {
		t.Errorf("state after Resume: phase %q, pid %d (alive %v), before pid %d; want running in a new VMM",
			after.Phase, after.PID, alive(after.PID, after.PIDStart), before.PID)
	}
	if _, err := os.Stat(filepath.Join(dir, pausedName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the snapshot after a successful Resume: %v, want it removed", err)
	}
	if len(r.seeds) != seeds+1 {
		t.Errorf("%d guest refreshes on Resume, want 1", len(r.seeds)-seeds)
	}
	if info, err := p.Status(t.Context(), id); err != nil || info.State != provider.StateRunning {
		t.Errorf("Status after Resume = %+v, %v; want running", info, err)
	}
	if err := p.Resume(t.Context(), id); err != nil {
		t.Errorf("Resume of a running sandbox: %v", err)
	}

	// What the VMMs were asked: pause and snapshot into the sandbox's own
	// directory; then a new VMM that only loads it, resuming.
	var create, load journalLine
	var calls []string
	for _, l := range entries() {
		if l.VMM != handleFor(id) {
			continue
		}
		calls = append(calls, l.Method+" "+l.Path)
		switch l.Method + " " + l.Path {
		case "PUT /snapshot/create":
			create = l
		case "PUT /snapshot/load":
			load = l
		}
	}
	var cp struct {
		SnapshotPath string `json:"snapshot_path"`
		MemFilePath  string `json:"mem_file_path"`
		SnapshotType string `json:"snapshot_type"`
	}
	if err := json.Unmarshal(create.Body, &cp); err != nil || cp.SnapshotType != "Full" ||
		cp.SnapshotPath != filepath.Join(dir, pausedName, snapStateName) || cp.MemFilePath != filepath.Join(dir, pausedName, snapMemName) {
		t.Errorf("snapshot create %s (%v); want a full snapshot into %s", create.Body, err, filepath.Join(dir, pausedName))
	}
	var lp struct {
		SnapshotPath string `json:"snapshot_path"`
		ResumeVM     bool   `json:"resume_vm"`
		MemBackend   struct {
			BackendPath string `json:"backend_path"`
		} `json:"mem_backend"`
	}
	if err := json.Unmarshal(load.Body, &lp); err != nil || !lp.ResumeVM ||
		lp.SnapshotPath != cp.SnapshotPath || lp.MemBackend.BackendPath != cp.MemFilePath {
		t.Errorf("snapshot load %s (%v); want the paused snapshot, resumed", load.Body, err)
	}
	i := slices.Index(calls, "PUT /snapshot/create")
	if i < 1 || calls[i-1] != "PATCH /vm" {
		t.Errorf("VMM calls %v: want PATCH /vm (pause) right before the snapshot", calls)
	}
	checkJournal(t, entries())
}

func mustExecOut(t *testing.T, p *Provider, id, cmd string) string {
	t.Helper()
	var out strings.Builder
	st, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: provider.ShellArgv(cmd)}, &out, io.Discard)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("exec %q: %+v, %v", cmd, st, err)
	}
	return out.String()
}

// Destroying a sandbox paused to disk removes its snapshot with the rest.
func TestPauseToDiskDestroy(t *testing.T) {
	p, _ := newPauseToDisk(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{})
	dir := filepath.Join(p.sbDir, handleFor(id))
	if err := p.Pause(t.Context(), id); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := p.Destroy(t.Context(), id); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after destroying a sandbox paused to disk: %v", err)
	}
	if err := p.Resume(t.Context(), id); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("Resume after Destroy: %v, want sandbox destroyed", err)
	}
}

// A restarted server (a new provider on the same directory, here with
// pause to disk off) adopts a sandbox paused to disk as paused, resumes it
// with its files, and destroys another one's files; a VMM left by a crash
// between snapshot and kill is stopped, since the snapshot is the VM.
func TestPauseToDiskAdoption(t *testing.T) {
	state := shortDir(t)
	p1, _ := newPauseToDisk(t, state)
	keep := spawnT(t, p1, provider.Spec{})
	drop := spawnT(t, p1, provider.Spec{})
	writeGuest(t, p1, keep, "/workspace/f", "survives a restart")
	for _, id := range []string{keep, drop} {
		if err := p1.Pause(t.Context(), id); err != nil {
			t.Fatalf("Pause: %v", err)
		}
	}
	p1.Close()

	// The crash: drop's VMM still runs (a stand-in process), recorded as
	// in state.json.
	dropDir := filepath.Join(p1.sbDir, handleFor(drop))
	st, err := readState(dropDir)
	if err != nil {
		t.Fatal(err)
	}
	stray, err := startVMM(testEnv.fakeVMM, dropDir, st.Handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stray.kill(5e9) })
	st.PID, st.PIDStart = stray.pid, stray.start
	if err := writeState(dropDir, st); err != nil {
		t.Fatal(err)
	}

	cfg, _ := fakeConfig(t, state)
	p2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p2.Close() })
	waitGone(t, "the stray VMM of a sandbox paused to disk", func() bool { return !stray.running() })
	list, err := p2.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{keep, drop} {
		if !slices.ContainsFunc(list, func(i provider.Info) bool { return i.ID == id && i.State == provider.StatePaused }) {
			t.Errorf("after a restart, List = %+v; want %s paused", list, id)
		}
	}
	if err := p2.Resume(t.Context(), keep); err != nil {
		t.Fatalf("Resume after a restart: %v", err)
	}
	if got := readGuest(t, p2, keep, "/workspace/f"); got != "survives a restart" {
		t.Errorf("file after Resume across a restart: %q", got)
	}
	if err := p2.Destroy(t.Context(), drop); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dropDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after destroying an adopted sandbox paused to disk: %v", err)
	}
}

// A VM paused in memory (by a server without the flag, or left so by a
// crash between the snapshot and state.json) is written to disk by the
// next Pause with the flag on.
func TestPauseToDiskOfAVMPausedInMemory(t *testing.T) {
	state := shortDir(t)
	p1, _ := newFake(t, state)
	id := spawnT(t, p1, provider.Spec{})
	writeGuest(t, p1, id, "/workspace/f", "paused in memory first")
	if err := p1.Pause(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(p1.sbDir, handleFor(id))
	before, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !alive(before.PID, before.PIDStart) {
		t.Fatal("the VMM of a VM paused in memory is gone")
	}
	p1.Close()

	p2, _ := newPauseToDisk(t, state)
	if err := p2.Pause(t.Context(), id); err != nil {
		t.Fatalf("Pause to disk of a VM paused in memory: %v", err)
	}
	checkSuspended(t, dir, before)
	if err := p2.Resume(t.Context(), id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got := readGuest(t, p2, id, "/workspace/f"); got != "paused in memory first" {
		t.Errorf("file after Resume: %q", got)
	}
}

// A snapshot that cannot be loaded fails Resume and leaves the sandbox
// paused to disk (no VMM left running), its snapshot kept for another
// try; Destroy still removes it.
func TestPauseToDiskFailedResume(t *testing.T) {
	p, _ := newPauseToDisk(t, shortDir(t))
	id := spawnT(t, p, provider.Spec{})
	dir := filepath.Join(p.sbDir, handleFor(id))
	if err := p.Pause(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	mem := filepath.Join(dir, pausedName, snapMemName)
	if err := os.Truncate(mem, 10); err != nil {
		t.Fatal(err)
	}
	err := p.Resume(t.Context(), id)
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Fatalf("Resume from a broken snapshot: %v, want provider unavailable", err)
	}
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != phaseSuspended || st.PID != 0 {
		t.Errorf("state after a failed Resume: phase %q, pid %d; want suspended, no VMM", st.Phase, st.PID)
	}
	if info, err := p.Status(t.Context(), id); err != nil || info.State != provider.StatePaused {
		t.Errorf("Status after a failed Resume = %+v, %v; want paused", info, err)
	}
	if _, err := os.Stat(mem); err != nil {
		t.Errorf("the snapshot after a failed Resume: %v", err)
	}
	waitGone(t, "guest processes after a failed Resume", func() bool { return len(guestPIDs(t, dir)) == 0 })
	waitGone(t, "the VMM started for a failed Resume", func() bool { return len(processesIn(dir)) == 0 })
	if err := p.Destroy(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after Destroy: %v", err)
	}
}

// processesIn lists the processes whose working directory is dir: the
// VMMs of a sandbox (each runs in its directory).
func processesIn(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && cwd == dir {
			out = append(out, pid)
		}
	}
	return out
}
