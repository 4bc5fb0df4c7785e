package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func (s *server) providerOut(ps orchestrator.ProviderStatus) providerJSON {
	return providerJSON{Name: ps.Name, Healthy: ps.Healthy, Default: ps.Default, Capabilities: ps.Capabilities, Problem: s.scrub(ps.Problem)}
}

func (s *server) listProviders(w http.ResponseWriter, r *http.Request) {
	list := s.m.Providers(r.Context())
	out := make([]providerJSON, 0, len(list))
	for _, ps := range list {
		out = append(out, s.providerOut(ps))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getProvider(w http.ResponseWriter, r *http.Request) {
	ps, err := s.m.Provider(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cfg := maps.Clone(s.opts.ProviderConfigs[ps.Name])
	if cfg == nil {
		cfg = map[string]any{}
	}
	writeJSON(w, http.StatusOK, providerDetailJSON{providerJSON: s.providerOut(ps), SandboxCount: ps.SandboxCount, Config: cfg})
}

func (s *server) testProviders(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.m.TestProviders(r.Context()))
}

func (s *server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	snaps, err := s.m.Snapshots(r.Context())
	if err != nil {
		if len(snaps) == 0 {
			s.writeError(w, r, err)
			return
		}
		// One provider failing should not hide the others' snapshots.
		s.log.Warn("listing snapshots", "request_id", requestID(r.Context()), "err", err)
	}
	out := make([]snapshotJSON, 0, len(snaps))
	for _, sn := range snaps {
		out = append(out, snapshotOut(sn))
	}
	writeJSON(w, http.StatusOK, out)
}

func snapshotOut(sn provider.Snapshot) snapshotJSON {
	return snapshotJSON{Image: sn.Image, Provider: sn.Provider, CreatedAt: rfc3339(sn.Created)}
}

// poolStatus reports the warm pools (docs/pools.md). The contract's
// summary fields count members: vms are those ready, max_vms the sum of
// the pools' targets, total_users the sandboxes claimed from them since
// the server started; a member serves one sandbox (max_users_per_vm 1).
func (s *server) poolStatus(w http.ResponseWriter, r *http.Request) {
	list, err := s.m.PoolStatus(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := poolStatusJSON{Enabled: len(list) > 0, Pools: make([]poolJSON, 0, len(list))}
	if out.Enabled {
		out.MaxUsersPerVM = 1
	}
	for _, p := range list {
		out.VMs += p.Ready
		out.MaxVMs += p.Target
		out.TotalUsers += int(p.Claimed)
		out.Pools = append(out.Pools, poolJSON{
			Name: p.Name, Template: nullable(p.Template), Image: p.Image, Provider: p.Provider,
			MemoryMB: p.MemoryMB, VCPUs: p.VCPUs, Policy: p.Policy, Target: p.Target, Ready: p.Ready,
			Creating: p.Creating, Claimed: p.Claimed, Misses: p.Misses, Failures: p.Failures,
			Problem: nullable(s.scrub(p.Problem)),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, healthJSON{
		Status: "ok", Version: s.opts.Version, Uptime: s.m.Uptime().Round(time.Second).String(),
	})
}

func (s *server) metricsSummary(w http.ResponseWriter, r *http.Request) {
	st, err := s.m.Stats(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := metricsJSON{
		Uptime:              st.Uptime.Round(time.Second).String(),
		SandboxesByState:    st.SandboxesByState,
		SandboxesByProvider: st.SandboxesByProv,
		SpawnsTotal:         st.SpawnsTotal,
		ExecsTotal:          st.ExecsTotal,
		SpawnFailures:       st.SpawnFailures,
		EventsPublished:     st.EventsPublished,
		ProvidersLoaded:     st.ProvidersLoaded,
		ProvidersDeclined:   st.ProvidersDeclined,
	}
	for state, n := range st.SandboxesByState {
		if state != string(provider.StateDestroyed) {
			out.SandboxesActive += n
		}
	}
	if out.SandboxesByState == nil {
		out.SandboxesByState = map[string]int{}
	}
	if out.SandboxesByProvider == nil {
		out.SandboxesByProvider = map[string]int{}
	}
	if out.ProvidersLoaded == nil {
		out.ProvidersLoaded = []string{}
	}
	if out.ProvidersDeclined == nil {
		out.ProvidersDeclined = []string{}
	}
	writeJSON(w, http.StatusOK, out)
}

// prometheus serves the text exposition, or 404 when metrics are off.
func (s *server) prometheus(w http.ResponseWriter, r *http.Request) {
	if s.opts.Metrics == nil {
		s.writeError(w, r, errdefs.New(errdefs.ErrNotFound, "Prometheus metrics are not enabled on this server"))
		return
	}
	s.opts.Metrics.Handler().ServeHTTP(w, r)
}

// events streams the event bus as server-sent events. A client that
// reconnects with Last-Event-ID (header, or ?last_event_id= for
// EventSource polyfills that cannot set headers) first gets the kept
// events after that ID. When the subscriber falls behind, the bus drops
// it and the stream ends; the client reconnects and resumes.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	var after uint64
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("last_event_id")
	}
	if last != "" {
		n, err := strconv.ParseUint(last, 10, 64)
		if err != nil {
			s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "Last-Event-ID must be an event id (an integer), not %q", last))
			return
		}
		after = n
	}
	ch, cancel := s.m.Events().Subscribe(after)
	defer cancel()
	// An explicit 0 (IDs start at 1) asks for the whole kept history, as
	// the dashboard does for a sandbox's activity. The history is read
	// after subscribing, so no event falls between the two; the live
	// channel's copies of replayed events are skipped by ID.
	var replay []events.Event
	if last != "" && after == 0 {
		replay = s.m.Events().History()
		if len(replay) > 0 {
			after = replay[len(replay)-1].ID
		}
	}
	clearDeadlines(w, false, true)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// The opening comment commits the headers, so that a client knows it
	// is subscribed before the first event.
	if _, err := fmt.Fprint(w, ": connected\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	ka := time.NewTicker(s.opts.EventsKeepAlive)
	defer ka.Stop()
	ctx := r.Context()
	send := func(e events.Event) error {
		e.Data = s.scrubData(e.Data)
		data, err := json.Marshal(e)
		if err != nil {
			s.log.Error("encode event", "err", err)
			return nil
		}
		// Each write and flush must finish in time: a subscriber that
		// stops reading is dropped rather than held forever.
		if err := rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout)); err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", e.ID, e.Type, data)
		return err
	}
	for _, e := range replay {
		if err := send(e); err != nil {
			return
		}
	}
	if len(replay) > 0 {
		if err := rc.Flush(); err != nil {
			return
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.opts.ShuttingDown:
			return
		case <-ka.C:
			if err := rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout)); err != nil {
				return
			}
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
		case e, ok := <-ch:
			if !ok {
				return
			}
			if e.ID <= after {
				continue // replayed from the history already
			}
			if err := send(e); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}
