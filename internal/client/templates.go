package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Template is a named sandbox recipe. Name and Image are required; the
// server sets Version, CreatedAt and UpdatedAt.
type Template struct {
	Name        string            `json:"name"`
	Version     int               `json:"version"`
	Image       string            `json:"image"`
	Description string            `json:"description,omitempty"`
	Setup       []string          `json:"setup,omitempty"` // shell commands run once after spawn
	Env         map[string]string `json:"env,omitempty"`
	MemoryMB    int               `json:"memory_mb"`
	CPUCores    int               `json:"cpu_cores"`
	TTLSeconds  int               `json:"ttl_seconds"`
	PoolSize    int               `json:"pool_size"`
	Provider    string            `json:"provider,omitempty"`
	// Environment, instead of Image, names an environment spec or build
	// whose (newest ready) image the template spawns.
	Environment string    `json:"environment,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// UnmarshalJSON accepts the server's empty strings for absent times.
func (t *Template) UnmarshalJSON(b []byte) error {
	type plain Template
	var w struct {
		plain
		CreatedAt optTime `json:"created_at"`
		UpdatedAt optTime `json:"updated_at"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*t = Template(w.plain)
	t.CreatedAt, t.UpdatedAt = time.Time(w.CreatedAt), time.Time(w.UpdatedAt)
	return nil
}

// templateBody is what a client may set: the server owns the version and
// the timestamps.
type templateBody struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Description string            `json:"description,omitempty"`
	Setup       []string          `json:"setup,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	MemoryMB    int               `json:"memory_mb,omitempty"`
	CPUCores    int               `json:"cpu_cores,omitempty"`
	TTLSeconds  int               `json:"ttl_seconds,omitempty"`
	PoolSize    int               `json:"pool_size,omitempty"`
	Provider    string            `json:"provider,omitempty"`
	Environment string            `json:"environment,omitempty"`
}

func (t Template) body() templateBody {
	return templateBody{Name: t.Name, Image: t.Image, Description: t.Description, Setup: t.Setup,
		Env: t.Env, MemoryMB: t.MemoryMB, CPUCores: t.CPUCores, TTLSeconds: t.TTLSeconds,
		PoolSize: t.PoolSize, Provider: t.Provider, Environment: t.Environment}
}

func templatePath(name, suffix string) string { return "/templates/" + seg(name) + suffix }

// ListTemplates returns every template.
func (c *Client) ListTemplates(ctx context.Context) ([]Template, error) {
	var out []Template
	err := c.do(ctx, call{method: http.MethodGet, path: "/templates"}, &out)
	return out, err
}

// GetTemplate returns the template called name.
func (c *Client) GetTemplate(ctx context.Context, name string) (Template, error) {
	var t Template
	if err := checkID("template name", name); err != nil {
		return t, err
	}
	err := c.do(ctx, call{method: http.MethodGet, path: templatePath(name, "")}, &t)
	return t, err
}

// CreateTemplate stores a new template; a duplicate name fails with an
// error matching errdefs.ErrConflict.
func (c *Client) CreateTemplate(ctx context.Context, t Template) (Template, error) {
	var out Template
	err := c.do(ctx, call{method: http.MethodPost, path: "/templates", body: t.body()}, &out)
	return out, err
}

// UpdateTemplate replaces the template called name with t; the server bumps
// its version.
func (c *Client) UpdateTemplate(ctx context.Context, name string, t Template) (Template, error) {
	var out Template
	if err := checkID("template name", name); err != nil {
		return out, err
	}
	if t.Name == "" {
		t.Name = name
	}
	err := c.do(ctx, call{method: http.MethodPut, path: templatePath(name, ""), body: t.body()}, &out)
	return out, err
}

// DeleteTemplate removes the template called name.
func (c *Client) DeleteTemplate(ctx context.Context, name string) error {
	if err := checkID("template name", name); err != nil {
		return err
	}
	return c.do(ctx, call{method: http.MethodDelete, path: templatePath(name, "")}, nil)
}

// TemplateSpawnRequest overrides a template's settings for one spawn.
type TemplateSpawnRequest struct {
	Provider string
	TTL      time.Duration
	OwnerID  string
	Metadata map[string]string
}

// SpawnTemplate creates a sandbox from the template called name.
func (c *Client) SpawnTemplate(ctx context.Context, name string, req TemplateSpawnRequest) (Sandbox, error) {
	var sb Sandbox
	if err := checkID("template name", name); err != nil {
		return sb, err
	}
	body := struct {
		Provider string            `json:"provider,omitempty"`
		TTL      string            `json:"ttl,omitempty"`
		OwnerID  string            `json:"owner_id,omitempty"`
		Metadata map[string]string `json:"metadata,omitempty"`
	}{req.Provider, durationString(req.TTL), req.OwnerID, req.Metadata}
	err := c.do(ctx, call{method: http.MethodPost, path: templatePath(name, "/spawn"), body: body}, &sb)
	return sb, err
}
