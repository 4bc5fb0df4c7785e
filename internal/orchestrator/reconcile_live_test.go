package orchestrator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestErrorRecordsCountTowardLimits: a sandbox reconcile could not reach
// (state error) may still hold its runtime, so it keeps its place.
func TestErrorRecordsCountTowardLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSandboxes = 3; c.MaxPerOwner = 1 })
	ctx := context.Background()
	e.spawn(t, SpawnRequest{OwnerID: "a"})
	e.spawn(t, SpawnRequest{OwnerID: "b"})
	e.fake.setHealth(errors.New("daemon down"))
	if rep, err := e.m.Reconcile(ctx); err != nil || rep.Errored != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	e.fake.setHealth(nil)
	if _, err := e.m.Spawn(ctx, SpawnRequest{OwnerID: "a"}); !errors.Is(err, errdefs.ErrResourceLimit) {
		t.Fatalf("owner a's sandbox is in state error, yet a second one spawned: %v", err)
	}
	e.spawn(t, SpawnRequest{OwnerID: "c"})
	if _, err := e.m.Spawn(ctx, SpawnRequest{OwnerID: "d"}); !errors.Is(err, errdefs.ErrResourceLimit) {
		t.Fatalf("two sandboxes in state error and one running, yet a fourth spawned under max 3: %v", err)
	}
}

// TestRunReconcilesWhenProviderRecovers: error records come back to
// running when their provider's health recovers, without a restart.
func TestRunReconcilesWhenProviderRecovers(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReaperInterval = 10 * time.Millisecond; c.ReconcileInterval = time.Hour })
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	e.fake.setHealth(errors.New("daemon down"))
	if rep, err := e.m.Reconcile(ctx); err != nil || rep.Errored != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.m.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()
	time.Sleep(50 * time.Millisecond) // a few probes while it is down
	if rec, _ := e.m.Get(ctx, sb.ID); rec.State != "error" {
		t.Fatalf("state while the provider is down: %s", rec.State)
	}
	e.fake.setHealth(nil)
	// The Manager's view, not the store's: the store is written first and
	// the live set right after, and exec reads the live set.
	waitUntil(t, "the record to recover", func() bool {
		rec, _ := e.m.Get(ctx, sb.ID)
		return rec.State == "running"
	})
	if _, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "echo"}); err != nil {
		t.Errorf("exec after recovery: %v", err)
	}
	h, _ := e.st.History(ctx, sb.ID)
	if last := h[len(h)-1]; last.State != "running" || !strings.Contains(last.Reason, "recovered") {
		t.Errorf("history ends %+v, want a recovery", last)
	}
}

// TestPeriodicReconcileRacesNothing: reconcile running in a loop beside
// spawns (one held mid-spawn), destroys and extends never touches a
// spawn in progress, never revives a destroyed sandbox, and leaves the
// runtimes and records in agreement.
func TestPeriodicReconcileRacesNothing(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReaperInterval = time.Millisecond; c.ReconcileInterval = time.Millisecond })
	ctx := context.Background()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.m.Run(runCtx); close(done) }()

	// One spawn held in the provider across many reconciles.
	gate := make(chan struct{})
	e.fake.spawnGate = gate // set before any Spawn runs; closed, it holds nothing
	held := make(chan error, 1)
	go func() {
		_, err := e.m.Spawn(ctx, SpawnRequest{OwnerID: "held"})
		held <- err
	}()
	var heldID string
	waitUntil(t, "the held spawn's record", func() bool {
		recs, _ := e.st.ListSandboxes(ctx, store.SandboxFilter{OwnerID: "held"})
		if len(recs) == 1 {
			heldID = recs[0].ID
		}
		return heldID != ""
	})
	for range 20 {
		if _, err := e.m.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if rec, _ := e.st.GetSandbox(ctx, heldID); rec.State != "creating" {
		t.Fatalf("reconcile touched a spawn in progress: state %s", rec.State)
	}
	close(gate)
	if err := <-held; err != nil {
		t.Fatalf("held spawn: %v", err)
	}

	var wg sync.WaitGroup
	destroyed := make(chan string, 200)
	for range 4 {
		wg.Go(func() {
			for range 25 {
				sb, err := e.m.Spawn(ctx, SpawnRequest{})
				if err != nil {
					t.Errorf("spawn: %v", err)
					return
				}
				if _, err := e.m.Extend(ctx, sb.ID, time.Hour); err != nil {
					t.Errorf("extend: %v", err)
				}
				if err := e.m.Destroy(ctx, sb.ID); err != nil {
					t.Errorf("destroy: %v", err)
				}
				destroyed <- sb.ID
			}
		})
	}
	wg.Wait()
	stop()
	<-done
	close(destroyed)
	for id := range destroyed {
		if rec, err := e.st.GetSandbox(ctx, id); err != nil || rec.State != "destroyed" || e.fake.has(id) {
			t.Errorf("%s: record %s (%v), runtime kept %v", id, rec.State, err, e.fake.has(id))
		}
	}
	if rec, _ := e.st.GetSandbox(ctx, heldID); rec.State != "running" || !e.fake.has(heldID) {
		t.Errorf("the held spawn ended %s, runtime %v", rec.State, e.fake.has(heldID))
	}
	live, _ := e.st.ListSandboxes(ctx, store.SandboxFilter{ExcludeDestroyed: true})
	if len(live) != 1 || e.fake.count() != 1 {
		t.Errorf("%d live records, %d runtimes; want the held one only", len(live), e.fake.count())
	}
}
