package orchestrator

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
)

// TestOpenTerminalKeepsSandboxBusy: the sweeper leaves a sandbox with an
// open terminal alone, however quiet, and idles it once the terminal is
// closed and its timeout has passed again.
func TestOpenTerminalKeepsSandboxBusy(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "db"))
	t.Cleanup(func() { st.Close() })
	mp, err := mock.New(mock.Options{Dir: filepath.Join(dir, "mock")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mp.Close() })
	reg := provider.NewRegistry()
	reg.Register(mp)
	m := New(st, reg, Config{})
	ctx := context.Background()
	const idle = 300 * time.Millisecond
	sb, err := m.Spawn(ctx, SpawnRequest{Image: "any", IdleTimeout: idle, OnIdle: OnIdlePause})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Destroy(context.Background(), sb.ID) })

	term, err := m.OpenTerminal(ctx, sb.ID, TerminalRequest{Command: "sleep 60", Rows: 24, Cols: 80})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * idle)
	if n, err := m.SweepIdle(ctx); err != nil || n != 0 {
		t.Fatalf("sweep with an open terminal: acted on %d, %v; want none", n, err)
	}
	if got, _ := m.Get(ctx, sb.ID); got.State != string(provider.StateRunning) {
		t.Fatalf("state %s with an open terminal, want running", got.State)
	}
	term.Close()
	term.Close() // a second close does not end the activity twice
	time.Sleep(2 * idle)
	if n, err := m.SweepIdle(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the close: acted on %d, %v; want 1", n, err)
	}
	if got, _ := m.Get(ctx, sb.ID); got.State != string(provider.StatePaused) {
		t.Fatalf("state %s, want paused", got.State)
	}
}
