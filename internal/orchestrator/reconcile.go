package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"

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
func (m *Manager) Reconcile(ctx context.Context) (ReconcileReport, error) {
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
		return p, herr
	}

	var errs []error
	for _, sb := range records {
		if sb.State == string(provider.StateDestroyed) {
			continue
		}
		p, perr := providerOf(sb.Provider)
		if perr != nil {
			m.markError(ctx, sb, perr.Error(), &errs)
			rep.Errored++
			continue
		}
		info, serr := p.Status(ctx, sb.ID)
		switch {
		case errors.Is(serr, errdefs.ErrNotFound) || (serr == nil && info.State == provider.StateDestroyed):
			m.markDestroyed(ctx, sb, "runtime gone after restart", &errs)
			rep.Gone++
		case serr != nil:
			m.markError(ctx, sb, serr.Error(), &errs)
			rep.Errored++
		case info.State == provider.StateError:
			m.markError(ctx, sb, "the provider reports the runtime broken", &errs)
			rep.Errored++
		case sb.State == string(provider.StateCreating):
			m.destroyRuntime(p, sb.ID)
			sb.State = string(provider.StateError)
			m.markError(ctx, sb, "server stopped while the sandbox was being created", &errs)
			rep.Destroyed++
		default:
			if want := adoptedState(info.State); sb.State != want {
				sb.State = want
				sb.LastError = ""
				sb.UpdatedAt = m.now()
				if err := m.store.UpdateSandbox(ctx, sb); err != nil {
					errs = append(errs, err)
				}
			}
			m.remember(sb)
			m.cfg.Observer.Action("reconcile", "alive")
			rep.Alive++
		}
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
	m.log.Info("reconciled", "alive", rep.Alive, "gone", rep.Gone, "errored", rep.Errored,
		"adopted", rep.Adopted, "destroyed", rep.Destroyed)
	return rep, errors.Join(errs...)
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

func (m *Manager) markError(ctx context.Context, sb store.Sandbox, reason string, errs *[]error) {
	sb.State = string(provider.StateError)
	sb.LastError = reason
	sb.UpdatedAt = m.now()
	if err := m.store.UpdateSandbox(ctx, sb); err != nil {
		*errs = append(*errs, err)
	}
	m.remember(sb)
	m.cfg.Observer.Action("reconcile", "marked_error")
}

func (m *Manager) markDestroyed(ctx context.Context, sb store.Sandbox, reason string, errs *[]error) {
	sb.State = string(provider.StateDestroyed)
	sb.LastError = reason
	sb.UpdatedAt = m.now()
	if err := m.store.UpdateSandbox(ctx, sb); err != nil {
		*errs = append(*errs, err)
	}
	m.forget(sb.ID)
	m.cfg.Observer.Action("reconcile", "gone")
	m.publish(events.SandboxDestroyed, sb.ID, map[string]string{"reason": reason})
}
