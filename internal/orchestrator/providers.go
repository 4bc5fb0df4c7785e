package orchestrator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// healthTimeout bounds one provider health probe, so that a hung runtime
// cannot hang a listing.
const healthTimeout = 5 * time.Second

// ProviderStatus describes one provider for the API and doctor.
type ProviderStatus struct {
	Name         string
	Healthy      bool
	Default      bool
	Capabilities provider.Capabilities
	// Problem says why the provider cannot serve: it declined to load on
	// this host, or its health check failed. Empty when healthy.
	Problem      string
	SandboxCount int
}

// Providers reports every provider, loaded or declined, probing health
// concurrently.
func (m *Manager) Providers(ctx context.Context) []ProviderStatus {
	entries := m.reg.Entries()
	out := make([]ProviderStatus, len(entries))
	defName := m.reg.DefaultName()
	if defName == "auto" {
		defName = m.reg.Pinned() // no probe here: the choice was made at start
	}
	counts := map[string]int{}
	m.mu.RLock()
	for _, sb := range m.live {
		counts[sb.Provider]++
	}
	m.mu.RUnlock()
	var wg sync.WaitGroup
	for i, e := range entries {
		out[i] = ProviderStatus{Name: e.Name, Default: e.Name == defName, SandboxCount: counts[e.Name]}
		if e.Reason != nil {
			out[i].Problem = e.Reason.Error()
			continue
		}
		out[i].Capabilities = e.Provider.Capabilities()
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, healthTimeout)
			defer cancel()
			if err := e.Provider.Health(hctx); err != nil {
				out[i].Problem = err.Error()
				return
			}
			out[i].Healthy = true
		})
	}
	wg.Wait()
	return out
}

// Provider reports one provider by name.
func (m *Manager) Provider(ctx context.Context, name string) (ProviderStatus, error) {
	for _, s := range m.Providers(ctx) {
		if s.Name == name {
			return s, nil
		}
	}
	return ProviderStatus{}, errdefs.New(errdefs.ErrProviderNotFound, "provider %q is not registered", name)
}

// TestProviders probes every provider and reports which are healthy.
func (m *Manager) TestProviders(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	for _, s := range m.Providers(ctx) {
		out[s.Name] = s.Healthy
	}
	return out
}

// Snapshots lists the snapshots of every provider that keeps them.
func (m *Manager) Snapshots(ctx context.Context) ([]provider.Snapshot, error) {
	var out []provider.Snapshot
	var errs []error
	for _, e := range m.reg.Entries() {
		sl, ok := e.Provider.(provider.SnapshotLister)
		if e.Provider == nil || !ok {
			continue
		}
		snaps, err := sl.Snapshots(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, snaps...)
	}
	slices.SortFunc(out, func(a, b provider.Snapshot) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Image, b.Image)
	})
	return out, errors.Join(errs...)
}
