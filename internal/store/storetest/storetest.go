// Package storetest is the contract suite for store.Store. Every
// implementation runs it unchanged from its own tests:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, dir string) store.Store { ... })
//	}
//
// Times are compared at microsecond precision, the finest PostgreSQL keeps.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Open opens the store that lives in dir, failing t if it cannot. dir is an
// empty directory the suite made for this store. Opening the same dir again
// after the previous store was closed must reach the same data; distinct
// dirs must be independent stores (an implementation keeping data elsewhere,
// such as a PostgreSQL schema, derives the schema's name from dir). The
// suite closes every store it opens.
type Open func(t *testing.T, dir string) store.Store

// Run runs the whole contract against stores made by open.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(*testing.T, Open)
	}{
		{"SandboxRoundTrip", testSandboxRoundTrip},
		{"SandboxNilAndEmptyMaps", testSandboxNilAndEmptyMaps},
		{"SandboxZeroTimes", testSandboxZeroTimes},
		{"SandboxInvalid", testSandboxInvalid},
		{"SandboxConflict", testSandboxConflict},
		{"SandboxNotFound", testSandboxNotFound},
		{"SandboxUpdate", testSandboxUpdate},
		{"CreateWithin", testCreateWithin},
		{"TouchSandboxes", testTouchSandboxes},
		{"CreateWithinRace", testCreateWithinRace},
		{"SandboxUpdateIf", testSandboxUpdateIf},
		{"SandboxUpdateIfRace", testSandboxUpdateIfRace},
		{"History", testHistory},
		{"ListFilters", testListFilters},
		{"ListOrderTies", testListOrderTies},
		{"ListPages", testListPages},
		{"CountSandboxes", testCountSandboxes},
		{"PurgeDestroyed", testPurgeDestroyed},
		{"InstanceID", testInstanceID},
		{"DestroyedIsFinal", testDestroyedIsFinal},
		{"Leases", testLeases},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseRace", testLeaseRace},
		{"TemplateRoundTrip", testTemplateRoundTrip},
		{"TemplateNilAndEmpty", testTemplateNilAndEmpty},
		{"TemplateZeroTimes", testTemplateZeroTimes},
		{"TemplateInvalid", testTemplateInvalid},
		{"TemplateConflict", testTemplateConflict},
		{"TemplateNotFound", testTemplateNotFound},
		{"TemplateUpdate", testTemplateUpdate},
		{"TemplateDeleteAndRecreate", testTemplateDeleteAndRecreate},
		{"ListTemplates", testListTemplates},
		{"EnvSpecRoundTrip", testEnvSpecRoundTrip},
		{"EnvSpecConflict", testEnvSpecConflict},
		{"EnvSpecList", testEnvSpecList},
		{"EnvBuildRoundTrip", testEnvBuildRoundTrip},
		{"EnvBuildUpdate", testEnvBuildUpdate},
		{"EnvBuildList", testEnvBuildList},
		{"EnvBuildClaim", testEnvBuildClaim},
		{"EnvBuildConcurrentClaims", testEnvBuildConcurrentClaims},
		{"CanceledContext", testCanceledContext},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Persistence", testPersistence},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

// handle is an open store that is closed at the end of the test unless
// closed before.
type handle struct {
	store.Store
	once sync.Once
	err  error
}

func (h *handle) Close() error {
	h.once.Do(func() { h.err = h.Store.Close() })
	return h.err
}

func openIn(t *testing.T, open Open, dir string) *handle {
	t.Helper()
	s := open(t, dir)
	if s == nil {
		t.Fatal("open returned a nil store")
	}
	h := &handle{Store: s}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return h
}

func newStore(t *testing.T, open Open) *handle {
	t.Helper()
	return openIn(t, open, t.TempDir())
}

// base is deliberately not in UTC (stores must hand times back in UTC) and
// in the past, so that the current time is later than every time stored.
var base = time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.FixedZone("UTC+2", 2*60*60))

// at returns base plus n seconds and a few microseconds, so that sub-second
// precision is exercised.
func at(n int) time.Time { return base.Add(time.Duration(n)*time.Second + 7*time.Microsecond) }

func fullSandbox(id string) store.Sandbox {
	return store.Sandbox{
		ID:        id,
		Provider:  "docker",
		Image:     "stacyvm/debian:test",
		State:     "creating",
		OwnerID:   "user-1",
		Template:  "python",
		MemoryMB:  512,
		VCPUs:     2,
		DiskMB:    2048,
		Metadata:  map[string]string{"purpose": "test", "unicode": "héllo ✓", "quote": `"'`},
		Env:       map[string]string{"PATH": "/usr/bin:/bin", "EMPTY": ""},
		Handle:    "0123456789abcdef",
		LastError: "",
		CreatedAt: at(0),
		UpdatedAt: at(1),
		ExpiresAt: at(1800),

		IdleTimeout: 90*time.Second + 250*time.Millisecond,
		OnIdle:      "pause",
	}
}

func fullTemplate(name string) store.Template {
	return store.Template{
		Name:        name,
		Version:     1,
		Image:       "stacyvm/debian:test",
		Description: "Python 3 with numpy",
		Setup:       []string{"pip install numpy", "echo 'done' > /tmp/ready"},
		Env:         map[string]string{"PYTHONUNBUFFERED": "1"},
		MemoryMB:    1024,
		CPUCores:    2,
		TTLSeconds:  3600,
		PoolSize:    3,
		Provider:    "docker",
		Environment: "env-b-1",
		CreatedAt:   at(0),
		UpdatedAt:   at(0),

		IdleTimeoutSeconds: 600,
		OnIdle:             "destroy",
	}
}

// checkTime fails unless got is want's instant, in UTC.
func checkTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
	if !got.IsZero() && got.Location() != time.UTC {
		t.Errorf("%s is in %v, want UTC", what, got.Location())
	}
}

func checkSandbox(t *testing.T, got, want store.Sandbox) {
	t.Helper()
	checkTime(t, want.ID+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, want.ID+" UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	checkTime(t, want.ID+" ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	checkTime(t, want.ID+" LastActivity", got.LastActivity, want.LastActivity)
	got.CreatedAt, got.UpdatedAt, got.ExpiresAt, got.LastActivity = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	want.CreatedAt, want.UpdatedAt, want.ExpiresAt, want.LastActivity = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sandbox differs (times aside):\n got  %#v\n want %#v", got, want)
	}
}

func checkTemplate(t *testing.T, got, want store.Template) {
	t.Helper()
	checkTime(t, want.Name+" CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, want.Name+" UpdatedAt", got.UpdatedAt, want.UpdatedAt)
	got.CreatedAt, got.UpdatedAt = time.Time{}, time.Time{}
	want.CreatedAt, want.UpdatedAt = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("template differs (times aside):\n got  %#v\n want %#v", got, want)
	}
}

func checkHistory(t *testing.T, got, want []store.Transition) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("history has %d entries, want %d:\n got  %+v\n want %+v", len(got), len(want), got, want)
	}
	for i := range want {
		if got[i].State != want[i].State || got[i].Reason != want[i].Reason {
			t.Errorf("history[%d] = %q (%q), want %q (%q)", i, got[i].State, got[i].Reason, want[i].State, want[i].Reason)
		}
		checkTime(t, fmt.Sprintf("history[%d].At", i), got[i].At, want[i].At)
	}
}

func checkClass(t *testing.T, what string, err error, class *errdefs.Class) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("%s: err = %v (class %v), want class %v", what, err, errdefs.Classify(err), class)
	}
}

func mustCreate(t *testing.T, s store.Store, sbs ...store.Sandbox) {
	t.Helper()
	for _, sb := range sbs {
		if err := s.CreateSandbox(t.Context(), sb); err != nil {
			t.Fatalf("CreateSandbox(%s): %v", sb.ID, err)
		}
	}
}

func mustUpdate(t *testing.T, s store.Store, sb store.Sandbox) {
	t.Helper()
	if err := s.UpdateSandbox(t.Context(), sb); err != nil {
		t.Fatalf("UpdateSandbox(%s): %v", sb.ID, err)
	}
}

func mustGet(t *testing.T, s store.Store, id string) store.Sandbox {
	t.Helper()
	sb, err := s.GetSandbox(t.Context(), id)
	if err != nil {
		t.Fatalf("GetSandbox(%s): %v", id, err)
	}
	return sb
}

func mustHistory(t *testing.T, s store.Store, id string) []store.Transition {
	t.Helper()
	h, err := s.History(t.Context(), id)
	if err != nil {
		t.Fatalf("History(%s): %v", id, err)
	}
	return h
}

func mustCreateTemplate(t *testing.T, s store.Store, tm store.Template) {
	t.Helper()
	if err := s.CreateTemplate(t.Context(), tm); err != nil {
		t.Fatalf("CreateTemplate(%s): %v", tm.Name, err)
	}
}

func mustGetTemplate(t *testing.T, s store.Store, name string) store.Template {
	t.Helper()
	tm, err := s.GetTemplate(t.Context(), name)
	if err != nil {
		t.Fatalf("GetTemplate(%s): %v", name, err)
	}
	return tm
}

func ids(sbs []store.Sandbox) []string {
	out := make([]string, len(sbs))
	for i, sb := range sbs {
		out[i] = sb.ID
	}
	return out
}

func testSandboxRoundTrip(t *testing.T, open Open) {
	s := newStore(t, open)
	want := fullSandbox("sb-0123456789abcdef")
	mustCreate(t, s, want)
	checkSandbox(t, mustGet(t, s, want.ID), want)

	list, err := s.ListSandboxes(t.Context(), store.SandboxFilter{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListSandboxes returned %d records, want 1", len(list))
	}
	checkSandbox(t, list[0], want)
}

func testSandboxNilAndEmptyMaps(t *testing.T, open Open) {
	s := newStore(t, open)
	tests := []struct {
		name          string
		metadata, env map[string]string
	}{
		{"both nil", nil, nil},
		{"both empty", map[string]string{}, map[string]string{}},
		{"nil metadata, empty env", nil, map[string]string{}},
		{"empty metadata, nil env", map[string]string{}, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sb := fullSandbox(fmt.Sprintf("sb-maps-%d", i))
			sb.Metadata, sb.Env = tc.metadata, tc.env
			mustCreate(t, s, sb)
			checkSandbox(t, mustGet(t, s, sb.ID), sb)

			// The same distinction must survive an update.
			sb.Metadata, sb.Env = tc.env, tc.metadata
			sb.UpdatedAt = at(5)
			mustUpdate(t, s, sb)
			checkSandbox(t, mustGet(t, s, sb.ID), sb)
		})
	}
}

func testSandboxZeroTimes(t *testing.T, open Open) {
	s := newStore(t, open)
	sb := fullSandbox("sb-zero")
	sb.CreatedAt, sb.UpdatedAt, sb.ExpiresAt = time.Time{}, time.Time{}, time.Time{}
	before := time.Now().Add(-time.Second)
	mustCreate(t, s, sb)
	after := time.Now().Add(time.Second)

	got := mustGet(t, s, sb.ID)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(after) {
		t.Errorf("zero CreatedAt stored as %v, want the time of the call", got.CreatedAt)
	}
	checkTime(t, "UpdatedAt", got.UpdatedAt, got.CreatedAt)
	if !got.ExpiresAt.IsZero() {
		t.Errorf("zero ExpiresAt stored as %v", got.ExpiresAt)
	}
	h := mustHistory(t, s, sb.ID)
	if len(h) != 1 || !h[0].At.Equal(got.CreatedAt) {
		t.Errorf("history = %+v, want one entry at CreatedAt %v", h, got.CreatedAt)
	}

	// A zero UpdatedAt on update also means now, and a zero ExpiresAt replaces a set one.
	set := fullSandbox("sb-zero-update")
	mustCreate(t, s, set)
	set.UpdatedAt, set.ExpiresAt = time.Time{}, time.Time{}
	mustUpdate(t, s, set)
	got = mustGet(t, s, set.ID)
	if got.UpdatedAt.Before(before) || got.UpdatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("zero UpdatedAt stored as %v, want the time of the call", got.UpdatedAt)
	}
	if !got.ExpiresAt.IsZero() {
		t.Errorf("ExpiresAt = %v after updating it to zero", got.ExpiresAt)
	}
}

func testSandboxInvalid(t *testing.T, open Open) {
	s := newStore(t, open)
	noID := fullSandbox("")
	checkClass(t, "CreateSandbox without ID", s.CreateSandbox(t.Context(), noID), errdefs.ErrInvalidArgument)
	noState := fullSandbox("sb-nostate")
	noState.State = ""
	checkClass(t, "CreateSandbox without state", s.CreateSandbox(t.Context(), noState), errdefs.ErrInvalidArgument)

	list, err := s.ListSandboxes(t.Context(), store.SandboxFilter{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	if len(list) != 0 {
		t.Errorf("invalid records were stored: %v", ids(list))
	}
}

func testSandboxConflict(t *testing.T, open Open) {
	s := newStore(t, open)
	first := fullSandbox("sb-dup")
	mustCreate(t, s, first)

	second := fullSandbox("sb-dup")
	second.Image, second.State, second.OwnerID = "other", "running", "user-2"
	err := s.CreateSandbox(t.Context(), second)
	checkClass(t, "second CreateSandbox", err, errdefs.ErrConflict)
	if errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("conflict is also classified not found: %v", err)
	}
	checkSandbox(t, mustGet(t, s, first.ID), first)
	if h := mustHistory(t, s, first.ID); len(h) != 1 {
		t.Errorf("failed create added history: %+v", h)
	}
}

func testSandboxNotFound(t *testing.T, open Open) {
	s := newStore(t, open)
	mustCreate(t, s, fullSandbox("sb-present"))

	_, err := s.GetSandbox(t.Context(), "sb-missing")
	checkClass(t, "GetSandbox", err, errdefs.ErrSandboxNotFound)
	checkClass(t, "GetSandbox", err, errdefs.ErrNotFound)

	missing := fullSandbox("sb-missing")
	checkClass(t, "UpdateSandbox", s.UpdateSandbox(t.Context(), missing), errdefs.ErrSandboxNotFound)
	if _, err := s.GetSandbox(t.Context(), missing.ID); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("UpdateSandbox of a missing record created it (GetSandbox err = %v)", err)
	}

	_, err = s.History(t.Context(), "sb-missing")
	checkClass(t, "History", err, errdefs.ErrSandboxNotFound)
}

func testSandboxUpdate(t *testing.T, open Open) {
	s := newStore(t, open)
	orig := fullSandbox("sb-update")
	mustCreate(t, s, orig, fullSandbox("sb-bystander"))

	upd := store.Sandbox{
		ID:        orig.ID,
		Provider:  "proot",
		Image:     "stacyvm/busybox:test",
		State:     "running",
		OwnerID:   "user-9",
		Template:  "",
		MemoryMB:  256,
		VCPUs:     1,
		DiskMB:    0,
		Metadata:  map[string]string{"new": "value"},
		Env:       nil,
		Handle:    "/var/lib/stacyvm/proot/sb-update",
		LastError: "",
		CreatedAt: at(-100), // not mutable: must be ignored
		UpdatedAt: at(10),
		ExpiresAt: at(7200),

		IdleTimeout: 5 * time.Minute,
		OnIdle:      "destroy",
	}
	mustUpdate(t, s, upd)

	want := upd
	want.CreatedAt = orig.CreatedAt
	checkSandbox(t, mustGet(t, s, orig.ID), want)
	checkSandbox(t, mustGet(t, s, "sb-bystander"), fullSandbox("sb-bystander"))
}

// testSandboxUpdateIf: the compare-and-set writes only from the expected
// state, records the transition, and leaves a record in another state as
// it was.
func testSandboxUpdateIf(t *testing.T, open Open) {
	s := newStore(t, open)
	sb := fullSandbox("sb-cas")
	sb.State = "pooled"
	sb.OwnerID = ""
	mustCreate(t, s, sb)

	claimed := sb
	claimed.State, claimed.OwnerID, claimed.LastError = "running", "user-7", "claimed from pool"
	claimed.Metadata = map[string]string{"job": "42"}
	claimed.UpdatedAt, claimed.ExpiresAt = at(5), at(605)
	if err := s.UpdateSandboxIf(t.Context(), claimed, "pooled"); err != nil {
		t.Fatalf("UpdateSandboxIf from the stored state: %v", err)
	}
	checkSandbox(t, mustGet(t, s, sb.ID), claimed)
	checkHistory(t, mustHistory(t, s, sb.ID), []store.Transition{
		{State: "pooled", At: sb.CreatedAt},
		{State: "running", Reason: "claimed from pool", At: at(5)},
	})

	again := claimed
	again.OwnerID, again.UpdatedAt = "user-8", at(6)
	err := s.UpdateSandboxIf(t.Context(), again, "pooled")
	checkClass(t, "UpdateSandboxIf from a state the record has left", err, errdefs.ErrConflict)
	checkSandbox(t, mustGet(t, s, sb.ID), claimed)

	missing := fullSandbox("sb-cas-missing")
	checkClass(t, "UpdateSandboxIf of a missing record", s.UpdateSandboxIf(t.Context(), missing, "pooled"), errdefs.ErrNotFound)
	if err := s.UpdateSandboxIf(t.Context(), claimed, ""); errdefs.Classify(err) != errdefs.ErrInvalidArgument {
		t.Errorf("UpdateSandboxIf with no expected state: err = %v, want invalid argument", err)
	}
}

// testSandboxUpdateIfRace: many writers, through two handles on the same
// database where the store allows it, claim one record at once; exactly
// one wins and the record holds the winner's write.
func testSandboxUpdateIfRace(t *testing.T, open Open) {
	dir := t.TempDir()
	a := openIn(t, open, dir)
	b := openIn(t, open, dir)
	const records, claimers = 5, 20
	for r := range records {
		sb := fullSandbox(fmt.Sprintf("sb-race-%d", r))
		sb.State = "pooled"
		mustCreate(t, a, sb)
	}
	var (
		mu   sync.Mutex
		wins = map[string][]string{}
		errs []error
		wg   sync.WaitGroup
	)
	for c := range claimers {
		wg.Go(func() {
			s := store.Store(a)
			if c%2 == 1 {
				s = b
			}
			for r := range records {
				sb := fullSandbox(fmt.Sprintf("sb-race-%d", r))
				sb.State, sb.OwnerID, sb.UpdatedAt = "running", fmt.Sprintf("claimer-%d", c), at(10+c)
				err := s.UpdateSandboxIf(t.Context(), sb, "pooled")
				mu.Lock()
				switch {
				case err == nil:
					wins[sb.ID] = append(wins[sb.ID], sb.OwnerID)
				case errdefs.Classify(err) != errdefs.ErrConflict:
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("claims failed other than by conflict:\n%v", err)
	}
	for r := range records {
		id := fmt.Sprintf("sb-race-%d", r)
		if len(wins[id]) != 1 {
			t.Errorf("%s claimed by %v, want exactly one winner", id, wins[id])
			continue
		}
		if got := mustGet(t, a, id); got.State != "running" || got.OwnerID != wins[id][0] {
			t.Errorf("%s stored as %s owned by %q, want running owned by the winner %q", id, got.State, got.OwnerID, wins[id][0])
		}
		if h := mustHistory(t, b, id); len(h) != 2 {
			t.Errorf("%s has %d history entries, want 2 (pooled, running)", id, len(h))
		}
	}
}

func testHistory(t *testing.T, open Open) {
	s := newStore(t, open)
	sb := fullSandbox("sb-history")
	sb.State, sb.LastError = "creating", "spawn requested"
	mustCreate(t, s, sb)
	want := []store.Transition{{State: "creating", Reason: "spawn requested", At: sb.CreatedAt}}
	checkHistory(t, mustHistory(t, s, sb.ID), want)

	steps := []struct {
		state, reason string
		changes       bool
	}{
		{"creating", "handle assigned", false}, // same state: no entry
		{"running", "", true},
		{"running", "extended", false},
		{"error", "agent did not answer", true},
		{"error", "still broken", false},
		{"destroyed", "destroyed on request", true},
	}
	for i, st := range steps {
		sb.State, sb.LastError = st.state, st.reason
		sb.Handle = fmt.Sprintf("handle-%d", i)
		sb.UpdatedAt = at(10 * (i + 1))
		mustUpdate(t, s, sb)
		if st.changes {
			want = append(want, store.Transition{State: st.state, Reason: st.reason, At: sb.UpdatedAt})
		}
		checkHistory(t, mustHistory(t, s, sb.ID), want)
	}

	// Histories are per sandbox.
	other := fullSandbox("sb-history-other")
	mustCreate(t, s, other)
	checkHistory(t, mustHistory(t, s, other.ID), []store.Transition{{State: other.State, At: other.CreatedAt}})
	checkHistory(t, mustHistory(t, s, sb.ID), want)
}

func testListFilters(t *testing.T, open Open) {
	s := newStore(t, open)
	mk := func(id, owner, prov, state string, created, expires int) store.Sandbox {
		sb := fullSandbox(id)
		sb.OwnerID, sb.Provider, sb.State = owner, prov, state
		sb.CreatedAt, sb.UpdatedAt = at(created), at(created)
		sb.ExpiresAt = time.Time{}
		if expires != 0 {
			sb.ExpiresAt = at(expires)
		}
		return sb
	}
	mustCreate(t, s,
		mk("sb-a", "alice", "docker", "running", 1, 100),
		mk("sb-b", "bob", "docker", "destroyed", 2, 50),
		mk("sb-c", "alice", "proot", "stopped", 3, 300),
		mk("sb-d", "", "mock", "error", 4, 0), // never expires
		mk("sb-e", "bob", "proot", "running", 5, 200),
		mk("sb-f", "alice", "docker", "creating", 6, 150),
	)
	tests := []struct {
		name   string
		filter store.SandboxFilter
		want   []string
	}{
		{"all", store.SandboxFilter{}, []string{"sb-f", "sb-e", "sb-d", "sb-c", "sb-b", "sb-a"}},
		{"owner", store.SandboxFilter{OwnerID: "alice"}, []string{"sb-f", "sb-c", "sb-a"}},
		{"unknown owner", store.SandboxFilter{OwnerID: "carol"}, nil},
		{"provider", store.SandboxFilter{Provider: "proot"}, []string{"sb-e", "sb-c"}},
		{"one state", store.SandboxFilter{States: []string{"running"}}, []string{"sb-e", "sb-a"}},
		{"several states", store.SandboxFilter{States: []string{"stopped", "error", "destroyed"}}, []string{"sb-d", "sb-c", "sb-b"}},
		{"exclude destroyed", store.SandboxFilter{ExcludeDestroyed: true}, []string{"sb-f", "sb-e", "sb-d", "sb-c", "sb-a"}},
		{"expired before", store.SandboxFilter{ExpiredBefore: at(150)}, []string{"sb-b", "sb-a"}},
		{"expired before is strict", store.SandboxFilter{ExpiredBefore: at(100)}, []string{"sb-b"}},
		{"expired before, far future", store.SandboxFilter{ExpiredBefore: at(1e6)}, []string{"sb-f", "sb-e", "sb-c", "sb-b", "sb-a"}},
		{"reaper query", store.SandboxFilter{ExcludeDestroyed: true, ExpiredBefore: at(250)}, []string{"sb-f", "sb-e", "sb-a"}},
		{"owner and provider", store.SandboxFilter{OwnerID: "alice", Provider: "docker"}, []string{"sb-f", "sb-a"}},
		{"owner, states, exclude destroyed", store.SandboxFilter{OwnerID: "bob", States: []string{"running", "destroyed"}, ExcludeDestroyed: true}, []string{"sb-e"}},
		{"nothing matches", store.SandboxFilter{Provider: "firecracker"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ListSandboxes(t.Context(), tc.filter)
			if err != nil {
				t.Fatalf("ListSandboxes(%+v): %v", tc.filter, err)
			}
			if g := ids(got); !slices.Equal(g, tc.want) {
				t.Errorf("ListSandboxes(%+v) = %v, want %v", tc.filter, g, tc.want)
			}
		})
	}
}

func testListOrderTies(t *testing.T, open Open) {
	s := newStore(t, open)
	var sbs []store.Sandbox
	for _, id := range []string{"sb-b", "sb-c", "sb-a"} {
		sb := fullSandbox(id)
		sb.CreatedAt = at(1)
		sbs = append(sbs, sb)
	}
	newer := fullSandbox("sb-0-newer")
	newer.CreatedAt = at(1).Add(time.Microsecond)
	older := fullSandbox("sb-z-older")
	older.CreatedAt = at(1).Add(-time.Microsecond)
	mustCreate(t, s, append(sbs, newer, older)...)

	got, err := s.ListSandboxes(t.Context(), store.SandboxFilter{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	want := []string{"sb-0-newer", "sb-a", "sb-b", "sb-c", "sb-z-older"}
	if g := ids(got); !slices.Equal(g, want) {
		t.Errorf("order = %v, want %v (newest first, ties by ID)", g, want)
	}
}

func testTemplateRoundTrip(t *testing.T, open Open) {
	s := newStore(t, open)
	in := fullTemplate("python")
	in.Version = 7 // the store owns versions
	mustCreateTemplate(t, s, in)
	want := in
	want.Version = 1
	checkTemplate(t, mustGetTemplate(t, s, "python"), want)

	list, err := s.ListTemplates(t.Context())
	if err != nil {
		t.Fatalf("ListTemplates: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListTemplates returned %d, want 1", len(list))
	}
	checkTemplate(t, list[0], want)
}

func testTemplateNilAndEmpty(t *testing.T, open Open) {
	s := newStore(t, open)
	tests := []struct {
		name  string
		setup []string
		env   map[string]string
	}{
		{"both nil", nil, nil},
		{"both empty", []string{}, map[string]string{}},
		{"nil setup, empty env", nil, map[string]string{}},
		{"empty setup, nil env", []string{}, nil},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm := fullTemplate(fmt.Sprintf("tmpl-%d", i))
			tm.Setup, tm.Env = tc.setup, tc.env
			mustCreateTemplate(t, s, tm)
			checkTemplate(t, mustGetTemplate(t, s, tm.Name), tm)

			tm.UpdatedAt = at(60)
			got, err := s.UpdateTemplate(t.Context(), tm)
			if err != nil {
				t.Fatalf("UpdateTemplate: %v", err)
			}
			tm.Version = 2
			checkTemplate(t, got, tm)
			checkTemplate(t, mustGetTemplate(t, s, tm.Name), tm)
		})
	}
}

func testTemplateZeroTimes(t *testing.T, open Open) {
	s := newStore(t, open)
	tm := fullTemplate("zero")
	tm.CreatedAt, tm.UpdatedAt = time.Time{}, time.Time{}
	before := time.Now().Add(-time.Second)
	mustCreateTemplate(t, s, tm)
	after := time.Now().Add(time.Second)
	got := mustGetTemplate(t, s, tm.Name)
	if got.CreatedAt.Before(before) || got.CreatedAt.After(after) {
		t.Errorf("zero CreatedAt stored as %v, want the time of the call", got.CreatedAt)
	}
	checkTime(t, "UpdatedAt", got.UpdatedAt, got.CreatedAt)
}

func testTemplateInvalid(t *testing.T, open Open) {
	s := newStore(t, open)
	checkClass(t, "CreateTemplate without name", s.CreateTemplate(t.Context(), fullTemplate("")), errdefs.ErrInvalidArgument)
	_, err := s.UpdateTemplate(t.Context(), fullTemplate(""))
	checkClass(t, "UpdateTemplate without name", err, errdefs.ErrInvalidArgument)
	list, err := s.ListTemplates(t.Context())
	if err != nil {
		t.Fatalf("ListTemplates: %v", err)
	}
	if len(list) != 0 {
		t.Errorf("invalid template stored: %+v", list)
	}
}

func testTemplateConflict(t *testing.T, open Open) {
	s := newStore(t, open)
	first := fullTemplate("dup")
	mustCreateTemplate(t, s, first)
	second := fullTemplate("dup")
	second.Image = "other"
	checkClass(t, "second CreateTemplate", s.CreateTemplate(t.Context(), second), errdefs.ErrConflict)
	checkTemplate(t, mustGetTemplate(t, s, "dup"), first)
}

func testTemplateNotFound(t *testing.T, open Open) {
	s := newStore(t, open)
	mustCreateTemplate(t, s, fullTemplate("present"))

	_, err := s.GetTemplate(t.Context(), "missing")
	checkClass(t, "GetTemplate", err, errdefs.ErrNotFound)
	if errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("missing template classified as a missing sandbox: %v", err)
	}
	_, err = s.UpdateTemplate(t.Context(), fullTemplate("missing"))
	checkClass(t, "UpdateTemplate", err, errdefs.ErrNotFound)
	if _, err := s.GetTemplate(t.Context(), "missing"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("UpdateTemplate of a missing template created it (GetTemplate err = %v)", err)
	}
	checkClass(t, "DeleteTemplate", s.DeleteTemplate(t.Context(), "missing"), errdefs.ErrNotFound)
	mustGetTemplate(t, s, "present")
}

func testTemplateUpdate(t *testing.T, open Open) {
	s := newStore(t, open)
	orig := fullTemplate("web")
	mustCreateTemplate(t, s, orig)

	// A fresh UpdatedAt from the caller is kept; CreatedAt is not mutable.
	upd := store.Template{
		Name:       "web",
		Image:      "stacyvm/node:test",
		Setup:      nil,
		Env:        map[string]string{"NODE_ENV": "production"},
		MemoryMB:   2048,
		CPUCores:   4,
		TTLSeconds: 60,
		PoolSize:   0,
		Provider:   "",
		CreatedAt:  at(-500),
		UpdatedAt:  at(100),

		IdleTimeoutSeconds: 30,
		OnIdle:             "pause",
	}
	got, err := s.UpdateTemplate(t.Context(), upd)
	if err != nil {
		t.Fatalf("UpdateTemplate: %v", err)
	}
	want := upd
	want.Version, want.CreatedAt = 2, orig.CreatedAt
	checkTemplate(t, got, want)
	checkTemplate(t, mustGetTemplate(t, s, "web"), want)

	// Passing back what was read (a stale UpdatedAt) still moves it forward.
	again, err := s.UpdateTemplate(t.Context(), got)
	if err != nil {
		t.Fatalf("second UpdateTemplate: %v", err)
	}
	if again.Version != 3 {
		t.Errorf("Version = %d after two updates, want 3", again.Version)
	}
	if !again.UpdatedAt.After(got.UpdatedAt) {
		t.Errorf("UpdatedAt = %v after passing back %v, want later", again.UpdatedAt, got.UpdatedAt)
	}
	checkTime(t, "CreatedAt", again.CreatedAt, orig.CreatedAt)
	checkTemplate(t, mustGetTemplate(t, s, "web"), again)
}

func testTemplateDeleteAndRecreate(t *testing.T, open Open) {
	s := newStore(t, open)
	mustCreateTemplate(t, s, fullTemplate("gone"))
	if _, err := s.UpdateTemplate(t.Context(), fullTemplate("gone")); err != nil {
		t.Fatalf("UpdateTemplate: %v", err)
	}
	if err := s.DeleteTemplate(t.Context(), "gone"); err != nil {
		t.Fatalf("DeleteTemplate: %v", err)
	}
	_, err := s.GetTemplate(t.Context(), "gone")
	checkClass(t, "GetTemplate after delete", err, errdefs.ErrNotFound)
	checkClass(t, "second DeleteTemplate", s.DeleteTemplate(t.Context(), "gone"), errdefs.ErrNotFound)

	mustCreateTemplate(t, s, fullTemplate("gone"))
	if got := mustGetTemplate(t, s, "gone"); got.Version != 1 {
		t.Errorf("re-created template has version %d, want 1", got.Version)
	}
}

func testListTemplates(t *testing.T, open Open) {
	s := newStore(t, open)
	list, err := s.ListTemplates(t.Context())
	if err != nil {
		t.Fatalf("ListTemplates on an empty store: %v", err)
	}
	if len(list) != 0 {
		t.Fatalf("empty store lists %d templates", len(list))
	}
	for _, name := range []string{"node", "Go", "python", "alpine"} {
		mustCreateTemplate(t, s, fullTemplate(name))
	}
	list, err = s.ListTemplates(t.Context())
	if err != nil {
		t.Fatalf("ListTemplates: %v", err)
	}
	var names []string
	for _, tm := range list {
		names = append(names, tm.Name)
	}
	if want := []string{"Go", "alpine", "node", "python"}; !slices.Equal(names, want) {
		t.Errorf("ListTemplates = %v, want %v (by name, bytewise)", names, want)
	}
}

func testCanceledContext(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	if err := s.CreateSandbox(ctx, fullSandbox("sb-canceled")); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateSandbox with a canceled context: err = %v, want context.Canceled", err)
	}
	if _, err := s.GetSandbox(t.Context(), "sb-canceled"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("a canceled CreateSandbox stored the record (GetSandbox err = %v)", err)
	}
	if _, err := s.ListSandboxes(ctx, store.SandboxFilter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("ListSandboxes with a canceled context: err = %v, want context.Canceled", err)
	}
	if err := s.CreateTemplate(ctx, fullTemplate("canceled")); !errors.Is(err, context.Canceled) {
		t.Errorf("CreateTemplate with a canceled context: err = %v, want context.Canceled", err)
	}
}

// testConcurrentWriters runs 20 writers at once, each creating and then
// repeatedly updating its own sandbox and template, while readers list.
// Every call must succeed: a store may serialise writers but not fail them.
func testConcurrentWriters(t *testing.T, open Open) {
	s := newStore(t, open)
	const writers = 20
	states := []string{"running", "stopped", "running", "paused", "running", "destroyed"}

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	record := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := s.ListSandboxes(t.Context(), store.SandboxFilter{ExcludeDestroyed: true})
				record(err)
				_, err = s.ListTemplates(t.Context())
				record(err)
			}
		})
	}
	for w := range writers {
		wg.Go(func() {
			sb := fullSandbox(fmt.Sprintf("sb-conc-%02d", w))
			sb.CreatedAt = at(w)
			if err := s.CreateSandbox(t.Context(), sb); err != nil {
				record(err)
				return
			}
			for i, st := range states {
				sb.State, sb.UpdatedAt = st, at(w+i+1)
				record(s.UpdateSandbox(t.Context(), sb))
			}
			tm := fullTemplate(fmt.Sprintf("tmpl-conc-%02d", w))
			if err := s.CreateTemplate(t.Context(), tm); err != nil {
				record(err)
				return
			}
			for range 3 {
				_, err := s.UpdateTemplate(t.Context(), tm)
				record(err)
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%d concurrent calls failed:\n%v", len(errs), err)
	}

	all, err := s.ListSandboxes(t.Context(), store.SandboxFilter{})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	if len(all) != writers {
		t.Fatalf("%d sandboxes stored, want %d", len(all), writers)
	}
	for _, sb := range all {
		if sb.State != "destroyed" {
			t.Errorf("%s ended in state %q, want destroyed", sb.ID, sb.State)
		}
		if h := mustHistory(t, s, sb.ID); len(h) != 1+len(states) {
			t.Errorf("%s has %d history entries, want %d", sb.ID, len(h), 1+len(states))
		}
	}
	tms, err := s.ListTemplates(t.Context())
	if err != nil {
		t.Fatalf("ListTemplates: %v", err)
	}
	if len(tms) != writers {
		t.Fatalf("%d templates stored, want %d", len(tms), writers)
	}
	for _, tm := range tms {
		if tm.Version != 4 {
			t.Errorf("template %s has version %d after three updates, want 4", tm.Name, tm.Version)
		}
	}
}

func testPersistence(t *testing.T, open Open) {
	dir := t.TempDir()
	s := openIn(t, open, dir)

	live := fullSandbox("sb-live")
	gone := fullSandbox("sb-gone")
	gone.Metadata, gone.Env = nil, map[string]string{}
	mustCreate(t, s, live, gone)
	gone.State, gone.LastError, gone.UpdatedAt = "destroyed", "ttl expired", at(99)
	mustUpdate(t, s, gone)
	wantHistory := map[string][]store.Transition{
		live.ID: {{State: "creating", At: live.CreatedAt}},
		gone.ID: {{State: "creating", At: gone.CreatedAt}, {State: "destroyed", Reason: "ttl expired", At: at(99)}},
	}

	tm := fullTemplate("kept")
	mustCreateTemplate(t, s, tm)
	tm.Description, tm.UpdatedAt = "second version", at(50)
	tm, err := s.UpdateTemplate(t.Context(), tm)
	if err != nil {
		t.Fatalf("UpdateTemplate: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openIn(t, open, dir)
	checkSandbox(t, mustGet(t, s, live.ID), live)
	checkSandbox(t, mustGet(t, s, gone.ID), gone)
	for _, id := range slices.Sorted(maps.Keys(wantHistory)) {
		checkHistory(t, mustHistory(t, s, id), wantHistory[id])
	}
	checkTemplate(t, mustGetTemplate(t, s, "kept"), tm)
	list, err := s.ListSandboxes(t.Context(), store.SandboxFilter{ExcludeDestroyed: true})
	if err != nil {
		t.Fatalf("ListSandboxes: %v", err)
	}
	if g := ids(list); !slices.Equal(g, []string{live.ID}) {
		t.Errorf("after reopening, live sandboxes = %v, want [%s]", g, live.ID)
	}

	// And the reopened store is writable.
	mustCreate(t, s, fullSandbox("sb-after-reopen"))
}

// testListPages walks every record page by page, with ties on CreatedAt
// falling on page boundaries, and with filters: the pages together are
// the unpaged list, in order, each record once.
func testListPages(t *testing.T, open Open) {
	s := newStore(t, open)
	var all []store.Sandbox
	for i := range 11 {
		sb := fullSandbox(fmt.Sprintf("sb-%02d", i))
		sb.CreatedAt = at(i / 3) // runs of three records share an instant
		if i%4 == 0 {
			sb.State = "destroyed"
		}
		all = append(all, sb)
	}
	mustCreate(t, s, all...)
	for _, f := range []store.SandboxFilter{{}, {ExcludeDestroyed: true}, {OwnerID: "user-1", States: []string{"destroyed"}}} {
		want, err := s.ListSandboxes(t.Context(), f)
		if err != nil {
			t.Fatalf("ListSandboxes: %v", err)
		}
		for _, limit := range []int{1, 2, 3, 4, 100} {
			var got []string
			pf := f
			pf.Limit = limit
			for range 20 {
				page, err := s.ListSandboxes(t.Context(), pf)
				if err != nil {
					t.Fatalf("page: %v", err)
				}
				if len(page) > limit {
					t.Fatalf("limit %d returned %d records", limit, len(page))
				}
				got = append(got, ids(page)...)
				if len(page) < limit {
					break
				}
				last := page[len(page)-1]
				pf.After = &store.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
			}
			if !slices.Equal(got, ids(want)) {
				t.Errorf("filter %+v, limit %d: pages = %v, want %v", f, limit, got, ids(want))
			}
		}
	}
}

func testCountSandboxes(t *testing.T, open Open) {
	s := newStore(t, open)
	if c, err := s.CountSandboxes(t.Context()); err != nil || len(c) != 0 {
		t.Fatalf("empty store counts = %v, %v", c, err)
	}
	for i, state := range []string{"running", "running", "error", "destroyed", "running"} {
		sb := fullSandbox(fmt.Sprintf("sb-%d", i))
		sb.State = state
		mustCreate(t, s, sb)
	}
	c, err := s.CountSandboxes(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"running": 3, "error": 1, "destroyed": 1}; !maps.Equal(c, want) {
		t.Errorf("counts = %v, want %v", c, want)
	}
}

// testPurgeDestroyed: only destroyed records updated before the cut go,
// with their history; everything else stays.
func testPurgeDestroyed(t *testing.T, open Open) {
	s := newStore(t, open)
	old, recent, live := fullSandbox("sb-old"), fullSandbox("sb-recent"), fullSandbox("sb-live")
	mustCreate(t, s, old, recent, live)
	old.State, old.UpdatedAt = "destroyed", at(10)
	recent.State, recent.UpdatedAt = "destroyed", at(30)
	live.State, live.UpdatedAt = "running", at(5)
	mustUpdate(t, s, old)
	mustUpdate(t, s, recent)
	mustUpdate(t, s, live)

	n, err := s.PurgeDestroyed(t.Context(), at(20))
	if err != nil || n != 1 {
		t.Fatalf("PurgeDestroyed = %d, %v; want 1", n, err)
	}
	_, err = s.GetSandbox(t.Context(), old.ID)
	checkClass(t, "purged record", err, errdefs.ErrSandboxNotFound)
	_, err = s.History(t.Context(), old.ID)
	checkClass(t, "purged history", err, errdefs.ErrSandboxNotFound)
	mustGet(t, s, recent.ID)
	if h := mustHistory(t, s, recent.ID); len(h) != 2 {
		t.Errorf("history of a destroyed record within retention = %v", h)
	}
	mustGet(t, s, live.ID)
	// The id of a purged record is free again.
	mustCreate(t, s, fullSandbox(old.ID))
	if h := mustHistory(t, s, old.ID); len(h) != 1 {
		t.Errorf("a recreated record inherited the purged history: %v", h)
	}
	if n, err := s.PurgeDestroyed(t.Context(), at(20)); err != nil || n != 0 {
		t.Errorf("second purge = %d, %v; want 0", n, err)
	}
}

// testInstanceID: minted once, kept across reopening, distinct per store.
func testInstanceID(t *testing.T, open Open) {
	dir := t.TempDir()
	s := openIn(t, open, dir)
	id, err := s.InstanceID(t.Context())
	if err != nil || id == "" {
		t.Fatalf("InstanceID = %q, %v", id, err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if again, err := s.InstanceID(t.Context()); err != nil || again != id {
				t.Errorf("InstanceID again = %q, %v; want %q", again, err, id)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openIn(t, open, dir)
	if again, err := s.InstanceID(t.Context()); err != nil || again != id {
		t.Errorf("after reopening InstanceID = %q, %v; want %q", again, err, id)
	}
	other, err := newStore(t, open).InstanceID(t.Context())
	if err != nil || other == id {
		t.Errorf("another store's InstanceID = %q, %v; must differ from %q", other, err, id)
	}
}

// testDestroyedIsFinal: a destroyed record never comes back to life, so
// that a writer that read it before another (a replica, say) destroyed it
// cannot revive it by writing back what it read.
func testDestroyedIsFinal(t *testing.T, open Open) {
	s := newStore(t, open)
	sb := fullSandbox("sb-final")
	mustCreate(t, s, sb)
	stale := sb
	stale.State = "running"
	sb.State, sb.LastError, sb.UpdatedAt = "destroyed", "destroyed on request", at(10)
	mustUpdate(t, s, sb)
	stale.UpdatedAt = at(11)
	checkClass(t, "UpdateSandbox of a destroyed record to running", s.UpdateSandbox(t.Context(), stale), errdefs.ErrSandboxDestroyed)
	checkSandbox(t, mustGet(t, s, sb.ID), sb)
	// Destroyed again is no change of state: allowed, no history entry.
	sb.UpdatedAt = at(12)
	mustUpdate(t, s, sb)
	if h := mustHistory(t, s, sb.ID); len(h) != 2 {
		t.Errorf("history = %+v, want creating and destroyed only", h)
	}
}

// testLeases: one holder at a time; a renewal keeps the token; every new
// acquisition gets a greater token than any before, across names too; a
// lost lease fails its check.
func testLeases(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := t.Context()
	_, err := s.GetLease(ctx, "reaper")
	checkClass(t, "GetLease of a lease never taken", err, errdefs.ErrNotFound)
	checkClass(t, "CheckLease of a lease never taken", s.CheckLease(ctx, "reaper", 1), errdefs.ErrConflict)
	_, err = s.AcquireLease(ctx, "", "a", time.Minute)
	checkClass(t, "AcquireLease without a name", err, errdefs.ErrInvalidArgument)
	_, err = s.AcquireLease(ctx, "reaper", "", time.Minute)
	checkClass(t, "AcquireLease without a holder", err, errdefs.ErrInvalidArgument)
	_, err = s.AcquireLease(ctx, "reaper", "a", 0)
	checkClass(t, "AcquireLease without a ttl", err, errdefs.ErrInvalidArgument)

	before := time.Now()
	a, err := s.AcquireLease(ctx, "reaper", "a", time.Minute)
	if err != nil {
		t.Fatalf("AcquireLease: %v", err)
	}
	if a.Name != "reaper" || a.Holder != "a" || a.Token <= 0 || a.ExpiresAt.Before(before.Add(50*time.Second)) {
		t.Errorf("acquired %+v, want reaper held by a with a positive token for about a minute", a)
	}
	if got, err := s.GetLease(ctx, "reaper"); err != nil || got.Holder != "a" || got.Token != a.Token || !got.ExpiresAt.Equal(a.ExpiresAt) {
		t.Errorf("GetLease = %+v, %v; want %+v", got, err, a)
	}
	if err := s.CheckLease(ctx, "reaper", a.Token); err != nil {
		t.Errorf("CheckLease of the held lease: %v", err)
	}
	checkClass(t, "CheckLease with another token", s.CheckLease(ctx, "reaper", a.Token+1), errdefs.ErrConflict)
	_, err = s.AcquireLease(ctx, "reaper", "b", time.Minute)
	checkClass(t, "AcquireLease of a held lease", err, errdefs.ErrConflict)

	renewed, err := s.AcquireLease(ctx, "reaper", "a", 2*time.Minute)
	if err != nil || renewed.Token != a.Token || !renewed.ExpiresAt.After(a.ExpiresAt) {
		t.Errorf("renewal = %+v, %v; want token %d kept and a later expiry than %v", renewed, err, a.Token, a.ExpiresAt)
	}
	// Another name is another lease, with a token of its own.
	other, err := s.AcquireLease(ctx, "reconcile", "b", time.Minute)
	if err != nil || other.Token <= a.Token {
		t.Errorf("AcquireLease(reconcile) = %+v, %v; want a token above %d", other, err, a.Token)
	}

	// Only the holder with its token releases.
	if err := s.ReleaseLease(ctx, "reaper", "b", a.Token); err != nil {
		t.Errorf("ReleaseLease by a non-holder: %v", err)
	}
	if err := s.ReleaseLease(ctx, "reaper", "a", a.Token+100); err != nil {
		t.Errorf("ReleaseLease with a wrong token: %v", err)
	}
	if err := s.CheckLease(ctx, "reaper", a.Token); err != nil {
		t.Errorf("a release by someone else ended the lease: %v", err)
	}
	if err := s.ReleaseLease(ctx, "reaper", "a", a.Token); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	checkClass(t, "CheckLease after release", s.CheckLease(ctx, "reaper", a.Token), errdefs.ErrConflict)
	_, err = s.GetLease(ctx, "reaper")
	checkClass(t, "GetLease after release", err, errdefs.ErrNotFound)
	b, err := s.AcquireLease(ctx, "reaper", "b", time.Minute)
	if err != nil || b.Holder != "b" || b.Token <= other.Token {
		t.Errorf("AcquireLease after release = %+v, %v; want b with a token above %d", b, err, other.Token)
	}
	// The old holder taking it back after losing it gets a new token.
	if err := s.ReleaseLease(ctx, "reaper", "b", b.Token); err != nil {
		t.Fatal(err)
	}
	again, err := s.AcquireLease(ctx, "reaper", "a", time.Minute)
	if err != nil || again.Token <= b.Token {
		t.Errorf("reacquired = %+v, %v; want a token above %d", again, err, b.Token)
	}
}

// testLeaseExpiry: an expired lease is free for another holder with a
// new token, and the former holder's token is refused.
func testLeaseExpiry(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := t.Context()
	const ttl = 300 * time.Millisecond
	a, err := s.AcquireLease(ctx, "sweeper", "a", ttl)
	if err != nil {
		t.Fatal(err)
	}
	// Wait past the expiry by the store's clock, whatever the load.
	deadline := time.Now().Add(30 * time.Second)
	for s.CheckLease(ctx, "sweeper", a.Token) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("lease with ttl %s still valid after 30s", ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := s.GetLease(ctx, "sweeper")
	if err != nil || got.Token != a.Token {
		t.Errorf("GetLease of an expired lease = %+v, %v; want it with token %d", got, err, a.Token)
	}
	b, err := s.AcquireLease(ctx, "sweeper", "b", time.Minute)
	if err != nil || b.Token <= a.Token {
		t.Fatalf("AcquireLease of an expired lease = %+v, %v; want a token above %d", b, err, a.Token)
	}
	checkClass(t, "CheckLease of the former holder", s.CheckLease(ctx, "sweeper", a.Token), errdefs.ErrConflict)
	_, err = s.AcquireLease(ctx, "sweeper", "a", ttl)
	checkClass(t, "renewal by the former holder", err, errdefs.ErrConflict)
}

// testLeaseRace: holders racing for one free lease: exactly one wins.
func testLeaseRace(t *testing.T, open Open) {
	s := newStore(t, open)
	const n = 8
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins []store.Lease
		errs []error
	)
	for i := range n {
		wg.Go(func() {
			l, err := s.AcquireLease(t.Context(), "builds", fmt.Sprintf("replica-%d", i), time.Minute)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, l)
			case !errors.Is(err, errdefs.ErrConflict):
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errors.Join(errs...))
	}
	if len(wins) != 1 {
		t.Fatalf("%d holders won the lease, want exactly 1: %+v", len(wins), wins)
	}
	if got, err := s.GetLease(t.Context(), "builds"); err != nil || got.Holder != wins[0].Holder {
		t.Errorf("GetLease = %+v, %v; want the winner %s", got, err, wins[0].Holder)
	}
}
