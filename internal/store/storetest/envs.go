package storetest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

func fullEnvSpec(id, owner, name string, n int) store.EnvSpec {
	return store.EnvSpec{
		ID:             id,
		OwnerID:        owner,
		Name:           name,
		BaseImage:      "docker.io/library/debian:bookworm",
		PythonPackages: []string{"requests==2.31.0", "numpy>=1.26"},
		AptPackages:    []string{"jq", "ffmpeg=7:5.1.4-0+deb12u1"},
		PythonVersion:  "3.11",
		CreatedAt:      at(n),
	}
}

func fullEnvBuild(id, specID string, n int) store.EnvBuild {
	return store.EnvBuild{
		ID:        id,
		SpecID:    specID,
		OwnerID:   "user-1",
		Status:    store.BuildQueued,
		Targets:   []string{"local", "proot"},
		Image:     "stacyvm-env:abc",
		Log:       "Step 1/4 : FROM debian\n✓ unicode\n",
		Reason:    "",
		Attempts:  0,
		Artifacts: []store.EnvArtifact{{Target: "local", Ref: "stacyvm-env:abc", Digest: "sha256:00ff", Size: 1 << 33}},
		CreatedAt: at(n),
		UpdatedAt: at(n),
	}
}

func checkEnvSpec(t *testing.T, got, want store.EnvSpec) {
	t.Helper()
	checkTime(t, want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	got.CreatedAt, want.CreatedAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("environment spec differs (times aside):\n got  %#v\n want %#v", got, want)
	}
}

func checkEnvBuild(t *testing.T, got, want store.EnvBuild) {
	t.Helper()
	checkTime(t, want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, want.ID+" UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTime(t, want.ID+" StartedAt", got.StartedAt, want.StartedAt)
	checkTime(t, want.ID+" FinishedAt", got.FinishedAt, want.FinishedAt)
	got.CreatedAt, got.UpdatedAt, got.StartedAt, got.FinishedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	want.CreatedAt, want.UpdatedAt, want.StartedAt, want.FinishedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("environment build differs (times aside):\n got  %#v\n want %#v", got, want)
	}
}

func mustCreateSpec(t *testing.T, s store.Store, spec store.EnvSpec) {
	t.Helper()
	if err := s.CreateEnvSpec(context.Background(), spec); err != nil {
		t.Fatalf("CreateEnvSpec(%s): %v", spec.ID, err)
	}
}

func mustCreateBuild(t *testing.T, s store.Store, b store.EnvBuild) {
	t.Helper()
	if err := s.CreateEnvBuild(context.Background(), b); err != nil {
		t.Fatalf("CreateEnvBuild(%s): %v", b.ID, err)
	}
}

func mustGetBuild(t *testing.T, s store.Store, id string) store.EnvBuild {
	t.Helper()
	b, err := s.GetEnvBuild(context.Background(), id)
	if err != nil {
		t.Fatalf("GetEnvBuild(%s): %v", id, err)
	}
	return b
}

func testEnvSpecRoundTrip(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	full := fullEnvSpec("env-s-1", "user-1", "pandas", 0)
	bare := store.EnvSpec{ID: "env-s-2", Name: "bare", BaseImage: "debian", CreatedAt: at(1)}
	empty := store.EnvSpec{ID: "env-s-3", Name: "empty", BaseImage: "debian", PythonPackages: []string{}, AptPackages: []string{}, CreatedAt: at(2)}
	for _, want := range []store.EnvSpec{full, bare, empty} {
		mustCreateSpec(t, s, want)
		got, err := s.GetEnvSpec(ctx, want.ID)
		if err != nil {
			t.Fatalf("GetEnvSpec(%s): %v", want.ID, err)
		}
		checkEnvSpec(t, got, want)
	}
	_, err := s.GetEnvSpec(ctx, "env-s-missing")
	checkClass(t, "GetEnvSpec(missing)", err, errdefs.ErrNotFound)
	checkClass(t, "CreateEnvSpec(no ID)", s.CreateEnvSpec(ctx, store.EnvSpec{Name: "x"}), errdefs.ErrInvalidArgument)

	zero := store.EnvSpec{ID: "env-s-4", Name: "zero", BaseImage: "debian"}
	before := time.Now()
	mustCreateSpec(t, s, zero)
	got, err := s.GetEnvSpec(ctx, zero.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CreatedAt.Before(before.Add(-time.Minute)) {
		t.Errorf("zero CreatedAt stored as %v, want about now", got.CreatedAt)
	}
}

func testEnvSpecConflict(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	mustCreateSpec(t, s, fullEnvSpec("env-s-1", "user-1", "pandas", 0))
	checkClass(t, "same owner and name", s.CreateEnvSpec(ctx, fullEnvSpec("env-s-2", "user-1", "pandas", 1)), errdefs.ErrConflict)
	checkClass(t, "same ID", s.CreateEnvSpec(ctx, fullEnvSpec("env-s-1", "user-2", "other", 1)), errdefs.ErrConflict)
	// The same name under another owner is another spec.
	mustCreateSpec(t, s, fullEnvSpec("env-s-3", "user-2", "pandas", 2))
	if _, err := s.GetEnvSpec(ctx, "env-s-2"); errdefs.Classify(err) != errdefs.ErrNotFound {
		t.Errorf("the conflicting spec was stored: %v", err)
	}
}

func testEnvSpecList(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	mustCreateSpec(t, s, fullEnvSpec("env-s-b", "user-1", "one", 5))
	mustCreateSpec(t, s, fullEnvSpec("env-s-a", "user-1", "two", 5))
	mustCreateSpec(t, s, fullEnvSpec("env-s-c", "user-2", "three", 9))
	mustCreateSpec(t, s, fullEnvSpec("env-s-d", "user-1", "four", 1))
	for _, tc := range []struct {
		owner string
		want  []string
	}{
		{"", []string{"env-s-c", "env-s-a", "env-s-b", "env-s-d"}},
		{"user-1", []string{"env-s-a", "env-s-b", "env-s-d"}},
		{"user-2", []string{"env-s-c"}},
		{"nobody", []string{}},
	} {
		list, err := s.ListEnvSpecs(ctx, tc.owner)
		if err != nil {
			t.Fatalf("ListEnvSpecs(%q): %v", tc.owner, err)
		}
		got := []string{}
		for _, sp := range list {
			got = append(got, sp.ID)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("ListEnvSpecs(%q) = %v, want %v", tc.owner, got, tc.want)
		}
	}
}

func testEnvBuildRoundTrip(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	full := fullEnvBuild("env-b-1", "env-s-1", 0)
	full.StartedAt, full.FinishedAt = at(2), at(3)
	bare := store.EnvBuild{ID: "env-b-2", SpecID: "env-s-1", Status: store.BuildQueued, CreatedAt: at(1), UpdatedAt: at(1)}
	empty := store.EnvBuild{ID: "env-b-3", SpecID: "env-s-1", Status: store.BuildQueued, Targets: []string{},
		Artifacts: []store.EnvArtifact{}, CreatedAt: at(1), UpdatedAt: at(2)}
	for _, want := range []store.EnvBuild{full, bare, empty} {
		mustCreateBuild(t, s, want)
		checkEnvBuild(t, mustGetBuild(t, s, want.ID), want)
	}
	checkClass(t, "duplicate ID", s.CreateEnvBuild(ctx, bare), errdefs.ErrConflict)
	checkClass(t, "no ID", s.CreateEnvBuild(ctx, store.EnvBuild{Status: store.BuildQueued}), errdefs.ErrInvalidArgument)
	checkClass(t, "no status", s.CreateEnvBuild(ctx, store.EnvBuild{ID: "env-b-9"}), errdefs.ErrInvalidArgument)
	_, err := s.GetEnvBuild(ctx, "env-b-missing")
	checkClass(t, "GetEnvBuild(missing)", err, errdefs.ErrNotFound)
}

func testEnvBuildUpdate(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	b := fullEnvBuild("env-b-1", "env-s-1", 0)
	mustCreateBuild(t, s, b)

	b.Status, b.Log, b.Attempts, b.StartedAt, b.UpdatedAt = store.BuildBuilding, "step 1\n", 1, at(5), at(5)
	if err := s.UpdateEnvBuild(ctx, b, store.BuildQueued); err != nil {
		t.Fatalf("queued → building: %v", err)
	}
	checkEnvBuild(t, mustGetBuild(t, s, b.ID), b)

	// A transition from a status the build is not in changes nothing.
	stale := b
	stale.Status, stale.Reason = store.BuildCanceled, "too late"
	checkClass(t, "update from queued while building", s.UpdateEnvBuild(ctx, stale, store.BuildQueued), errdefs.ErrConflict)
	checkEnvBuild(t, mustGetBuild(t, s, b.ID), b)

	b.Status, b.FinishedAt, b.UpdatedAt = store.BuildReady, at(9), at(9)
	b.Artifacts = append(b.Artifacts, store.EnvArtifact{Target: "proot", Ref: "stacyvm-env_abc", Digest: "sha256:11", Size: 42})
	if err := s.UpdateEnvBuild(ctx, b, store.BuildQueued, store.BuildBuilding); err != nil {
		t.Fatalf("building → ready: %v", err)
	}
	checkEnvBuild(t, mustGetBuild(t, s, b.ID), b)

	// Without from the update is unconditional.
	b.Log += "more\n"
	if err := s.UpdateEnvBuild(ctx, b); err != nil {
		t.Fatalf("unconditional update: %v", err)
	}
	checkEnvBuild(t, mustGetBuild(t, s, b.ID), b)

	// SpecID, OwnerID and CreatedAt never change.
	moved := b
	moved.SpecID, moved.OwnerID, moved.CreatedAt = "other", "other", at(100)
	if err := s.UpdateEnvBuild(ctx, moved); err != nil {
		t.Fatal(err)
	}
	checkEnvBuild(t, mustGetBuild(t, s, b.ID), b)

	missing := fullEnvBuild("env-b-missing", "env-s-1", 0)
	checkClass(t, "update missing", s.UpdateEnvBuild(ctx, missing), errdefs.ErrNotFound)
}

func testEnvBuildList(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	mk := func(id, spec, owner, status string, n int) {
		b := fullEnvBuild(id, spec, n)
		b.OwnerID, b.Status = owner, status
		mustCreateBuild(t, s, b)
	}
	mk("env-b-2", "env-s-1", "user-1", store.BuildReady, 5)
	mk("env-b-1", "env-s-1", "user-1", store.BuildQueued, 5)
	mk("env-b-3", "env-s-2", "user-2", store.BuildFailed, 7)
	mk("env-b-4", "env-s-1", "user-1", store.BuildReady, 1)
	for _, tc := range []struct {
		name string
		f    store.EnvBuildFilter
		want []string
	}{
		{"all", store.EnvBuildFilter{}, []string{"env-b-3", "env-b-1", "env-b-2", "env-b-4"}},
		{"owner", store.EnvBuildFilter{OwnerID: "user-1"}, []string{"env-b-1", "env-b-2", "env-b-4"}},
		{"spec", store.EnvBuildFilter{SpecID: "env-s-2"}, []string{"env-b-3"}},
		{"status", store.EnvBuildFilter{Statuses: []string{store.BuildReady}}, []string{"env-b-2", "env-b-4"}},
		{"statuses", store.EnvBuildFilter{Statuses: []string{store.BuildReady, store.BuildFailed}}, []string{"env-b-3", "env-b-2", "env-b-4"}},
		{"spec and status, limit", store.EnvBuildFilter{SpecID: "env-s-1", Statuses: []string{store.BuildReady}, Limit: 1}, []string{"env-b-2"}},
		{"limit", store.EnvBuildFilter{Limit: 2}, []string{"env-b-3", "env-b-1"}},
		{"none", store.EnvBuildFilter{OwnerID: "nobody"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, err := s.ListEnvBuilds(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, b := range list {
				got = append(got, b.ID)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ListEnvBuilds(%+v) = %v, want %v", tc.f, got, tc.want)
			}
		})
	}
}

func testEnvBuildClaim(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	_, err := s.ClaimEnvBuild(ctx, at(10))
	checkClass(t, "claim from an empty queue", err, errdefs.ErrNotFound)

	done := fullEnvBuild("env-b-0", "env-s-1", 0)
	done.Status = store.BuildReady
	mustCreateBuild(t, s, done)
	mustCreateBuild(t, s, fullEnvBuild("env-b-2", "env-s-1", 3))
	mustCreateBuild(t, s, fullEnvBuild("env-b-b", "env-s-1", 1))
	mustCreateBuild(t, s, fullEnvBuild("env-b-a", "env-s-1", 1))

	for i, want := range []string{"env-b-a", "env-b-b", "env-b-2"} {
		got, err := s.ClaimEnvBuild(ctx, at(20+i))
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if got.ID != want || got.Status != store.BuildBuilding || got.Attempts != 1 {
			t.Errorf("claim %d = %s %s attempts %d, want %s building attempts 1", i, got.ID, got.Status, got.Attempts, want)
		}
		checkTime(t, "StartedAt", got.StartedAt, at(20+i))
		stored := mustGetBuild(t, s, want)
		checkEnvBuild(t, stored, got)
	}
	_, err = s.ClaimEnvBuild(ctx, at(30))
	checkClass(t, "claim after the queue drained", err, errdefs.ErrNotFound)

	// A re-queued build counts its second attempt.
	b := mustGetBuild(t, s, "env-b-a")
	b.Status = store.BuildQueued
	if err := s.UpdateEnvBuild(ctx, b, store.BuildBuilding); err != nil {
		t.Fatal(err)
	}
	again, err := s.ClaimEnvBuild(ctx, at(40))
	if err != nil || again.ID != "env-b-a" || again.Attempts != 2 {
		t.Errorf("re-claim = %s attempts %d (%v), want env-b-a attempts 2", again.ID, again.Attempts, err)
	}
}

func testEnvBuildConcurrentClaims(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := context.Background()
	const n = 20
	for i := range n {
		mustCreateBuild(t, s, fullEnvBuild(fmt.Sprintf("env-b-%02d", i), "env-s-1", i))
	}
	var (
		mu      sync.Mutex
		claimed = map[string]int{}
		wg      sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				b, err := s.ClaimEnvBuild(ctx, at(100))
				if errdefs.Classify(err) == errdefs.ErrNotFound {
					return
				}
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				mu.Lock()
				claimed[b.ID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimed) != n {
		t.Errorf("claimed %d distinct builds, want %d", len(claimed), n)
	}
	for id, c := range claimed {
		if c != 1 {
			t.Errorf("build %s claimed %d times", id, c)
		}
	}
}
