package orchestrator

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// TestHungDestroyBlocksNothingElse: a provider whose Destroy hangs never
// delays destroys or extends of other sandboxes, however many there are
// (with the former 64 striped locks, one of 300 sandboxes shares the hung
// one's stripe but for a 1% chance).
func TestHungDestroyBlocksNothingElse(t *testing.T) {
	// The hung destroy must still hang when the others are done, however
	// slow the machine: its deadline is beyond the test's.
	e := newEnv(t, func(c *Config) { c.DestroyTimeout = time.Hour })
	hung := e.spawn(t, SpawnRequest{})
	var others []string
	for range 300 {
		others = append(others, e.spawn(t, SpawnRequest{}).ID)
	}
	release := e.fake.hangDestroy(hung.ID)
	defer release()

	hungDone := make(chan error, 1)
	go func() { hungDone <- e.m.Destroy(context.Background(), hung.ID) }()
	// The hung destroy holds its sandbox before the others start.
	for deadline := time.Now().Add(time.Minute); e.m.locks.held() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the hung destroy never took its sandbox's lock")
		}
		time.Sleep(time.Millisecond)
	}

	// Every other sandbox is destroyed (or extended) while the hung
	// destroy holds its sandbox; none waits for it.
	var wg sync.WaitGroup
	for i, id := range others {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				err = e.m.Destroy(context.Background(), id)
			} else {
				_, err = e.m.Extend(context.Background(), id, time.Minute)
			}
			if err != nil {
				t.Errorf("%s: %v", id, err)
			}
		})
	}
	othersDone := make(chan struct{})
	go func() { wg.Wait(); close(othersDone) }()
	select {
	case <-othersDone:
	case err := <-hungDone:
		t.Fatalf("the hung destroy returned (%v) while it hung", err)
	case <-time.After(5 * time.Minute):
		t.Fatal("the other destroys and extends still wait after 5 minutes: they wait for the hung destroy")
	}

	// Once the runtime answers, the hung destroy finishes.
	release()
	select {
	case err := <-hungDone:
		if err != nil {
			t.Fatalf("the hung destroy after the runtime recovered: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the hung destroy did not return once the runtime answered")
	}
	if n := e.m.locks.held(); n != 0 {
		t.Errorf("%d sandbox locks still held after everything finished", n)
	}
}

// TestHungDestroyTimesOut: a provider whose Destroy hangs (and ignores its
// context) fails that destroy after DestroyTimeout and keeps the record;
// a second destroy waits behind nobody forever; once the runtime answers,
// a destroy goes through.
func TestHungDestroyTimesOut(t *testing.T) {
	const destroyTimeout = 2 * time.Second
	e := newEnv(t, func(c *Config) { c.DestroyTimeout = destroyTimeout })
	hung := e.spawn(t, SpawnRequest{})
	release := e.fake.hangDestroy(hung.ID)
	defer release()

	start := time.Now()
	err := e.m.Destroy(context.Background(), hung.ID)
	took := time.Since(start)
	if !errors.Is(err, errdefs.ErrProviderUnavailable) || !strings.Contains(err.Error(), "within") {
		t.Fatalf("hung destroy: %v; want provider unavailable naming the deadline", err)
	}
	// The upper bound is generous: what matters is that the deadline, not
	// the provider, ended the call.
	if took < destroyTimeout || took > destroyTimeout+time.Minute {
		t.Errorf("hung destroy returned after %s; want about %s", took, destroyTimeout)
	}
	// The record is kept, destroying, so that the runtime is not
	// forgotten and a later destroy (or the reaper, or reconcile)
	// finishes it.
	sb, err := e.m.Get(context.Background(), hung.ID)
	if err != nil || sb.State != string(provider.StateDestroying) {
		t.Fatalf("hung sandbox after the failed destroy: %+v, %v", sb, err)
	}

	// A second destroy of the hung sandbox waits behind nobody forever:
	// its own context ends the wait.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	unlock, err := e.m.lockSandbox(context.Background(), hung.ID)
	if err != nil {
		t.Fatal(err)
	}
	err = e.m.Destroy(ctx, hung.ID)
	unlock()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("destroy waiting on a held sandbox: %v", err)
	}

	// Once the runtime answers again, the destroy goes through.
	release()
	if err := e.m.Destroy(context.Background(), hung.ID); err != nil {
		t.Fatalf("destroy after the runtime recovered: %v", err)
	}
	if n := e.m.locks.held(); n != 0 {
		t.Errorf("%d sandbox locks still held after everything finished", n)
	}
}

// TestReaperStopsOnShutdown: Run returns promptly when its context ends,
// even while a destroy it started hangs: it waits at most DestroyTimeout.
func TestReaperStopsOnShutdown(t *testing.T) {
	const destroyTimeout = 300 * time.Millisecond
	e := newEnv(t, func(c *Config) { c.DestroyTimeout = destroyTimeout; c.ReaperInterval = 10 * time.Millisecond })
	for range 5 {
		sb := e.spawn(t, SpawnRequest{TTL: time.Minute})
		defer e.fake.hangDestroy(sb.ID)()
	}
	e.clock.Add(2 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.m.Run(ctx) }()
	time.Sleep(50 * time.Millisecond) // the reaper is inside a hung destroy
	cancel()
	select {
	case <-done:
	case <-time.After(destroyTimeout + 5*time.Second):
		t.Fatal("Run did not return after its context ended: shutdown would wait on a hung destroy")
	}
}
