package client

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Capabilities is what a provider declares it supports.
type Capabilities struct {
	Isolation      string `json:"isolation"` // none, process, container, user-kernel, vm
	Streaming      bool   `json:"streaming"`
	Adoption       bool   `json:"adoption"`
	Snapshots      bool   `json:"snapshots"`
	Network        bool   `json:"network"`
	ResourceLimits bool   `json:"resource_limits"`
	Symlinks       bool   `json:"symlinks"`
	Terminal       bool   `json:"terminal"`
}

// ProviderInfo describes one provider the server knows.
type ProviderInfo struct {
	Name         string       `json:"name"`
	Healthy      bool         `json:"healthy"`
	Default      bool         `json:"default"`
	Capabilities Capabilities `json:"capabilities"`
	// Problem says why an unhealthy provider cannot serve, when the server
	// says (an extension of the contract).
	Problem string `json:"problem,omitempty"`
}

// ProviderDetail is one provider with its live sandbox count and its
// configuration (secrets redacted by the server).
type ProviderDetail struct {
	ProviderInfo
	SandboxCount int            `json:"sandbox_count"`
	Config       map[string]any `json:"config,omitempty"`
}

// Providers lists the providers the server knows.
func (c *Client) Providers(ctx context.Context) ([]ProviderInfo, error) {
	var out []ProviderInfo
	err := c.do(ctx, call{method: http.MethodGet, path: "/providers"}, &out)
	return out, err
}

// Provider describes the provider called name.
func (c *Client) Provider(ctx context.Context, name string) (ProviderDetail, error) {
	var out ProviderDetail
	if err := checkID("provider name", name); err != nil {
		return out, err
	}
	err := c.do(ctx, call{method: http.MethodGet, path: "/providers/" + seg(name),
		notFound: errdefs.ErrProviderNotFound}, &out)
	return out, err
}

// ProviderTest probes every provider now and reports which are healthy.
func (c *Client) ProviderTest(ctx context.Context) (map[string]bool, error) {
	var out map[string]bool
	err := c.do(ctx, call{method: http.MethodPost, path: "/providers/test"}, &out)
	return out, err
}

// Snapshot is a reusable saved state of an image.
type Snapshot struct {
	Image     string    `json:"image"`
	Provider  string    `json:"provider"`
	CreatedAt time.Time `json:"created_at"`
}

// UnmarshalJSON accepts the server's empty string for an absent time.
func (s *Snapshot) UnmarshalJSON(b []byte) error {
	type plain Snapshot
	var w struct {
		plain
		CreatedAt optTime `json:"created_at"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*s = Snapshot(w.plain)
	s.CreatedAt = time.Time(w.CreatedAt)
	return nil
}

// Snapshots lists the snapshots of every provider that keeps them.
func (c *Client) Snapshots(ctx context.Context) ([]Snapshot, error) {
	var out []Snapshot
	err := c.do(ctx, call{method: http.MethodGet, path: "/snapshots"}, &out)
	return out, err
}

// PoolStatus is GET /pool/status: the warm pools (docs/pools.md).
type PoolStatus struct {
	Enabled       bool   `json:"enabled"`
	VMs           int    `json:"vms"`
	MaxVMs        int    `json:"max_vms"`
	TotalUsers    int    `json:"total_users"`
	MaxUsersPerVM int    `json:"max_users_per_vm"`
	Pools         []Pool `json:"pools"`
}

// Pool is one warm pool.
type Pool struct {
	Name     string  `json:"name"`
	Template *string `json:"template"`
	Image    string  `json:"image"`
	Provider string  `json:"provider"`
	MemoryMB int     `json:"memory_mb"`
	VCPUs    int     `json:"vcpus"`
	Policy   string  `json:"policy"`
	Target   int     `json:"target"`
	Ready    int     `json:"ready"`
	Creating int     `json:"creating"`
	Claimed  int64   `json:"claimed"`
	Misses   int64   `json:"misses"`
	Failures int64   `json:"failures"`
	Problem  *string `json:"problem"`
}

// PoolStatus reports every warm pool.
func (c *Client) PoolStatus(ctx context.Context) (PoolStatus, error) {
	var out PoolStatus
	err := c.do(ctx, call{method: http.MethodGet, path: "/pool/status"}, &out)
	return out, err
}

// Health is the server's liveness report.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	Uptime  string `json:"uptime"`
}

// Health reports whether the server is up. It needs no API key.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var out Health
	err := c.do(ctx, call{method: http.MethodGet, path: "/health"}, &out)
	return out, err
}

// Version returns the server's version, as /health reports it.
func (c *Client) Version(ctx context.Context) (string, error) {
	h, err := c.Health(ctx)
	return h.Version, err
}
