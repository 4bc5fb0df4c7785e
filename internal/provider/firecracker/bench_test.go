//go:build linux

package firecracker

import (
	"io"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// The numbers these report are of the FAKE VMM on this machine: they time
// the provider's own work (drive clone, VMM API, vsock, agent) around a
// guest that is a local process, not a microVM boot.

func benchProvider(b *testing.B, snapshots bool, opts ...func(*Config)) *Provider {
	cfg, _ := fakeConfig(b, shortDir(b))
	cfg.NoSnapshots = !snapshots
	for _, o := range opts {
		o(&cfg)
	}
	cfg.Logger = nil
	p, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	// Build the image and (with snapshots) the base snapshot outside the
	// timed loop.
	id := providertest.NewID()
	if _, err := p.Spawn(b.Context(), provider.Spec{ID: id, Image: testEnv.image}); err != nil {
		b.Fatal(err)
	}
	p.Destroy(b.Context(), id)
	return p
}

func benchSpawn(b *testing.B, snapshots bool) {
	p := benchProvider(b, snapshots)
	for b.Loop() {
		id := providertest.NewID()
		if _, err := p.Spawn(b.Context(), provider.Spec{ID: id, Image: testEnv.image}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		p.Destroy(b.Context(), id)
		b.StartTimer()
	}
}

func BenchmarkFakeSpawnColdBoot(b *testing.B) { benchSpawn(b, false) }
func BenchmarkFakeSpawnRestore(b *testing.B)  { benchSpawn(b, true) }

func BenchmarkFakeExec(b *testing.B) {
	p := benchProvider(b, true)
	id := providertest.NewID()
	if _, err := p.Spawn(b.Context(), provider.Spec{ID: id, Image: testEnv.image}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Destroy(b.Context(), id) })
	for b.Loop() {
		if _, err := p.Exec(b.Context(), id, provider.ExecRequest{Argv: []string{"true"}}, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFakeDestroy(b *testing.B) {
	p := benchProvider(b, true)
	for b.Loop() {
		b.StopTimer()
		id := providertest.NewID()
		if _, err := p.Spawn(b.Context(), provider.Spec{ID: id, Image: testEnv.image}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		p.Destroy(b.Context(), id)
	}
}

// BenchmarkFakePauseResume times PATCH /vm Paused and Resumed (and the
// guest clock refresh on resume) against the fake VMM.
func BenchmarkFakePauseResume(b *testing.B) {
	providertest.BenchPauseResume(b, benchProvider(b, true), testEnv.image)
}

// BenchmarkFakePauseResumeToDisk times Pause and Resume with PauseToDisk:
// PATCH /vm Paused, a full snapshot into the sandbox's directory (the fake
// writes the guest's file tree as its memory) and the VMM's exit; then a
// new VMM, the snapshot load (the fake unpacks the tree and starts init
// again), the agent's readiness and the guest refresh.
func BenchmarkFakePauseResumeToDisk(b *testing.B) {
	p := benchProvider(b, true, func(c *Config) { c.PauseToDisk = true })
	providertest.BenchPauseResume(b, p, testEnv.image)
}
