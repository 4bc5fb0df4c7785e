package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// TestTwoReplicasWithDocker runs two `stacyvm serve` processes on one
// PostgreSQL database and one dockerd: a sandbox spawned through A is
// used through B; B's event stream shows what was done through A; after
// A is killed with SIGKILL, B serves everything (exec, files, destroy),
// its reaper expires a sandbox and its reconcile removes an orphan (their
// leases pass to B once A's lapse); and no container outlives its record.
func TestTwoReplicasWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	u, _ := pgtest.SchemaURL(t)
	requireDockerImage(t, image)

	ct := &crashTest{t: t, image: image, dir: t.TempDir(), run: randHex(8), acked: map[string]*ackedSandbox{}}
	ct.bin = buildBinaries(t)
	t.Cleanup(ct.removeContainers)
	ct.env = []string{
		"STACYVM_STORE_DRIVER=postgres", "STACYVM_STORE_DSN=" + u.String(),
		"STACYVM_STORE_LEASE_TTL=3s",
		"STACYVM_SANDBOX_REAPER_INTERVAL=1s", "STACYVM_SANDBOX_RECONCILE_INTERVAL=2s",
	}
	db := filepath.Join(ct.dir, "unused.db") // the store is PostgreSQL
	a, b := ct.start(db), ct.start(db)
	ctx := t.Context()
	meta := map[string]string{"crashtest": ct.run}

	events := subscribe(t, b.base)
	sb, err := a.client.Spawn(ctx, client.SpawnRequest{Image: image, Metadata: meta})
	if err != nil {
		t.Fatalf("spawn through A: %v", err)
	}
	events.await(t, sb.ID, "sandbox.created", "sandbox.running")

	res, err := b.client.Exec(ctx, sb.ID, client.ExecRequest{Command: "echo through-b"})
	if err != nil || res.Stdout != "through-b\n" {
		t.Fatalf("exec through B: %+v, %v", res, err)
	}
	if err := a.client.WriteFile(ctx, sb.ID, "/tmp/a.txt", strings.NewReader("written through A"), 0o644); err != nil {
		t.Fatalf("write through A: %v", err)
	}
	if got, err := readAll(ctx, b.client, sb.ID, "/tmp/a.txt"); err != nil || got != "written through A" {
		t.Fatalf("read through B: %q, %v", got, err)
	}
	// A short-lived one, for the reaper to expire after A is gone.
	short, err := a.client.Spawn(ctx, client.SpawnRequest{Image: image, Metadata: meta, TTL: 8 * time.Second})
	if err != nil {
		t.Fatalf("spawn through A: %v", err)
	}
	events.await(t, short.ID, "sandbox.created", "sandbox.running")

	a.kill9()
	killed := time.Now()

	res, err = b.client.Exec(ctx, sb.ID, client.ExecRequest{Command: "cat /tmp/a.txt; echo; echo after-kill"})
	if err != nil || res.Stdout != "written through A\nafter-kill\n" {
		t.Fatalf("exec through B after A died: %+v, %v", res, err)
	}
	if err := b.client.WriteFile(ctx, sb.ID, "/tmp/b.txt", strings.NewReader("written through B"), 0o644); err != nil {
		t.Fatalf("write through B: %v", err)
	}
	if got, err := readAll(ctx, b.client, sb.ID, "/tmp/b.txt"); err != nil || got != "written through B" {
		t.Fatalf("read through B: %q, %v", got, err)
	}
	// Reaper and reconcile now run on B: the short one expires, and a
	// never-started container of this deployment without a record is
	// removed.
	orphan := ct.createdOrphan()
	events.await(t, short.ID, "sandbox.expired")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cs := ct.containers()
		_, orphanLeft := cs[orphan]
		_, shortLeft := cs[short.ID]
		if !orphanLeft && !shortLeft {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after A's death, B never removed the orphan (%v) or the expired sandbox (%v): containers %v\nB's logs:\n%s",
				orphanLeft, shortLeft, cs, b.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("A killed; %v later B had expired the short-lived sandbox (TTL 8s) and removed the orphan", time.Since(killed).Round(100*time.Millisecond))

	// Nothing leaked: the containers are exactly the live records.
	live, err := b.client.List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs := ct.containers()
	if len(live) != 1 || live[0].ID != sb.ID || len(cs) != 1 || cs[sb.ID] != "running" {
		t.Fatalf("live records %v and containers %v; want just %s", ids(live), cs, sb.ID)
	}
	if err := b.client.Destroy(ctx, sb.ID); err != nil {
		t.Fatalf("destroy through B: %v", err)
	}
	events.await(t, sb.ID, "sandbox.destroyed")
	if cs := ct.containers(); len(cs) != 0 {
		t.Errorf("containers left after destroying everything: %v", cs)
	}
	b.stop(t)
}

func ids(sbs []client.Sandbox) []string {
	out := make([]string, len(sbs))
	for i, s := range sbs {
		out[i] = s.ID
	}
	return out
}

// eventStream is one SSE subscription, read in the background.
type eventStream struct {
	ch chan sseEvent
}

type sseEvent struct {
	Type      string `json:"type"`
	SandboxID string `json:"sandbox_id"`
}

func subscribe(t *testing.T, base string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /events: %s", resp.Status)
	}
	s := &eventStream{ch: make(chan sseEvent, 1000)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var e sseEvent
			if json.Unmarshal([]byte(data), &e) == nil {
				s.ch <- e
			}
		}
	}()
	return s
}

// await waits for these events of sandbox id, in this order (others may
// come between).
func (s *eventStream) await(t *testing.T, id string, types ...string) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	var seen []string
	for len(types) > 0 {
		select {
		case e := <-s.ch:
			seen = append(seen, fmt.Sprintf("%s %s", e.SandboxID, e.Type))
			if e.SandboxID == id && e.Type == types[0] {
				types = types[1:]
			}
		case <-deadline:
			t.Fatalf("events of %s: still waiting for %v; saw %v", id, types, seen)
		}
	}
}
