// Package orchestrator owns sandbox lifecycles: it validates requests,
// chooses providers, keeps the store and the runtimes in agreement (spawn,
// destroy, the TTL reaper, reconcile after a restart), applies templates,
// enforces limits and publishes events. The API calls it; it calls
// providers and the store.
package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/membudget"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Config tunes a Manager. Zero values take the defaults in DefaultConfig.
type Config struct {
	// Environments resolves a template's environment (a spec or build
	// ID) to the image to spawn; nil when the server builds none.
	Environments       EnvironmentResolver
	DefaultTTL         time.Duration
	MaxTTL             time.Duration
	DefaultExecTimeout time.Duration
	MaxExecTimeout     time.Duration
	MaxSandboxes       int // live sandboxes at once; 0 means no limit
	MaxPerOwner        int // live sandboxes per owner; 0 means no limit
	ReaperInterval     time.Duration
	// Retention is how long destroyed records are kept; the reaper
	// purges older ones with their history.
	Retention time.Duration
	// ReconcileInterval is how often Run reconciles while serving.
	ReconcileInterval time.Duration
	DefaultImage      string
	DefaultMemoryMB   int
	DefaultVCPUs      int
	// Orphans says what reconcile does with a runtime that has no record:
	// OrphansAdopt (default) or OrphansDestroy.
	Orphans string
	// InstanceID is this server's instance id (kept in its database):
	// every runtime it spawns carries it, and reconcile adopts or removes
	// only runtimes that carry it.
	InstanceID string
	// LegacyRuntimes says what reconcile does with a runtime without a
	// record that carries no instance id (made before instance ids):
	// LegacyIgnore (default: leave it alone, another server may own it)
	// or LegacyClaim (treat it as this server's: Orphans applies).
	LegacyRuntimes string
	// MaxOutputBytes caps what a buffered exec keeps of each stream; the
	// rest is dropped and the result says it was truncated.
	MaxOutputBytes int
	// DestroyTimeout bounds one provider Destroy call, whether or not the
	// provider honours its context: a hung runtime call then fails the
	// destroy (503, retry later) instead of holding its sandbox, the
	// reaper or a shutdown forever.
	DestroyTimeout time.Duration
	// DefaultIdleTimeout is the idle timeout of sandboxes whose spawn and
	// template name none (0: none); DefaultOnIdle what then happens to
	// them, OnIdlePause (default) or OnIdleDestroy.
	DefaultIdleTimeout time.Duration
	DefaultOnIdle      string
	// ManualResume makes guest operations (exec, files, terminals) on a
	// paused sandbox a conflict (409) instead of resuming it first.
	ManualResume bool
	// MemoryBudget, when set, bounds the memory that buffered exec output
	// holds across concurrent commands; nil means no bound beyond
	// MaxOutputBytes per stream.
	MemoryBudget *membudget.Budget

	// Leases, when set, runs the reaper, the idle sweep and reconcile
	// under store leases (RunOnce): of the replicas sharing the store, one
	// at a time does each.
	Leases *lease.Runner
	// Shared says other replicas use the same store (PostgreSQL): then
	// nothing relies on what only this process knows (replicas.go). It
	// needs Leases.
	Shared bool
	// ActivityInterval is, with Shared, how often at most this replica
	// records one sandbox's activity in the store for the idle sweep of
	// every replica (less for short idle timeouts: a quarter of the
	// timeout, at least a second). Default 5s.
	ActivityInterval time.Duration

	Logger   *slog.Logger
	Observer Observer
	Now      func() time.Time
}

// Orphan policies.
const (
	OrphansAdopt   = "adopt"
	OrphansDestroy = "destroy"
)

// Policies for runtimes without an instance id.
const (
	LegacyIgnore = "ignore"
	LegacyClaim  = "claim"
)

// DefaultConfig is what the zero Config means.
func DefaultConfig() Config {
	return Config{
		DefaultTTL:         30 * time.Minute,
		MaxTTL:             24 * time.Hour,
		DefaultExecTimeout: 60 * time.Second,
		MaxExecTimeout:     time.Hour,
		MaxSandboxes:       100,
		ReaperInterval:     30 * time.Second,
		Retention:          7 * 24 * time.Hour,
		ReconcileInterval:  time.Minute,
		DefaultMemoryMB:    512,
		DefaultVCPUs:       1,
		Orphans:            OrphansAdopt,
		MaxOutputBytes:     16 << 20,
		DestroyTimeout:     time.Minute,
		DefaultOnIdle:      OnIdlePause,
		ActivityInterval:   5 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.DefaultTTL <= 0 {
		c.DefaultTTL = d.DefaultTTL
	}
	if c.MaxTTL <= 0 {
		c.MaxTTL = d.MaxTTL
	}
	if c.DefaultExecTimeout <= 0 {
		c.DefaultExecTimeout = d.DefaultExecTimeout
	}
	if c.MaxExecTimeout <= 0 {
		c.MaxExecTimeout = d.MaxExecTimeout
	}
	if c.ReaperInterval <= 0 {
		c.ReaperInterval = d.ReaperInterval
	}
	if c.Retention <= 0 {
		c.Retention = d.Retention
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = d.ReconcileInterval
	}
	if c.DefaultMemoryMB <= 0 {
		c.DefaultMemoryMB = d.DefaultMemoryMB
	}
	if c.DefaultVCPUs <= 0 {
		c.DefaultVCPUs = d.DefaultVCPUs
	}
	if c.Orphans == "" {
		c.Orphans = d.Orphans
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = d.MaxOutputBytes
	}
	if c.DestroyTimeout <= 0 {
		c.DestroyTimeout = d.DestroyTimeout
	}
	if c.DefaultOnIdle == "" {
		c.DefaultOnIdle = d.DefaultOnIdle
	}
	if c.ActivityInterval <= 0 {
		c.ActivityInterval = d.ActivityInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Observer receives measurements; the metrics package implements it. Calls
// must be cheap and must not block.
type Observer interface {
	// Op records one provider operation ("spawn", "exec", "file_write"…).
	Op(providerName, op string, d time.Duration, err error)
	// Action records what the reaper or reconcile did ("expired",
	// "adopted", "destroyed", "marked_error"…).
	Action(source, action string)
	// Transition records one lifecycle transition of a sandbox.
	Transition(from, to string)
}

type nopObserver struct{}

func (nopObserver) Op(string, string, time.Duration, error) {}
func (nopObserver) Action(string, string)                   {}
func (nopObserver) Transition(string, string)               {}

// Manager is the orchestrator. Create it with New, call Reconcile once
// before serving, then Run for the reaper.
type Manager struct {
	store store.Store
	reg   *provider.Registry
	cfg   Config
	bus   *events.Bus
	log   *slog.Logger
	start time.Time

	mu   sync.RWMutex
	live map[string]store.Sandbox // records not destroyed, by ID
	// spawning holds the IDs whose spawn runs in this process: their
	// records belong to the spawn, and reconcile leaves them alone.
	spawning map[string]struct{}

	// reconcileMu runs one Reconcile at a time; healthy is each
	// provider's last probed health, to reconcile when one recovers.
	reconcileMu    sync.Mutex
	reconciledOnce bool // under reconcileMu
	healthMu       sync.Mutex
	healthy        map[string]bool

	// locks serialise the read-modify-write of one sandbox's record
	// (destroy, extend), one lock per sandbox in use.
	locks idLocks

	// pools, when set (SetPools, before serving), hands out warm members.
	pools Pools

	spawns, execs, failures atomic.Int64

	activity sync.Map // sandbox ID → time.Time of its last activity (Touch)
	ops      *activity
	// written is the activity this replica recorded in a shared store.
	written activityWrites
}

// New returns a Manager over st and reg.
func New(st store.Store, reg *provider.Registry, cfg Config) *Manager {
	cfg = cfg.withDefaults()
	return &Manager{
		store: st,
		reg:   reg,
		cfg:   cfg,
		bus:   events.NewBus(1000, 256),
		log:   cfg.Logger,
		start: cfg.Now(),
		live:  map[string]store.Sandbox{},

		spawning: map[string]struct{}{},
		healthy:  map[string]bool{},
		ops:      newActivity(),
		written:  activityWrites{last: map[string]activityWrite{}},
	}
}

// Events is the bus the Manager publishes to.
func (m *Manager) Events() *events.Bus { return m.bus }

// Registry is the provider registry the Manager uses.
func (m *Manager) Registry() *provider.Registry { return m.reg }

// Config returns the effective configuration.
func (m *Manager) Config() Config { return m.cfg }

func (m *Manager) now() time.Time { return m.cfg.Now().UTC() }

func (m *Manager) publish(typ, sandboxID string, data map[string]string) {
	m.bus.Publish(events.Event{Type: typ, SandboxID: sandboxID, Data: data})
}

// newID returns "sb-" and 24 random hex characters.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "sb-" + hex.EncodeToString(b[:])
}

// SpawnRequest asks for a new sandbox. Zero fields take the template's
// values, then the configured defaults.
type SpawnRequest struct {
	Image    string
	Provider string
	MemoryMB int
	VCPUs    int
	DiskMB   int
	TTL      time.Duration // 0: default; negative: invalid
	Template string
	OwnerID  string
	Metadata map[string]string
	Network  string
	// Env applies to every command in the sandbox, over the template's.
	Env map[string]string
	// IdleTimeout, when positive, pauses or destroys (OnIdle) the sandbox
	// once it has been idle that long; 0 takes the template's, then the
	// configured default.
	IdleTimeout time.Duration
	OnIdle      string
}

// Spawn creates a sandbox and returns its record in state running. On any
// failure the runtime is removed and the record ends in state error. A
// spawn that matches a warm pool claims one of its members instead
// (SetPools).
func (m *Manager) Spawn(ctx context.Context, req SpawnRequest) (store.Sandbox, error) {
	req, tmpl, p, err := m.resolveSpawn(ctx, req)
	if err != nil {
		return store.Sandbox{}, err
	}
	if m.pools != nil {
		sb, ok, err := m.pools.Claim(ctx, req)
		if err != nil {
			return store.Sandbox{}, err
		}
		if ok {
			return sb, nil
		}
	}
	return m.spawn(ctx, req, tmpl, p, "")
}

// resolveSpawn applies the template and the defaults to req, validates it
// and picks its provider: req.Provider comes back as the provider's name,
// so that equal requests resolve equal.
func (m *Manager) resolveSpawn(ctx context.Context, req SpawnRequest) (SpawnRequest, *store.Template, provider.Provider, error) {
	var tmpl *store.Template
	if req.Template != "" {
		t, err := m.store.GetTemplate(ctx, req.Template)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				return req, nil, nil, errdefs.New(errdefs.ErrNotFound, "template %q not found", req.Template)
			}
			return req, nil, nil, err
		}
		tmpl = &t
		if req.Image == "" && t.Environment != "" {
			// The environment decides the image at each spawn: a spec's
			// newest ready build, so a rebuild is picked up at once.
			img, err := m.environmentImage(ctx, t)
			if err != nil {
				return req, nil, nil, err
			}
			req.Image = img
		}
		req = applyTemplate(req, t)
	}
	if req.Image == "" {
		req.Image = m.cfg.DefaultImage
	}
	if err := m.validateSpawn(req); err != nil {
		return req, nil, nil, err
	}
	if req.TTL == 0 {
		req.TTL = m.cfg.DefaultTTL
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = m.cfg.DefaultMemoryMB
	}
	if req.VCPUs == 0 {
		req.VCPUs = m.cfg.DefaultVCPUs
	}
	if req.IdleTimeout == 0 {
		req.IdleTimeout = m.cfg.DefaultIdleTimeout
	}
	if req.OnIdle == "" {
		req.OnIdle = m.cfg.DefaultOnIdle
	}
	p, err := m.providerFor(ctx, req.Provider)
	if err != nil {
		return req, nil, nil, err
	}
	if err := m.checkIdle(p, req.IdleTimeout, req.OnIdle); err != nil {
		return req, nil, nil, err
	}
	if req.DiskMB > 0 && !p.Capabilities().DiskLimit {
		// Running without the limit asked for would be a silent downgrade.
		return req, nil, nil, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented,
			"provider %s cannot enforce disk_mb on this host", p.Name()),
			"omit disk_mb, or use a provider whose capabilities list disk_limit (GET /api/v1/providers)")
	}
	req.Provider = p.Name()
	return req, tmpl, p, nil
}

// spawn creates the sandbox req describes on p. With pool set it is a
// warm pool member: it ends pooled instead of running, never expires, and
// belongs to nobody until it is claimed (ClaimMember).
func (m *Manager) spawn(ctx context.Context, req SpawnRequest, tmpl *store.Template, p provider.Provider, pool string) (store.Sandbox, error) {
	now := m.now()
	sb := store.Sandbox{
		ID:        newID(),
		Provider:  p.Name(),
		Image:     req.Image,
		State:     string(provider.StateCreating),
		OwnerID:   req.OwnerID,
		Template:  req.Template,
		MemoryMB:  req.MemoryMB,
		VCPUs:     req.VCPUs,
		DiskMB:    req.DiskMB,
		Metadata:  maps.Clone(req.Metadata),
		CreatedAt: now,
		UpdatedAt: now,
		ExpiresAt: now.Add(req.TTL),
	}
	if pool != "" {
		sb.ExpiresAt = time.Time{}
	}
	if req.IdleTimeout > 0 {
		sb.IdleTimeout, sb.OnIdle = req.IdleTimeout, req.OnIdle
	}
	if tmpl != nil {
		sb.Env = maps.Clone(tmpl.Env)
	}
	if len(req.Env) > 0 {
		if sb.Env == nil {
			sb.Env = map[string]string{}
		}
		maps.Copy(sb.Env, req.Env)
	}
	if err := m.reserve(sb); err != nil {
		return store.Sandbox{}, err
	}
	defer m.spawnDone(sb.ID)
	if m.shared() {
		// Other replicas' reconcile leaves a record alone while its
		// sandbox lease is held: this spawn holds it until its last write.
		release, err := m.sandboxLease(ctx, sb.ID, false)
		if err != nil {
			m.forget(sb.ID)
			return store.Sandbox{}, fmt.Errorf("claim sandbox %s: %w", sb.ID, err)
		}
		defer release()
	}
	if err := m.createRecord(ctx, sb); err != nil {
		m.forget(sb.ID)
		return store.Sandbox{}, err
	}
	m.publish(events.SandboxCreated, sb.ID, map[string]string{"provider": sb.Provider, "image": sb.Image})
	if pool == "" {
		m.spawns.Add(1)
	}

	start := time.Now()
	info, err := p.Spawn(ctx, provider.Spec{
		ID: sb.ID, Image: sb.Image, MemoryMB: sb.MemoryMB, VCPUs: sb.VCPUs, DiskMB: sb.DiskMB,
		Env: sb.Env, OwnerID: sb.OwnerID, Template: sb.Template, Metadata: sb.Metadata,
		Network: req.Network, Instance: m.cfg.InstanceID,
	})
	m.cfg.Observer.Op(sb.Provider, "spawn", time.Since(start), err)
	if err != nil {
		// The provider promises to leave nothing behind on a failed spawn.
		m.fail(sb, err)
		return store.Sandbox{}, err
	}
	sb.Handle = info.Handle

	if tmpl != nil && len(tmpl.Setup) > 0 {
		if err := m.runSetup(ctx, p, sb, tmpl.Setup); err != nil {
			m.destroyRuntime(p, sb.ID)
			m.fail(sb, err)
			return store.Sandbox{}, err
		}
	}

	done := change{to: provider.StateRunning}
	if pool != "" {
		done = change{to: provider.StatePooled, reason: "warm member of pool " + pool, data: map[string]string{"pool": pool}}
	}
	sb, err = m.transition(ctx, sb, done)
	if err != nil {
		m.destroyRuntime(p, sb.ID)
		m.fail(sb, err)
		return store.Sandbox{}, err
	}
	if pool != "" {
		m.log.Debug("pool member spawned", "sandbox", sb.ID, "pool", pool, "duration", time.Since(start))
		return sb, nil
	}
	m.log.Info("sandbox spawned", "sandbox", sb.ID, "provider", sb.Provider, "image", sb.Image,
		"duration", time.Since(start))
	return sb, nil
}

func applyTemplate(req SpawnRequest, t store.Template) SpawnRequest {
	if req.Image == "" {
		req.Image = t.Image
	}
	if req.Provider == "" {
		req.Provider = t.Provider
	}
	if req.MemoryMB == 0 {
		req.MemoryMB = t.MemoryMB
	}
	if req.VCPUs == 0 {
		req.VCPUs = t.CPUCores
	}
	if req.TTL == 0 && t.TTLSeconds > 0 {
		req.TTL = time.Duration(t.TTLSeconds) * time.Second
	}
	if req.IdleTimeout == 0 && t.IdleTimeoutSeconds > 0 {
		req.IdleTimeout = time.Duration(t.IdleTimeoutSeconds) * time.Second
	}
	if req.OnIdle == "" {
		req.OnIdle = t.OnIdle
	}
	return req
}

// Sanity bounds on requested resources, far above any real machine: they
// keep a hostile number from overflowing a runtime's arithmetic (MiB to
// bytes, seconds to a Duration) into a negative or tiny limit.
const (
	MaxMemoryMB   = 1 << 22 // 4 TiB
	MaxVCPUs      = 1024
	MaxDiskMB     = 1 << 30 // 1 PiB
	MaxOwnerIDLen = 256
)

func (m *Manager) validateSpawn(req SpawnRequest) error {
	switch {
	case req.Image == "":
		return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "image is required"),
			"pass an image (or a template), or configure sandbox.default_image")
	case req.MemoryMB < 0 || req.MemoryMB > MaxMemoryMB:
		return errdefs.New(errdefs.ErrInvalidArgument, "memory_mb must be from 0 (the default) to %d, not %d", MaxMemoryMB, req.MemoryMB)
	case req.VCPUs < 0 || req.VCPUs > MaxVCPUs:
		return errdefs.New(errdefs.ErrInvalidArgument, "vcpus must be from 0 (the default) to %d, not %d", MaxVCPUs, req.VCPUs)
	case req.DiskMB < 0 || req.DiskMB > MaxDiskMB:
		return errdefs.New(errdefs.ErrInvalidArgument, "disk_mb must be from 0 (none) to %d, not %d", MaxDiskMB, req.DiskMB)
	case len(req.OwnerID) > MaxOwnerIDLen:
		return errdefs.New(errdefs.ErrInvalidArgument, "owner_id is %d bytes, over the limit of %d", len(req.OwnerID), MaxOwnerIDLen)
	case req.TTL < 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "ttl must be positive")
	case req.TTL > m.cfg.MaxTTL:
		return errdefs.New(errdefs.ErrInvalidArgument, "ttl %s exceeds the maximum of %s", req.TTL, m.cfg.MaxTTL)
	case req.Network != "" && req.Network != "none" && req.Network != "bridge":
		return errdefs.New(errdefs.ErrInvalidArgument, "network must be \"none\" or \"bridge\", not %q", req.Network)
	}
	if err := m.validateIdle(req.IdleTimeout, req.OnIdle); err != nil {
		return err
	}
	for k := range req.Metadata {
		if k == "" {
			return errdefs.New(errdefs.ErrInvalidArgument, "metadata keys must not be empty")
		}
	}
	for k := range req.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return errdefs.New(errdefs.ErrInvalidArgument, "environment variable name %q is invalid", k)
		}
	}
	return nil
}

// providerFor returns the provider a spawn uses, healthy now. An unhealthy
// provider fails the spawn (503): auto's choice in particular is never
// replaced by a weaker one.
func (m *Manager) providerFor(ctx context.Context, name string) (provider.Provider, error) {
	auto := name == "" || name == "auto"
	var p provider.Provider
	var err error
	if auto {
		p, err = m.reg.Default(ctx)
	} else {
		p, err = m.reg.Get(name)
	}
	if err != nil {
		return nil, err
	}
	if err := provider.CheckHealth(ctx, p); err != nil {
		if auto && m.reg.DefaultName() == "auto" {
			return nil, errdefs.WithHint(err, fmt.Sprintf("auto chose %q at start and keeps it: spawns never move to a weaker provider; "+
				"repair it (stacyvm doctor), or name another provider in the request", p.Name()))
		}
		return nil, err
	}
	return p, nil
}

// reserve enforces the limits and claims a place for sb atomically, so
// that concurrent spawns cannot overshoot.
func (m *Manager) reserve(sb store.Sandbox) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	total, owned := 0, 0
	for _, s := range m.live {
		// The live set holds exactly the records that count (transition
		// keeps it so, from the lifecycle table).
		total++
		if sb.OwnerID != "" && s.OwnerID == sb.OwnerID {
			owned++
		}
	}
	if m.cfg.MaxSandboxes > 0 && total >= m.cfg.MaxSandboxes {
		return errdefs.WithHint(errdefs.New(errdefs.ErrResourceLimit,
			"the server already runs its maximum of %d sandboxes", m.cfg.MaxSandboxes),
			"destroy sandboxes you no longer need, or retry later")
	}
	if m.cfg.MaxPerOwner > 0 && sb.OwnerID != "" && owned >= m.cfg.MaxPerOwner {
		return errdefs.WithHint(errdefs.New(errdefs.ErrResourceLimit,
			"owner %q already has its maximum of %d sandboxes", sb.OwnerID, m.cfg.MaxPerOwner),
			"destroy sandboxes you no longer need, or retry later")
	}
	m.live[sb.ID] = sb
	m.spawning[sb.ID] = struct{}{}
	return nil
}

// spawnDone ends the claim of a spawn on its record; called after the
// spawn's last write to it.
func (m *Manager) spawnDone(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.spawning, id)
}

func (m *Manager) isSpawning(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.spawning[id]
	return ok
}

func (m *Manager) remember(sb store.Sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live[sb.ID] = sb
}

func (m *Manager) forget(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, id)
	m.activity.Delete(id) // a destroyed sandbox has no activity to keep
	m.written.forget(id)
}

// fail records a failed spawn. The record stays (state error, with the
// reason) so that the caller can see what happened; it holds no runtime.
func (m *Manager) fail(sb store.Sandbox, cause error) {
	m.failures.Add(1)
	// creating → error releases its place under the limits (it holds no
	// runtime); the record stays listed until destroyed or reconciled.
	if _, err := m.transition(context.Background(), sb, change{
		to: provider.StateError, reason: cause.Error(), data: map[string]string{"error": cause.Error()},
	}); err != nil {
		m.log.Error("record failed spawn", "sandbox", sb.ID, "err", err)
		m.forget(sb.ID)
	}
	m.log.Warn("spawn failed", "sandbox", sb.ID, "provider", sb.Provider, "err", cause)
}

// destroyRuntime removes a runtime even when the caller's context is gone.
func (m *Manager) destroyRuntime(p provider.Provider, id string) {
	if err := m.destroyWithin(context.Background(), p, id); err != nil {
		m.log.Error("destroy runtime", "sandbox", id, "provider", p.Name(), "err", err)
	}
}

// destroyWithin calls p.Destroy, unaffected by the end of ctx, and waits
// for it at most DestroyTimeout, whether or not the provider honours its
// context. A call that hangs keeps its goroutine until the provider
// returns; nobody waits for it.
func (m *Manager) destroyWithin(ctx context.Context, p provider.Provider, id string) error {
	// Only the deadline ends ctx while the select below waits.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.DestroyTimeout)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Destroy(ctx, id) }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// A Destroy that returned just as the deadline passed still wins.
		select {
		case err = <-done:
			m.cfg.Observer.Op(p.Name(), "destroy", time.Since(start), err)
			return err
		default:
		}
		err = errdefs.WithHint(errdefs.New(errdefs.ErrProviderUnavailable,
			"provider %s did not destroy sandbox %s within %s", p.Name(), id, m.cfg.DestroyTimeout),
			"the runtime may be hung; the sandbox keeps its record, retry the destroy later")
	}
	m.cfg.Observer.Op(p.Name(), "destroy", time.Since(start), err)
	return err
}

func (m *Manager) runSetup(ctx context.Context, p provider.Provider, sb store.Sandbox, setup []string) error {
	for i, cmd := range setup {
		res, err := m.execOn(ctx, p, sb, ExecRequest{Command: cmd})
		if err != nil {
			return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "template %q setup command %d (%q) failed", sb.Template, i+1, cmd)
		}
		if res.ExitCode != 0 {
			return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument,
				"template %q setup command %d (%q) exited %d: %s", sb.Template, i+1, cmd, res.ExitCode, tail(res.Stderr, 512)),
				"fix the template's setup commands")
		}
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Get returns a sandbox's record. A destroyed sandbox is
// errdefs.ErrSandboxDestroyed.
func (m *Manager) Get(ctx context.Context, id string) (store.Sandbox, error) {
	if m.shared() {
		return m.getStored(ctx, id)
	}
	m.mu.RLock()
	sb, ok := m.live[id]
	m.mu.RUnlock()
	if ok {
		return sb, nil
	}
	sb, err := m.store.GetSandbox(ctx, id)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return store.Sandbox{}, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
		}
		return store.Sandbox{}, err
	}
	if sb.State == string(provider.StateDestroyed) {
		return store.Sandbox{}, errdefs.WithHint(errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id),
			"spawn a new sandbox")
	}
	return sb, nil
}

// History returns a sandbox's state transitions, destroyed ones included.
func (m *Manager) History(ctx context.Context, id string) ([]store.Transition, error) {
	h, err := m.store.History(ctx, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
	}
	return h, err
}

// ListFilter selects sandboxes for List.
type ListFilter struct {
	OwnerID  string
	State    string
	Provider string
	// Limit, when positive, makes List return one page of at most Limit
	// records (MaxPageSize at most); Cursor continues after the page
	// that returned it.
	Limit  int
	Cursor string
}

// MaxPageSize bounds one page of List.
const MaxPageSize = 1000

// List returns the sandboxes that are not destroyed, newest first. A
// filter on state "destroyed" lists destroyed ones.
func (m *Manager) List(ctx context.Context, f ListFilter) ([]store.Sandbox, error) {
	list, _, err := m.ListPage(ctx, f)
	return list, err
}

// ListPage is List that also returns the cursor of the next page: "" when
// f has no Limit or this page is the last.
func (m *Manager) ListPage(ctx context.Context, f ListFilter) ([]store.Sandbox, string, error) {
	sf := store.SandboxFilter{OwnerID: f.OwnerID, Provider: f.Provider, States: listedStates()}
	if f.State != "" {
		if !validState(f.State) {
			return nil, "", errdefs.New(errdefs.ErrInvalidArgument, "unknown state %q", f.State)
		}
		sf.States = []string{f.State}
	}
	if f.Limit < 0 || f.Limit > MaxPageSize {
		return nil, "", errdefs.New(errdefs.ErrInvalidArgument, "limit must be between 1 and %d", MaxPageSize)
	}
	if f.Cursor != "" {
		if f.Limit == 0 {
			return nil, "", errdefs.New(errdefs.ErrInvalidArgument, "cursor needs a limit")
		}
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		sf.After = &c
	}
	if f.Limit == 0 {
		list, err := m.store.ListSandboxes(ctx, sf)
		return withoutMembers(list), "", err
	}
	// One more than asked tells whether another page follows.
	sf.Limit = f.Limit + 1
	list, err := m.store.ListSandboxes(ctx, sf)
	if err != nil || len(list) <= f.Limit {
		return withoutMembers(list), "", err
	}
	list = list[:f.Limit]
	last := list[len(list)-1]
	// The cursor follows the store's page, members included, so that the
	// next page starts where this one ended even when this one came out
	// short.
	return withoutMembers(list), encodeCursor(store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}), nil
}

// withoutMembers drops warm pool members still being created: their
// records are in state creating, like users' spawns, until they are pooled
// (which is not listed).
func withoutMembers(list []store.Sandbox) []store.Sandbox {
	return slices.DeleteFunc(list, func(sb store.Sandbox) bool {
		return sb.State == string(provider.StateCreating) && sb.Metadata[MetaPool] != ""
	})
}

// A cursor is opaque to clients: base64url of "<created_at unix nanos>:<id>".
func encodeCursor(c store.Cursor) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d:%s", c.CreatedAt.UnixNano(), c.ID))
}

func decodeCursor(s string) (store.Cursor, error) {
	bad := errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "invalid cursor"),
		"pass the X-Next-Cursor value of the previous page unchanged")
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return store.Cursor{}, bad
	}
	nanos, id, ok := strings.Cut(string(b), ":")
	n, err := strconv.ParseInt(nanos, 10, 64)
	if !ok || err != nil || id == "" {
		return store.Cursor{}, bad
	}
	return store.Cursor{CreatedAt: time.Unix(0, n).UTC(), ID: id}, nil
}

// Destroy removes a sandbox's runtime and marks its record destroyed. A
// runtime that is already gone is fine; a sandbox already destroyed is
// errdefs.ErrSandboxDestroyed.
func (m *Manager) Destroy(ctx context.Context, id string) error {
	sb, err := m.Get(ctx, id)
	if err != nil {
		return err
	}
	if propsOf(sb.State).SpawnOwned {
		// Spawn owns the record until it ends; destroying under it would
		// let it record a runtime that is gone, or leak one it finishes.
		return notAllowed(sb, "destroy")
	}
	return m.destroy(ctx, sb, "destroyed on request", events.SandboxDestroyed)
}

// destroy removes sb's runtime and ends its record destroyed. With only
// set, the record must still be in that state once read under the lock
// (a pool member must not be destroyed once claimed): otherwise it is
// errdefs.ErrConflict and nothing happens.
func (m *Manager) destroy(ctx context.Context, sb store.Sandbox, reason, eventType string, only ...string) error {
	// A caller that gives up waiting for another destroy of the same
	// sandbox leaves; one that holds the lock finishes within
	// DestroyTimeout.
	unlock, err := m.lockSandbox(ctx, sb.ID)
	if err != nil {
		return fmt.Errorf("destroy sandbox %s: %w", sb.ID, err)
	}
	defer unlock()
	// Read the record again under the lock: another destroy (a request,
	// the reaper) may have finished meanwhile.
	cur, err := m.store.GetSandbox(ctx, sb.ID)
	if err != nil {
		return err
	}
	if cur.State == string(provider.StateDestroyed) {
		return errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", sb.ID)
	}
	sb = cur
	if len(only) > 0 && sb.State != only[0] {
		return errdefs.New(errdefs.ErrConflict, "sandbox %s is %s, not %s", sb.ID, sb.State, only[0])
	}
	if sb.State != string(provider.StateDestroying) {
		if err := checkOp(sb, "destroy", provider.StateDestroying); err != nil {
			return err
		}
	}
	p, err := m.reg.Get(sb.Provider)
	if err != nil {
		// Without its provider the runtime cannot be removed; keep the
		// record so that nothing is leaked unnoticed.
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "cannot destroy sandbox %s", sb.ID)
	}
	if sb.State != string(provider.StateDestroying) {
		// The intent is recorded first: a destroy that fails (or a server
		// that stops) leaves the record destroying, and a later destroy,
		// the reaper or reconcile finishes it.
		if sb, err = m.transition(ctx, sb, change{to: provider.StateDestroying, reason: reason}); err != nil {
			return err
		}
	}
	err = m.destroyWithin(ctx, p, sb.ID)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("destroy sandbox %s: %w", sb.ID, err)
	}
	if _, err := m.transition(ctx, sb, change{to: provider.StateDestroyed, reason: reason, event: eventType}); err != nil {
		return err
	}
	m.log.Info("sandbox destroyed", "sandbox", sb.ID, "reason", reason)
	return nil
}

// Extend moves a sandbox's expiry to now+ttl, never earlier than it was.
func (m *Manager) Extend(ctx context.Context, id string, ttl time.Duration) (store.Sandbox, error) {
	return m.setExpiry(ctx, id, ttl, false)
}

// SetTTL sets a sandbox's expiry to exactly now+ttl, earlier than it was
// if need be: for clients whose "timeout" replaces the TTL rather than
// extending it.
func (m *Manager) SetTTL(ctx context.Context, id string, ttl time.Duration) (store.Sandbox, error) {
	return m.setExpiry(ctx, id, ttl, true)
}

func (m *Manager) setExpiry(ctx context.Context, id string, ttl time.Duration, exact bool) (store.Sandbox, error) {
	if ttl <= 0 {
		return store.Sandbox{}, errdefs.New(errdefs.ErrInvalidArgument, "ttl must be positive")
	}
	if ttl > m.cfg.MaxTTL {
		return store.Sandbox{}, errdefs.New(errdefs.ErrInvalidArgument, "ttl %s exceeds the maximum of %s", ttl, m.cfg.MaxTTL)
	}
	// Under the ID's lock, so that a destroy cannot slip between reading
	// the record and writing it back (which would revive it).
	unlock, err := m.lockSandbox(ctx, id)
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("extend sandbox %s: %w", id, err)
	}
	defer unlock()
	sb, err := m.Get(ctx, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if !propsOf(sb.State).Extendable {
		return store.Sandbox{}, notAllowed(sb, "extend")
	}
	if err := m.checkUnexpired(sb); err != nil {
		return store.Sandbox{}, err
	}
	if exp := m.now().Add(ttl); exact || exp.After(sb.ExpiresAt) {
		sb.ExpiresAt = exp
	}
	sb.UpdatedAt = m.now()
	if err := m.store.UpdateSandbox(ctx, sb); err != nil {
		return store.Sandbox{}, err
	}
	m.remember(sb)
	m.publish(events.SandboxExtended, sb.ID, map[string]string{"expires_at": sb.ExpiresAt.Format(time.RFC3339)})
	return sb, nil
}

// Prune destroys every sandbox whose TTL has run out and returns how many.
func (m *Manager) Prune(ctx context.Context) (int, error) {
	expired, err := m.store.ListSandboxes(ctx, store.SandboxFilter{ExcludeDestroyed: true, ExpiredBefore: m.now()})
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, sb := range expired {
		if ctx.Err() != nil {
			break // shutting down: the next start's reaper takes the rest
		}
		if !propsOf(sb.State).Reapable {
			continue // a spawn or an operation owns it; the next pass takes it
		}
		if fenced(ctx, &errs) {
			break // another replica reaps now
		}
		if err := m.destroy(ctx, sb, "ttl expired", events.SandboxExpired); err != nil {
			if errdefs.Classify(err) == errdefs.ErrSandboxDestroyed {
				continue // destroyed meanwhile by a request
			}
			errs = append(errs, err)
			m.cfg.Observer.Action("reaper", "failed")
			continue
		}
		m.cfg.Observer.Action("reaper", "expired")
		n++
	}
	return n, errors.Join(errs...)
}

// Purge deletes the records (and histories) of sandboxes destroyed longer
// than Retention ago, and returns how many.
func (m *Manager) Purge(ctx context.Context) (int, error) {
	n, err := m.store.PurgeDestroyed(ctx, m.now().Add(-m.cfg.Retention))
	if n > 0 {
		m.cfg.Observer.Action("reaper", "purged")
	}
	return n, err
}

// Run reaps expired sandboxes every ReaperInterval, and reconciles every
// ReconcileInterval and when a provider recovers, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { m.keepReconciling(ctx) })
	if m.shared() {
		wg.Go(func() { m.keepRecordingActivity(ctx) })
	}
	t := time.NewTicker(m.cfg.ReaperInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := m.RunOnce(ctx, LeaseReaper, m.reap); err != nil && ctx.Err() == nil {
				m.log.Error("reaper lease", "err", err)
			}
		}
	}
}

// reap is one pass of the reaper: expired sandboxes, idle ones, old
// records.
func (m *Manager) reap(ctx context.Context) error {
	if n, err := m.Prune(ctx); err != nil {
		m.log.Error("reaper", "err", err, "reaped", n)
	} else if n > 0 {
		m.log.Info("reaper", "reaped", n)
	}
	// With a shared store, the sweep reads the activity every replica
	// recorded in the store (recordActivity).
	if n, err := m.SweepIdle(ctx); err != nil {
		m.log.Error("idle sweep", "err", err, "acted", n)
	} else if n > 0 {
		m.log.Info("idle sweep", "acted", n)
	}
	if lease.Check(ctx) != nil {
		return nil
	}
	if n, err := m.Purge(ctx); err != nil {
		m.log.Error("purge destroyed records", "err", err)
	} else if n > 0 {
		m.log.Info("purged destroyed records", "purged", n, "retention", m.cfg.Retention)
	}
	return nil
}

// running returns a live sandbox that can take guest operation op.
func (m *Manager) running(ctx context.Context, id, op string) (store.Sandbox, error) {
	sb, err := m.Get(ctx, id)
	if err != nil {
		return store.Sandbox{}, err
	}
	if provider.State(sb.State) == provider.StatePaused && !m.cfg.ManualResume {
		if sb, err = m.freeze(ctx, id, resumeOp, "resumed to "+op, true); err != nil {
			return store.Sandbox{}, err
		}
	}
	if !propsOf(sb.State).Guest {
		return store.Sandbox{}, notAllowed(sb, op)
	}
	if err := m.checkUnexpired(sb); err != nil {
		return store.Sandbox{}, err
	}
	return sb, nil
}

// checkUnexpired fails for a sandbox whose TTL ran out and that the
// reaper has not destroyed yet.
func (m *Manager) checkUnexpired(sb store.Sandbox) error {
	if !sb.ExpiresAt.IsZero() && !sb.ExpiresAt.After(m.now()) {
		return errdefs.WithHint(errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s expired at %s", sb.ID, sb.ExpiresAt.Format(time.RFC3339)),
			"spawn a new sandbox, and extend its TTL before it runs out")
	}
	return nil
}

// Counts returns how many sandboxes the store holds in each state.
// It is one aggregate query, not a walk over every record.
func (m *Manager) Counts(ctx context.Context) (map[string]int, error) {
	return m.store.CountSandboxes(ctx)
}

// Stats is the JSON metrics summary.
type Stats struct {
	Uptime            time.Duration
	SandboxesByState  map[string]int
	SandboxesByProv   map[string]int
	SpawnsTotal       int64
	ExecsTotal        int64
	SpawnFailures     int64
	EventsPublished   uint64
	ProvidersLoaded   []string
	ProvidersDeclined []string
}

// Stats summarises the Manager's state.
func (m *Manager) Stats(ctx context.Context) (Stats, error) {
	counts, err := m.Counts(ctx)
	if err != nil {
		return Stats{}, err
	}
	byProv := map[string]int{}
	m.mu.RLock()
	for _, sb := range m.live {
		byProv[sb.Provider]++
	}
	m.mu.RUnlock()
	s := Stats{
		Uptime:           m.cfg.Now().Sub(m.start),
		SandboxesByState: counts,
		SandboxesByProv:  byProv,
		SpawnsTotal:      m.spawns.Load(),
		ExecsTotal:       m.execs.Load(),
		SpawnFailures:    m.failures.Load(),
		EventsPublished:  m.bus.LastID(),
	}
	for _, e := range m.reg.Entries() {
		if e.Reason != nil {
			s.ProvidersDeclined = append(s.ProvidersDeclined, e.Name)
		} else {
			s.ProvidersLoaded = append(s.ProvidersLoaded, e.Name)
		}
	}
	slices.Sort(s.ProvidersLoaded)
	slices.Sort(s.ProvidersDeclined)
	return s, nil
}

// Uptime is how long the Manager has existed.
func (m *Manager) Uptime() time.Duration { return m.cfg.Now().Sub(m.start) }
