package envs_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/registry"

	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// sharedBuilder is one daemon that several replicas build on: it counts
// the builds of each tag and how many of them ran at once.
type sharedBuilder struct {
	fakeBuilder
	hold time.Duration // how long each build takes
	// hang, when set, is called by each build; a build whose hang
	// returns a channel waits for it, ignoring its context (a replica
	// paused mid-build).
	hang func(replica string) <-chan struct{}

	mu                sync.Mutex
	builds, running   map[string]int
	maxConcurrent     map[string]int
	buildsBy          map[string][]string // tag → replicas, in order
	completedByReplic map[string]int
}

func newSharedBuilder(hold time.Duration) *sharedBuilder {
	return &sharedBuilder{fakeBuilder: fakeBuilder{images: map[string]envs.Image{}}, hold: hold,
		builds: map[string]int{}, running: map[string]int{}, maxConcurrent: map[string]int{},
		buildsBy: map[string][]string{}, completedByReplic: map[string]int{}}
}

// replica is the Builder one replica uses: the shared daemon, named.
type replica struct {
	*sharedBuilder
	name string
}

func (r replica) Build(ctx context.Context, _ []byte, tag string, _ map[string]string, log io.Writer) (envs.Image, error) {
	f := r.sharedBuilder
	f.mu.Lock()
	f.builds[tag]++
	f.running[tag]++
	f.maxConcurrent[tag] = max(f.maxConcurrent[tag], f.running[tag])
	f.buildsBy[tag] = append(f.buildsBy[tag], r.name)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running[tag]--
		f.mu.Unlock()
	}()
	fmt.Fprintln(log, "Step 1/1 : built by "+r.name)
	if f.hang != nil {
		if ch := f.hang(r.name); ch != nil {
			<-ch
			return envs.Image{}, fmt.Errorf("woke up after a pause")
		}
	}
	select {
	case <-ctx.Done():
		return envs.Image{}, ctx.Err()
	case <-time.After(f.hold):
	}
	img := envs.Image{ID: "sha256:" + tag, Size: 1}
	// The images are the fakeBuilder's, under its own lock (Inspect's).
	f.fakeBuilder.mu.Lock()
	f.images[tag] = img
	f.fakeBuilder.mu.Unlock()
	f.mu.Lock()
	f.completedByReplic[r.name]++
	f.mu.Unlock()
	return img, nil
}

func (r replica) Inspect(ctx context.Context, ref string) (envs.Image, error) {
	return r.fakeBuilder.Inspect(ctx, ref)
}

func (r replica) Remove(ctx context.Context, ref string) error { return r.fakeBuilder.Remove(ctx, ref) }

func (r replica) Push(context.Context, string, string, registry.AuthConfig, io.Writer) (string, error) {
	return "", errdefs.New(errdefs.ErrUnimplemented, "no registry")
}

func (r replica) Export(context.Context, string, io.Writer) error {
	return errdefs.New(errdefs.ErrUnimplemented, "no export")
}

func openPostgres(t *testing.T) store.Store {
	t.Helper()
	dsn := pgtest.DSN(t)
	pg, err := postgres.Open(t.Context(), postgres.Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	return pg
}

// startReplica runs a build service as one replica would, until stop (or
// the test's end).
func startReplica(t *testing.T, st lease.Store, full store.Store, b envs.Builder, name string, ttl time.Duration, maxAttempts int) (svc *envs.Service, stop func()) {
	t.Helper()
	svc = envs.New(full, b, envs.Config{
		Workers: 2, MaxAttempts: maxAttempts,
		Leases: lease.New(st, name, ttl, nil),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err := svc.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	return svc, stop
}

func waitFor(t *testing.T, st store.Store, id string, ok func(store.EnvBuild) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, err := st.GetEnvBuild(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if ok(b) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s: %s (attempt %d): the awaited state never came\n%s", id, b.Status, b.Attempts, b.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitBuilds(t *testing.T, st store.Store, ids []string, limit time.Duration) []store.EnvBuild {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		var out []store.EnvBuild
		for _, id := range ids {
			b, err := st.GetEnvBuild(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if store.BuildFinished(b.Status) {
				out = append(out, b)
			}
		}
		if len(out) == len(ids) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d builds finished after %v", len(out), len(ids), limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBuildsOnceAcrossReplicas: builds queued on two replicas that share
// a store and a daemon are each built exactly once, never twice at
// once, though every build outlives the lease TTL several times (the
// replicas' recovery, running all along, leaves live builds alone).
func TestBuildsOnceAcrossReplicas(t *testing.T) {
	st := openPostgres(t)
	sb := newSharedBuilder(1500 * time.Millisecond)
	const ttl = 500 * time.Millisecond
	a, _ := startReplica(t, st, st, replica{sb, "a"}, "a", ttl, 2)
	b, _ := startReplica(t, st, st, replica{sb, "b"}, "b", ttl, 2)
	var ids []string
	for i := range 6 {
		svc := a
		if i%2 == 1 {
			svc = b
		}
		spec := newSpec(t, svc, fmt.Sprint("env-", i), fmt.Sprint("pkg", i))
		bld, err := svc.CreateBuild(t.Context(), spec.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, bld.ID)
	}
	for _, bld := range waitBuilds(t, st, ids, 2*time.Minute) {
		if bld.Status != store.BuildReady || bld.Attempts != 1 {
			t.Errorf("build %s: %s after %d attempts (%s), want ready after 1\n%s", bld.ID, bld.Status, bld.Attempts, bld.Reason, bld.Log)
		}
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if len(sb.builds) != len(ids) {
		t.Errorf("%d tags built, want %d", len(sb.builds), len(ids))
	}
	for tag, n := range sb.builds {
		if n != 1 || sb.maxConcurrent[tag] != 1 {
			t.Errorf("tag %s built %d times (%d at once, by %v), want once", tag, n, sb.maxConcurrent[tag], sb.buildsBy[tag])
		}
	}
	if sb.completedByReplic["a"] == 0 || sb.completedByReplic["b"] == 0 {
		t.Errorf("builds by replica %v: want both replicas to have built", sb.completedByReplic)
	}
}

// cutStore is a replica's way to the database: after cut, its lease and
// build calls fail, as for a replica killed, partitioned or paused.
type cutStore struct {
	store.Store
	cut atomic.Bool
}

func (c *cutStore) down() error {
	if c.cut.Load() {
		return errdefs.New(errdefs.ErrProviderUnavailable, "database unreachable")
	}
	return nil
}

func (c *cutStore) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	if err := c.down(); err != nil {
		return store.Lease{}, err
	}
	return c.Store.AcquireLease(ctx, name, holder, ttl)
}

func (c *cutStore) ClaimEnvBuild(ctx context.Context, at time.Time) (store.EnvBuild, error) {
	if err := c.down(); err != nil {
		return store.EnvBuild{}, err
	}
	return c.Store.ClaimEnvBuild(ctx, at)
}

func (c *cutStore) UpdateEnvBuild(ctx context.Context, b store.EnvBuild, from ...string) error {
	if err := c.down(); err != nil {
		return err
	}
	return c.Store.UpdateEnvBuild(ctx, b, from...)
}

func (c *cutStore) ListEnvBuilds(ctx context.Context, f store.EnvBuildFilter) ([]store.EnvBuild, error) {
	if err := c.down(); err != nil {
		return nil, err
	}
	return c.Store.ListEnvBuilds(ctx, f)
}

// TestBuildOfDeadReplicaRecovered: replica A stops mid-build (its lease
// renewals stop and its build hangs, as a killed or paused process's
// would). Once A's lease lapses, B queues the build again and builds it;
// when A wakes up, its stale result is dropped. With attempts used up, B
// fails the build instead.
func TestBuildOfDeadReplicaRecovered(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxAttempts int
		want        string
	}{
		{"requeued", 2, store.BuildReady},
		{"failed", 1, store.BuildFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openPostgres(t)
			sb := newSharedBuilder(2 * time.Second)
			wake := make(chan struct{})
			hung := make(chan struct{}, 1)
			sb.hang = func(r string) <-chan struct{} {
				if r != "a" {
					return nil
				}
				hung <- struct{}{}
				return wake
			}
			const ttl = 600 * time.Millisecond
			cut := &cutStore{Store: st}
			a, stopA := startReplica(t, cut, cut, replica{sb, "a"}, "a", ttl, tc.maxAttempts)
			spec := newSpec(t, a, "dies", "jq")
			bld, err := a.CreateBuild(t.Context(), spec.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-hung:
			case <-time.After(time.Minute):
				t.Fatal("A never started the build")
			}
			cut.cut.Store(true)
			startReplica(t, st, st, replica{sb, "b"}, "b", ttl, tc.maxAttempts)
			if tc.maxAttempts > 1 {
				// A wakes up, the database reachable again, while B
				// builds the second attempt: its result must not
				// overwrite B's build.
				waitFor(t, st, bld.ID, func(b store.EnvBuild) bool { return b.Status == store.BuildBuilding && b.Attempts == 2 })
				cut.cut.Store(false)
				close(wake)
				stopA()
				cur, err := st.GetEnvBuild(t.Context(), bld.ID)
				if err != nil {
					t.Fatal(err)
				}
				if cur.Status != store.BuildBuilding || cur.Attempts != 2 {
					t.Fatalf("after A woke up during B's attempt: %s (attempt %d, %s), want building (attempt 2)\n%s",
						cur.Status, cur.Attempts, cur.Reason, cur.Log)
				}
			}
			got := waitBuilds(t, st, []string{bld.ID}, 2*time.Minute)[0]
			if got.Status != tc.want {
				t.Fatalf("build %s, want %s (%s)\n%s", got.Status, tc.want, got.Reason, got.Log)
			}
			// A wakes up: whatever it ends with is not written.
			if tc.maxAttempts == 1 {
				cut.cut.Store(false)
				close(wake)
			}
			stopA()
			after, err := st.GetEnvBuild(t.Context(), bld.ID)
			if err != nil {
				t.Fatal(err)
			}
			if after.Status != got.Status || after.Attempts != got.Attempts || after.Log != got.Log {
				t.Errorf("after A woke up: %s (attempt %d), want %s (attempt %d) unchanged\n%s",
					after.Status, after.Attempts, got.Status, got.Attempts, after.Log)
			}
			sb.mu.Lock()
			defer sb.mu.Unlock()
			for tag, by := range sb.buildsBy {
				wantBy := []string{"a", "b"}
				if tc.maxAttempts == 1 {
					wantBy = []string{"a"}
				}
				if fmt.Sprint(by) != fmt.Sprint(wantBy) {
					t.Errorf("tag %s built by %v, want %v", tag, by, wantBy)
				}
			}
		})
	}
}

// TestCancelThroughOtherReplica: a build running on A is canceled through
// B; A stops building it (its daemon build is aborted) and the build ends
// canceled.
func TestCancelThroughOtherReplica(t *testing.T) {
	st := openPostgres(t)
	sb := newSharedBuilder(time.Hour)
	a, _ := startReplica(t, st, st, replica{sb, "a"}, "a", time.Second, 2)
	spec := newSpec(t, a, "cancel", "jq")
	bld, err := a.CreateBuild(t.Context(), spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, st, bld.ID, func(b store.EnvBuild) bool { return b.Status == store.BuildBuilding })
	b, _ := startReplica(t, st, st, replica{sb, "b"}, "b", time.Second, 2)
	got, err := b.CancelBuild(t.Context(), bld.ID)
	if err != nil || got.Status != store.BuildCanceled {
		t.Fatalf("cancel through B = %s, %v; want canceled", got.Status, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		sb.mu.Lock()
		running := 0
		for _, n := range sb.running {
			running += n
		}
		sb.mu.Unlock()
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A still builds a build canceled through B")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cur, err := st.GetEnvBuild(t.Context(), bld.ID); err != nil || cur.Status != store.BuildCanceled {
		t.Errorf("after A stopped: %s, %v; want canceled", cur.Status, err)
	}
}
