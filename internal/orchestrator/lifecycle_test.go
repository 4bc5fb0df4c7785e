package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// transitionLog is an Observer that keeps the transitions it is told of.
type transitionLog struct {
	nopObserver
	mu  sync.Mutex
	got []string
}

func (l *transitionLog) Transition(from, to string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, from+">"+to)
}

func (l *transitionLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// TestTransitionEveryPair tries every (from, to) pair of states through
// the one transition function: an allowed pair is persisted with its
// reason in the history, counted, published and reflected in the live
// set; any other is a conflict naming both states that changes nothing.
func TestTransitionEveryPair(t *testing.T) {
	for _, from := range States() {
		for _, to := range States() {
			t.Run(fmt.Sprintf("%s>%s", from, to), func(t *testing.T) {
				obs := &transitionLog{}
				e := newEnv(t, func(c *Config) { c.Observer = obs })
				ctx := context.Background()
				sb := store.Sandbox{ID: newID(), Provider: "fake", Image: "img:1", State: string(from),
					OwnerID: "alice", ExpiresAt: e.clock.Now().Add(time.Hour)}
				if err := e.st.CreateSandbox(ctx, sb); err != nil {
					t.Fatal(err)
				}
				ch, cancel := e.m.Events().Subscribe(e.m.Events().LastID())
				defer cancel()

				got, err := e.m.transition(ctx, sb, change{to: to, reason: "because of the test"})
				stored, gerr := e.st.GetSandbox(ctx, sb.ID)
				if gerr != nil {
					t.Fatal(gerr)
				}
				live := e.m.isLive(sb.ID)
				if !canTransition(from, to) {
					if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), string(from)) ||
						!strings.Contains(err.Error(), string(to)) {
						t.Fatalf("illegal transition: %v; want a conflict naming both states", err)
					}
					if stored.State != string(from) || got.State != string(from) {
						t.Errorf("illegal transition changed the state: stored %s, returned %s", stored.State, got.State)
					}
					if len(obs.all()) != 0 || live {
						t.Errorf("illegal transition was counted (%v) or entered the live set (%v)", obs.all(), live)
					}
					select {
					case ev := <-ch:
						t.Errorf("illegal transition published %+v", ev)
					default:
					}
					return
				}
				if err != nil {
					t.Fatalf("legal transition: %v", err)
				}
				if stored.State != string(to) || got.State != string(to) || stored.LastError != "because of the test" {
					t.Errorf("stored %s (%q), returned %s; want %s with the reason", stored.State, stored.LastError, got.State, to)
				}
				h, _ := e.st.History(ctx, sb.ID)
				if last := h[len(h)-1]; last.State != string(to) || last.Reason != "because of the test" {
					t.Errorf("last history entry %+v", last)
				}
				if want := []string{string(from) + ">" + string(to)}; !slices.Equal(obs.all(), want) {
					t.Errorf("observed %v, want %v", obs.all(), want)
				}
				wantLive := lifecycle[to].Counts && !transitions[edge{from, to}].releases
				if live != wantLive {
					t.Errorf("in the live set: %v, want %v", live, wantLive)
				}
				if typ := lifecycle[to].Event; typ != "" {
					select {
					case ev := <-ch:
						if ev.Type != typ || ev.SandboxID != sb.ID || ev.Data["from"] != string(from) {
							t.Errorf("event %+v; want %s from %s", ev, typ, from)
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("no %s event", typ)
					}
				} else {
					select {
					case ev := <-ch:
						t.Errorf("transient state %s published %+v", to, ev)
					default:
					}
				}
			})
		}
	}
}

// TestLifecycleTableIsWhole checks the rules the rest of the Manager
// relies on, stated over the table rather than over named states.
func TestLifecycleTableIsWhole(t *testing.T) {
	if len(lifecycle) != len(States()) {
		t.Fatalf("lifecycle has %d states, States() %d", len(lifecycle), len(States()))
	}
	for e := range transitions {
		if _, ok := lifecycle[e.from]; !ok {
			t.Errorf("edge %v leaves an unknown state", e)
		}
		if _, ok := lifecycle[e.to]; !ok {
			t.Errorf("edge %v enters an unknown state", e)
		}
		if e.from == e.to {
			t.Errorf("edge %v goes nowhere", e)
		}
	}
	for _, s := range States() {
		p := lifecycle[s]
		if s == provider.StateDestroyed {
			for e := range transitions {
				if e.from == s {
					t.Errorf("destroyed is final, yet %v leaves it", e)
				}
			}
			if p.Counts || p.Listed || p.Reapable || p.Guest {
				t.Errorf("destroyed has live properties: %+v", p)
			}
			continue
		}
		// Reconcile may find any runtime gone.
		if !canTransition(s, provider.StateDestroyed) {
			t.Errorf("%s cannot end destroyed when its runtime vanishes", s)
		}
		// Every live state holds (or may hold) a runtime.
		if !p.Counts {
			t.Errorf("%s does not count toward the limits", s)
		}
		if p.Guest && (p.Transient || p.SpawnOwned) {
			t.Errorf("%s takes guest operations while an operation owns it", s)
		}
		if p.Transient && p.Event != "" {
			t.Errorf("transient %s publishes %s", s, p.Event)
		}
		// Only spawns and reconcile's view of the runtime may leave
		// creating; every other live state can be destroyed on request.
		if !p.SpawnOwned && !canTransition(s, provider.StateDestroying) && s != provider.StateDestroying {
			t.Errorf("%s cannot be destroyed", s)
		}
		if p.Runtime != "" && p.Transient {
			t.Errorf("transient %s expects runtime state %s", s, p.Runtime)
		}
	}
	if got := listedStates(); slices.Contains(got, string(provider.StatePooled)) || slices.Contains(got, string(provider.StateDestroyed)) {
		t.Errorf("listed states %v include pool members or destroyed records", got)
	}
}

func TestRecordStateFor(t *testing.T) {
	for _, c := range []struct {
		cur     provider.State
		runtime provider.State
		want    provider.State
		ok      bool
	}{
		{provider.StateRunning, provider.StateRunning, provider.StateRunning, true},
		{provider.StateRunning, provider.StatePaused, provider.StatePaused, true},
		{provider.StatePaused, provider.StateRunning, provider.StateRunning, true},
		{provider.StatePausing, provider.StatePaused, provider.StatePaused, true},
		{provider.StatePausing, provider.StateRunning, provider.StateRunning, true},
		{provider.StateResuming, provider.StatePaused, provider.StatePaused, true},
		{provider.StateError, provider.StateStopped, provider.StateStopped, true},
		{provider.StatePooled, provider.StateRunning, provider.StatePooled, true},
		{provider.StatePooled, provider.StatePaused, provider.StatePaused, true},
		{provider.StateRunning, provider.StateError, "", false},
		{provider.StateRunning, provider.StateCreating, "", false},
	} {
		got, ok := recordStateFor(string(c.cur), c.runtime)
		if got != c.want || ok != c.ok {
			t.Errorf("recordStateFor(%s, runtime %s) = %s, %v; want %s, %v", c.cur, c.runtime, got, ok, c.want, c.ok)
		}
	}
}

// TestOperationsNotAllowedAreConflicts: an operation a state does not
// allow is a conflict that names the sandbox, its state and the operation.
func TestOperationsNotAllowedAreConflicts(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	for _, s := range []provider.State{provider.StatePooled, provider.StatePausing, provider.StateResuming,
		provider.StateStopped, provider.StateError, provider.StateDestroying} {
		sb := store.Sandbox{ID: newID(), Provider: "fake", Image: "img:1", State: string(s),
			ExpiresAt: e.clock.Now().Add(time.Hour)}
		if err := e.st.CreateSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
		_, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "true"})
		want := fmt.Sprintf("sandbox %s is %s", sb.ID, s)
		if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "cannot exec") {
			t.Errorf("exec on %s: %v; want a conflict %q…cannot exec", s, err, want)
		}
		_, err = e.m.ReadFile(ctx, sb.ID, "/x")
		if !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "cannot read a file") {
			t.Errorf("read a file on %s: %v", s, err)
		}
		_, err = e.m.Extend(ctx, sb.ID, time.Minute)
		if extendable := lifecycle[s].Extendable; extendable != (err == nil) {
			t.Errorf("extend on %s: %v (extendable %v)", s, err, extendable)
		} else if !extendable && (!errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "cannot extend")) {
			t.Errorf("extend on %s: %v; want a conflict naming extend", s, err)
		}
	}
	// Destroy of a sandbox still being created: its spawn owns it.
	sb := store.Sandbox{ID: newID(), Provider: "fake", Image: "img:1", State: string(provider.StateCreating)}
	if err := e.st.CreateSandbox(ctx, sb); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Destroy(ctx, sb.ID); !errors.Is(err, errdefs.ErrConflict) ||
		!strings.Contains(err.Error(), "is creating; cannot destroy") {
		t.Errorf("destroy while creating: %v", err)
	}
}

// TestListHidesPoolMembers: pool members are nobody's sandboxes until
// claimed; an explicit state filter still finds them.
func TestListHidesPoolMembers(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	mine := e.spawn(t, SpawnRequest{})
	member := store.Sandbox{ID: newID(), Provider: "fake", Image: "img:1", State: string(provider.StatePooled)}
	if err := e.st.CreateSandbox(ctx, member); err != nil {
		t.Fatal(err)
	}
	list, err := e.m.List(ctx, ListFilter{})
	if err != nil || len(list) != 1 || list[0].ID != mine.ID {
		t.Fatalf("list = %+v, %v; want only %s", list, err, mine.ID)
	}
	list, err = e.m.List(ctx, ListFilter{State: string(provider.StatePooled)})
	if err != nil || len(list) != 1 || list[0].ID != member.ID {
		t.Fatalf("list state=pooled = %+v, %v; want %s", list, err, member.ID)
	}
}

// TestFailedDestroyIsFinishedByReconcile: a destroy that fails leaves the
// record destroying; reconcile removes the runtime and ends it destroyed.
func TestFailedDestroyIsFinishedByReconcile(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DestroyTimeout = 50 * time.Millisecond })
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	release := e.fake.hangDestroy(sb.ID)
	if err := e.m.Destroy(ctx, sb.ID); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Fatalf("hung destroy: %v", err)
	}
	if got, _ := e.m.Get(ctx, sb.ID); got.State != string(provider.StateDestroying) {
		t.Fatalf("after the failed destroy: %s, want destroying", got.State)
	}
	release()
	rep, err := e.m.Reconcile(ctx)
	// The hung call, released, may remove the runtime first: then
	// reconcile finds it gone rather than removing it itself.
	if err != nil || rep.Destroyed+rep.Gone != 1 {
		t.Fatalf("reconcile: %+v, %v", rep, err)
	}
	if _, err := e.m.Get(ctx, sb.ID); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Fatalf("after reconcile: %v, want destroyed", err)
	}
	h, _ := e.st.History(ctx, sb.ID)
	var states []string
	for _, tr := range h {
		states = append(states, tr.State)
	}
	if want := []string{"creating", "running", "destroying", "destroyed"}; !slices.Equal(states, want) {
		t.Errorf("history %v, want %v", states, want)
	}
	if e.m.isLive(sb.ID) {
		t.Error("a destroyed sandbox is still in the live set")
	}
}

// isLive reports whether id is in the live set, for tests.
func (m *Manager) isLive(id string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.live[id]
	return ok
}

// TestReconcileRecognisesPausedRuntimes: a runtime paused behind the
// server's back makes its record paused, one found running again makes it
// running, and an orphan that is paused is adopted paused.
func TestReconcileRecognisesPausedRuntimes(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	setState := func(id string, s provider.State) {
		e.fake.mu.Lock()
		defer e.fake.mu.Unlock()
		info := e.fake.runtimes[id]
		info.State = s
		e.fake.runtimes[id] = info
	}
	setState(sb.ID, provider.StatePaused)
	orphan := newID()
	e.fake.addRuntime(provider.Info{ID: orphan, State: provider.StatePaused, Image: "img:1", Instance: testInstance})
	if _, err := e.m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{sb.ID, orphan} {
		if got, err := e.m.Get(ctx, id); err != nil || got.State != string(provider.StatePaused) {
			t.Errorf("%s after reconcile: %+v, %v; want paused", id, got.State, err)
		}
	}
	setState(sb.ID, provider.StateRunning)
	if _, err := e.m.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.m.Get(ctx, sb.ID); got.State != string(provider.StateRunning) {
		t.Errorf("after the runtime runs again: %s, want running", got.State)
	}
	want := []string{"creating", "running", "paused", "running"}
	h, _ := e.st.History(ctx, sb.ID)
	var got []string
	for _, tr := range h {
		got = append(got, tr.State)
	}
	if !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
}
