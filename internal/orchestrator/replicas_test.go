package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// replicas returns two Managers sharing one PostgreSQL store and one
// fake runtime (as replicas share a database and a dockerd), each with
// its own lease holder.
func replicas(t *testing.T, mod func(*Config)) (a, b *Manager, st store.Store, fake *fakeProvider) {
	t.Helper()
	dsn := pgtest.DSN(t)
	pg, err := postgres.Open(t.Context(), postgres.Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	fake = newFake("fake")
	reg := provider.NewRegistry()
	reg.Register(fake)
	c := newClock()
	mk := func(holder string) *Manager {
		cfg := Config{Now: c.Now, DefaultImage: "img:1", InstanceID: testInstance, Shared: true,
			Leases: lease.New(pg, holder, 5*time.Second, nil)}
		if mod != nil {
			mod(&cfg)
		}
		return New(pg, reg, cfg)
	}
	return mk("replica-a"), mk("replica-b"), pg, fake
}

// TestReplicasServeEachOthersSandboxes: what one replica spawns, the
// other finds, runs commands in and destroys; the first then sees it
// destroyed rather than trusting what it remembered.
func TestReplicasServeEachOthersSandboxes(t *testing.T) {
	a, b, _, fake := replicas(t, nil)
	ctx := t.Context()
	sb, err := a.Spawn(ctx, SpawnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, sb.ID); err != nil || got.State != string(provider.StateRunning) {
		t.Fatalf("B.Get = %+v, %v", got, err)
	}
	if _, err := b.Exec(ctx, sb.ID, ExecRequest{Command: "echo hi"}); err != nil {
		t.Fatalf("B.Exec: %v", err)
	}
	if _, err := b.Extend(ctx, sb.ID, time.Hour); err != nil {
		t.Fatalf("B.Extend: %v", err)
	}
	if err := b.Destroy(ctx, sb.ID); err != nil {
		t.Fatalf("B.Destroy: %v", err)
	}
	if _, err := a.Get(ctx, sb.ID); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("A.Get after B destroyed = %v, want destroyed", err)
	}
	if _, err := a.Exec(ctx, sb.ID, ExecRequest{Command: "true"}); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("A.Exec after B destroyed = %v, want destroyed", err)
	}
	if _, err := a.Extend(ctx, sb.ID, time.Hour); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("A.Extend after B destroyed = %v, want destroyed (never revived)", err)
	}
	if fake.count() != 0 {
		t.Errorf("%d runtimes left", fake.count())
	}
}

// TestReconcileSparesAnotherReplicasSpawn: while A's spawn is in flight,
// B's reconcile leaves its record and runtime alone; a record caught in
// creating whose replica died (no lease) is cleaned up.
func TestReconcileSparesAnotherReplicasSpawn(t *testing.T) {
	a, b, st, fake := replicas(t, nil)
	ctx := t.Context()
	gate := make(chan struct{})
	fake.spawnGate = gate
	type result struct {
		sb  store.Sandbox
		err error
	}
	done := make(chan result, 1)
	go func() {
		sb, err := a.Spawn(context.WithoutCancel(ctx), SpawnRequest{})
		done <- result{sb, err}
	}()
	var inflight store.Sandbox
	deadline := time.Now().Add(30 * time.Second)
	for inflight.ID == "" {
		list, err := st.ListSandboxes(ctx, store.SandboxFilter{States: []string{string(provider.StateCreating)}})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 {
			inflight = list[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("A's spawn never recorded its sandbox")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A dead replica's half-made sandbox: a creating record and a
	// runtime, and nobody holding its lease.
	dead := store.Sandbox{ID: "sb-dead", Provider: "fake", Image: "img:1", State: string(provider.StateCreating)}
	if err := st.CreateSandbox(ctx, dead); err != nil {
		t.Fatal(err)
	}
	fake.addRuntime(provider.Info{ID: dead.ID, State: provider.StateRunning, Instance: testInstance})

	if _, ran, err := b.ReconcileOnce(ctx); err != nil || !ran {
		t.Fatalf("B.ReconcileOnce = ran %v, %v", ran, err)
	}
	if got, err := st.GetSandbox(ctx, inflight.ID); err != nil || got.State != string(provider.StateCreating) {
		t.Errorf("A's spawn in flight after B's reconcile: %+v, %v; want still creating", got, err)
	}
	if got, err := st.GetSandbox(ctx, dead.ID); err != nil || got.State != string(provider.StateDestroyed) || fake.has(dead.ID) {
		t.Errorf("the dead replica's sandbox: %+v, %v (runtime left: %v); want destroyed", got, err, fake.has(dead.ID))
	}
	close(gate)
	r := <-done
	if r.err != nil || r.sb.State != string(provider.StateRunning) || !fake.has(r.sb.ID) {
		t.Fatalf("A's spawn = %+v, %v; want running with its runtime", r.sb, r.err)
	}
}

// TestRunOnceAcrossReplicas: while A holds the reaper lease, B's turn is
// skipped; once A lets go, B runs.
func TestRunOnceAcrossReplicas(t *testing.T) {
	a, b, _, _ := replicas(t, nil)
	ctx := t.Context()
	ranB := false
	ran, err := a.RunOnce(ctx, LeaseReaper, func(ctx context.Context) error {
		ok, err := b.RunOnce(ctx, LeaseReaper, func(context.Context) error { ranB = true; return nil })
		if ok || err != nil || ranB {
			t.Errorf("B.RunOnce while A reaps = %v, %v (ran %v); want skipped", ok, err, ranB)
		}
		return nil
	})
	if !ran || err != nil {
		t.Fatalf("A.RunOnce = %v, %v", ran, err)
	}
	if ran, err := b.RunOnce(ctx, LeaseReaper, func(context.Context) error { return nil }); !ran || err != nil {
		t.Errorf("B.RunOnce after A = %v, %v; want ran", ran, err)
	}
}

// TestSharedLimits: the limits count every replica's sandboxes.
func TestSharedLimits(t *testing.T) {
	a, b, _, _ := replicas(t, func(c *Config) { c.MaxSandboxes, c.MaxPerOwner = 3, 1 })
	ctx := t.Context()
	for i, m := range []*Manager{a, b, a} {
		if _, err := m.Spawn(ctx, SpawnRequest{OwnerID: fmt.Sprint("owner-", i)}); err != nil {
			t.Fatalf("spawn %d: %v", i, err)
		}
	}
	if _, err := b.Spawn(ctx, SpawnRequest{}); !errors.Is(err, errdefs.ErrResourceLimit) {
		t.Errorf("a fourth sandbox through B: %v, want the deployment's limit of 3", err)
	}
	if _, err := b.Spawn(ctx, SpawnRequest{OwnerID: "owner-0"}); !errors.Is(err, errdefs.ErrResourceLimit) {
		t.Errorf("owner-0's second sandbox through B: %v, want its limit of 1", err)
	}
}

// TestSharedLimitsConcurrent: spawns racing through two replicas against
// the limits end with exactly the limit running; the rest are refused
// with nothing left behind.
func TestSharedLimitsConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mod   func(*Config)
		owner string
		want  int
	}{
		{"max_sandboxes", func(c *Config) { c.MaxSandboxes = 4 }, "", 4},
		{"max_per_owner", func(c *Config) { c.MaxPerOwner = 2 }, "racer", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b, st, fake := replicas(t, tc.mod)
			const spawns = 16
			errs := make(chan error, spawns)
			for i := range spawns {
				m := a
				if i%2 == 1 {
					m = b
				}
				go func() {
					_, err := m.Spawn(t.Context(), SpawnRequest{OwnerID: tc.owner})
					errs <- err
				}()
			}
			won := 0
			for range spawns {
				switch err := <-errs; {
				case err == nil:
					won++
				case !errors.Is(err, errdefs.ErrResourceLimit):
					t.Errorf("spawn failed other than by the limit: %v", err)
				}
			}
			if won != tc.want {
				t.Errorf("%d spawns succeeded, want exactly %d", won, tc.want)
			}
			counts, err := st.CountSandboxes(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if counts[string(provider.StateRunning)] != tc.want || len(counts) != 1 {
				t.Errorf("records by state %v, want %d running and nothing else", counts, tc.want)
			}
			if fake.count() != tc.want {
				t.Errorf("%d runtimes, want %d", fake.count(), tc.want)
			}
		})
	}
}
