package api

import (
	"io/fs"
	"maps"
	"time"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// The wire objects. Field names are the contract's and must not change.
// Optional strings are sent as null when empty rather than left out, so
// that clients whose models declare them required-but-nullable parse too.

type sandboxJSON struct {
	ID            string            `json:"id"`
	State         string            `json:"state"`
	Provider      string            `json:"provider"`
	Image         string            `json:"image"`
	MemoryMB      int               `json:"memory_mb"`
	VCPUs         int               `json:"vcpus"`
	OwnerID       *string           `json:"owner_id"`
	Template      *string           `json:"template"`
	CreatedAt     string            `json:"created_at"`
	ExpiresAt     string            `json:"expires_at"`
	Metadata      map[string]string `json:"metadata"`
	PreviewDomain string            `json:"preview_domain"`
	// Extension: why a sandbox is in state error.
	Error string `json:"error,omitempty"`
	// Extensions: the idle timeout in seconds and what happens then.
	IdleTimeout int    `json:"idle_timeout,omitempty"`
	OnIdle      string `json:"on_idle,omitempty"`
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *server) sandboxOut(sb store.Sandbox) sandboxJSON {
	out := sandboxJSON{
		ID:        sb.ID,
		State:     sb.State,
		Provider:  sb.Provider,
		Image:     sb.Image,
		MemoryMB:  sb.MemoryMB,
		VCPUs:     sb.VCPUs,
		OwnerID:   nullable(sb.OwnerID),
		Template:  nullable(sb.Template),
		CreatedAt: rfc3339(sb.CreatedAt),
		ExpiresAt: rfc3339(sb.ExpiresAt),
		Metadata:  maps.Clone(sb.Metadata),
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	if s.opts.PreviewDomain != "" {
		out.PreviewDomain = sb.ID + "." + s.opts.PreviewDomain
	}
	if sb.State == string(provider.StateError) {
		out.Error = s.scrub(sb.LastError)
	}
	if sb.IdleTimeout > 0 {
		out.IdleTimeout, out.OnIdle = int(sb.IdleTimeout/time.Second), sb.OnIdle
	}
	return out
}

type execResultJSON struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Duration string `json:"duration"`
	// Extensions.
	TimedOut  bool `json:"timed_out"`
	Truncated bool `json:"truncated"`
}

func execResultOut(r orchestrator.ExecResult) execResultJSON {
	return execResultJSON{
		ExitCode: r.ExitCode, Stdout: r.Stdout, Stderr: r.Stderr, Duration: r.Duration.String(),
		TimedOut: r.TimedOut, Truncated: r.Truncated,
	}
}

type fileInfoJSON struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Mode    string `json:"mode"`
	IsDir   bool   `json:"is_dir"`
	ModTime string `json:"mod_time"`
	// Extension.
	IsSymlink bool `json:"is_symlink,omitempty"`
}

func fileInfoOut(fi provider.FileInfo) fileInfoJSON {
	return fileInfoJSON{
		Path: fi.Path, Size: fi.Size, Mode: formatMode(fi.Mode), IsDir: fi.IsDir,
		ModTime: rfc3339(fi.ModTime), IsSymlink: fi.Mode&fs.ModeSymlink != 0,
	}
}

type templateJSON struct {
	Name        string            `json:"name"`
	Version     int               `json:"version"`
	Image       string            `json:"image"`
	Description *string           `json:"description"`
	Setup       []string          `json:"setup"`
	Env         map[string]string `json:"env"`
	MemoryMB    int               `json:"memory_mb"`
	CPUCores    int               `json:"cpu_cores"`
	TTLSeconds  int               `json:"ttl_seconds"`
	PoolSize    int               `json:"pool_size"`
	Provider    *string           `json:"provider"`
	Environment *string           `json:"environment,omitempty"`
	CreatedAt   string            `json:"created_at"`
	UpdatedAt   string            `json:"updated_at"`
	IdleTimeout int               `json:"idle_timeout"`
	OnIdle      *string           `json:"on_idle"`
}

func templateOut(t store.Template) templateJSON {
	out := templateJSON{
		Name: t.Name, Version: t.Version, Image: t.Image, Description: nullable(t.Description),
		Setup: t.Setup, Env: maps.Clone(t.Env), MemoryMB: t.MemoryMB, CPUCores: t.CPUCores,
		TTLSeconds: t.TTLSeconds, PoolSize: t.PoolSize, Provider: nullable(t.Provider),
		Environment: nullable(t.Environment),
		CreatedAt:   rfc3339(t.CreatedAt), UpdatedAt: rfc3339(t.UpdatedAt),
		IdleTimeout: t.IdleTimeoutSeconds, OnIdle: nullable(t.OnIdle),
	}
	if out.Setup == nil {
		out.Setup = []string{}
	}
	if out.Env == nil {
		out.Env = map[string]string{}
	}
	return out
}

type providerJSON struct {
	Name         string                `json:"name"`
	Healthy      bool                  `json:"healthy"`
	Default      bool                  `json:"default"`
	Capabilities provider.Capabilities `json:"capabilities"`
	// Extension: why the provider cannot serve (declined to load on this
	// host, or failed its health check).
	Problem string `json:"problem,omitempty"`
}

type providerDetailJSON struct {
	providerJSON
	SandboxCount int            `json:"sandbox_count"`
	Config       map[string]any `json:"config"`
}

type snapshotJSON struct {
	Image     string `json:"image"`
	Provider  string `json:"provider"`
	CreatedAt string `json:"created_at"`
}

type poolStatusJSON struct {
	Enabled       bool `json:"enabled"`
	VMs           int  `json:"vms"`
	MaxVMs        int  `json:"max_vms"`
	TotalUsers    int  `json:"total_users"`
	MaxUsersPerVM int  `json:"max_users_per_vm"`
	// Pools is every warm pool, by name.
	Pools []poolJSON `json:"pools"`
}

type poolJSON struct {
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

type healthJSON struct {
	Status  string `json:"status"`
	Version string `json:"version"`
	Uptime  string `json:"uptime"`
}

type metricsJSON struct {
	Uptime              string         `json:"uptime"`
	SandboxesActive     int            `json:"sandboxes_active"`
	SandboxesByState    map[string]int `json:"sandboxes_by_state"`
	SandboxesByProvider map[string]int `json:"sandboxes_by_provider"`
	SpawnsTotal         int64          `json:"spawns_total"`
	ExecsTotal          int64          `json:"execs_total"`
	SpawnFailures       int64          `json:"spawn_failures_total"`
	EventsPublished     uint64         `json:"events_published_total"`
	ProvidersLoaded     []string       `json:"providers_loaded"`
	ProvidersDeclined   []string       `json:"providers_declined"`
}

type statusJSON struct {
	Status string `json:"status"`
}
