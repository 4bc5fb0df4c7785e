package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Several replicas on one store (docs/scale-out.md). With Config.Shared,
// no replica trusts what only it knows:
//
//   - Get reads the store, not the live set, since another replica may
//     have changed or destroyed the record;
//   - the limits are checked by the store as it inserts a spawn's record
//     (CreateSandboxWithin), counting every replica's records in one step;
//   - a sandbox's lock is also a store lease ("sandbox/<id>"), held by
//     destroy, extend, pause and resume, and by a spawn from its record's
//     creation to its last write, so that reconcile on another replica
//     never mistakes a spawn in flight for one interrupted by a crash;
//   - the reaper, the idle sweep and reconcile run under leases (RunOnce),
//     one replica at a time, and check their fencing token before each
//     step.
//
// Without Shared (one server, SQLite) the in-process locks and sets
// suffice and nothing here costs a store round trip.

// Names of the leases the Manager takes.
const (
	LeaseReaper    = "reaper"
	LeaseReconcile = "reconcile"
	leaseSandbox   = "sandbox/"
)

// sandboxLockPoll is how often a replica waiting for another replica's
// sandbox lock asks again.
const sandboxLockPoll = 50 * time.Millisecond

func (m *Manager) shared() bool { return m.cfg.Shared && m.cfg.Leases != nil }

// RunOnce runs fn under the lease called name when the Manager has a
// lease runner: of the replicas sharing the store, one at a time, and
// ran is false when another replica holds it. fn checks lease.Check(ctx)
// before each step that acts on the world. Without a runner it just runs
// fn. The reaper and reconcile use it; so can other run-once loops (pool
// refill, build workers).
func (m *Manager) RunOnce(ctx context.Context, name string, fn func(ctx context.Context) error) (ran bool, err error) {
	if m.cfg.Leases == nil {
		return true, fn(ctx)
	}
	return m.cfg.Leases.Do(ctx, name, fn)
}

// lockSandbox locks id in this process and, with a shared store, across
// replicas; it waits until ctx ends.
func (m *Manager) lockSandbox(ctx context.Context, id string) (func(), error) {
	unlock, err := m.locks.lock(ctx, id)
	if err != nil || !m.shared() {
		return unlock, err
	}
	release, err := m.sandboxLease(ctx, id, true)
	if err != nil {
		unlock()
		return nil, err
	}
	return func() { release(); unlock() }, nil
}

// sandboxLease takes the store lease of sandbox id, waiting for another
// replica to let go of it when wait is set (errdefs.ErrConflict without).
func (m *Manager) sandboxLease(ctx context.Context, id string, wait bool) (func(), error) {
	for {
		_, release, err := m.cfg.Leases.Hold(ctx, leaseSandbox+id)
		if err == nil {
			return release, nil
		}
		if !wait || !errors.Is(err, errdefs.ErrConflict) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, context.Cause(ctx),
				"sandbox %s is busy on another replica", id)
		case <-time.After(sandboxLockPoll):
		}
	}
}

// getShared reads a record from the store, as Get does without the live
// set.
func (m *Manager) getStored(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := m.store.GetSandbox(ctx, id)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return store.Sandbox{}, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
		}
		return store.Sandbox{}, err
	}
	if sb.State == string(provider.StateDestroyed) {
		return store.Sandbox{}, errdefs.WithHint(errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id),
			"spawn a new sandbox")
	}
	return sb, nil
}

// createRecord stores a spawn's first record. With a shared store the
// limits are the store's: it counts every replica's records and inserts
// in one step, so replicas spawning at the same instant never overshoot.
func (m *Manager) createRecord(ctx context.Context, sb store.Sandbox) error {
	if !m.shared() || (m.cfg.MaxSandboxes <= 0 && m.cfg.MaxPerOwner <= 0) {
		if err := m.store.CreateSandbox(ctx, sb); err != nil {
			return fmt.Errorf("record sandbox: %w", err)
		}
		return nil
	}
	err := m.store.CreateSandboxWithin(ctx, sb, store.SandboxLimits{
		Counted: countedStates, Max: m.cfg.MaxSandboxes, MaxPerOwner: m.cfg.MaxPerOwner,
	})
	switch {
	case errors.Is(err, errdefs.ErrResourceLimit):
		return errdefs.WithHint(err, "destroy sandboxes you no longer need, or retry later")
	case err != nil:
		return fmt.Errorf("record sandbox: %w", err)
	}
	return nil
}

// countedStates are the states whose records hold a place under the
// limits (the lifecycle's Counts).
var countedStates = func() []string {
	var out []string
	for st, p := range lifecycle {
		if p.Counts {
			out = append(out, string(st))
		}
	}
	slices.Sort(out)
	return out
}()

// fenced reports the lease error when ctx's lease is lost; the caller
// stops its pass.
func fenced(ctx context.Context, errs *[]error) bool {
	if err := lease.Check(ctx); err != nil {
		*errs = append(*errs, err)
		return true
	}
	return false
}
