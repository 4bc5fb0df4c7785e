package orchestrator

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// TestIdleAcrossReplicas: a sandbox kept busy only through replica B
// (execs, then one long operation under way) is left alone by A's idle
// sweep however long past its timeout A has served nothing; once it is
// idle everywhere, A pauses it (on_idle pause) or destroys it (destroy).
func TestIdleAcrossReplicas(t *testing.T) {
	dsn := pgtest.DSN(t)
	pg, err := postgres.Open(t.Context(), postgres.Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	mp, err := mock.New(mock.Options{Dir: filepath.Join(t.TempDir(), "mock")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mp.Close() })
	reg := provider.NewRegistry()
	reg.Register(mp)
	c := newClock()
	mk := func(holder string) *Manager {
		return New(pg, reg, Config{Now: c.Now, DefaultImage: "any", InstanceID: testInstance, Shared: true,
			Leases: lease.New(pg, holder, 5*time.Second, nil)})
	}
	a, b := mk("replica-a"), mk("replica-b")
	ctx := t.Context()
	const idle = time.Minute
	state := func(id string) string {
		t.Helper()
		sb, err := pg.GetSandbox(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return sb.State
	}
	sweepA := func(want int, why string) {
		t.Helper()
		if n, err := a.SweepIdle(ctx); err != nil || n != want {
			t.Fatalf("A's idle sweep %s: acted on %d, %v; want %d", why, n, err, want)
		}
	}

	sb, err := a.Spawn(ctx, SpawnRequest{IdleTimeout: idle, OnIdle: OnIdlePause})
	if err != nil {
		t.Fatal(err)
	}
	for range 6 { // 2 minutes of execs through B only
		c.Add(20 * time.Second)
		if _, err := b.Exec(ctx, sb.ID, ExecRequest{Command: "true"}); err != nil {
			t.Fatalf("exec through B: %v", err)
		}
		sweepA(0, "while B serves execs")
	}
	// A long operation under way on B is activity for as long as it runs.
	b.ops.begin(sb.ID)
	for range 4 {
		c.Add(40 * time.Second)
		if err := b.flushActivity(ctx); err != nil {
			t.Fatal(err)
		}
		sweepA(0, "while an operation runs on B")
	}
	b.ops.end(sb.ID)
	if got := state(sb.ID); got != string(provider.StateRunning) {
		t.Fatalf("state %s after the busy phase, want running", got)
	}
	// Idle everywhere now: acted on once the timeout (plus the lag the
	// stored activity may have) has passed, not before.
	c.Add(idle)
	sweepA(0, "one idle timeout after B's last write (within its lag)")
	c.Add(a.activitySlack(idle))
	sweepA(1, "once idle everywhere")
	if got := state(sb.ID); got != string(provider.StatePaused) {
		t.Fatalf("state %s after the sweep, want paused", got)
	}
	// Used through B again, it resumes and its idle clock restarts.
	if _, err := b.Exec(ctx, sb.ID, ExecRequest{Command: "true"}); err != nil {
		t.Fatalf("exec through B after the pause: %v", err)
	}
	if got := state(sb.ID); got != string(provider.StateRunning) {
		t.Fatalf("state %s after an exec, want running", got)
	}

	gone, err := a.Spawn(ctx, SpawnRequest{IdleTimeout: idle, OnIdle: OnIdleDestroy})
	if err != nil {
		t.Fatal(err)
	}
	c.Add(50 * time.Second)
	if _, err := b.Exec(ctx, gone.ID, ExecRequest{Command: "true"}); err != nil {
		t.Fatalf("exec through B: %v", err)
	}
	c.Add(50 * time.Second)
	if n, err := a.SweepIdle(ctx); err != nil || n != 1 {
		// sb (resumed 100s ago) is idle again; gone is not.
		t.Fatalf("A's sweep: acted on %d, %v; want 1 (the resumed one)", n, err)
	}
	if got := state(gone.ID); got != string(provider.StateRunning) {
		t.Fatalf("on_idle destroy sandbox %s 50s after B's exec, want running", got)
	}
	c.Add(idle)
	sweepA(1, "once the destroy one is idle")
	if got := state(gone.ID); got != string(provider.StateDestroyed) {
		t.Fatalf("on_idle destroy sandbox %s, want destroyed", got)
	}
	if err := a.Destroy(ctx, sb.ID); err != nil {
		t.Error(err)
	}
}
