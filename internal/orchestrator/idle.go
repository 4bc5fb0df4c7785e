package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// What happens to a sandbox idle for its IdleTimeout.
const (
	OnIdlePause   = "pause"
	OnIdleDestroy = "destroy"
)

// activity tracks guest operations under way per sandbox, so that the
// idle sweeper never takes a sandbox that is busy (a long exec or stream
// is activity for as long as it runs), and lets the sweeper claim a
// sandbox: operations that start meanwhile wait the few milliseconds the
// pause or destroy takes, then find the sandbox paused (and resume it) or
// gone.
type activity struct {
	mu       sync.Mutex
	cond     *sync.Cond
	inflight map[string]int // operations under way; claimed (-1) by the sweeper
}

func newActivity() *activity {
	a := &activity{inflight: map[string]int{}}
	a.cond = sync.NewCond(&a.mu)
	return a
}

// begin waits while the sweeper holds id, then counts one operation.
func (a *activity) begin(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.inflight[id] < 0 {
		a.cond.Wait()
	}
	a.inflight[id]++
}

func (a *activity) end(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight[id]--; a.inflight[id] <= 0 {
		delete(a.inflight, id)
	}
}

// claim holds id for the sweeper if no operation is under way.
func (a *activity) claim(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight[id] != 0 {
		return false
	}
	a.inflight[id] = -1
	return true
}

func (a *activity) release(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.inflight, id)
	a.cond.Broadcast()
}

// active marks a guest operation on id under way until the returned func
// runs; both ends count as activity (Touch).
func (m *Manager) active(id string) func() {
	m.ops.begin(id)
	m.Touch(id)
	return func() {
		m.Touch(id)
		m.ops.end(id)
	}
}

// idleSince is when a sandbox was last active: its last guest operation
// or terminal input/output, or else when its record last changed (it
// became running, was resumed or extended), whichever is later.
func (m *Manager) idleSince(sb store.Sandbox) time.Time {
	last := sb.UpdatedAt
	if t, ok := m.LastActivity(sb.ID); ok && t.After(last) {
		last = t
	}
	return last
}

// SweepIdle pauses or destroys (per its OnIdle) every running sandbox idle
// for longer than its IdleTimeout, and returns how many it acted on.
func (m *Manager) SweepIdle(ctx context.Context) (int, error) {
	now := m.now()
	var idle []store.Sandbox
	m.mu.RLock()
	for _, sb := range m.live {
		if sb.IdleTimeout > 0 && propsOf(sb.State).Guest && !now.Before(m.idleSince(sb).Add(sb.IdleTimeout)) {
			idle = append(idle, sb)
		}
	}
	m.mu.RUnlock()
	n := 0
	var errs []error
	for _, sb := range idle {
		if ctx.Err() != nil || fenced(ctx, &errs) {
			break
		}
		acted, err := m.actOnIdle(ctx, sb)
		if err != nil {
			errs = append(errs, err)
			m.cfg.Observer.Action("idle", "failed")
			continue
		}
		if acted {
			m.cfg.Observer.Action("idle", sb.OnIdle)
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (m *Manager) actOnIdle(ctx context.Context, sb store.Sandbox) (bool, error) {
	if !m.ops.claim(sb.ID) {
		return false, nil // busy: not idle
	}
	defer m.ops.release(sb.ID)
	// Activity may have come just before the claim.
	if m.now().Before(m.idleSince(sb).Add(sb.IdleTimeout)) {
		return false, nil
	}
	reason := fmt.Sprintf("idle for %s", sb.IdleTimeout)
	var err error
	switch sb.OnIdle {
	case OnIdleDestroy:
		err = m.destroy(ctx, sb, reason, events.SandboxDestroyed)
	default:
		_, err = m.freeze(ctx, sb.ID, pauseOp, reason, false)
	}
	switch c := errdefs.Classify(err); {
	case err == nil:
		return true, nil
	case c == errdefs.ErrConflict, c == errdefs.ErrSandboxDestroyed, c == errdefs.ErrSandboxNotFound:
		return false, nil // it changed state meanwhile (paused, destroyed…)
	}
	return false, fmt.Errorf("idle sandbox %s: %w", sb.ID, err)
}

// validateIdle checks the idle settings of a request or template: onIdle
// "" means the default.
func (m *Manager) validateIdle(idle time.Duration, onIdle string) error {
	switch {
	case idle < 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "idle_timeout must not be negative")
	case idle > m.cfg.MaxTTL:
		return errdefs.New(errdefs.ErrInvalidArgument, "idle_timeout %s exceeds the maximum TTL of %s", idle, m.cfg.MaxTTL)
	case onIdle != "" && onIdle != OnIdlePause && onIdle != OnIdleDestroy:
		return errdefs.New(errdefs.ErrInvalidArgument, "on_idle must be %q or %q, not %q", OnIdlePause, OnIdleDestroy, onIdle)
	}
	return nil
}

// checkIdle refuses an idle timeout that would pause sandboxes of a
// provider that cannot pause.
func (m *Manager) checkIdle(p provider.Provider, idle time.Duration, onIdle string) error {
	switch {
	case idle > 0 && onIdle == OnIdlePause && !p.Capabilities().Pause:
		return errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented,
			"provider %s cannot pause sandboxes, so on_idle %q cannot work", p.Name(), OnIdlePause),
			`use on_idle "destroy", or a provider whose capabilities list pause`)
	}
	return nil
}
