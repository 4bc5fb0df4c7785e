package orchestrator

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/latency"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/store"
)

// BenchmarkExecOverhead measures `true` through the Manager and through
// the mock provider directly, on the same sandbox, so that the difference
// is the orchestrator's own cost per exec.
func BenchmarkExecOverhead(b *testing.B) {
	m, mp, sb := benchSandbox(b)
	ctx := context.Background()

	var manager, raw *latency.Sample
	b.Run("manager", func(b *testing.B) {
		manager = latency.Measure(b, "", func() error {
			_, err := m.Exec(ctx, sb.ID, ExecRequest{Command: "true"})
			return err
		})
	})
	b.Run("provider", func(b *testing.B) {
		req := provider.ExecRequest{Argv: provider.ShellArgv("true"), Timeout: time.Minute}
		raw = latency.Measure(b, "", func() error {
			_, err := mp.Exec(ctx, sb.ID, req, io.Discard, io.Discard)
			return err
		})
	})
	if manager != nil && raw != nil {
		b.Logf("orchestrator overhead per exec: p50 %v, p99 %v",
			manager.Percentile(0.5)-raw.Percentile(0.5), manager.Percentile(0.99)-raw.Percentile(0.99))
	}
}

// BenchmarkPauseResumeManager times Pause and Resume through the Manager
// on the mock: the provider's signals plus the lifecycle's four
// transitions (each a store write). Compare with the mock's own
// BenchmarkPauseResume for the lifecycle's share.
func BenchmarkPauseResumeManager(b *testing.B) {
	m, _, sb := benchSandbox(b)
	ctx := context.Background()
	var pause, resume latency.Sample
	for b.Loop() {
		t0 := time.Now()
		if _, err := m.Pause(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := m.Resume(ctx, sb.ID); err != nil {
			b.Fatal(err)
		}
		pause.Add(t1.Sub(t0))
		resume.Add(time.Since(t1))
	}
	pause.Report(b, "pause")
	resume.Report(b, "resume")
}

// benchSandbox is one mock sandbox behind a Manager on a fresh store,
// destroyed when the benchmark ends.
func benchSandbox(b *testing.B) (*Manager, *mock.Provider, store.Sandbox) {
	dir := b.TempDir()
	st := openStore(b, filepath.Join(dir, "db"))
	b.Cleanup(func() { st.Close() })
	mp, err := mock.New(mock.Options{Dir: filepath.Join(dir, "mock")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { mp.Close() })
	reg := provider.NewRegistry()
	reg.Register(mp)
	m := New(st, reg, Config{})
	sb, err := m.Spawn(context.Background(), SpawnRequest{Image: "any"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Destroy(context.Background(), sb.ID) })
	return m, mp, sb
}
