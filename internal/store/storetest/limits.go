package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// counted are the states that hold a place in the limits tests; the
// store takes them from the caller, so any set of names does.
var counted = []string{"creating", "running", "paused"}

func limitedSandbox(id, owner, state string) store.Sandbox {
	sb := fullSandbox(id)
	sb.OwnerID, sb.State = owner, state
	return sb
}

func testCreateWithin(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := t.Context()
	lim := store.SandboxLimits{Counted: counted, Max: 4, MaxPerOwner: 2}
	// Records in states that do not count take no place.
	mustCreate(t, s, limitedSandbox("sb-l-destroyed", "alice", "destroyed"), limitedSandbox("sb-l-error", "alice", "error"))
	for _, sb := range []store.Sandbox{
		limitedSandbox("sb-l-a1", "alice", "running"),
		limitedSandbox("sb-l-a2", "alice", "creating"),
	} {
		if err := s.CreateSandboxWithin(ctx, sb, lim); err != nil {
			t.Fatalf("CreateSandboxWithin(%s) under the limits: %v", sb.ID, err)
		}
	}
	err := s.CreateSandboxWithin(ctx, limitedSandbox("sb-l-a3", "alice", "creating"), lim)
	checkClass(t, "alice's third sandbox over max_per_owner 2", err, errdefs.ErrResourceLimit)
	if _, err := s.GetSandbox(ctx, "sb-l-a3"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("a refused creation was stored: GetSandbox = %v", err)
	}
	// Another owner, and no owner, count only toward the total.
	for _, sb := range []store.Sandbox{
		limitedSandbox("sb-l-b1", "bob", "paused"),
		limitedSandbox("sb-l-n1", "", "creating"),
	} {
		if err := s.CreateSandboxWithin(ctx, sb, lim); err != nil {
			t.Fatalf("CreateSandboxWithin(%s) under the limits: %v", sb.ID, err)
		}
	}
	err = s.CreateSandboxWithin(ctx, limitedSandbox("sb-l-n2", "", "creating"), lim)
	checkClass(t, "a fifth sandbox over max 4", err, errdefs.ErrResourceLimit)
	// A record leaving the counted states frees its place.
	sb := mustGet(t, s, "sb-l-a1")
	sb.State = "destroyed"
	mustUpdate(t, s, sb)
	if err := s.CreateSandboxWithin(ctx, limitedSandbox("sb-l-a3", "alice", "creating"), lim); err != nil {
		t.Errorf("CreateSandboxWithin after a destroy freed a place: %v", err)
	}
	// Zero limits are none; a duplicate ID is still a conflict.
	if err := s.CreateSandboxWithin(ctx, limitedSandbox("sb-l-free", "alice", "running"), store.SandboxLimits{Counted: counted}); err != nil {
		t.Errorf("CreateSandboxWithin without limits: %v", err)
	}
	err = s.CreateSandboxWithin(ctx, limitedSandbox("sb-l-free", "carol", "running"), store.SandboxLimits{Counted: counted, Max: 100})
	checkClass(t, "a duplicate ID under the limits", err, errdefs.ErrConflict)
	if h := mustHistory(t, s, "sb-l-a3"); len(h) != 1 || h[0].State != "creating" {
		t.Errorf("history of a creation under limits = %+v, want one entry (creating)", h)
	}
}

// testCreateWithinRace: creations from two handles on one database (as
// two replicas) racing against a limit end with exactly the limit stored.
func testCreateWithinRace(t *testing.T, open Open) {
	dir := t.TempDir()
	a := openIn(t, open, dir)
	b := openIn(t, open, dir)
	for _, tc := range []struct {
		name string
		lim  store.SandboxLimits
		want int
	}{
		{"max", store.SandboxLimits{Counted: counted, Max: 5}, 5},
		{"per-owner", store.SandboxLimits{Counted: counted, MaxPerOwner: 3}, 3},
	} {
		const racers = 24
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			won, lost int
			errs      []error
		)
		for i := range racers {
			wg.Go(func() {
				s := store.Store(a)
				if i%2 == 1 {
					s = b
				}
				sb := limitedSandbox(fmt.Sprintf("sb-race-%s-%d", tc.name, i), "owner-"+tc.name, "creating")
				err := s.CreateSandboxWithin(t.Context(), sb, tc.lim)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case errdefs.Classify(err) == errdefs.ErrResourceLimit:
					lost++
				default:
					errs = append(errs, err)
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%s: creations failed other than by the limit:\n%v", tc.name, err)
		}
		if won != tc.want || lost != racers-tc.want {
			t.Errorf("%s: %d creations succeeded and %d were refused, want %d and %d", tc.name, won, lost, tc.want, racers-tc.want)
		}
		list, err := b.ListSandboxes(t.Context(), store.SandboxFilter{OwnerID: "owner-" + tc.name})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != tc.want {
			t.Errorf("%s: %d records stored, want %d", tc.name, len(list), tc.want)
		}
		// The next case starts from an empty place count.
		for _, sb := range list {
			sb.State = "destroyed"
			mustUpdate(t, a, sb)
		}
	}
}

func testTouchSandboxes(t *testing.T, open Open) {
	s := newStore(t, open)
	ctx := t.Context()
	a, b, gone := fullSandbox("sb-touch-a"), fullSandbox("sb-touch-b"), fullSandbox("sb-touch-gone")
	a.LastActivity = at(100) // not written by CreateSandbox
	gone.State = "destroyed"
	mustCreate(t, s, a, b, gone)
	if got := mustGet(t, s, a.ID); !got.LastActivity.IsZero() {
		t.Errorf("LastActivity after CreateSandbox = %v, want zero (only TouchSandboxes writes it)", got.LastActivity)
	}
	if err := s.TouchSandboxes(ctx, at(5), a.ID, b.ID, gone.ID, "sb-unknown"); err != nil {
		t.Fatalf("TouchSandboxes: %v", err)
	}
	if err := s.TouchSandboxes(ctx, at(9)); err != nil {
		t.Fatalf("TouchSandboxes without IDs: %v", err)
	}
	// An older time never moves it back.
	if err := s.TouchSandboxes(ctx, at(3), a.ID); err != nil {
		t.Fatalf("TouchSandboxes: %v", err)
	}
	if err := s.TouchSandboxes(ctx, at(7), b.ID); err != nil {
		t.Fatalf("TouchSandboxes: %v", err)
	}
	for id, want := range map[string]time.Time{a.ID: at(5), b.ID: at(7), gone.ID: {}} {
		got := mustGet(t, s, id)
		checkTime(t, id+" LastActivity", got.LastActivity, want)
		if !got.UpdatedAt.Equal(at(1)) {
			t.Errorf("%s UpdatedAt = %v after TouchSandboxes, want it unchanged (%v)", id, got.UpdatedAt, at(1))
		}
	}
	// UpdateSandbox keeps it, whatever the record written says.
	up := mustGet(t, s, a.ID)
	up.State, up.UpdatedAt, up.LastActivity = "running", at(6), time.Time{}
	mustUpdate(t, s, up)
	checkTime(t, "LastActivity after UpdateSandbox", mustGet(t, s, a.ID).LastActivity, at(5))
	list, err := s.ListSandboxes(ctx, store.SandboxFilter{States: []string{"running"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !list[0].LastActivity.Equal(at(5)) {
		t.Errorf("ListSandboxes = %+v, want %s with LastActivity %v", list, a.ID, at(5))
	}
}
