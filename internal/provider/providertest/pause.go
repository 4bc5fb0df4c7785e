package providertest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// counterScript counts up in /workspace/count (it runs in /workspace) every tenth of a second,
// forever: a sandbox whose count does not move is not running.
const counterScript = `i=0; while :; do i=$((i+1)); echo $i > count.tmp; mv count.tmp count; sleep 0.1; done`

// counterTick is the least time one step of counterScript takes.
const counterTick = 100 * time.Millisecond

func (s *suite) testPause(t *testing.T) {
	s.need(t, "Pause", s.caps.Pause)
	pz, ok := s.p.(provider.Pauser)
	if !ok {
		t.Fatal("provider declares Pause but does not implement provider.Pauser")
	}

	// A paused sandbox makes no progress, and continues once resumed. The
	// check is a bound, not a timing guess: the counter can step at most
	// once per counterTick of the time the sandbox was not frozen (a slow
	// machine only makes it step less), and the sandbox is frozen from
	// Pause's return to Resume's call.
	t.Run("FreezesAndThaws", func(t *testing.T) {
		t.Parallel()
		p := s.p
		id := s.spawn(t, p, provider.Spec{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go execIn(ctx, p, id, sh(counterScript))
		count := func() int {
			t.Helper()
			b, err := readFile(t.Context(), p, id, "/workspace/count")
			if err != nil {
				if isFileNotFound(err) {
					return 0
				}
				t.Fatalf("read the counter: %v", err)
			}
			n, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("counter %q: %v", b, err)
			}
			return n
		}
		waitFor(t, 30*time.Second, func() bool { return count() >= 2 })

		t0 := time.Now()
		before := count()
		if err := pz.Pause(t.Context(), id); err != nil {
			t.Fatalf("Pause: %v", err)
		}
		frozenFrom := time.Now()
		if info, err := p.Status(t.Context(), id); err != nil || info.State != provider.StatePaused {
			t.Errorf("Status while paused = %+v, %v; want state paused", info, err)
		}
		if err := pz.Pause(t.Context(), id); err != nil {
			t.Errorf("second Pause: %v, want nil (idempotent)", err)
		}
		time.Sleep(1500 * time.Millisecond)
		frozen := time.Since(frozenFrom)
		if err := pz.Resume(t.Context(), id); err != nil {
			t.Fatalf("Resume: %v", err)
		}
		after := count()
		unfrozen := time.Since(t0) - frozen
		if limit := int(unfrozen/counterTick) + 2; after-before > limit {
			t.Errorf("the counter went from %d to %d across a pause of %s; unfrozen for %s it can step at most %d times",
				before, after, frozen.Round(time.Millisecond), unfrozen.Round(time.Millisecond), limit)
		}
		if info, err := p.Status(t.Context(), id); err != nil || info.State != provider.StateRunning {
			t.Errorf("Status after Resume = %+v, %v; want state running", info, err)
		}
		if why := s.h.PauseKeepsFilesOnly; why != "" {
			// The counter's process is gone; its file must not be.
			if after < before {
				t.Errorf("the counter's file went from %d to %d across a pause: the sandbox's files did not survive", before, after)
			}
			t.Logf("processes are not expected to survive a pause: %s", why)
		} else {
			waitFor(t, 30*time.Second, func() bool { return count() > after+2 })
		}
		if err := pz.Resume(t.Context(), id); err != nil {
			t.Errorf("Resume of a running sandbox: %v, want nil (idempotent)", err)
		}
		if got := mustExec(t, p, id, "echo thawed"); got != "thawed\n" {
			t.Errorf("exec after Resume: %q", got)
		}
	})

	t.Run("DestroyWhilePaused", func(t *testing.T) {
		t.Parallel()
		p := s.p
		id := s.spawn(t, p, provider.Spec{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan struct{})
		go func() { defer close(done); execIn(ctx, p, id, sh("sleep 300")) }()
		if err := pz.Pause(t.Context(), id); err != nil {
			t.Fatalf("Pause: %v", err)
		}
		if err := p.Destroy(t.Context(), id); err != nil {
			t.Fatalf("Destroy of a paused sandbox: %v", err)
		}
		if _, err := p.Status(t.Context(), id); !isGone(err) {
			t.Errorf("Status after destroying a paused sandbox: %v, want sandbox destroyed or not found", err)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("a command of the paused sandbox still runs 30s after Destroy")
		}
	})

	t.Run("UnknownID", func(t *testing.T) {
		t.Parallel()
		id := NewID()
		wantClass(t, "Pause of an unknown sandbox", pz.Pause(t.Context(), id), errdefs.ErrSandboxNotFound)
		wantClass(t, "Resume of an unknown sandbox", pz.Resume(t.Context(), id), errdefs.ErrSandboxNotFound)
	})
}
