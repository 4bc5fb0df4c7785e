//go:build linux

package firecracker

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// spawnT spawns a sandbox that is destroyed when t ends.
func spawnT(t *testing.T, p *Provider, spec provider.Spec) string {
	t.Helper()
	if spec.ID == "" {
		spec.ID = providertest.NewID()
	}
	if spec.Image == "" {
		spec.Image = testEnv.image
	}
	if _, err := p.Spawn(t.Context(), spec); err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	t.Cleanup(func() { p.Destroy(t.Context(), spec.ID) })
	return spec.ID
}

func readGuest(t *testing.T, p *Provider, id, path string) string {
	t.Helper()
	rc, err := p.ReadFile(t.Context(), id, path)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// calls lists "METHOD /path" of one VMM's requests, in order.
func calls(lines []journalLine, handle string) []string {
	var out []string
	for _, l := range lines {
		if l.VMM == handle {
			out = append(out, l.Method+" "+l.Path)
		}
	}
	return out
}

func TestSnapshotRestore(t *testing.T) {
	entries := journal(t)
	p, r := newFake(t, shortDir(t))

	a := spawnT(t, p, provider.Spec{})
	ca := calls(entries(), handleFor(a))
	for _, want := range []string{"PUT /machine-config", "PUT /boot-source", "PUT /drives/rootfs", "PUT /vsock", "PUT /entropy", "PUT /actions", "PATCH /vm", "PUT /snapshot/create"} {
		if !slices.Contains(ca, want) {
			t.Errorf("first spawn (cold boot and base snapshot) did not send %s: %v", want, ca)
		}
	}
	snaps, err := p.Snapshots(t.Context())
	if err != nil || len(snaps) != 1 || snaps[0].Image != testEnv.image || snaps[0].Provider != "firecracker" {
		t.Fatalf("Snapshots after the first cold boot: %+v, %v", snaps, err)
	}

	b := spawnT(t, p, provider.Spec{})
	c := spawnT(t, p, provider.Spec{})
	for _, id := range []string{b, c} {
		got := calls(entries(), handleFor(id))
		if !slices.Equal(got, []string{"GET /", "PUT /snapshot/load"}) {
			t.Errorf("spawn of the same image and shape: VMM calls %v, want a readiness probe and a snapshot load only", got)
		}
	}
	// Every VM that goes on from the snapshot's state got its own entropy,
	// the snapshotted one included.
	seeds := map[string]string{}
	for _, id := range []string{a, b, c} {
		s := readGuest(t, p, id, refreshMarker)
		if len(s) < 64 {
			t.Fatalf("%s: refresh marker %q", id, s)
		}
		for other, os := range seeds {
			if os == s {
				t.Errorf("%s and %s were refreshed with the same entropy", id, other)
			}
		}
		seeds[id] = s
	}
	if len(r.seeds) != 3 {
		t.Errorf("%d refreshes, want 3 (snapshotted VM and two restores)", len(r.seeds))
	}
	// The restored guests are separate machines.
	if err := p.WriteFile(t.Context(), b, "/workspace/only-b", strings.NewReader("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.StatFile(t.Context(), c, "/workspace/only-b"); err == nil {
		t.Error("a file written in one restored sandbox appeared in another")
	}

	// Another shape cold boots and gets its own snapshot.
	d := spawnT(t, p, provider.Spec{MemoryMB: 256})
	if got := calls(entries(), handleFor(d)); !slices.Contains(got, "PUT /actions") || slices.Contains(got, "PUT /snapshot/load") {
		t.Errorf("spawn of another shape: VMM calls %v, want a cold boot", got)
	}
	if snaps, _ := p.Snapshots(t.Context()); len(snaps) != 2 {
		t.Errorf("Snapshots after a second shape: %+v, want 2", snaps)
	}
	checkJournal(t, entries())
}

func TestSnapshotInvalidatedWhenImageChanges(t *testing.T) {
	entries := journal(t)
	state := shortDir(t)
	p, _ := newFake(t, state)
	img, err := makeBusyboxDir(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	spawnT(t, p, provider.Spec{Image: img})
	before := p.snaps.list()
	if len(before) != 1 {
		t.Fatalf("snapshots: %+v", before)
	}
	oldExt4, _ := p.images.paths(before[0].ImageDigest)

	if err := os.WriteFile(filepath.Join(img, "etc", "motd"), []byte("new content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := spawnT(t, p, provider.Spec{Image: img})
	if got := calls(entries(), handleFor(id)); slices.Contains(got, "PUT /snapshot/load") {
		t.Errorf("spawn after the image changed restored the stale snapshot: %v", got)
	}
	if got := readGuest(t, p, id, "/etc/motd"); got != "new content\n" {
		t.Errorf("/etc/motd in the new sandbox: %q", got)
	}
	after := p.snaps.list()
	if len(after) != 1 || after[0].ImageDigest == before[0].ImageDigest {
		t.Errorf("snapshots after the image changed: %+v; want only one, of the new digest", after)
	}
	if _, err := os.Stat(oldExt4); err == nil {
		t.Error("the old image's root file system is still cached")
	}
	checkJournal(t, entries())
}

func TestRestoreFailureFallsBackToColdBoot(t *testing.T) {
	entries := journal(t)
	p, _ := newFake(t, shortDir(t))
	spawnT(t, p, provider.Spec{})
	snaps := p.snaps.list()
	if len(snaps) != 1 {
		t.Fatalf("snapshots: %+v", snaps)
	}
	// A snapshot whose memory file no longer matches (say, written by
	// another VMM version) makes the load fail.
	if err := os.Truncate(filepath.Join(p.snaps.path(snaps[0].Key), snapMemName), 10); err != nil {
		t.Fatal(err)
	}
	id := spawnT(t, p, provider.Spec{})
	var loads, starts int
	for _, l := range entries() {
		if l.VMM != handleFor(id) {
			continue
		}
		switch l.Method + " " + l.Path {
		case "PUT /snapshot/load":
			loads++
			if l.Status != 400 {
				t.Errorf("load of a broken snapshot answered %d", l.Status)
			}
		case "PUT /actions":
			starts++
		}
	}
	if loads != 1 || starts != 1 {
		t.Errorf("%d loads and %d cold boots, want one of each", loads, starts)
	}
	if _, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); err != nil {
		t.Errorf("Exec in the cold-booted fallback: %v", err)
	}
	// The broken snapshot was replaced by a good one.
	now := p.snaps.list()
	if len(now) != 1 || !now[0].Created.After(snaps[0].Created) {
		t.Errorf("snapshots after the fallback: %+v", now)
	}
}

// TestSnapshotRestoreRefreshesThroughTheAgent runs the production
// refresh: the agent client's Refresh, served by the real agent inside the
// fake guest (PID 1 with --manage-guest), which reseeds the kernel's random
// state and checks the clock (the fake guest shares the host's kernel and
// clock, which is within tolerance, so it is not stepped).
func TestSnapshotRestoreRefreshesThroughTheAgent(t *testing.T) {
	entries := journal(t)
	cfg, r := fakeConfig(t, shortDir(t))
	cfg.Refresh = nil // the default: agent.Client.Refresh
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if !p.Capabilities().Snapshots {
		t.Fatal("snapshots are off with the agent client's refresh")
	}
	a := spawnT(t, p, provider.Spec{})
	b := spawnT(t, p, provider.Spec{})
	if got := calls(entries(), handleFor(b)); !slices.Equal(got, []string{"GET /", "PUT /snapshot/load"}) {
		t.Fatalf("second spawn: VMM calls %v, want a restore", got)
	}
	if len(r.seeds) != 0 {
		t.Fatalf("the test refresher was used %d times", len(r.seeds))
	}
	// The snapshotted VM and the restored one were both refreshed by
	// their agent, which logs it on the console.
	for _, id := range []string{a, b} {
		lines, err := p.Logs(t.Context(), id, 200)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `msg="guest refreshed"`) }) {
			t.Errorf("%s: no refresh in the guest's log:\n%s", id, strings.Join(lines, "\n"))
		}
	}
	if _, err := p.Exec(t.Context(), b, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); err != nil {
		t.Errorf("Exec in the restored sandbox: %v", err)
	}
	checkJournal(t, entries())
}
