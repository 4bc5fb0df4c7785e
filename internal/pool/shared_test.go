package pool

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// flakyLeases is a replica's lease store whose renewals of the refill
// lease can be made to fail: the replica then loses that lease by its own
// clock, as one cut off from the database or paused would.
type flakyLeases struct {
	lease.Store
	fail atomic.Bool
}

func (f *flakyLeases) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	if name == LeaseRefill && f.fail.Load() {
		return store.Lease{}, errdefs.New(errdefs.ErrProviderUnavailable, "injected: database unreachable")
	}
	return f.Store.AcquireLease(ctx, name, holder, ttl)
}

// replica is one of several Managers with pools on one PostgreSQL store
// and one runtime.
type replica struct {
	name   string
	b      *backend
	ps     *Pools
	leases *flakyLeases
	stop   func()
}

// sharedReplicas starts n replicas with the same pool configuration.
func sharedReplicas(t *testing.T, n int, cfg Config, opts ...func(*backend)) ([]*replica, store.Store, *mock.Provider) {
	t.Helper()
	dsn := pgtest.DSN(t)
	pg, err := postgres.Open(t.Context(), postgres.Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	mp, err := mock.New(mock.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var out []*replica
	for i := range n {
		r := &replica{name: fmt.Sprintf("replica-%d", i), leases: &flakyLeases{Store: pg}}
		reg := provider.NewRegistry()
		reg.Register(mp)
		m := orchestrator.New(pg, reg, orchestrator.Config{DefaultImage: "img:1", InstanceID: "inst-pool-shared",
			MaxSandboxes: 100, Shared: true, Leases: lease.New(r.leases, r.name, 2*time.Second, nil)})
		r.b = &backend{Manager: m, versions: map[string]string{}, made: map[string]string{}}
		for _, o := range opts {
			o(r.b)
		}
		r.ps = New(r.b, cfg)
		m.SetPools(r.ps)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.ps.Run(ctx)
		}()
		var once sync.Once
		r.stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(r.stop)
		out = append(out, r)
	}
	return out, pg, mp
}

// settled waits until the store holds exactly n members of pool and
// nothing being spawned, as every replica reports, for a while: a second
// refilling replica would overshoot meanwhile.
func settled(t *testing.T, rs []*replica, st store.Store, mp *mock.Provider, name string, n int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(time.Minute)
	var since time.Time
	for {
		recs, err := st.ListSandboxes(ctx, store.SandboxFilter{ExcludeDestroyed: true,
			States: []string{string(provider.StatePooled), string(provider.StateCreating)}})
		if err != nil {
			t.Fatal(err)
		}
		pooled := 0
		for _, sb := range recs {
			if sb.State == string(provider.StatePooled) && sb.Metadata[orchestrator.MetaPool] == name {
				pooled++
			}
		}
		if pooled > n {
			t.Fatalf("%d members of %s in the store, more than its target %d", pooled, name, n)
		}
		ok := pooled == n && len(recs) == n
		for _, r := range rs {
			if r.stop == nil {
				continue
			}
			if s := status(t, r.ps, name); s.Ready != n || s.Creating != 0 {
				ok = false
			}
		}
		switch {
		case !ok:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) > 2*time.Second:
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s never settled at %d members (%d pooled, %d pooled or creating)", name, n, pooled, len(recs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runtimes counts the mock runtimes that exist.
func runtimes(t *testing.T, mp *mock.Provider) int {
	t.Helper()
	list, err := mp.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// holder returns the replica that holds the refill lease now.
func holder(t *testing.T, rs []*replica, st store.Store) *replica {
	t.Helper()
	var found *replica
	waitFor(t, "a holder of the refill lease", func() bool {
		l, err := st.GetLease(context.Background(), LeaseRefill)
		if err != nil {
			return false
		}
		for _, r := range rs {
			if r.name == l.Holder {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// TestSharedRefillSeesItsOwnSpawns: the refilling replica reads the
// store's members before each fill; spawns of its own that finish during
// that read are not in what it read, and must still count, or the pool
// overshoots its target.
func TestSharedRefillSeesItsOwnSpawns(t *testing.T) {
	rs, st, mp := sharedReplicas(t, 1, Config{Pools: []Def{{Name: "warm", Image: "img:1", Size: 6, Concurrency: 3}},
		CheckInterval: 200 * time.Millisecond}, func(b *backend) { b.membersLag = 30 * time.Millisecond })
	settled(t, rs, st, mp, "warm", 6)
	if n := runtimes(t, mp); n != 6 {
		t.Fatalf("%d runtimes for a pool of 6", n)
	}
	if n := rs[0].b.spawns.Load(); n != 6 {
		t.Fatalf("%d spawns to fill a pool of 6", n)
	}
}

// TestSharedPoolsRefillOnce: replicas with the same pool configuration on
// one store fill the pool to its target once, not once each; both report
// the store's numbers; concurrent claims through both get distinct
// members; when the refilling replica loses its lease (its renewals fail)
// it stops spawning and the other takes the refills over; and when a
// replica stops, the other refills alone.
func TestSharedPoolsRefillOnce(t *testing.T) {
	rs, st, mp := sharedReplicas(t, 2, Config{Pools: []Def{{Name: "warm", Image: "img:1", Size: 6, Concurrency: 3}},
		CheckInterval: 200 * time.Millisecond})
	settled(t, rs, st, mp, "warm", 6)
	if n := runtimes(t, mp); n != 6 {
		t.Fatalf("%d runtimes for a pool of 6 on two replicas", n)
	}
	if a, b := rs[0].b.spawns.Load(), rs[1].b.spawns.Load(); a != 0 && b != 0 {
		t.Logf("both replicas spawned members (%d and %d): the lease passed between them", a, b)
	}

	// Claims through both replicas at once: distinct members, each
	// pooled once, beyond the pool cold.
	members := pooledIDs(t, st)
	const claims = 12
	ids := make([]string, claims)
	errs := make([]error, claims)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range claims {
		wg.Go(func() {
			<-start
			sb, err := rs[i%2].b.Spawn(context.Background(), orchestrator.SpawnRequest{OwnerID: fmt.Sprintf("u%d", i)})
			ids[i], errs[i] = sb.ID, err
		})
	}
	close(start)
	wg.Wait()
	seen := map[string]int{}
	claimed := 0
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("spawn %d: %v", i, errs[i])
		}
		if prev, dup := seen[id]; dup {
			t.Fatalf("spawns %d and %d both got %s", prev, i, id)
		}
		seen[id] = i
		if slices.Contains(members, id) {
			claimed++
		}
		sb, err := st.GetSandbox(context.Background(), id)
		if err != nil || sb.State != "running" || sb.OwnerID != fmt.Sprintf("u%d", i) {
			t.Errorf("spawn %d: record %+v, %v", i, sb, err)
		}
	}
	// Refills run meanwhile, so a claim may also take a member spawned
	// after the list was read: at least the six listed were claimed.
	if claimed < 6 {
		t.Errorf("%d of the 6 members were claimed by %d spawns", claimed, claims)
	}
	settled(t, rs, st, mp, "warm", 6)
	if n := runtimes(t, mp); n != 6+claims {
		t.Errorf("%d runtimes, want 6 members + %d claimed or cold sandboxes", n, claims)
	}

	// The holder loses the lease: its renewals fail, so by its own clock
	// it stops; the other replica takes over once the lease expires.
	lead := holder(t, rs, st)
	other := rs[0]
	if other == lead {
		other = rs[1]
	}
	lead.leases.fail.Store(true)
	waitFor(t, "the other replica to take the refill lease", func() bool {
		l, err := st.GetLease(context.Background(), LeaseRefill)
		return err == nil && l.Holder == other.name
	})
	before := lead.b.spawns.Load()
	for i := range 3 {
		if _, err := lead.b.Spawn(context.Background(), orchestrator.SpawnRequest{OwnerID: fmt.Sprintf("after-%d", i)}); err != nil {
			t.Fatalf("claim through the replica that lost the lease: %v", err)
		}
	}
	settled(t, rs, st, mp, "warm", 6)
	if n := lead.b.spawns.Load(); n != before {
		t.Errorf("the replica that lost the refill lease spawned %d members after losing it", n-before)
	}

	// The holder stops: the remaining replica refills alone.
	lead.leases.fail.Store(false)
	other.stop()
	other.stop = nil
	for i := range 4 {
		if _, err := lead.b.Spawn(context.Background(), orchestrator.SpawnRequest{OwnerID: fmt.Sprintf("last-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	settled(t, rs, st, mp, "warm", 6)
	if n := runtimes(t, mp); n != 6+claims+3+4 {
		t.Errorf("%d runtimes, want 6 members + %d sandboxes", n, claims+3+4)
	}
}
