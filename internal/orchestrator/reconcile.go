package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// ReconcileReport counts what Reconcile did.
type ReconcileReport struct {
	Alive     int // records whose runtime is running: usable again
	Gone      int // records whose runtime vanished: marked destroyed
	Errored   int // records whose provider is missing or unhealthy: marked error
	Adopted   int // runtimes without a record that got one
	Destroyed int // runtimes removed: unknown (policy destroy, or never started), recorded destroyed, or caught mid-spawn
}

// Reconcile makes the store and the runtimes agree. Call it before serving.
//
// For every record that is not destroyed it asks the record's provider:
// runtime gone → destroyed; provider missing or unhealthy → error (the
// record is kept); runtime alive → usable. A record caught in state
// creating (the server died mid-spawn) has its runtime removed, since
// setup may not have finished. Then every provider that keeps an
// inventory lists its runtimes: those with no record are adopted or
// destroyed by the Orphans policy, except that one never started (state
// creating) is always destroyed; those whose record says destroyed are
// removed.
//
// It runs at start and then periodically and whenever a provider recovers
// (Run), beside live traffic: a record whose spawn runs in this process is
// skipped, every other record is read again under its ID's lock (which
// destroy, extend and the reaper hold too), and a runtime without a record
// is looked up again before it is touched.
func (m *Manager) Reconcile(ctx context.Context) (ReconcileReport, error) {
	m.reconcileMu.Lock()
	defer m.reconcileMu.Unlock()
	var rep ReconcileReport
	records, err := m.store.ListSandboxes(ctx, store.SandboxFilter{})
	if err != nil {
		return rep, fmt.Errorf("reconcile: list records: %w", err)
	}
	byID := make(map[string]store.Sandbox, len(records))
	for _, sb := range records {
		byID[sb.ID] = sb
	}

	health := map[string]error{}
	providerOf := func(name string) (provider.Provider, error) {
		p, err := m.reg.Get(name)
		if err != nil {
			return nil, err
		}
		if herr, ok := health[name]; ok {
			return p, herr
		}
		hctx, cancel := context.WithTimeout(ctx, healthTimeout)
		defer cancel()
		herr := p.Health(hctx)
		if herr != nil {
			herr = errdefs.Wrap(errdefs.ErrProviderUnavailable, herr, "provider %q is unhealthy", name)
		}
		health[name] = herr
		m.noteHealth(name, herr == nil)
		return p, herr
	}

	var errs []error
	for _, listed := range records {
		if listed.State == string(provider.StateDestroyed) {
			continue
		}
		m.reconcileRecord(ctx, listed.ID, providerOf, &rep, &errs)
	}

	for _, e := range m.reg.Entries() {
		inv, ok := e.Provider.(provider.Inventory)
		if e.Provider == nil || !ok {
			continue
		}
		if _, err := providerOf(e.Name); err != nil {
			continue // already reported on its records; cannot list anyway
		}
		runtimes, err := inv.List(ctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("reconcile: list %s runtimes: %w", e.Name, err))
			continue
		}
		for _, info := range runtimes {
			rec, known := byID[info.ID]
			if known && rec.State == string(provider.StateCreating) {
				// Its spawn was cut off and decided above, maybe before
				// its runtime existed (a create still under way in the
				// runtime when the server died): what holds now counts.
				if cur, err := m.store.GetSandbox(ctx, info.ID); err == nil {
					rec = cur
				}
			}
			if !known && !m.owns(info) {
				continue // another server's, or a legacy one this server does not claim
			}
			if !known && (m.isSpawning(info.ID) || m.recorded(ctx, info.ID)) {
				continue // a spawn made it after the listing: not an orphan
			}
			if (!known || rec.State == string(provider.StateDestroyed)) && fenced(ctx, &errs) {
				break // another replica reconciles now
			}
			switch {
			case known && rec.State == string(provider.StateDestroyed):
				m.destroyRuntime(e.Provider, info.ID)
				m.cfg.Observer.Action("reconcile", "destroyed")
				rep.Destroyed++
			case known:
				// handled above
			case info.State == provider.StateCreating:
				// Never started: never adopted. With no record it is a
				// spawn that died between create and start (a crash, a
				// create its caller abandoned), with nothing in it to keep;
				// with a record made since the listing, a spawn in flight.
				if !m.recorded(ctx, info.ID) {
					m.destroyRuntime(e.Provider, info.ID)
					m.cfg.Observer.Action("reconcile", "destroyed")
					rep.Destroyed++
				}
			case m.cfg.Orphans == OrphansDestroy:
				m.destroyRuntime(e.Provider, info.ID)
				m.cfg.Observer.Action("reconcile", "destroyed")
				rep.Destroyed++
			default:
				if err := m.adopt(ctx, e.Name, info); err != nil {
					errs = append(errs, err)
					continue
				}
				rep.Adopted++
			}
		}
	}
	lvl := slog.LevelDebug
	if rep.Gone+rep.Errored+rep.Adopted+rep.Destroyed > 0 || !m.reconciledOnce {
		lvl = slog.LevelInfo
	}
	m.reconciledOnce = true
	m.log.Log(ctx, lvl, "reconciled", "alive", rep.Alive, "gone", rep.Gone, "errored", rep.Errored,
		"adopted", rep.Adopted, "destroyed", rep.Destroyed)
	return rep, errors.Join(errs...)
}

// ReconcileOnce is Reconcile under the reconcile lease (RunOnce): with
// replicas sharing the store, ran is false when another one reconciles.
func (m *Manager) ReconcileOnce(ctx context.Context) (rep ReconcileReport, ran bool, err error) {
	ran, err = m.RunOnce(ctx, LeaseReconcile, func(ctx context.Context) error {
		var rerr error
		rep, rerr = m.Reconcile(ctx)
		return rerr
	})
	return rep, ran, err
}

// recorded says whether id has a record now: one made after Reconcile
// listed the records belongs to a spawn in flight, whose runtime is not an
// orphan. A store that cannot say counts as a record: the runtime stays
// for the next reconcile.
func (m *Manager) recorded(ctx context.Context, id string) bool {
	_, err := m.store.GetSandbox(ctx, id)
	return !errors.Is(err, errdefs.ErrNotFound)
}

func (m *Manager) adopt(ctx context.Context, providerName string, info provider.Info) error {
	now := m.now()
	created := info.Created.UTC()
	if created.IsZero() {
		created = now
	}
	sb := store.Sandbox{
		ID:        info.ID,
		Provider:  providerName,
		Image:     info.Image,
		State:     adoptedState(info.State),
		OwnerID:   info.OwnerID,
		Template:  info.Template,
		Metadata:  maps.Clone(info.Metadata),
		Handle:    info.Handle,
		LastError: "adopted after restart",
		CreatedAt: created,
		UpdatedAt: now,
		ExpiresAt: now.Add(m.cfg.DefaultTTL),
	}
	if err := m.store.CreateSandbox(ctx, sb); err != nil {
		return fmt.Errorf("reconcile: adopt %s: %w", info.ID, err)
	}
	m.remember(sb)
	m.cfg.Observer.Action("reconcile", "adopted")
	m.publish(events.SandboxAdopted, sb.ID, map[string]string{"provider": providerName})
	return nil
}

// adoptedState keeps what the runtime says (a stopped container stays
// stopped), defaulting to running when the provider says nothing usable.
func adoptedState(s provider.State) string {
	switch s {
	case provider.StateStopped, provider.StatePaused, provider.StateError:
		return string(s)
	}
	return string(provider.StateRunning)
}

// markError records that a sandbox's runtime cannot be reached or is
// broken. A record already in error keeps its first reason; one that
// nobody would see in error (a pool member) or whose destroy is pending
// keeps its state, and the pool or the next destroy decides.
func (m *Manager) markError(ctx context.Context, sb store.Sandbox, reason string, errs *[]error) {
	m.remember(sb) // whatever happens, it keeps its place: its runtime may exist
	if !canTransition(provider.State(sb.State), provider.StateError) {
		return
	}
	if _, err := m.transition(ctx, sb, change{to: provider.StateError, reason: reason}); err != nil {
		*errs = append(*errs, err)
	}
	m.cfg.Observer.Action("reconcile", "marked_error")
}

// reconcileRecord brings one record in line with its runtime. The spawn
// claim is checked before the record is read again: a spawn of this
// process writes its last state before it lets go of its claim, so a
// record read after the claim is gone shows that state.
func (m *Manager) reconcileRecord(ctx context.Context, id string, providerOf func(string) (provider.Provider, error),
	rep *ReconcileReport, errs *[]error) {
	if m.isSpawning(id) || fenced(ctx, errs) {
		return
	}
	unlock, err := m.locks.lock(ctx, id)
	if err != nil {
		*errs = append(*errs, err)
		return
	}
	defer unlock()
	if m.shared() {
		// Held by another replica: a spawn in flight there, or an
		// operation under way; the next pass looks again.
		release, err := m.sandboxLease(ctx, id, false)
		if err != nil {
			if !errors.Is(err, errdefs.ErrConflict) {
				*errs = append(*errs, err)
			}
			return
		}
		defer release()
	}
	sb, err := m.store.GetSandbox(ctx, id)
	if err != nil {
		if !errors.Is(err, errdefs.ErrNotFound) { // not found: purged meanwhile
			*errs = append(*errs, fmt.Errorf("reconcile: read %s: %w", id, err))
		}
		return
	}
	if sb.State == string(provider.StateDestroyed) {
		return // destroyed meanwhile
	}
	props := propsOf(sb.State)
	p, perr := providerOf(sb.Provider)
	if perr != nil {
		if props.SpawnOwned {
			// Its fate is decided once the provider answers; it keeps its
			// place under the limits meanwhile.
			m.remember(sb)
			return
		}
		m.markError(ctx, sb, perr.Error(), errs)
		rep.Errored++
		return
	}
	info, serr := p.Status(ctx, sb.ID)
	gone := errors.Is(serr, errdefs.ErrNotFound) || (serr == nil && info.State == provider.StateDestroyed)
	want, matches := provider.State(""), false
	if serr == nil {
		want, matches = recordStateFor(sb.State, info.State)
		if !matches && info.State != provider.StateError {
			// A runtime that reports nothing usable counts as running,
			// as for adoption.
			want, matches = recordStateFor(sb.State, provider.StateRunning)
		}
	}
	switch {
	case props.SpawnOwned && (gone || serr == nil):
		// Left by a process that stopped mid-spawn: its caller never
		// received it, so it ends destroyed, the reason in its history.
		if !gone {
			m.destroyRuntime(p, sb.ID)
			rep.Destroyed++
		} else {
			rep.Gone++
		}
		m.markDestroyed(ctx, sb, "spawn interrupted: the server stopped while the sandbox was being created", errs)
	case gone:
		reason := "runtime gone"
		if sb.State == string(provider.StateError) && sb.LastError != "" {
			reason += " (it was in state error: " + sb.LastError + ")"
		}
		m.markDestroyed(ctx, sb, reason, errs)
		rep.Gone++
	case props.SpawnOwned:
		// The provider cannot say yet: decided at the next reconcile.
		m.remember(sb)
	case provider.State(sb.State) == provider.StateDestroying:
		// A destroy that failed or was cut off: finish it.
		if err := m.destroyWithin(ctx, p, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			m.remember(sb)
			*errs = append(*errs, fmt.Errorf("reconcile: finish destroying %s: %w", sb.ID, err))
			return
		}
		m.markDestroyed(ctx, sb, "destroy finished by reconcile: "+sb.LastError, errs)
		rep.Destroyed++
	case !props.Listed && (serr != nil || !matches || want != provider.State(sb.State)):
		// A pool member whose runtime is not running as it should be is
		// of no use to anyone: it is replaced rather than repaired.
		if serr == nil {
			m.destroyRuntime(p, sb.ID)
		} else {
			m.remember(sb)
			*errs = append(*errs, fmt.Errorf("reconcile: pool member %s: %w", sb.ID, serr))
			return
		}
		m.markDestroyed(ctx, sb, fmt.Sprintf("pool member's runtime is %s", info.State), errs)
		rep.Destroyed++
	case serr != nil:
		m.markError(ctx, sb, serr.Error(), errs)
		rep.Errored++
	case info.State == provider.StateError:
		m.markError(ctx, sb, "the provider reports the runtime broken", errs)
		rep.Errored++
	default:
		m.remember(sb)
		if want != provider.State(sb.State) {
			reason := "the runtime is " + string(info.State)
			if sb.State == string(provider.StateError) {
				reason = "recovered: the runtime answers again"
			}
			if _, err := m.transition(ctx, sb, change{to: want, reason: reason}); err != nil {
				*errs = append(*errs, err)
			}
		}
		m.cfg.Observer.Action("reconcile", "alive")
		rep.Alive++
	}
}

// owns says whether a runtime without a record is this server's to adopt
// or remove: it carries this server's instance id, or none under the
// LegacyClaim policy. A runtime of another instance is never touched: two
// servers with their own databases can share one dockerd.
func (m *Manager) owns(info provider.Info) bool {
	if info.Instance == "" {
		return m.cfg.LegacyRuntimes == LegacyClaim
	}
	return info.Instance == m.cfg.InstanceID
}

// noteHealth records a provider's probed health and reports whether it
// just recovered (unhealthy at the previous probe, healthy now).
func (m *Manager) noteHealth(name string, ok bool) (recovered bool) {
	m.healthMu.Lock()
	defer m.healthMu.Unlock()
	prev, seen := m.healthy[name]
	m.healthy[name] = ok
	return seen && !prev && ok
}

// watchHealth probes every loaded provider and reports whether one of
// them recovered since its previous probe.
func (m *Manager) watchHealth(ctx context.Context) bool {
	recovered := false
	for _, e := range m.reg.Entries() {
		if e.Provider == nil {
			continue
		}
		if m.noteHealth(e.Name, provider.CheckHealth(ctx, e.Provider) == nil) {
			m.log.Info("provider recovered; reconciling", "provider", e.Name)
			recovered = true
		}
	}
	return recovered
}

func (m *Manager) markDestroyed(ctx context.Context, sb store.Sandbox, reason string, errs *[]error) {
	// Every live state may end destroyed directly: a runtime can vanish
	// under any of them.
	if _, err := m.transition(ctx, sb, change{to: provider.StateDestroyed, reason: reason}); err != nil {
		*errs = append(*errs, err)
		return
	}
	m.cfg.Observer.Action("reconcile", "gone")
}

// keepReconciling reconciles every ReconcileInterval, and as soon as a
// provider's health recovers (probed every ReaperInterval), until ctx ends.
func (m *Manager) keepReconciling(ctx context.Context) {
	full := time.NewTicker(m.cfg.ReconcileInterval)
	defer full.Stop()
	probe := time.NewTicker(m.cfg.ReaperInterval)
	defer probe.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-full.C:
		case <-probe.C:
			if !m.watchHealth(ctx) {
				continue
			}
		}
		if _, _, err := m.ReconcileOnce(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("reconcile finished with errors", "err", err)
		}
	}
}
