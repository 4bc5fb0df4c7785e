package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// busy reports whether operations on id are under way.
func (a *activity) busy(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight[id] > 0
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
// became running, was resumed or extended), whichever is later. With a
// shared store, the activity every replica recorded counts too, plus the
// most it can lag behind (activitySlack): a sandbox is acted on late
// rather than early.
func (m *Manager) idleSince(sb store.Sandbox) time.Time {
	last := sb.UpdatedAt
	if t, ok := m.LastActivity(sb.ID); ok && t.After(last) {
		last = t
	}
	if m.shared() && !sb.LastActivity.IsZero() {
		if t := sb.LastActivity.Add(m.activitySlack(sb.IdleTimeout)); t.After(last) {
			last = t
		}
	}
	return last
}

// idleCandidates are the sandboxes with an idle timeout that guest
// operations run in: this process's live set, or with a shared store
// every replica's records.
func (m *Manager) idleCandidates(ctx context.Context) ([]store.Sandbox, error) {
	var out []store.Sandbox
	if m.shared() {
		list, err := m.store.ListSandboxes(ctx, store.SandboxFilter{States: guestStates})
		if err != nil {
			return nil, err
		}
		for _, sb := range list {
			if sb.IdleTimeout > 0 {
				out = append(out, sb)
			}
		}
		return out, nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, sb := range m.live {
		if sb.IdleTimeout > 0 && propsOf(sb.State).Guest {
			out = append(out, sb)
		}
	}
	return out, nil
}

// guestStates are the states guest operations run in.
var guestStates = func() []string {
	var out []string
	for st, p := range lifecycle {
		if p.Guest {
			out = append(out, string(st))
		}
	}
	slices.Sort(out)
	return out
}()

// SweepIdle pauses or destroys (per its OnIdle) every running sandbox idle
// for longer than its IdleTimeout, and returns how many it acted on.
func (m *Manager) SweepIdle(ctx context.Context) (int, error) {
	now := m.now()
	candidates, err := m.idleCandidates(ctx)
	if err != nil {
		return 0, fmt.Errorf("idle sweep: %w", err)
	}
	var idle []store.Sandbox
	for _, sb := range candidates {
		if !now.Before(m.idleSince(sb).Add(sb.IdleTimeout)) {
			idle = append(idle, sb)
		}
	}
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
	if m.shared() {
		// Another replica may have served it since it was listed.
		fresh, err := m.store.GetSandbox(ctx, sb.ID)
		if err != nil || !propsOf(fresh.State).Guest {
			return false, nil // gone or changed meanwhile
		}
		sb = fresh
	}
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

// With a shared store, activity is recorded in the store (TouchSandboxes)
// so that the idle sweep, run by whichever replica holds the reaper lease,
// sees what every replica serves. To keep exec-heavy workloads from
// writing on every call, a replica writes one sandbox's activity at most
// once per activityEvery, at the start of a guest operation
// (recordActivity); while operations are under way (long execs, streams,
// open terminals) keepRecordingActivity writes it again on that schedule.
// The stored time therefore lags the last activity by at most
// activitySlack, which the sweep adds to it.

// activityTick is how often keepRecordingActivity looks for sandboxes
// busy on this replica.
const activityTick = 500 * time.Millisecond

// activityWrites is what this replica last wrote of each sandbox's
// activity.
type activityWrites struct {
	mu   sync.Mutex
	last map[string]activityWrite
}

type activityWrite struct {
	at    time.Time
	every time.Duration
}

func (w *activityWrites) forget(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, id)
}

// activityEvery is how often at most one sandbox's activity is written:
// ActivityInterval, or a quarter of a shorter idle timeout (at least a
// second).
func (m *Manager) activityEvery(idle time.Duration) time.Duration {
	return min(m.cfg.ActivityInterval, max(idle/4, time.Second))
}

// activitySlack is how far the stored activity of a sandbox can lag
// behind its last activity.
func (m *Manager) activitySlack(idle time.Duration) time.Duration {
	return m.activityEvery(idle) + activityTick
}

// recordActivity writes activity in sb to a shared store now, unless this
// replica wrote it less than activityEvery ago. Sandboxes without an idle
// timeout cost nothing.
func (m *Manager) recordActivity(ctx context.Context, sb store.Sandbox) {
	if !m.shared() || sb.IdleTimeout <= 0 {
		return
	}
	now, every := m.now(), m.activityEvery(sb.IdleTimeout)
	m.written.mu.Lock()
	w, ok := m.written.last[sb.ID]
	due := !ok || now.Sub(w.at) >= every
	if due {
		m.written.last[sb.ID] = activityWrite{at: now, every: every}
	}
	m.written.mu.Unlock()
	if !due {
		return
	}
	if err := m.store.TouchSandboxes(ctx, now, sb.ID); err != nil && ctx.Err() == nil {
		m.log.Warn("record activity", "sandbox", sb.ID, "err", err)
	}
}

// keepRecordingActivity writes, until ctx ends, the activity of the
// sandboxes that have guest operations under way on this replica.
func (m *Manager) keepRecordingActivity(ctx context.Context) {
	t := time.NewTicker(activityTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.flushActivity(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("record activity", "err", err)
			}
		}
	}
}

// flushActivity writes the activity of every sandbox busy on this replica
// whose last write is activityEvery old, in one statement, and forgets
// the sandboxes idle here for long.
func (m *Manager) flushActivity(ctx context.Context) error {
	now := m.now()
	var due []string
	m.written.mu.Lock()
	for id, w := range m.written.last {
		switch busy := m.ops.busy(id); {
		case busy && now.Sub(w.at) >= w.every:
			due = append(due, id)
			m.written.last[id] = activityWrite{at: now, every: w.every}
		case !busy && now.Sub(w.at) > time.Hour:
			delete(m.written.last, id) // the next operation writes again
		}
	}
	m.written.mu.Unlock()
	return m.store.TouchSandboxes(ctx, now, due...)
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
