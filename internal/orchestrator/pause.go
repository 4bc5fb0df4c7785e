package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// freezeOp is pause or resume: one transient state between two settled
// ones, and the provider call that crosses it.
type freezeOp struct {
	name          string
	from, via, to provider.State
	call          func(p provider.Pauser, ctx context.Context, id string) error
}

var (
	pauseOp = freezeOp{name: "pause", from: provider.StateRunning, via: provider.StatePausing,
		to: provider.StatePaused, call: provider.Pauser.Pause}
	resumeOp = freezeOp{name: "resume", from: provider.StatePaused, via: provider.StateResuming,
		to: provider.StateRunning, call: provider.Pauser.Resume}
)

// Pause freezes a running sandbox: its processes stop making progress
// and keep their memory. Its TTL keeps running. A provider without
// Pauser answers errdefs.ErrUnimplemented (501); a sandbox that is not
// running, errdefs.ErrConflict (409).
func (m *Manager) Pause(ctx context.Context, id string) (store.Sandbox, error) {
	return m.freeze(ctx, id, pauseOp, "paused on request", false)
}

// Resume thaws a paused sandbox.
func (m *Manager) Resume(ctx context.Context, id string) (store.Sandbox, error) {
	return m.freeze(ctx, id, resumeOp, "resumed on request", false)
}

// freeze performs o under the sandbox's lock: transient state first, the
// provider call, then the settled state, or back to where it started
// when the call failed. With already, a sandbox found in o.to (another
// caller got there first) is fine rather than a conflict.
func (m *Manager) freeze(ctx context.Context, id string, o freezeOp, reason string, already bool) (store.Sandbox, error) {
	if _, err := m.Get(ctx, id); err != nil {
		return store.Sandbox{}, err
	}
	unlock, err := m.lockSandbox(ctx, id)
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("%s sandbox %s: %w", o.name, id, err)
	}
	defer unlock()
	sb, err := m.Get(ctx, id) // again, under the lock
	if err != nil {
		return store.Sandbox{}, err
	}
	if already && provider.State(sb.State) == o.to {
		return sb, nil
	}
	if err := checkOp(sb, o.name, o.via); err != nil {
		return store.Sandbox{}, err
	}
	p, pz, err := m.pauser(sb)
	if err != nil {
		return store.Sandbox{}, err
	}
	if sb, err = m.transition(ctx, sb, change{to: o.via, reason: reason}); err != nil {
		return store.Sandbox{}, err
	}
	// The runtime call outlives a caller that leaves: its outcome must be
	// recorded. DestroyTimeout bounds it as it bounds a destroy.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.DestroyTimeout)
	defer cancel()
	start := time.Now()
	cerr := o.call(pz, cctx, id)
	m.cfg.Observer.Op(p.Name(), o.name, time.Since(start), cerr)
	if cerr != nil {
		if _, err := m.transition(ctx, sb, change{to: o.from, reason: o.name + " failed: " + cerr.Error()}); err != nil {
			m.log.Error("record failed "+o.name, "sandbox", id, "err", err)
		}
		return store.Sandbox{}, fmt.Errorf("%s sandbox %s: %w", o.name, id, cerr)
	}
	sb, err = m.transition(ctx, sb, change{to: o.to, reason: reason})
	if err != nil {
		return store.Sandbox{}, err
	}
	m.log.Info("sandbox "+string(o.to), "sandbox", id, "reason", reason, "duration", time.Since(start))
	return sb, nil
}

// pauser returns sb's provider as a Pauser, or the 501 of a provider
// that cannot pause.
func (m *Manager) pauser(sb store.Sandbox) (provider.Provider, provider.Pauser, error) {
	p, err := m.reg.Get(sb.Provider)
	if err != nil {
		return nil, nil, err
	}
	pz, ok := p.(provider.Pauser)
	if !ok || !p.Capabilities().Pause {
		return nil, nil, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented, "provider %s cannot pause sandboxes", p.Name()),
			"use a provider whose capabilities list pause (GET /api/v1/providers), or destroy the sandbox instead")
	}
	return p, pz, nil
}
