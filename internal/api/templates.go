package api

import (
	"net/http"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/store"
)

// templateBody is a template as clients send it. The read-only fields are
// accepted and ignored, so that a client may send back what it fetched.
type templateBody struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Description string            `json:"description"`
	Setup       []string          `json:"setup"`
	Env         map[string]string `json:"env"`
	MemoryMB    int               `json:"memory_mb"`
	CPUCores    int               `json:"cpu_cores"`
	TTLSeconds  int               `json:"ttl_seconds"`
	PoolSize    int               `json:"pool_size"`
	Provider    string            `json:"provider"`
	IdleTimeout int               `json:"idle_timeout"`
	OnIdle      string            `json:"on_idle"`
	// Environment names an environment spec or build: spawns use its
	// (latest ready) image.
	Environment string `json:"environment"`

	Version   *int    `json:"version"`
	CreatedAt *string `json:"created_at"`
	UpdatedAt *string `json:"updated_at"`
}

func (b templateBody) template() store.Template {
	return store.Template{
		Name: b.Name, Image: b.Image, Description: b.Description, Setup: b.Setup, Env: b.Env,
		MemoryMB: b.MemoryMB, CPUCores: b.CPUCores, TTLSeconds: b.TTLSeconds, PoolSize: b.PoolSize,
		Provider: b.Provider, IdleTimeoutSeconds: b.IdleTimeout, OnIdle: b.OnIdle, Environment: b.Environment,
	}
}

func (s *server) createTemplate(w http.ResponseWriter, r *http.Request) {
	var b templateBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.m.CreateTemplate(r.Context(), b.template())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, templateOut(t))
}

func (s *server) listTemplates(w http.ResponseWriter, r *http.Request) {
	list, err := s.m.ListTemplates(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]templateJSON, 0, len(list))
	for _, t := range list {
		out = append(out, templateOut(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) getTemplate(w http.ResponseWriter, r *http.Request) {
	t, err := s.m.GetTemplate(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, templateOut(t))
}

func (s *server) updateTemplate(w http.ResponseWriter, r *http.Request) {
	var b templateBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.m.UpdateTemplate(r.Context(), r.PathValue("name"), b.template())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, templateOut(t))
}

func (s *server) deleteTemplate(w http.ResponseWriter, r *http.Request) {
	if err := s.m.DeleteTemplate(r.Context(), r.PathValue("name")); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statusJSON{Status: "deleted"})
}

type templateSpawnBody struct {
	Provider string            `json:"provider"`
	TTL      *durationString   `json:"ttl"`
	OwnerID  string            `json:"owner_id"`
	Metadata map[string]string `json:"metadata"`
}

// spawnTemplate is POST /sandboxes with "template" set, by another path.
func (s *server) spawnTemplate(w http.ResponseWriter, r *http.Request) {
	var b templateSpawnBody
	if err := decodeJSON(r.Body, &b, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	ttl, err := parseDuration("ttl", b.TTL)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.spawn(w, r, orchestrator.SpawnRequest{
		Template: r.PathValue("name"), Provider: b.Provider, TTL: ttl,
		OwnerID: ownerOf(r, b.OwnerID), Metadata: b.Metadata,
	})
}
