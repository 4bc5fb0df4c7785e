package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Metadata keys of a member's record until it is claimed (the claim
// replaces the metadata with the caller's): which pool it belongs to and
// which template version it was set up from, so that a restart can give
// it back to its pool or replace it.
const (
	MetaPool            = "stacyvm.pool"
	MetaTemplateVersion = "stacyvm.pool.template_version"
)

// Pools hands out warm pool members; package pool implements it.
type Pools interface {
	// Claim is called by Spawn with the resolved request (template and
	// defaults applied, provider named). It returns a claimed sandbox and
	// true; false when no pool matches, or the matching pool is empty and
	// its policy is to spawn cold. An error ends the spawn (an empty pool
	// whose policy is reject, a limit).
	Claim(ctx context.Context, req SpawnRequest) (store.Sandbox, bool, error)
	// Status reports every pool, by name. With a shared store its
	// gauges (ready, creating) are counted in the store, so every replica
	// reports the same.
	Status(ctx context.Context) ([]PoolStatus, error)
}

// PoolStatus is one warm pool as GET /pool/status reports it.
type PoolStatus struct {
	Name     string
	Template string // "" for a configured pool
	Image    string
	Provider string
	MemoryMB int
	VCPUs    int
	Policy   string
	Target   int // members it keeps ready
	Ready    int // members ready to claim
	Creating int // members being spawned
	Claimed  int64
	Misses   int64 // spawns that matched while it was empty
	Failures int64 // refill spawns that failed
	// Problem is why the pool cannot fill now ("" when it can): its
	// provider is unavailable, its last refill failed.
	Problem string
}

// SetPools makes Spawn claim members of p. Call it before serving.
func (m *Manager) SetPools(p Pools) { m.pools = p }

// PoolStatus reports every warm pool, by name; none without pools.
func (m *Manager) PoolStatus(ctx context.Context) ([]PoolStatus, error) {
	if m.pools == nil {
		return nil, nil
	}
	return m.pools.Status(ctx)
}

// Shared reports whether the Manager runs as one of several replicas on a
// shared store (docs/scale-out.md): then the pools refill under a lease
// and claim from the store's records.
func (m *Manager) Shared() bool { return m.shared() }

// PoolSpec is what a pool's members are made of. ResolvePool fills it the
// way Spawn resolves a request, so that a member and a spawn that asks for
// the same things compare equal.
type PoolSpec struct {
	Template        string
	TemplateVersion int // set by ResolvePool for template pools
	Image           string
	Provider        string
	MemoryMB        int
	VCPUs           int
}

// ResolvePool applies the template and the defaults to spec and names its
// provider, as Spawn does for a request.
func (m *Manager) ResolvePool(ctx context.Context, spec PoolSpec) (PoolSpec, error) {
	req, tmpl, _, err := m.resolveSpawn(ctx, SpawnRequest{
		Template: spec.Template, Image: spec.Image, Provider: spec.Provider, MemoryMB: spec.MemoryMB, VCPUs: spec.VCPUs,
	})
	if err != nil {
		return PoolSpec{}, err
	}
	out := PoolSpec{Template: req.Template, Image: req.Image, Provider: req.Provider, MemoryMB: req.MemoryMB, VCPUs: req.VCPUs}
	if tmpl != nil {
		out.TemplateVersion = tmpl.Version
	}
	return out, nil
}

// SpawnMember spawns one member of the pool called pool: a sandbox made of
// spec, its template's setup run, left in state pooled. A member of a
// template that changed since spec was resolved is refused (conflict):
// its setup would not be the one spec was resolved from.
func (m *Manager) SpawnMember(ctx context.Context, pool string, spec PoolSpec) (store.Sandbox, error) {
	req, tmpl, p, err := m.resolveSpawn(ctx, SpawnRequest{
		Template: spec.Template, Image: spec.Image, Provider: spec.Provider, MemoryMB: spec.MemoryMB, VCPUs: spec.VCPUs,
	})
	if err != nil {
		return store.Sandbox{}, err
	}
	if tmpl != nil && tmpl.Version != spec.TemplateVersion {
		return store.Sandbox{}, errdefs.New(errdefs.ErrConflict, "template %q is at version %d, not %d", tmpl.Name, tmpl.Version, spec.TemplateVersion)
	}
	req.Metadata = map[string]string{MetaPool: pool}
	if tmpl != nil {
		req.Metadata[MetaTemplateVersion] = strconv.Itoa(tmpl.Version)
	}
	req.TTL = 0 // a member never expires; its TTL starts at the claim
	return m.spawn(ctx, req, tmpl, p, pool)
}

// ClaimMember hands member id to the caller of req: under the member's
// lock, once the owner's limit admits it, one compare-and-set moves its
// record from pooled to running with req's owner, metadata, environment
// and idle settings, and its TTL starting now. A member that is no longer
// pooled (claimed, replaced, reconciled away) is errdefs.ErrConflict; the
// caller tries another.
func (m *Manager) ClaimMember(ctx context.Context, id string, req SpawnRequest) (store.Sandbox, error) {
	unlock, err := m.lockMember(ctx, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	defer unlock()
	sb, err := m.store.GetSandbox(ctx, id)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return store.Sandbox{}, errdefs.New(errdefs.ErrConflict, "pool member %s is gone", id)
		}
		return store.Sandbox{}, err
	}
	if sb.State != string(provider.StatePooled) {
		return store.Sandbox{}, errdefs.New(errdefs.ErrConflict, "pool member %s is %s, not pooled", id, sb.State)
	}
	pool := sb.Metadata[MetaPool]
	sb.OwnerID = req.OwnerID
	sb.Metadata = maps.Clone(req.Metadata)
	if len(req.Env) > 0 {
		if sb.Env == nil {
			sb.Env = map[string]string{}
		}
		maps.Copy(sb.Env, req.Env)
	}
	sb.IdleTimeout, sb.OnIdle = 0, ""
	if req.IdleTimeout > 0 {
		sb.IdleTimeout, sb.OnIdle = req.IdleTimeout, req.OnIdle
	}
	sb.ExpiresAt = m.now().Add(req.TTL)
	if err := m.reserveClaim(sb); err != nil {
		return store.Sandbox{}, err
	}
	defer m.spawnDone(sb.ID)
	sb, err = m.transition(ctx, sb, change{to: provider.StateRunning, reason: "claimed from pool " + pool,
		data: map[string]string{"pool": pool}, ifUnchanged: true})
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("claim pool member %s: %w", id, err)
	}
	m.spawns.Add(1)
	return sb, nil
}

// lockMember locks member id for a claim. With a shared store, a member
// whose lease another replica holds (claiming or replacing it) is a
// conflict at once rather than a wait: the caller tries another member.
func (m *Manager) lockMember(ctx context.Context, id string) (func(), error) {
	unlock, err := m.locks.lock(ctx, id)
	if err != nil || !m.shared() {
		return unlock, err
	}
	release, err := m.sandboxLease(ctx, id, false)
	if err != nil {
		unlock()
		if errors.Is(err, errdefs.ErrConflict) {
			return nil, errdefs.Wrap(errdefs.ErrConflict, err, "pool member %s is busy on another replica", id)
		}
		return nil, err
	}
	return func() { release(); unlock() }, nil
}

// reserveClaim admits a member's claim under the limits: the member
// already holds its place under max_sandboxes (pooled counts), so only
// its new owner's limit is checked, and the record is marked as owned by
// this claim so that reconcile leaves it alone until the claim is written.
func (m *Manager) reserveClaim(sb store.Sandbox) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	total, owned := 0, 0
	for id, s := range m.live {
		if id == sb.ID {
			continue
		}
		total++
		if sb.OwnerID != "" && s.OwnerID == sb.OwnerID {
			owned++
		}
	}
	if _, counted := m.live[sb.ID]; !counted && m.cfg.MaxSandboxes > 0 && total >= m.cfg.MaxSandboxes {
		return errdefs.WithHint(errdefs.New(errdefs.ErrResourceLimit,
			"the server already runs its maximum of %d sandboxes", m.cfg.MaxSandboxes),
			"destroy sandboxes you no longer need, or retry later")
	}
	if m.cfg.MaxPerOwner > 0 && sb.OwnerID != "" && owned >= m.cfg.MaxPerOwner {
		return errdefs.WithHint(errdefs.New(errdefs.ErrResourceLimit,
			"owner %q already has its maximum of %d sandboxes", sb.OwnerID, m.cfg.MaxPerOwner),
			"destroy sandboxes you no longer need, or retry later")
	}
	m.spawning[sb.ID] = struct{}{}
	return nil
}

// DestroyMember removes a member that is still pooled (pooled →
// destroying → destroyed); one claimed meanwhile is errdefs.ErrConflict
// and is left alone.
func (m *Manager) DestroyMember(ctx context.Context, id, reason string) error {
	sb, err := m.store.GetSandbox(ctx, id)
	if err != nil {
		return err
	}
	if sb.State != string(provider.StatePooled) {
		return errdefs.New(errdefs.ErrConflict, "pool member %s is %s, not pooled", id, sb.State)
	}
	return m.destroy(ctx, sb, reason, events.SandboxDestroyed, string(provider.StatePooled))
}

// Members returns the records in state pooled.
func (m *Manager) Members(ctx context.Context) ([]store.Sandbox, error) {
	return m.store.ListSandboxes(ctx, store.SandboxFilter{States: []string{string(provider.StatePooled)}})
}

// PoolRecords returns the records of pool members, ready (pooled) or
// being spawned (creating), on every replica.
func (m *Manager) PoolRecords(ctx context.Context) ([]store.Sandbox, error) {
	recs, err := m.store.ListSandboxes(ctx, store.SandboxFilter{
		States: []string{string(provider.StatePooled), string(provider.StateCreating)}})
	if err != nil {
		return nil, err
	}
	out := recs[:0]
	for _, sb := range recs {
		if sb.Metadata[MetaPool] != "" {
			out = append(out, sb)
		}
	}
	return out, nil
}

// ImageVersion is the identity of what image names now on providerName,
// "" when that provider cannot tell (provider.ImageVersioner).
func (m *Manager) ImageVersion(ctx context.Context, providerName, image string) (string, error) {
	p, err := m.reg.Get(providerName)
	if err != nil {
		return "", err
	}
	v, ok := p.(provider.ImageVersioner)
	if !ok {
		return "", nil
	}
	return v.ImageVersion(ctx, image)
}

// SandboxImageVersion is the identity of the image sb's runtime was made
// from, "" when its provider cannot tell.
func (m *Manager) SandboxImageVersion(ctx context.Context, sb store.Sandbox) (string, error) {
	p, err := m.reg.Get(sb.Provider)
	if err != nil {
		return "", err
	}
	v, ok := p.(provider.ImageVersioner)
	if !ok {
		return "", nil
	}
	return v.SandboxImageVersion(ctx, sb.ID)
}
