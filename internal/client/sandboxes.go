package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Sandbox states as the API reports them.
const (
	StateCreating   = "creating"
	StatePooled     = "pooled"
	StateRunning    = "running"
	StatePausing    = "pausing"
	StatePaused     = "paused"
	StateResuming   = "resuming"
	StateStopped    = "stopped"
	StateError      = "error"
	StateDestroying = "destroying"
	StateDestroyed  = "destroyed"
)

// Sandbox is one sandbox as the server describes it.
type Sandbox struct {
	ID            string            `json:"id"`
	State         string            `json:"state"`
	Provider      string            `json:"provider"`
	Image         string            `json:"image"`
	MemoryMB      int               `json:"memory_mb"`
	VCPUs         int               `json:"vcpus"`
	OwnerID       string            `json:"owner_id,omitempty"`
	Template      string            `json:"template,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	ExpiresAt     time.Time         `json:"expires_at"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	PreviewDomain string            `json:"preview_domain,omitempty"`
	// Error says why a sandbox is in state error, when the server says.
	Error string `json:"error,omitempty"`
}

// UnmarshalJSON accepts the server's empty strings for absent times.
func (s *Sandbox) UnmarshalJSON(b []byte) error {
	type plain Sandbox
	var w struct {
		plain
		CreatedAt optTime `json:"created_at"`
		ExpiresAt optTime `json:"expires_at"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*s = Sandbox(w.plain)
	s.CreatedAt, s.ExpiresAt = time.Time(w.CreatedAt), time.Time(w.ExpiresAt)
	return nil
}

// SpawnRequest asks for a sandbox. Zero fields take the template's values,
// then the server's defaults.
type SpawnRequest struct {
	Image    string
	Provider string
	MemoryMB int
	VCPUs    int
	TTL      time.Duration // 0: the server's default
	Template string
	OwnerID  string
	Metadata map[string]string
}

type spawnBody struct {
	Image    string            `json:"image,omitempty"`
	Provider string            `json:"provider,omitempty"`
	MemoryMB int               `json:"memory_mb,omitempty"`
	VCPUs    int               `json:"vcpus,omitempty"`
	TTL      string            `json:"ttl,omitempty"`
	Template string            `json:"template,omitempty"`
	OwnerID  string            `json:"owner_id,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// durationString renders d for the wire; zero means "not given".
func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// Spawn creates a sandbox and returns it once it is running.
func (c *Client) Spawn(ctx context.Context, req SpawnRequest) (Sandbox, error) {
	body := spawnBody{
		Image: req.Image, Provider: req.Provider, MemoryMB: req.MemoryMB, VCPUs: req.VCPUs,
		TTL: durationString(req.TTL), Template: req.Template, OwnerID: req.OwnerID,
		Metadata: req.Metadata,
	}
	var sb Sandbox
	// A 404 here is a named template or provider that does not exist.
	err := c.do(ctx, call{method: http.MethodPost, path: "/sandboxes", body: body}, &sb)
	return sb, err
}

// ListOptions filters List; zero fields match everything.
type ListOptions struct {
	OwnerID  string
	State    string
	Provider string
}

// List returns the sandboxes that are not destroyed, newest first.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]Sandbox, error) {
	q := url.Values{}
	setIf(q, "owner_id", opts.OwnerID)
	setIf(q, "state", opts.State)
	setIf(q, "provider", opts.Provider)
	var out []Sandbox
	err := c.do(ctx, call{method: http.MethodGet, path: "/sandboxes", query: q}, &out)
	return out, err
}

// Get returns one sandbox.
func (c *Client) Get(ctx context.Context, id string) (Sandbox, error) {
	var sb Sandbox
	if err := checkID("sandbox ID", id); err != nil {
		return sb, err
	}
	err := c.do(ctx, sandboxCall(http.MethodGet, id, "", call{}), &sb)
	return sb, err
}

// Destroy stops a sandbox and removes everything it owned.
func (c *Client) Destroy(ctx context.Context, id string) error {
	if err := checkID("sandbox ID", id); err != nil {
		return err
	}
	return c.do(ctx, sandboxCall(http.MethodDelete, id, "", call{}), nil)
}

// Extend moves a sandbox's expiry to now+ttl (never earlier than it was)
// and returns the updated sandbox.
func (c *Client) Extend(ctx context.Context, id string, ttl time.Duration) (Sandbox, error) {
	var sb Sandbox
	if err := checkID("sandbox ID", id); err != nil {
		return sb, err
	}
	if ttl <= 0 {
		return sb, errdefs.New(errdefs.ErrInvalidArgument, "ttl must be positive, got %s", ttl)
	}
	body := struct {
		TTL string `json:"ttl"`
	}{ttl.String()}
	err := c.do(ctx, sandboxCall(http.MethodPost, id, "/extend", call{body: body}), &sb)
	return sb, err
}

// Prune destroys every expired sandbox now and reports how many it pruned.
func (c *Client) Prune(ctx context.Context) (int, error) {
	var out struct {
		Pruned int `json:"pruned"`
	}
	err := c.do(ctx, call{method: http.MethodDelete, path: "/sandboxes"}, &out)
	return out.Pruned, err
}

// Logs returns up to the last lines lines of a sandbox's console log;
// lines <= 0 takes the server's default.
func (c *Client) Logs(ctx context.Context, id string, lines int) ([]string, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return nil, err
	}
	q := url.Values{}
	if lines > 0 {
		q.Set("lines", strconv.Itoa(lines))
	}
	var out []string
	err := c.do(ctx, sandboxCall(http.MethodGet, id, "/logs", call{query: q}), &out)
	return out, err
}

func setIf(q url.Values, key, value string) {
	if value != "" {
		q.Set(key, value)
	}
}
