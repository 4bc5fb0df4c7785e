// Package pool keeps warm pools filled and hands out their members. A pool
// is declared by a template's pool_size or by the configuration's pools
// list; its members are real sandboxes the orchestrator spawned ahead (in
// state pooled). A spawn that matches a pool claims a ready member
// (orchestrator.Pools); refills run in the background with bounded
// concurrency and exponential backoff; members past their age, on an image
// that changed, or of a template that changed are replaced.
package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/metrics"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Policies for a spawn that finds its pool empty.
const (
	PolicyCold   = "cold"   // spawn a sandbox cold, as without a pool
	PolicyReject = "reject" // fail with errdefs.ErrResourceLimit and a Retry-After
)

// TemplatePrefix starts the name of a template's pool.
const TemplatePrefix = "template:"

// LeaseRefill is the lease under which one replica of several sharing a
// store adopts, refills and replaces the members of every pool.
const LeaseRefill = "pools"

// Backend is what the pools need from the orchestrator;
// *orchestrator.Manager implements it.
type Backend interface {
	ResolvePool(ctx context.Context, spec orchestrator.PoolSpec) (orchestrator.PoolSpec, error)
	SpawnMember(ctx context.Context, pool string, spec orchestrator.PoolSpec) (store.Sandbox, error)
	ClaimMember(ctx context.Context, id string, req orchestrator.SpawnRequest) (store.Sandbox, error)
	DestroyMember(ctx context.Context, id, reason string) error
	Members(ctx context.Context) ([]store.Sandbox, error)
	PoolRecords(ctx context.Context) ([]store.Sandbox, error)
	ListTemplates(ctx context.Context) ([]store.Template, error)
	ImageVersion(ctx context.Context, providerName, image string) (string, error)
	SandboxImageVersion(ctx context.Context, sb store.Sandbox) (string, error)
	Events() *events.Bus
	// Shared says whether replicas share the store; RunOnce runs work
	// under a lease, once across them (orchestrator.Manager.RunOnce).
	Shared() bool
	RunOnce(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error)
}

// Def declares a pool from the configuration. Zero fields take the
// defaults as a spawn would (orchestrator.Manager.ResolvePool).
type Def struct {
	Name        string
	Image       string
	Provider    string
	MemoryMB    int
	VCPUs       int
	Size        int
	Policy      string        // "" is Config.Policy
	MaxAge      time.Duration // 0 is Config.MaxAge
	Concurrency int           // 0 is Config.Concurrency
}

// Config tunes the pools; zero values take the defaults of Defaults.
type Config struct {
	Pools []Def
	// Policy, MaxAge and Concurrency apply to templates' pools and to
	// configured pools that leave them unset.
	Policy      string
	MaxAge      time.Duration
	Concurrency int
	// CheckInterval is how often members are checked for age, image and
	// template changes, and templates for pool_size changes.
	CheckInterval time.Duration
	// BackoffMin and BackoffMax bound the delay after a failed refill; it
	// doubles with each failure in a row.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger
	Now                    func() time.Time
}

// Defaults is what the zero Config means.
func Defaults() Config {
	return Config{Policy: PolicyCold, Concurrency: 2, CheckInterval: 10 * time.Second,
		BackoffMin: time.Second, BackoffMax: time.Minute}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	if c.Policy == "" {
		c.Policy = d.Policy
	}
	if c.Concurrency <= 0 {
		c.Concurrency = d.Concurrency
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = d.CheckInterval
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(d.BackoffMax, c.BackoffMin)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Status is one pool as GET /pool/status reports it.
type Status = orchestrator.PoolStatus

type member struct {
	id              string
	created         time.Time
	imageVersion    string // "" until known
	templateVersion int
	// added numbers the members this process's own spawns made ready
	// (0 for those read from the store), so that refresh keeps those that
	// became ready while it read the store.
	added uint64
}

type pool struct {
	name   string
	tmpl   string // template name, for templates' pools
	def    Def    // as declared (zero fields unresolved)
	spec   orchestrator.PoolSpec
	ok     bool // spec is resolved
	policy string
	maxAge time.Duration
	conc   int
	// gen changes whenever the pool's spec does (a template update): a
	// member spawned for an older generation is not kept.
	gen int

	ready    []member // oldest first
	creating int
	claimed  int64
	misses   int64
	failures int64
	backoff  time.Duration
	nextTry  time.Time
	problem  string
	version  string // the image's identity now, "" when unknown
	removed  bool
}

// Pools is the set of warm pools. Create it with New, start it with Run;
// it implements orchestrator.Pools.
type Pools struct {
	b   Backend
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	pools map[string]*pool

	wake chan struct{}
	// work tracks refill spawns and member destroys in flight, so that Run
	// returns only after them.
	work sync.WaitGroup

	prepared sync.Once

	// shared: several replicas share the store (docs/scale-out.md). Then
	// one replica at a time holds LeaseRefill and adopts, refills and
	// replaces members; every replica claims from the store's records
	// (claiming marks the members this process is claiming now, so that
	// its own concurrent claims try different ones), and the status
	// counts members in the store.
	shared   bool
	claiming map[string]struct{}
	added    uint64 // the last member.added given out
}

// New returns the pools cfg declares over b. Templates' pools appear once
// Run has read the templates.
func New(b Backend, cfg Config) *Pools {
	cfg = cfg.withDefaults()
	ps := &Pools{b: b, cfg: cfg, log: cfg.Logger, pools: map[string]*pool{}, wake: make(chan struct{}, 1),
		shared: b.Shared(), claiming: map[string]struct{}{}}
	for _, d := range cfg.Pools {
		ps.pools[d.Name] = ps.newPool(d.Name, "", d)
	}
	return ps
}

func (ps *Pools) newPool(name, tmpl string, d Def) *pool {
	p := &pool{name: name, tmpl: tmpl, def: d, policy: d.Policy, maxAge: d.MaxAge, conc: d.Concurrency}
	if p.policy == "" {
		p.policy = ps.cfg.Policy
	}
	if p.maxAge == 0 {
		p.maxAge = ps.cfg.MaxAge
	}
	if p.conc <= 0 {
		p.conc = ps.cfg.Concurrency
	}
	return p
}

func (ps *Pools) now() time.Time { return ps.cfg.Now() }

// kick wakes the refill loop without waiting.
func (ps *Pools) kick() {
	select {
	case ps.wake <- struct{}{}:
	default:
	}
}

// Claim implements orchestrator.Pools: it hands out the oldest ready
// member of the pool req matches. A member is taken off the ready list
// under the pools' lock, and the orchestrator's compare-and-set on its
// record makes the claim final, so no member is ever handed out twice.
func (ps *Pools) Claim(ctx context.Context, req orchestrator.SpawnRequest) (store.Sandbox, bool, error) {
	if ps.shared {
		return ps.claimShared(ctx, req)
	}
	for {
		ps.mu.Lock()
		p := ps.match(req)
		if p == nil {
			ps.mu.Unlock()
			return store.Sandbox{}, false, nil
		}
		if len(p.ready) == 0 {
			return ps.miss(p)
		}
		m := p.ready[0]
		p.ready = p.ready[1:]
		want, prov := p.version, p.spec.Provider
		ps.mu.Unlock()

		// The last check saw the image change: a member not known to be
		// of the image now (its version unknown when it was spawned or
		// checked) is looked at once more rather than handed out.
		if want != "" && m.imageVersion != want {
			v, err := ps.b.SandboxImageVersion(ctx, store.Sandbox{ID: m.id, Provider: prov})
			if err != nil || v != want {
				ps.destroy(context.WithoutCancel(ctx), []member{m}, "pool member replaced: its image changed")
				continue
			}
			m.imageVersion = v
		}

		sb, err := ps.b.ClaimMember(ctx, m.id, req)
		if err == nil {
			ps.mu.Lock()
			p.claimed++
			ps.mu.Unlock()
			ps.kick()
			return sb, true, nil
		}
		if errdefs.Classify(err) == errdefs.ErrConflict {
			continue // gone meanwhile (reconciled, replaced): try the next
		}
		// Not claimed (a limit, the store): it stays the pool's.
		ps.mu.Lock()
		stale := p.version != "" && m.imageVersion != p.version
		if !p.removed && !stale {
			p.ready = slices.Insert(p.ready, 0, m)
		}
		ps.mu.Unlock()
		if stale {
			ps.destroy(context.WithoutCancel(ctx), []member{m}, "pool member replaced: its image changed")
		}
		return store.Sandbox{}, false, err
	}
}

// miss counts a spawn that found its pool p empty and answers it by p's
// policy. Called under ps.mu, which it releases.
func (ps *Pools) miss(p *pool) (store.Sandbox, bool, error) {
	p.misses++
	policy, name, retry := p.policy, p.name, ps.retryAfter(p)
	ps.mu.Unlock()
	ps.kick()
	if policy == PolicyReject {
		return store.Sandbox{}, false, errdefs.WithRetryAfter(errdefs.WithHint(
			errdefs.New(errdefs.ErrResourceLimit, "warm pool %s has no sandbox ready", name),
			"retry after the Retry-After delay; the pool is refilling (GET /api/v1/pool/status)"), retry)
	}
	return store.Sandbox{}, false, nil
}

// claimShared is Claim with replicas sharing the store: the ready members
// are the pool's pooled records in the store (another replica refills
// them), tried in random order so that replicas claiming at once seldom
// try the same one; the compare-and-set decides between them.
func (ps *Pools) claimShared(ctx context.Context, req orchestrator.SpawnRequest) (store.Sandbox, bool, error) {
	ps.mu.Lock()
	p := ps.match(req)
	if p == nil {
		ps.mu.Unlock()
		return store.Sandbox{}, false, nil
	}
	spec := p.spec
	ps.mu.Unlock()
	recs, err := ps.b.Members(ctx)
	if err != nil {
		return store.Sandbox{}, false, err
	}
	recs = slices.DeleteFunc(recs, func(sb store.Sandbox) bool {
		return sb.Metadata[orchestrator.MetaPool] != p.name || !describes(spec, sb)
	})
	rand.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	for _, sb := range recs {
		ps.mu.Lock()
		if _, busy := ps.claiming[sb.ID]; busy {
			ps.mu.Unlock()
			continue
		}
		ps.claiming[sb.ID] = struct{}{}
		ps.mu.Unlock()
		got, err := ps.b.ClaimMember(ctx, sb.ID, req)
		ps.mu.Lock()
		delete(ps.claiming, sb.ID)
		if err == nil {
			p.claimed++
			p.ready = slices.DeleteFunc(p.ready, func(m member) bool { return m.id == sb.ID })
		}
		ps.mu.Unlock()
		if err == nil {
			ps.kick()
			return got, true, nil
		}
		if errdefs.Classify(err) != errdefs.ErrConflict {
			return store.Sandbox{}, false, err
		}
		// Claimed or replaced by someone else meanwhile: try the next.
	}
	ps.mu.Lock()
	return ps.miss(p)
}

// describes reports whether record sb is a member made of spec.
func describes(spec orchestrator.PoolSpec, sb store.Sandbox) bool {
	v, _ := strconv.Atoi(sb.Metadata[orchestrator.MetaTemplateVersion])
	return spec.Template == sb.Template && spec.Image == sb.Image && spec.Provider == sb.Provider &&
		spec.MemoryMB == sb.MemoryMB && spec.VCPUs == sb.VCPUs && spec.TemplateVersion == v
}

// retryAfter is how long a rejected caller should wait: about one refill,
// or the backoff left after failures. Called under ps.mu.
func (ps *Pools) retryAfter(p *pool) time.Duration {
	if wait := p.nextTry.Sub(ps.now()); wait > time.Second {
		return wait
	}
	return time.Second
}

// match returns the pool whose members req could be: same template (none
// for configured pools), image, provider and resources, and nothing a
// member was not made with (disk limit, network). Called under ps.mu.
func (ps *Pools) match(req orchestrator.SpawnRequest) *pool {
	if req.DiskMB != 0 || req.Network != "" {
		return nil
	}
	var found *pool
	for _, p := range ps.pools {
		s := p.spec
		if !p.ok || s.Template != req.Template || s.Image != req.Image || s.Provider != req.Provider ||
			s.MemoryMB != req.MemoryMB || s.VCPUs != req.VCPUs {
			continue
		}
		// Two configured pools may declare the same sandboxes: one with a
		// member ready wins, then the first by name.
		if found == nil || better(p, found) {
			found = p
		}
	}
	return found
}

func better(p, q *pool) bool {
	if pr, qr := len(p.ready) > 0, len(q.ready) > 0; pr != qr {
		return pr
	}
	return p.name < q.name
}

// Status reports every pool, by name. With a shared store, ready and
// creating count the members' records in the store (every replica reports
// the same); claimed, misses and failures count this replica's work.
func (ps *Pools) Status(ctx context.Context) ([]Status, error) {
	var ready, creating map[string]int
	if ps.shared {
		recs, err := ps.b.PoolRecords(ctx)
		if err != nil {
			return nil, err
		}
		ready, creating = map[string]int{}, map[string]int{}
		ps.mu.Lock()
		for _, sb := range recs {
			name := sb.Metadata[orchestrator.MetaPool]
			switch p := ps.pools[name]; {
			case sb.State == string(provider.StateCreating):
				creating[name]++
			case p != nil && p.ok && describes(p.spec, sb):
				ready[name]++
			}
		}
		ps.mu.Unlock()
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]Status, 0, len(ps.pools))
	for _, p := range ps.pools {
		st := Status{Name: p.name, Template: p.tmpl, Policy: p.policy, Target: p.def.Size,
			Ready: len(p.ready), Creating: p.creating, Claimed: p.claimed, Misses: p.misses,
			Failures: p.failures, Problem: p.problem,
			Image: p.def.Image, Provider: p.def.Provider, MemoryMB: p.def.MemoryMB, VCPUs: p.def.VCPUs}
		if ps.shared {
			st.Ready, st.Creating = ready[p.name], creating[p.name]
		}
		if p.ok {
			st.Image, st.Provider, st.MemoryMB, st.VCPUs = p.spec.Image, p.spec.Provider, p.spec.MemoryMB, p.spec.VCPUs
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out, nil
}

// Run adopts the members a previous run left (records in state pooled),
// then keeps every pool filled until ctx ends. Members are kept when it
// returns: they are adopted again at the next start. Refills in flight
// when ctx ends are cancelled, which removes their runtimes.
//
// With replicas sharing the store, the replica holding LeaseRefill does
// that (adopting the members when it takes the lease); the others keep
// their templates' pools known, so that their claims match, and try the
// lease again every check interval. Whoever holds it checks it before
// each spawn and destroy, and a replica that lost it stops refilling.
func (ps *Pools) Run(ctx context.Context) {
	defer ps.work.Wait()
	ps.Prepare(ctx)
	if !ps.shared {
		ps.serve(ctx, true)
		return
	}
	for ctx.Err() == nil {
		ran, err := ps.b.RunOnce(ctx, LeaseRefill, func(lctx context.Context) error {
			ps.log.Info("pools: this replica refills the warm pools", "lease", LeaseRefill)
			ps.lead(lctx)
			return nil
		})
		if err != nil && ctx.Err() == nil {
			ps.log.Error("pools: refill lease", "err", err)
		}
		if ran && ctx.Err() == nil {
			ps.log.Warn("pools: refill lease lost; another replica refills", "lease", LeaseRefill)
		}
		fctx, cancel := context.WithTimeout(ctx, ps.cfg.CheckInterval)
		ps.serve(fctx, false)
		cancel()
	}
}

// lead adopts and refills under the refill lease until ctx (which ends
// when the lease is lost) ends, and waits for its spawns before the lease
// is released.
func (ps *Pools) lead(ctx context.Context) {
	defer ps.work.Wait()
	ps.mu.Lock()
	for _, p := range ps.pools {
		p.ready = nil // the store says which members are ready now
	}
	ps.mu.Unlock()
	ps.adopt(ctx)
	ps.serve(ctx, true)
}

// serve reacts to wake-ups, events and the check interval until ctx ends:
// a leader (the only process, or the replica holding the refill lease)
// refills and replaces members; a follower only keeps its pools' specs
// resolved.
func (ps *Pools) serve(ctx context.Context, lead bool) {
	evs, unsub := ps.b.Events().Subscribe(ps.b.Events().LastID())
	defer func() { unsub() }()
	step := func() {
		if lead {
			ps.fill(ctx)
		} else {
			ps.resolvePending(ctx)
		}
	}
	sync := func() {
		drain := ps.syncTemplates(ctx)
		if lead {
			ps.destroy(ctx, drain, "pool member replaced: its template changed or lost its pool")
		}
	}
	if !lead {
		sync() // template events may have come while it did not listen
	}
	step()
	t := time.NewTicker(ps.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ps.wake:
			step()
		case ev, ok := <-evs:
			if !ok {
				// Dropped as a slow subscriber: listen again and
				// recheck the templates, since an event may be lost.
				unsub()
				evs, unsub = ps.b.Events().Subscribe(ps.b.Events().LastID())
				sync()
				step()
				continue
			}
			switch ev.Type {
			case events.TemplateCreated, events.TemplateUpdated, events.TemplateDeleted:
				sync()
				step()
			case events.SandboxDestroyed:
				ps.dropReady(ev.SandboxID)
				step()
			case events.SandboxRunning:
				// A claim on another replica (events of every replica
				// arrive here) leaves its pool one short.
				if lead && ps.shared && ev.Data["pool"] != "" {
					step()
				}
			}
		case <-t.C:
			if lead {
				ps.check(ctx)
			} else {
				sync()
			}
			step()
		}
	}
}

// Prepare reads the templates' pools and, without replicas, adopts the
// members a previous run left (records in state pooled), once; Run calls
// it if the caller has not. Called before serving, it makes adopted
// members claimable from the first request. With replicas, the holder of
// the refill lease adopts them, and claims read the store.
func (ps *Pools) Prepare(ctx context.Context) {
	ps.prepared.Do(func() {
		drain := ps.syncTemplates(ctx)
		if ps.shared {
			ps.resolvePending(ctx)
			return
		}
		ps.destroy(ctx, drain, "pool member replaced: its template changed or lost its pool")
		ps.adopt(ctx)
	})
}

// Metrics is Status in the form package metrics exports.
func (ps *Pools) Metrics() []metrics.Pool {
	// A scrape has no context of its own; a slow store leaves the pools
	// out of that scrape rather than hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := ps.Status(ctx)
	if err != nil {
		ps.log.Warn("pools: status for metrics", "err", err)
		return nil
	}
	var out []metrics.Pool
	for _, s := range list {
		out = append(out, metrics.Pool{Name: s.Name, Target: s.Target, Ready: s.Ready, Creating: s.Creating,
			Claimed: s.Claimed, Misses: s.Misses, Failures: s.Failures})
	}
	return out
}

// dropReady forgets a ready member whose record was destroyed elsewhere
// (reconcile found its runtime gone).
func (ps *Pools) dropReady(id string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.pools {
		p.ready = slices.DeleteFunc(p.ready, func(m member) bool { return m.id == id })
	}
}

// syncTemplates makes one pool per template with a pool_size, drains the
// pools of templates deleted or shrunk to zero, and rebuilds the pool of a
// template whose version changed. It returns the members drained, for the
// leader to destroy.
func (ps *Pools) syncTemplates(ctx context.Context) []member {
	tmpls, err := ps.b.ListTemplates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ps.log.Error("pools: list templates", "err", err)
		}
		return nil
	}
	want := map[string]store.Template{}
	for _, t := range tmpls {
		if t.PoolSize > 0 {
			want[TemplatePrefix+t.Name] = t
		}
	}
	var drain []member
	ps.mu.Lock()
	for name, p := range ps.pools {
		if p.tmpl == "" {
			continue
		}
		t, ok := want[name]
		if !ok {
			drain = append(drain, p.ready...)
			p.ready, p.removed = nil, true
			delete(ps.pools, name)
			continue
		}
		p.def.Size = t.PoolSize
		if p.ok && p.spec.TemplateVersion != t.Version {
			// Rebuild: its members were set up from another version.
			drain = append(drain, p.ready...)
			p.ready = nil
			p.ok = false
			p.gen++
		}
	}
	for name, t := range want {
		if _, ok := ps.pools[name]; !ok {
			ps.pools[name] = ps.newPool(name, t.Name, Def{Name: name, Size: t.PoolSize})
		}
	}
	ps.mu.Unlock()
	return drain
}

// resolve fills in p's spec the way a spawn would resolve the same
// request; it fails while p's provider is unavailable or its template is
// gone, and is tried again at the next fill.
func (ps *Pools) resolve(ctx context.Context, p *pool) {
	ps.mu.Lock()
	if p.ok {
		ps.mu.Unlock()
		return
	}
	spec := orchestrator.PoolSpec{Template: p.tmpl, Image: p.def.Image, Provider: p.def.Provider, MemoryMB: p.def.MemoryMB, VCPUs: p.def.VCPUs}
	gen := p.gen
	ps.mu.Unlock()
	out, err := ps.b.ResolvePool(ctx, spec)
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if gen != p.gen {
		return // changed meanwhile; the next fill resolves again
	}
	if err != nil {
		p.problem = err.Error()
		return
	}
	p.spec, p.ok, p.problem = out, true, ""
}

// adopt gives every pooled record back to its pool, and destroys those
// whose pool no longer exists or no longer describes them.
func (ps *Pools) adopt(ctx context.Context) {
	recs, err := ps.b.Members(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ps.log.Error("pools: list members to adopt", "err", err)
		}
		return
	}
	ps.mu.Lock()
	for _, p := range ps.pools {
		ps.mu.Unlock()
		ps.resolve(ctx, p)
		ps.mu.Lock()
	}
	var drop []member
	adopted := 0
	for _, sb := range recs {
		m := member{id: sb.ID, created: sb.CreatedAt}
		m.templateVersion, _ = strconv.Atoi(sb.Metadata[orchestrator.MetaTemplateVersion])
		p := ps.pools[sb.Metadata[orchestrator.MetaPool]]
		switch {
		case p == nil || !p.ok:
			drop = append(drop, m)
		case p.spec.Template != sb.Template || p.spec.Image != sb.Image || p.spec.Provider != sb.Provider ||
			p.spec.MemoryMB != sb.MemoryMB || p.spec.VCPUs != sb.VCPUs || p.spec.TemplateVersion != m.templateVersion:
			drop = append(drop, m)
		case slices.ContainsFunc(p.ready, func(r member) bool { return r.id == sb.ID }):
		default:
			p.ready = append(p.ready, m)
			adopted++
		}
	}
	for _, p := range ps.pools {
		slices.SortFunc(p.ready, func(a, b member) int { return a.created.Compare(b.created) })
	}
	ps.mu.Unlock()
	if adopted > 0 || len(drop) > 0 {
		ps.log.Info("pools: adopted members", "adopted", adopted, "replaced", len(drop))
	}
	ps.destroy(ctx, drop, "pool member replaced: no pool of the current configuration describes it")
}

// resolvePending resolves the pools whose spec is not resolved yet.
func (ps *Pools) resolvePending(ctx context.Context) {
	ps.mu.Lock()
	var pending []*pool
	for _, p := range ps.pools {
		if !p.ok {
			pending = append(pending, p)
		}
	}
	ps.mu.Unlock()
	for _, p := range pending {
		ps.resolve(ctx, p)
	}
}

// refresh makes the ready lists the pooled records of the store, with
// replicas sharing it: other replicas claim members too.
func (ps *Pools) refresh(ctx context.Context) error {
	ps.mu.Lock()
	before := ps.added
	ps.mu.Unlock()
	recs, err := ps.b.Members(ctx)
	if err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b store.Sandbox) int { return a.CreatedAt.Compare(b.CreatedAt) })
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.pools {
		known := map[string]member{}
		for _, m := range p.ready {
			known[m.id] = m
		}
		var ready []member
		listed := map[string]bool{}
		for _, sb := range recs {
			if !p.ok || sb.Metadata[orchestrator.MetaPool] != p.name || !describes(p.spec, sb) {
				continue
			}
			m, ok := known[sb.ID]
			if !ok {
				m = member{id: sb.ID, created: sb.CreatedAt, templateVersion: p.spec.TemplateVersion}
			}
			ready = append(ready, m)
			listed[sb.ID] = true
		}
		// A spawn of this process that finished while the store was read
		// is not in recs yet; dropping it would make fill spawn one more
		// than the target.
		for _, m := range p.ready {
			if m.added > before && !listed[m.id] {
				ready = append(ready, m)
			}
		}
		slices.SortStableFunc(ready, func(a, b member) int { return a.created.Compare(b.created) })
		p.ready = ready
	}
	return nil
}

// fill starts the spawns that bring every pool to its target, at most its
// concurrency at once, and none while a pool backs off after failures.
func (ps *Pools) fill(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	ps.resolvePending(ctx)
	if ps.shared {
		if err := ps.refresh(ctx); err != nil {
			if ctx.Err() == nil {
				ps.log.Error("pools: list members", "err", err)
			}
			return
		}
	}

	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := ps.now()
	for _, p := range ps.pools {
		if !p.ok || now.Before(p.nextTry) {
			continue
		}
		n := min(p.def.Size-len(p.ready)-p.creating, p.conc-p.creating)
		for range n {
			p.creating++
			spec, gen := p.spec, p.gen
			ps.work.Go(func() { ps.spawnOne(ctx, p, spec, gen) })
		}
	}
}

func (ps *Pools) spawnOne(ctx context.Context, p *pool, spec orchestrator.PoolSpec, gen int) {
	// A replica that lost the refill lease spawns no more.
	if err := lease.Check(ctx); err != nil {
		ps.mu.Lock()
		p.creating--
		ps.mu.Unlock()
		return
	}
	sb, err := ps.b.SpawnMember(ctx, p.name, spec)
	var version string
	if err == nil {
		version, _ = ps.b.SandboxImageVersion(ctx, sb)
	}
	ps.mu.Lock()
	p.creating--
	if errdefs.Classify(err) == errdefs.ErrConflict {
		// Its template changed after the pool resolved it: resolve again
		// (syncTemplates also rebuilds the pool) rather than back off.
		if gen == p.gen {
			p.ok = false
			p.gen++
		}
		ps.mu.Unlock()
		ps.kick()
		return
	}
	if err != nil && ctx.Err() != nil {
		// Stopped or lease lost: not the pool's failure.
		ps.mu.Unlock()
		return
	}
	if err != nil {
		p.failures++
		// Spawns of one round that fail together count as one failure.
		if now := ps.now(); !now.Before(p.nextTry) {
			p.backoff = min(max(2*p.backoff, ps.cfg.BackoffMin), ps.cfg.BackoffMax)
			p.nextTry = now.Add(p.backoff)
		}
		p.problem = "refill failed: " + err.Error()
		backoff := p.backoff
		ps.mu.Unlock()
		if ctx.Err() == nil {
			ps.log.Warn("pools: refill failed", "pool", p.name, "err", err, "retry_in", backoff)
			ps.retryLater(ctx, backoff)
		}
		return
	}
	p.backoff, p.nextTry, p.problem = 0, time.Time{}, ""
	m := member{id: sb.ID, created: sb.CreatedAt, imageVersion: version, templateVersion: spec.TemplateVersion}
	// Made from an image that changed since the pool last looked: the
	// switch was observed, so it must not become claimable.
	stale := p.removed || gen != p.gen || (p.version != "" && version != "" && version != p.version)
	if !stale && !slices.ContainsFunc(p.ready, func(r member) bool { return r.id == m.id }) {
		ps.added++
		m.added = ps.added
		p.ready = append(p.ready, m)
	}
	ps.mu.Unlock()
	if stale {
		ps.destroy(ctx, []member{m}, "pool member replaced: its pool changed while it was spawned")
	}
	ps.kick()
}

// retryLater wakes the refill loop once a backoff has passed. It is not
// work Run waits for: it ends with ctx.
func (ps *Pools) retryLater(ctx context.Context, d time.Duration) {
	go func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			ps.kick()
		}
	}()
}

// check replaces members past their pool's max age or made from an image
// that changed since, and forgets members whose records left the pooled
// state without a claim (reconcile found their runtime gone).
func (ps *Pools) check(ctx context.Context) {
	ps.destroy(ctx, ps.syncTemplates(ctx), "pool member replaced: its template changed or lost its pool")
	if ps.shared {
		if err := ps.refresh(ctx); err != nil {
			if ctx.Err() == nil {
				ps.log.Error("pools: list members", "err", err)
			}
			return
		}
	}
	recs, err := ps.b.Members(ctx)
	if err != nil {
		if ctx.Err() == nil {
			ps.log.Error("pools: list members", "err", err)
		}
		return
	}
	pooled := map[string]store.Sandbox{}
	for _, sb := range recs {
		pooled[sb.ID] = sb
	}

	type probe struct {
		p       *pool
		spec    orchestrator.PoolSpec
		members []member
	}
	var probes []probe
	var old []member
	now := ps.now()
	ps.mu.Lock()
	for _, p := range ps.pools {
		p.ready = slices.DeleteFunc(p.ready, func(m member) bool {
			_, ok := pooled[m.id]
			return !ok
		})
		if p.maxAge > 0 {
			p.ready = slices.DeleteFunc(p.ready, func(m member) bool {
				if now.Sub(m.created) >= p.maxAge {
					old = append(old, m)
					return true
				}
				return false
			})
		}
		if p.ok && len(p.ready) > 0 {
			probes = append(probes, probe{p: p, spec: p.spec, members: slices.Clone(p.ready)})
		}
	}
	ps.mu.Unlock()
	ps.destroy(ctx, old, "pool member replaced: older than the pool's max_age")

	for _, pr := range probes {
		ps.checkImage(ctx, pr.p, pr.spec, pr.members, pooled)
	}
}

// checkImage replaces p's members whose image is no longer what its name
// resolves to (Docker: the image ID behind the tag changed).
func (ps *Pools) checkImage(ctx context.Context, p *pool, spec orchestrator.PoolSpec, members []member, recs map[string]store.Sandbox) {
	current, err := ps.b.ImageVersion(ctx, spec.Provider, spec.Image)
	if err != nil || current == "" {
		return // cannot tell now; a spawn will report a missing image
	}
	known := map[string]string{}
	for _, m := range members {
		v := m.imageVersion
		if v == "" {
			if v, err = ps.b.SandboxImageVersion(ctx, recs[m.id]); err != nil {
				continue
			}
		}
		known[m.id] = v
	}
	var stale []member
	ps.mu.Lock()
	p.version = current
	// Members that became ready since the probe are judged by the
	// version their spawn recorded: once p.version is set here, no member
	// of another image stays claimable.
	p.ready = slices.DeleteFunc(p.ready, func(m member) bool {
		v, ok := known[m.id]
		if !ok {
			v = m.imageVersion
		}
		if v != "" && v != current {
			stale = append(stale, m)
			return true
		}
		return false
	})
	for i := range p.ready {
		if v, ok := known[p.ready[i].id]; ok {
			p.ready[i].imageVersion = v
		}
	}
	ps.mu.Unlock()
	ps.destroy(ctx, stale, "pool member replaced: its image changed")
}

// destroy removes members already taken off their pools' ready lists. A
// member claimed meanwhile is left to its new owner.
func (ps *Pools) destroy(ctx context.Context, members []member, reason string) {
	var errs []error
	for _, m := range members {
		if err := lease.Check(ctx); err != nil {
			// The refill lease was lost: the new holder replaces them.
			ps.log.Warn("pools: not replacing members: refill lease lost", "err", err)
			return
		}
		err := ps.b.DestroyMember(context.WithoutCancel(ctx), m.id, reason)
		if err != nil && errdefs.Classify(err) != errdefs.ErrConflict && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: %w", m.id, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Their records stay pooled: the next start adopts or replaces them.
		ps.log.Error("pools: destroy members", "reason", reason, "err", err)
	}
}

// Enabled says whether any pool is declared.
func (ps *Pools) Enabled() bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return len(ps.pools) > 0
}
