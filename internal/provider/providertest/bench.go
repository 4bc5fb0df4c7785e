package providertest

import (
	"context"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/latency"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// BenchPauseResume measures Pause and Resume of one sandbox of image on p
// that runs a busy command, and reports each one's p50/p95/p99 in
// milliseconds (pause-p50-ms, resume-p50-ms…). It skips a provider
// without the Pause capability.
func BenchPauseResume(b *testing.B, p provider.Provider, image string) {
	pz, ok := p.(provider.Pauser)
	if !ok || !p.Capabilities().Pause {
		b.Skipf("provider %q does not declare capability Pause", p.Name())
	}
	ctx := context.Background()
	id := NewID()
	if _, err := p.Spawn(ctx, provider.Spec{ID: id, Image: image}); err != nil {
		b.Fatalf("Spawn: %v", err)
	}
	b.Cleanup(func() {
		cctx, cancel := cleanupCtx()
		defer cancel()
		p.Destroy(cctx, id)
	})
	// Something to freeze: the counter of the conformance suite.
	runCtx, stop := context.WithCancel(ctx)
	b.Cleanup(stop)
	go execIn(runCtx, p, id, sh(counterScript))

	var pause, resume latency.Sample
	for b.Loop() {
		t0 := time.Now()
		if err := pz.Pause(ctx, id); err != nil {
			b.Fatalf("Pause: %v", err)
		}
		t1 := time.Now()
		if err := pz.Resume(ctx, id); err != nil {
			b.Fatalf("Resume: %v", err)
		}
		pause.Add(t1.Sub(t0))
		resume.Add(time.Since(t1))
	}
	pause.Report(b, "pause")
	resume.Report(b, "resume")
}
