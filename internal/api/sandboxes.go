package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/store"
)

type spawnBody struct {
	Image    string            `json:"image"`
	Provider string            `json:"provider"`
	MemoryMB int               `json:"memory_mb"`
	VCPUs    int               `json:"vcpus"`
	TTL      *durationString   `json:"ttl"`
	Template string            `json:"template"`
	OwnerID  string            `json:"owner_id"`
	Metadata map[string]string `json:"metadata"`
	// Extensions.
	DiskMB  int    `json:"disk_mb"`
	Network string `json:"network"`
	// IdleTimeout is in seconds (0: the template's, then the server's
	// default); OnIdle is "pause" or "destroy".
	IdleTimeout int    `json:"idle_timeout"`
	OnIdle      string `json:"on_idle"`
}

// ownerOf applies X-User-ID when the body names no owner.
func ownerOf(r *http.Request, bodyOwner string) string {
	if bodyOwner != "" {
		return bodyOwner
	}
	return strings.TrimSpace(r.Header.Get("X-User-ID"))
}

func (s *server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var b spawnBody
	if err := decodeJSON(r.Body, &b, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	ttl, err := parseDuration("ttl", b.TTL)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	idle, err := idleTimeout(b.IdleTimeout)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.spawn(w, r, orchestrator.SpawnRequest{
		Image: b.Image, Provider: b.Provider, MemoryMB: b.MemoryMB, VCPUs: b.VCPUs, DiskMB: b.DiskMB,
		TTL: ttl, Template: b.Template, OwnerID: ownerOf(r, b.OwnerID), Metadata: b.Metadata,
		Network: b.Network, IdleTimeout: idle, OnIdle: b.OnIdle,
	})
}

func (s *server) spawn(w http.ResponseWriter, r *http.Request, req orchestrator.SpawnRequest) {
	sb, err := s.m.Spawn(r.Context(), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxOut(sb))
}

func (s *server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := orchestrator.ListFilter{
		OwnerID: q.Get("owner_id"), State: q.Get("state"), Provider: q.Get("provider"), Cursor: q.Get("cursor"),
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > orchestrator.MaxPageSize {
			s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "limit must be an integer from 1 to %d", orchestrator.MaxPageSize))
			return
		}
		f.Limit = n
	}
	list, next, err := s.m.ListPage(r.Context(), f)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if next != "" {
		// The body stays the contract's plain array; the next page is
		// named in headers.
		w.Header().Set("X-Next-Cursor", next)
		nq := r.URL.Query()
		nq.Set("cursor", next)
		w.Header().Set("Link", "<"+r.URL.Path+"?"+nq.Encode()+`>; rel="next"`)
	}
	out := make([]sandboxJSON, 0, len(list))
	for _, sb := range list {
		out = append(out, s.sandboxOut(sb))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) pruneSandboxes(w http.ResponseWriter, r *http.Request) {
	n, err := s.m.Prune(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"pruned": n})
}

func (s *server) getSandbox(w http.ResponseWriter, r *http.Request) {
	sb, err := s.m.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sandboxOut(sb))
}

func (s *server) destroySandbox(w http.ResponseWriter, r *http.Request) {
	if err := s.m.Destroy(r.Context(), r.PathValue("id")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statusJSON{Status: "destroyed"})
}

type extendBody struct {
	TTL *durationString `json:"ttl"`
}

func (s *server) extendSandbox(w http.ResponseWriter, r *http.Request) {
	var b extendBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if b.TTL == nil {
		s.writeError(w, r, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "ttl is required"),
			`send {"ttl":"30m"}`))
		return
	}
	ttl, err := parseDuration("ttl", b.TTL)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := s.m.Extend(r.Context(), r.PathValue("id"), ttl)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sandboxOut(sb))
}

func (s *server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	s.freezeSandbox(w, r, s.m.Pause)
}

func (s *server) resumeSandbox(w http.ResponseWriter, r *http.Request) {
	s.freezeSandbox(w, r, s.m.Resume)
}

// maxIdleSeconds keeps idle_timeout far from overflowing a Duration; the
// Manager bounds it by the maximum TTL.
const maxIdleSeconds = 1 << 31

// idleTimeout converts idle_timeout seconds.
func idleTimeout(sec int) (time.Duration, error) {
	if sec < 0 || sec > maxIdleSeconds {
		return 0, errdefs.New(errdefs.ErrInvalidArgument, "idle_timeout must be from 0 (the default) to %d seconds, not %d", maxIdleSeconds, sec)
	}
	return time.Duration(sec) * time.Second, nil
}

// freezeSandbox serves pause and resume: no body (an empty JSON object is
// accepted), the sandbox in its new state back.
func (s *server) freezeSandbox(w http.ResponseWriter, r *http.Request, op func(context.Context, string) (store.Sandbox, error)) {
	var b struct{}
	if err := decodeJSON(r.Body, &b, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := op(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sandboxOut(sb))
}

// maxLogLines bounds one logs request.
const maxLogLines = 10000

func (s *server) sandboxLogs(w http.ResponseWriter, r *http.Request) {
	n := 100
	if v := r.URL.Query().Get("lines"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n <= 0 || n > maxLogLines {
			s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "lines must be an integer from 1 to %d, not %q", maxLogLines, v))
			return
		}
	}
	lines, err := s.m.Logs(r.Context(), r.PathValue("id"), n)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if lines == nil {
		lines = []string{}
	}
	writeJSON(w, http.StatusOK, lines)
}
