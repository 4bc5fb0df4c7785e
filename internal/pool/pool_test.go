package pool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// clock is a settable time source shared by the Manager and the pools.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// backend is the real Manager, with spawns that can be made to fail and
// image versions the test sets (the mock provider has none).
type backend struct {
	*orchestrator.Manager
	fail     atomic.Bool
	spawns   atomic.Int64
	mu       sync.Mutex
	versions map[string]string // image → version now; absent: the provider cannot tell
	made     map[string]string // sandbox → version it was made from
	// membersLag holds every answer of Members back this long after the
	// store was read, widening the window in which spawns finish unseen.
	membersLag time.Duration
}

func (b *backend) Members(ctx context.Context) ([]store.Sandbox, error) {
	recs, err := b.Manager.Members(ctx)
	time.Sleep(b.membersLag)
	return recs, err
}

func (b *backend) SpawnMember(ctx context.Context, pool string, spec orchestrator.PoolSpec) (store.Sandbox, error) {
	b.spawns.Add(1)
	if b.fail.Load() {
		return store.Sandbox{}, errdefs.New(errdefs.ErrProviderUnavailable, "injected spawn failure")
	}
	sb, err := b.Manager.SpawnMember(ctx, pool, spec)
	if err == nil {
		b.mu.Lock()
		b.made[sb.ID] = b.versions[sb.Image]
		b.mu.Unlock()
	}
	return sb, err
}

func (b *backend) ImageVersion(_ context.Context, _, image string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.versions[image], nil
}

func (b *backend) SandboxImageVersion(_ context.Context, sb store.Sandbox) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.made[sb.ID], nil
}

func (b *backend) setVersion(image, v string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.versions[image] = v
}

type env struct {
	m     *orchestrator.Manager
	st    store.Store
	b     *backend
	clock *clock
	db    string
	dir   string
}

func newEnv(t *testing.T, mod func(*orchestrator.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{clock: newClock(), db: filepath.Join(dir, "stacyvm.db"), dir: filepath.Join(dir, "mock")}
	e.open(t, mod)
	return e
}

// open makes a Manager over the env's database and mock directory: a
// second call is a restart.
func (e *env) open(t *testing.T, mod func(*orchestrator.Config)) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), e.db)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	mp, err := mock.New(mock.Options{Dir: e.dir})
	if err != nil {
		t.Fatalf("mock: %v", err)
	}
	reg := provider.NewRegistry()
	reg.Register(mp)
	cfg := orchestrator.Config{Now: e.clock.Now, DefaultImage: "img:1", InstanceID: "inst-pool-test"}
	if mod != nil {
		mod(&cfg)
	}
	e.st = st
	e.m = orchestrator.New(st, reg, cfg)
	e.b = &backend{Manager: e.m, versions: map[string]string{}, made: map[string]string{}}
}

// start runs pools over the env's Manager until the test ends (or the
// returned stop is called).
func (e *env) start(t *testing.T, cfg Config) (*Pools, func()) {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = e.clock.Now
	}
	ps := New(e.b, cfg)
	e.m.SetPools(ps)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ps.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return ps, stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func status(t *testing.T, ps *Pools, name string) Status {
	t.Helper()
	list, err := ps.Status(context.Background())
	if err != nil {
		t.Fatalf("pool status: %v", err)
	}
	for _, s := range list {
		if s.Name == name {
			return s
		}
	}
	return Status{}
}

func waitReady(t *testing.T, ps *Pools, name string, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("pool %s to have %d ready", name, n), func() bool {
		s := status(t, ps, name)
		return s.Ready == n && s.Creating == 0
	})
}

func pooledIDs(t *testing.T, st store.Store) []string {
	t.Helper()
	recs, err := st.ListSandboxes(context.Background(), store.SandboxFilter{States: []string{string(provider.StatePooled)}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, sb := range recs {
		ids = append(ids, sb.ID)
	}
	slices.Sort(ids)
	return ids
}

func TestFillClaimRefill(t *testing.T) {
	e := newEnv(t, func(c *orchestrator.Config) { c.MaxPerOwner = 1 })
	ps, _ := e.start(t, Config{Pools: []Def{{Name: "small", Image: "img:1", Size: 3}}})
	waitReady(t, ps, "small", 3)

	// Members are nobody's sandboxes: not listed.
	list, err := e.m.List(context.Background(), orchestrator.ListFilter{})
	if err != nil || len(list) != 0 {
		t.Fatalf("List with a full pool = %d records, %v; want none", len(list), err)
	}
	members := pooledIDs(t, e.st)
	if len(members) != 3 {
		t.Fatalf("%d pooled records, want 3", len(members))
	}

	e.clock.Add(time.Hour) // the TTL starts at the claim, not at the member's spawn
	sb, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{
		OwnerID: "alice", Metadata: map[string]string{"job": "7"}, Env: map[string]string{"GREETING": "hi"}, TTL: 10 * time.Minute,
	})
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	if !slices.Contains(members, sb.ID) {
		t.Fatalf("spawn got %s, not one of the members %v", sb.ID, members)
	}
	if sb.State != "running" || sb.OwnerID != "alice" || sb.Metadata["job"] != "7" || len(sb.Metadata) != 1 {
		t.Errorf("claimed sandbox = state %s owner %q metadata %v", sb.State, sb.OwnerID, sb.Metadata)
	}
	if want := e.clock.Now().Add(10 * time.Minute); !sb.ExpiresAt.Equal(want) {
		t.Errorf("expires at %s, want %s (claim + TTL)", sb.ExpiresAt, want)
	}
	res, err := e.m.Exec(context.Background(), sb.ID, orchestrator.ExecRequest{Command: "echo $GREETING"})
	if err != nil || res.Stdout != "hi\n" {
		t.Errorf("exec in the claimed sandbox = %+v, %v; want the claim's env", res, err)
	}
	got, err := e.st.GetSandbox(context.Background(), sb.ID)
	if err != nil || got.State != "running" || got.OwnerID != "alice" {
		t.Errorf("stored claim = %+v, %v", got, err)
	}
	list, _ = e.m.List(context.Background(), orchestrator.ListFilter{})
	if len(list) != 1 || list[0].ID != sb.ID {
		t.Errorf("List after the claim = %v, want only %s", list, sb.ID)
	}
	h, _ := e.m.History(context.Background(), sb.ID)
	var states []string
	for _, tr := range h {
		states = append(states, tr.State)
	}
	if !slices.Equal(states, []string{"creating", "pooled", "running"}) {
		t.Errorf("history = %v, want creating, pooled, running", states)
	}

	waitReady(t, ps, "small", 3)
	st := status(t, ps, "small")
	if st.Claimed != 1 || st.Misses != 0 || st.Target != 3 {
		t.Errorf("status = %+v, want 1 claimed, 0 misses, target 3", st)
	}

	// A spawn that differs in anything the members were made with does
	// not claim one.
	for _, req := range []orchestrator.SpawnRequest{{Image: "img:2"}, {MemoryMB: 1024}, {VCPUs: 2}, {Network: "none"}} {
		sb, err := e.m.Spawn(context.Background(), req)
		if err != nil {
			t.Fatalf("cold spawn %+v: %v", req, err)
		}
		if slices.Contains(pooledIDs(t, e.st), sb.ID) || slices.Contains(members, sb.ID) {
			t.Errorf("spawn %+v claimed a member", req)
		}
		if err := e.m.Destroy(context.Background(), sb.ID); err != nil {
			t.Fatal(err)
		}
	}

	// The owner's limit applies at the claim: alice has her one sandbox,
	// so her second spawn fails and leaves the pool intact.
	_, err = e.m.Spawn(context.Background(), orchestrator.SpawnRequest{OwnerID: "alice"})
	if errdefs.Classify(err) != errdefs.ErrResourceLimit {
		t.Fatalf("claim over max_per_owner: err = %v, want resource limit", err)
	}
	if s := status(t, ps, "small"); s.Ready != 3 || s.Claimed != 1 {
		t.Errorf("after a refused claim status = %+v, want 3 ready, 1 claimed", s)
	}
	if _, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{OwnerID: "bob"}); err != nil {
		t.Fatalf("another owner's claim: %v", err)
	}
}

// TestConcurrentClaims: 50 spawns at once against a pool of 50 each get a
// distinct member; 50 more beyond it spawn cold; no member is handed out
// twice and every claimed member went pooled → running exactly once.
func TestConcurrentClaims(t *testing.T) {
	e := newEnv(t, func(c *orchestrator.Config) { c.MaxSandboxes = 200 })
	ps, _ := e.start(t, Config{Pools: []Def{{Name: "wide", Image: "img:1", Size: 50, Concurrency: 10}}})
	waitReady(t, ps, "wide", 50)
	members := pooledIDs(t, e.st)
	ps.mu.Lock()
	ps.pools["wide"].def.Size = 0 // no refill: the 50 beyond must go cold
	ps.mu.Unlock()

	const spawns = 100
	ids := make([]string, spawns)
	errs := make([]error, spawns)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range spawns {
		wg.Go(func() {
			<-start
			sb, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{OwnerID: fmt.Sprintf("u%d", i)})
			ids[i], errs[i] = sb.ID, err
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("spawns failed: %v", err)
	}
	seen := map[string]int{}
	claimed := 0
	for i, id := range ids {
		if prev, dup := seen[id]; dup {
			t.Fatalf("spawns %d and %d both got %s", prev, i, id)
		}
		seen[id] = i
		if slices.Contains(members, id) {
			claimed++
		}
		sb, err := e.st.GetSandbox(context.Background(), id)
		if err != nil || sb.State != "running" || sb.OwnerID != fmt.Sprintf("u%d", i) {
			t.Errorf("spawn %d: record %+v, %v", i, sb, err)
		}
		h, _ := e.st.History(context.Background(), id)
		pooled := 0
		for _, tr := range h {
			if tr.State == string(provider.StatePooled) {
				pooled++
			}
		}
		if pooled > 1 {
			t.Errorf("%s was pooled %d times", id, pooled)
		}
	}
	if claimed != 50 {
		t.Errorf("%d spawns claimed members, want all 50 (the rest cold)", claimed)
	}
	if s := status(t, ps, "wide"); s.Claimed != 50 || s.Misses != 50 || s.Ready != 0 {
		t.Errorf("status = %+v, want 50 claimed, 50 misses, 0 ready", s)
	}
}

func TestRejectWhenEmpty(t *testing.T) {
	e := newEnv(t, nil)
	e.b.fail.Store(true)
	ps, _ := e.start(t, Config{Pools: []Def{{Name: "strict", Image: "img:1", Size: 1, Policy: PolicyReject}},
		BackoffMin: 3 * time.Second, BackoffMax: 3 * time.Second})
	waitFor(t, "a failed refill", func() bool { return status(t, ps, "strict").Failures >= 1 })

	_, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{})
	if errdefs.Classify(err) != errdefs.ErrResourceLimit {
		t.Fatalf("spawn on an empty reject pool: err = %v, want resource limit", err)
	}
	if d := errdefs.RetryAfter(err); d < time.Second {
		t.Errorf("RetryAfter = %s, want at least 1s", d)
	}
	if s := status(t, ps, "strict"); s.Misses != 1 || s.Problem == "" {
		t.Errorf("status = %+v, want one miss and the refill problem", s)
	}
	// A request the pool does not match still spawns.
	if _, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{Image: "img:other"}); err != nil {
		t.Errorf("unmatched spawn: %v", err)
	}

	e.b.fail.Store(false)
	e.clock.Add(time.Minute) // past the backoff
	ps.kick()
	waitReady(t, ps, "strict", 1)
	if _, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{}); err != nil {
		t.Errorf("spawn once refilled: %v", err)
	}
}

// TestBackoff drives refills by hand: failures in a row double the delay
// up to the maximum, concurrency bounds spawns in flight, and a success
// resets the delay.
func TestBackoff(t *testing.T) {
	e := newEnv(t, nil)
	e.b.fail.Store(true)
	ps := New(e.b, Config{Pools: []Def{{Name: "p", Image: "img:1", Size: 5, Concurrency: 2}},
		BackoffMin: time.Second, BackoffMax: 4 * time.Second, Now: e.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	round := func() {
		ps.fill(ctx)
		ps.work.Wait()
	}
	round()
	if got := e.b.spawns.Load(); got != 2 {
		t.Fatalf("first fill started %d spawns, want 2 (the concurrency)", got)
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		p := ps.pools["p"]
		before := e.b.spawns.Load()
		round() // still backing off: nothing starts
		if e.b.spawns.Load() != before {
			t.Fatalf("round %d: a refill started during the backoff", i)
		}
		ps.mu.Lock()
		got := p.backoff
		ps.mu.Unlock()
		if got != want {
			t.Fatalf("round %d: backoff %s, want about %s", i, got, want)
		}
		e.clock.Add(got)
		round()
	}
	e.b.fail.Store(false)
	e.clock.Add(time.Minute)
	for range 5 {
		round()
	}
	if s := status(t, ps, "p"); s.Ready != 5 || s.Problem != "" {
		t.Errorf("after recovery status = %+v, want 5 ready and no problem", s)
	}
	if ps.pools["p"].backoff != 0 {
		t.Errorf("backoff %s after a success, want 0", ps.pools["p"].backoff)
	}
}

func TestMaxAgeAndImageChangeReplaceMembers(t *testing.T) {
	e := newEnv(t, nil)
	e.b.setVersion("img:1", "v1")
	ps, _ := e.start(t, Config{Pools: []Def{{Name: "aged", Image: "img:1", Size: 2, MaxAge: 10 * time.Minute}},
		CheckInterval: time.Hour}) // checks run by hand below
	waitReady(t, ps, "aged", 2)
	first := pooledIDs(t, e.st)

	e.clock.Add(5 * time.Minute)
	ps.check(context.Background())
	if got := pooledIDs(t, e.st); !slices.Equal(got, first) {
		t.Fatalf("members younger than max_age replaced: %v → %v", first, got)
	}
	e.clock.Add(6 * time.Minute)
	ps.check(context.Background())
	ps.kick()
	waitReady(t, ps, "aged", 2)
	second := pooledIDs(t, e.st)
	for _, id := range first {
		if slices.Contains(second, id) {
			t.Errorf("member %s past max_age kept", id)
		}
		sb, err := e.st.GetSandbox(context.Background(), id)
		if err != nil || sb.State != "destroyed" || sb.LastError == "" {
			t.Errorf("replaced member %s: %+v, %v; want destroyed with a reason", id, sb, err)
		}
	}

	e.b.setVersion("img:1", "v2") // the tag now names another build
	ps.check(context.Background())
	ps.kick()
	waitReady(t, ps, "aged", 2)
	third := pooledIDs(t, e.st)
	for _, id := range second {
		if slices.Contains(third, id) {
			t.Errorf("member %s of the old image kept", id)
		}
	}
	for _, id := range third {
		if v, _ := e.b.SandboxImageVersion(context.Background(), store.Sandbox{ID: id}); v != "v2" {
			t.Errorf("new member %s made from image version %q, want v2", id, v)
		}
	}
}

// TestClaimAfterImageChangeSkipsUnknownVersions: a member whose image
// version could not be told (when spawned and when checked) is not handed
// out once a check has seen the image change; the claim replaces it.
func TestClaimAfterImageChangeSkipsUnknownVersions(t *testing.T) {
	e := newEnv(t, nil)
	ps, _ := e.start(t, Config{Pools: []Def{{Name: "p", Image: "img:1", Size: 2}},
		CheckInterval: time.Hour}) // checks run by hand below
	waitReady(t, ps, "p", 2) // made while the version could not be told
	old := pooledIDs(t, e.st)

	e.b.setVersion("img:1", "v2")
	ps.check(context.Background())
	sb, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{Image: "img:1"})
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(old, sb.ID) {
		t.Fatalf("claimed %s, a member of unknown image version, after the image changed", sb.ID)
	}
	for _, id := range old {
		rec, err := e.st.GetSandbox(context.Background(), id)
		if err != nil || rec.State != "destroyed" {
			t.Errorf("member %s of unknown version after the change: %+v, %v; want destroyed", id, rec, err)
		}
	}
}

func TestTemplatePool(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	if _, err := e.m.CreateTemplate(ctx, store.Template{Name: "py", Image: "img:1", PoolSize: 2,
		Setup: []string{"echo one > setup.txt"}, Env: map[string]string{"FROM": "template"}}); err != nil {
		t.Fatal(err)
	}
	ps, _ := e.start(t, Config{})
	waitReady(t, ps, "template:py", 2)
	members := pooledIDs(t, e.st)

	sb, err := e.m.Spawn(ctx, orchestrator.SpawnRequest{Template: "py", OwnerID: "bob", Env: map[string]string{"EXTRA": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(members, sb.ID) || sb.Template != "py" {
		t.Fatalf("template spawn got %s (template %q), want one of %v", sb.ID, sb.Template, members)
	}
	res, err := e.m.Exec(ctx, sb.ID, orchestrator.ExecRequest{Command: "cat setup.txt; echo $FROM $EXTRA"})
	if err != nil || res.Stdout != "one\ntemplate x\n" {
		t.Errorf("claimed member = %q, %v; want the setup's file and both environments", res.Stdout, err)
	}
	// A plain spawn of the same image is not the template's.
	plain, err := e.m.Spawn(ctx, orchestrator.SpawnRequest{Image: "img:1"})
	if err != nil || slices.Contains(members, plain.ID) {
		t.Errorf("plain spawn claimed a template member: %s, %v", plain.ID, err)
	}

	waitReady(t, ps, "template:py", 2)
	before := pooledIDs(t, e.st)
	if _, err := e.m.UpdateTemplate(ctx, "py", store.Template{Image: "img:1", PoolSize: 3, Setup: []string{"echo two > setup.txt"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pool rebuilt from the new version", func() bool {
		s := status(t, ps, "template:py")
		if s.Ready != 3 || s.Creating != 0 {
			return false
		}
		for _, id := range pooledIDs(t, e.st) {
			if slices.Contains(before, id) {
				return false
			}
		}
		return true
	})
	sb, err = e.m.Spawn(ctx, orchestrator.SpawnRequest{Template: "py"})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.m.Exec(ctx, sb.ID, orchestrator.ExecRequest{Command: "cat setup.txt"}); err != nil || res.Stdout != "two\n" {
		t.Errorf("member after the update = %q, %v; want the new setup", res.Stdout, err)
	}

	if err := e.m.DeleteTemplate(ctx, "py"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pool drained", func() bool { return len(pooledIDs(t, e.st)) == 0 && status(t, ps, "template:py").Name == "" })
}

// TestAdoptAfterRestart: members outlive the pools that made them; the
// next start gives them back to their pool without spawning, and replaces
// those no pool describes any more.
func TestAdoptAfterRestart(t *testing.T) {
	e := newEnv(t, nil)
	ps, stop := e.start(t, Config{Pools: []Def{{Name: "keep", Image: "img:1", Size: 3}, {Name: "gone", Image: "img:2", Size: 1}}})
	waitReady(t, ps, "keep", 3)
	waitReady(t, ps, "gone", 1)
	stop()
	all := pooledIDs(t, e.st)
	if len(all) != 4 {
		t.Fatalf("%d members after stop, want 4 kept", len(all))
	}

	e.open(t, nil) // restart: a new Manager over the same database and runtimes
	if _, err := e.m.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if got := pooledIDs(t, e.st); !slices.Equal(got, all) {
		t.Fatalf("reconcile changed the members: %v → %v", all, got)
	}
	ps, _ = e.start(t, Config{Pools: []Def{{Name: "keep", Image: "img:1", Size: 3}}})
	waitReady(t, ps, "keep", 3)
	if n := e.b.spawns.Load(); n != 0 {
		t.Errorf("%d spawns after the restart, want 0: the members are adopted", n)
	}
	waitFor(t, "the member of the removed pool replaced", func() bool { return len(pooledIDs(t, e.st)) == 3 })
	sb, err := e.m.Spawn(context.Background(), orchestrator.SpawnRequest{})
	if err != nil || !slices.Contains(all, sb.ID) {
		t.Errorf("spawn after restart = %s, %v; want an adopted member", sb.ID, err)
	}
}
