package provider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Registry holds the providers this server can use, and the ones that
// declined to load on this host together with their reason.
type Registry struct {
	mu       sync.RWMutex
	entries  map[string]*entry
	order    []string
	fallback string
	pinned   string // auto's choice, once made
}

type entry struct {
	p      Provider
	reason error // non-nil when the provider declined to load
}

// Entry is one registered or declined provider.
type Entry struct {
	Name     string
	Provider Provider // nil when declined
	Reason   error    // why it declined to load; nil when loaded
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{entries: map[string]*entry{}} }

// Register adds a loaded provider. A second provider with the same name
// replaces the first.
func (r *Registry) Register(p Provider) { r.put(p.Name(), &entry{p: p}) }

// Decline records that the named provider cannot run on this host and why;
// Get then fails with errdefs.ErrProviderUnavailable carrying that reason.
func (r *Registry) Decline(name string, reason error) {
	if reason == nil {
		reason = fmt.Errorf("declined without a reason")
	}
	r.put(name, &entry{reason: reason})
}

func (r *Registry) put(name string, e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.entries[name]; !ok {
		r.order = append(r.order, name)
	}
	r.entries[name] = e
}

// Get returns the named loaded provider.
func (r *Registry) Get(name string) (Provider, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.entries[name]
	if !ok {
		return nil, errdefs.New(errdefs.ErrProviderNotFound, "provider %q is not registered", name)
	}
	if e.reason != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, e.reason, "provider %q cannot run on this host", name)
	}
	return e.p, nil
}

// Entries lists every provider, loaded or declined, in registration order.
func (r *Registry) Entries() []Entry {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Entry, 0, len(r.order))
	for _, n := range r.order {
		e := r.entries[n]
		out = append(out, Entry{Name: n, Provider: e.p, Reason: e.reason})
	}
	return out
}

// HealthTimeout bounds one health probe made by the registry, so that a
// hung runtime cannot hang the auto choice.
const HealthTimeout = 5 * time.Second

// SetDefault names the provider used when a request names none. The name
// "auto" (or "") means Resolve's choice, made once and then kept.
func (r *Registry) SetDefault(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fallback = name
	r.pinned = ""
}

// DefaultName returns the configured default ("auto" when unset).
func (r *Registry) DefaultName() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.fallback == "" {
		return "auto"
	}
	return r.fallback
}

// Pinned returns the provider auto resolved to, or "" when the default is
// not auto or nothing has been resolved yet.
func (r *Registry) Pinned() string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pinned
}

// Resolve fixes the default provider: a configured name is looked up; auto
// probes every loaded provider (each probe bounded by HealthTimeout) and
// pins the strongest healthy one, so that later calls never move to a
// weaker provider when that one falls ill. Call it once at start.
func (r *Registry) Resolve(ctx context.Context) (Provider, error) {
	if n := r.DefaultName(); n != "auto" {
		return r.Get(n)
	}
	p, err := r.Auto(ctx)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pinned == "" {
		r.pinned = p.Name()
	}
	return r.entries[r.pinned].p, nil
}

// Default returns the default provider without probing it: the configured
// one, or the one auto pinned. When auto has pinned nothing yet (no
// provider was healthy at start) it resolves now, and pins that.
func (r *Registry) Default(ctx context.Context) (Provider, error) {
	if n := r.DefaultName(); n != "auto" {
		return r.Get(n)
	}
	if n := r.Pinned(); n != "" {
		return r.Get(n)
	}
	return r.Resolve(ctx)
}

// Auto returns the loaded, healthy provider with the strongest isolation;
// ties go to the one registered first. It pins nothing: see Resolve.
func (r *Registry) Auto(ctx context.Context) (Provider, error) {
	var candidates []Provider
	for _, e := range r.Entries() {
		if e.Provider != nil {
			candidates = append(candidates, e.Provider)
		}
	}
	slices.SortStableFunc(candidates, func(a, b Provider) int {
		return int(b.Capabilities().Isolation) - int(a.Capabilities().Isolation)
	})
	var errs []error
	for _, p := range candidates {
		if err := CheckHealth(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		return p, nil
	}
	if len(errs) > 0 {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, errors.Join(errs...), "no provider is healthy")
	}
	return nil, errdefs.New(errdefs.ErrProviderUnavailable, "no provider is loaded")
}

// CheckHealth probes p with HealthTimeout and names p in the error.
func CheckHealth(ctx context.Context, p Provider) error {
	hctx, cancel := context.WithTimeout(ctx, HealthTimeout)
	defer cancel()
	if err := p.Health(hctx); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "provider %q is unhealthy", p.Name())
	}
	return nil
}
