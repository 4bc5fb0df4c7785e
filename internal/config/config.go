// Package config is the server's configuration: built-in defaults, then one
// YAML file, then STACYVM_<SECTION>_<KEY> environment variables, then
// explicit overrides (the CLI's flags), each overriding the one before.
//
// Every setting is a field of a section struct, addressed as
// "section.key" after their yaml tags. One reflective mechanism parses
// strings into those fields for both the environment and overrides, so a new
// setting is a new struct field (plus its default and its check in
// Validate).
package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Config is the whole configuration. Fields tagged secret:"true" are
// redacted when printed.
type Config struct {
	Server      ServerConfig      `yaml:"server"`
	Store       StoreConfig       `yaml:"store"`
	Log         LogConfig         `yaml:"log"`
	Sandbox     SandboxConfig     `yaml:"sandbox"`
	Provider    ProviderConfig    `yaml:"provider"`
	Mock        MockConfig        `yaml:"mock"`
	Docker      DockerConfig      `yaml:"docker"`
	Proot       ProotConfig       `yaml:"proot"`
	Custom      CustomConfig      `yaml:"custom"`
	Firecracker FirecrackerConfig `yaml:"firecracker"`
	Kubernetes  KubernetesConfig  `yaml:"kubernetes"`
	Guest       GuestConfig       `yaml:"guest"`
	Pool        PoolConfig        `yaml:"pool"`
	// Pools declares warm pools (docs/pools.md). It is a list, so it is set
	// in the configuration file only: no environment variable or flag
	// addresses one item of it.
	Pools []PoolSpec `yaml:"pools" config:"list"`
	// Environments is at the end: other sections are added above it.
	Environments EnvironmentsConfig `yaml:"environments"`
}

// ServerConfig is the HTTP API server.
type ServerConfig struct {
	Listen string `yaml:"listen"`
	// APIKey, when set, is required in X-API-Key on every /api/v1 route
	// but the health check.
	APIKey string `yaml:"api_key" secret:"true"`
	// CORSOrigins are the browser origins (or "*") whose pages may use
	// the API; the server's own origin always may.
	CORSOrigins []string `yaml:"cors_origins"`
	// AllowedHosts are the Host names (or host:port, or "*") the server
	// answers to besides loopback and the address a request arrives on:
	// the DNS-rebinding defence (docs/security.md).
	AllowedHosts []string `yaml:"allowed_hosts"`
	// MaxBodyBytes bounds JSON request bodies other than file writes.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxFileBytes bounds a file written through JSON (POST .../files).
	MaxFileBytes int64 `yaml:"max_file_bytes"`
	// MaxUploadBytes bounds a raw upload (PUT .../files/raw); 0 is no limit.
	// The default, 10 GiB, is above any file an agent moves in practice
	// (datasets, archives, model shards) yet keeps one request from
	// filling the host's disk.
	MaxUploadBytes  int64         `yaml:"max_upload_bytes"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// StreamWriteTimeout bounds each frame of a stream (NDJSON exec, exec
	// WebSocket, events): a client that stops reading for this long is
	// dropped and its command killed.
	StreamWriteTimeout time.Duration `yaml:"stream_write_timeout"`
	// MemoryBudgetBytes bounds the memory that buffered exec output and
	// JSON file bodies hold across all concurrent requests; past it a
	// request waits briefly, then gets 429 with Retry-After. 0 is no
	// bound. The default, 1 GiB, admits dozens of commands at their full
	// 16 MiB per stream (most hold 64 KiB) and JSON writes at their full
	// limit, and stays within a small host's memory.
	MemoryBudgetBytes int64 `yaml:"memory_budget_bytes"`
}

// StoreConfig is the database: SQLite for one server, PostgreSQL for
// several replicas sharing their state (docs/scale-out.md).
type StoreConfig struct {
	// Driver is StoreSQLite (default) or StorePostgres.
	Driver string `yaml:"driver"`
	// Path is the SQLite database file (driver sqlite).
	Path string `yaml:"path"`
	// DSN is the PostgreSQL connection string or URL (driver postgres).
	// It may hold a password, so it is redacted wherever it is printed.
	DSN string `yaml:"dsn" secret:"true"`
	// LeaseTTL is how long a replica's lease on run-once work (reaper,
	// reconcile, a sandbox's lock) lasts without renewal: how long that
	// work waits after its replica dies before another takes over.
	LeaseTTL time.Duration `yaml:"lease_ttl"`
	// Retention is how long a destroyed sandbox's record (and its
	// history) is kept before the reaper purges it.
	Retention time.Duration `yaml:"retention"`
}

// The values of StoreConfig.Driver.
const (
	StoreSQLite   = "sqlite"
	StorePostgres = "postgres"
)

// LogConfig is the process log.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
}

// SandboxConfig holds the orchestrator's limits and defaults.
type SandboxConfig struct {
	DefaultTTL         time.Duration `yaml:"default_ttl"`
	MaxTTL             time.Duration `yaml:"max_ttl"`
	DefaultExecTimeout time.Duration `yaml:"default_exec_timeout"`
	MaxExecTimeout     time.Duration `yaml:"max_exec_timeout"`
	MaxSandboxes       int           `yaml:"max_sandboxes"`
	MaxPerOwner        int           `yaml:"max_per_owner"` // 0: unlimited
	ReaperInterval     time.Duration `yaml:"reaper_interval"`
	// ReconcileInterval is how often the server checks its records
	// against the runtimes while it runs (besides at start and when a
	// provider recovers).
	ReconcileInterval time.Duration `yaml:"reconcile_interval"`
	DefaultImage      string        `yaml:"default_image"`
	DefaultMemoryMB   int           `yaml:"default_memory_mb"`
	DefaultVCPUs      int           `yaml:"default_vcpus"`
	// Orphans says what reconcile does with a runtime that has no record:
	// OrphansAdopt or OrphansDestroy.
	Orphans string `yaml:"orphans"`
	// DestroyTimeout bounds one runtime destroy: past it the destroy fails
	// (503) and the sandbox keeps its record, so a hung runtime never
	// holds other sandboxes, the reaper or a shutdown.
	DestroyTimeout time.Duration `yaml:"destroy_timeout"`
	// LegacyRuntimes says what reconcile does with a runtime that has no
	// record and carries no server instance id (made before instance ids
	// existed): LegacyIgnore leaves it alone (another server on the same
	// host may own it), LegacyClaim treats it as this server's (orphans
	// then applies).
	LegacyRuntimes string `yaml:"legacy_runtimes"`
	// AutoResume: exec, file operations and terminals on a paused sandbox
	// resume it first; false makes them a 409.
	AutoResume bool `yaml:"auto_resume"`
	// IdleTimeout is the idle timeout of sandboxes whose spawn and
	// template name none (0: none); OnIdle what then happens to them.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	OnIdle      string        `yaml:"on_idle"`
}

// The values of SandboxConfig.OnIdle.
const (
	OnIdlePause   = "pause"
	OnIdleDestroy = "destroy"
)

// The values of SandboxConfig.LegacyRuntimes.
const (
	LegacyIgnore = "ignore"
	LegacyClaim  = "claim"
)

// The values of SandboxConfig.Orphans.
const (
	OrphansAdopt   = "adopt"
	OrphansDestroy = "destroy"
)

// ProviderConfig selects providers.
type ProviderConfig struct {
	// Default is the provider used when a request names none; "auto" picks
	// the best one that is healthy.
	Default string `yaml:"default"`
	// Enabled lists the providers to load; empty means every one that can.
	Enabled []string `yaml:"enabled"`
}

// ProviderAuto is ProviderConfig.Default's "choose for me".
const ProviderAuto = "auto"

// ProviderNames are the providers this configuration has a section for.
var ProviderNames = []string{"mock", "docker", "proot", "custom", "firecracker", "kubernetes"}

// MockConfig is the test double provider.
type MockConfig struct {
	// Dir holds the mock's sandboxes; "" is a directory of this server's
	// own (MockBaseDir/<instance id>).
	Dir string `yaml:"dir"`
}

// MockBaseDir is where the mock keeps its sandboxes when mock.dir is not
// set: under it, one directory per server instance.
func MockBaseDir() string { return filepath.Join(os.TempDir(), "stacyvm-mock") }

// DockerConfig is the Docker provider.
type DockerConfig struct {
	Host         string `yaml:"host"`    // "" means DOCKER_HOST or the default socket
	Runtime      string `yaml:"runtime"` // runc, crun, runsc or another registered runtime
	Network      string `yaml:"network"` // "none", "bridge" or a named network
	ReadOnlyRoot bool   `yaml:"read_only_root"`
	User         string `yaml:"user"` // user[:group] inside the sandbox; "" is the image's
	PidsLimit    int64  `yaml:"pids_limit"`
	AgentPath    string `yaml:"agent_path"` // "" means next to the stacyvm binary
}

// ProotConfig is the PRoot provider.
type ProotConfig struct {
	Binary       string `yaml:"binary"`
	ImagesDir    string `yaml:"images_dir"`
	StateDir     string `yaml:"state_dir"`
	MaxSandboxes int    `yaml:"max_sandboxes"` // 0: no limit beyond sandbox.max_sandboxes
}

// CustomConfig is the provider that delegates to an HTTP backend.
type CustomConfig struct {
	URL     string        `yaml:"url"`
	APIKey  string        `yaml:"api_key" secret:"true"`
	Timeout time.Duration `yaml:"timeout"`
}

// FirecrackerConfig is the Firecracker microVM provider.
type FirecrackerConfig struct {
	Binary   string `yaml:"binary"`
	Kernel   string `yaml:"kernel"`
	StateDir string `yaml:"state_dir"`
	// SandboxesDir holds the VMs' directories; "" means
	// <state_dir>/sandboxes/<server instance id>.
	SandboxesDir string `yaml:"sandboxes_dir"`
	Jailer       string `yaml:"jailer"`
	// PauseToDisk makes a pause write the VM to a full snapshot in its
	// directory and stop its VMM, freeing its memory; resume loads it in
	// a new VMM (docs/firecracker.md).
	PauseToDisk bool `yaml:"pause_to_disk"`
}

// KubernetesConfig is the Kubernetes provider (docs/kubernetes.md). It
// loads only when agent_image is set: there is no public agent image to
// default to.
type KubernetesConfig struct {
	// Kubeconfig is a kubeconfig file; "" means the in-cluster service
	// account, then $KUBECONFIG, then ~/.kube/config.
	Kubeconfig string `yaml:"kubeconfig"`
	Context    string `yaml:"context"`
	Namespace  string `yaml:"namespace"`
	// RuntimeClass is the pods' runtimeClassName (gvisor, kata…); "" is
	// the cluster's default runtime.
	RuntimeClass string `yaml:"runtime_class"`
	// NodeName pins pods to a node (no scheduler needed); "" lets the
	// scheduler place them.
	NodeName string `yaml:"node_name"`
	// AgentImage holds the static agent at /stacyvm-agent.
	AgentImage string `yaml:"agent_image"`
	// PullPolicy is the sandbox images' imagePullPolicy.
	PullPolicy string `yaml:"pull_policy"`
	Network    string `yaml:"network"` // "none" or "bridge"
	User       string `yaml:"user"`    // numeric uid[:gid]; "" is the image's
	// ReadyTimeout bounds a spawn's wait for its pod and agent.
	ReadyTimeout time.Duration `yaml:"ready_timeout"`
}

// GuestConfig bounds what the host accepts from the agent inside a sandbox
// (Docker, PRoot, Firecracker): code in the sandbox can replace the agent.
type GuestConfig struct {
	// ExecGrace is how long past a command's timeout the host waits for
	// the agent to end it before dropping the command itself.
	ExecGrace time.Duration `yaml:"exec_grace"`
	// CallTimeout bounds every agent call but exec and file transfers.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// MaxReplyBytes bounds one JSON reply from an agent.
	MaxReplyBytes int64 `yaml:"max_reply_bytes"`
	// MaxEntries bounds the entries of a listing and the matches of a glob.
	MaxEntries int `yaml:"max_entries"`
}

// EnvironmentsConfig is environment builds (docs/environments.md): image
// recipes built by dockerd (docker.host), optionally pushed to a registry.
type EnvironmentsConfig struct {
	// Enabled serves the environments routes when dockerd answers.
	Enabled bool `yaml:"enabled"`
	// PipIndexURL is the package index pip installs from; "" is pip's
	// default (PyPI). A plain-HTTP index is trusted as configured.
	PipIndexURL string `yaml:"pip_index_url"`
	// Workers is how many builds run at once.
	Workers int `yaml:"workers"`
	// QueueSize bounds the queued builds; past it POST builds is 429.
	QueueSize int `yaml:"queue_size"`
	// MaxLogBytes bounds each build's kept log (the last bytes are kept).
	MaxLogBytes int `yaml:"max_log_bytes"`
	// BuildTimeout bounds one build, targets included.
	BuildTimeout time.Duration `yaml:"build_timeout"`
	// BuildNetwork is the network of the build's RUN steps: "" (dockerd's
	// default bridge) or "host" (needed to reach an index on loopback;
	// package installs then run with the host's network).
	BuildNetwork string `yaml:"build_network"`
	// RegistryAddress (host[:port]) enables the registry target.
	RegistryAddress string `yaml:"registry_address"`
	// RegistryRepository is the path images are pushed under.
	RegistryRepository string `yaml:"registry_repository"`
	RegistryUsername   string `yaml:"registry_username"`
	RegistryPassword   string `yaml:"registry_password" secret:"true"`
	// RegistryPasswordFile is read at each push instead of
	// registry_password, so a rotated secret needs no restart.
	RegistryPasswordFile string `yaml:"registry_password_file"`
}

// PoolConfig holds what every warm pool shares, and the defaults of the
// settings a pool may choose for itself (templates' pools always use
// these).
type PoolConfig struct {
	// Policy is what a spawn gets when its pool is empty: PoolCold (spawn
	// one cold) or PoolReject (429 with Retry-After).
	Policy string `yaml:"policy"`
	// MaxAge replaces members older than this; 0 keeps them until claimed.
	MaxAge time.Duration `yaml:"max_age"`
	// Concurrency bounds the spawns one pool runs at once to refill.
	Concurrency int `yaml:"concurrency"`
	// CheckInterval is how often pools are checked for members past their
	// age, on an image that changed, or of a template that changed.
	CheckInterval time.Duration `yaml:"check_interval"`
	// BackoffMax caps the delay between refill attempts after failures
	// (it doubles from one second).
	BackoffMax time.Duration `yaml:"backoff_max"`
}

// The values of PoolConfig.Policy and PoolSpec.Policy.
const (
	PoolCold   = "cold"
	PoolReject = "reject"
)

// PoolSpec declares one warm pool of sandboxes by image, provider and
// resources: a spawn that asks for exactly these (after defaults) claims a
// member. Zero fields take the sandbox defaults (image, memory, vCPUs),
// the default provider, or the pool section's values.
type PoolSpec struct {
	Name        string        `yaml:"name"`
	Image       string        `yaml:"image"`
	Provider    string        `yaml:"provider"`
	MemoryMB    int           `yaml:"memory_mb"`
	VCPUs       int           `yaml:"vcpus"`
	Size        int           `yaml:"size"`
	Policy      string        `yaml:"policy"`
	MaxAge      time.Duration `yaml:"max_age"`
	Concurrency int           `yaml:"concurrency"`
}

// Default returns the built-in configuration. Each call returns a new value.
func Default() *Config {
	return &Config{
		Server: ServerConfig{
			Listen:             "127.0.0.1:7423",
			MaxBodyBytes:       1 << 20,
			MaxFileBytes:       64 << 20,
			MaxUploadBytes:     10 << 30,
			ShutdownTimeout:    30 * time.Second,
			StreamWriteTimeout: 30 * time.Second,
			MemoryBudgetBytes:  1 << 30,
		},
		Store: StoreConfig{Driver: StoreSQLite, Path: "./stacyvm.db", LeaseTTL: 15 * time.Second, Retention: 7 * 24 * time.Hour},
		Log:   LogConfig{Level: "info", Format: "text"},
		Sandbox: SandboxConfig{
			DefaultTTL:         30 * time.Minute,
			MaxTTL:             24 * time.Hour,
			DefaultExecTimeout: 60 * time.Second,
			MaxExecTimeout:     time.Hour,
			MaxSandboxes:       100,
			ReaperInterval:     30 * time.Second,
			ReconcileInterval:  time.Minute,
			DefaultMemoryMB:    512,
			DefaultVCPUs:       1,
			Orphans:            OrphansAdopt,
			LegacyRuntimes:     LegacyIgnore,
			DestroyTimeout:     time.Minute,
			AutoResume:         true,
			OnIdle:             OnIdlePause,
		},
		Provider: ProviderConfig{Default: ProviderAuto},
		Mock:     MockConfig{}, // Dir "": per server instance, see server.InstanceDirs
		Docker: DockerConfig{
			Runtime:   "runc",
			Network:   "none",
			PidsLimit: 256,
		},
		Proot:       ProotConfig{Binary: "proot"},
		Custom:      CustomConfig{Timeout: 30 * time.Second},
		Firecracker: FirecrackerConfig{Binary: "firecracker"},
		Kubernetes: KubernetesConfig{
			Namespace:    "stacyvm",
			PullPolicy:   "IfNotPresent",
			Network:      "none",
			ReadyTimeout: 2 * time.Minute,
		},
		Guest: GuestConfig{
			ExecGrace:     5 * time.Second,
			CallTimeout:   5 * time.Minute,
			MaxReplyBytes: 32 << 20,
			MaxEntries:    100_000,
		},
		Environments: EnvironmentsConfig{
			Enabled:            true,
			Workers:            1,
			QueueSize:          16,
			MaxLogBytes:        1 << 20,
			BuildTimeout:       30 * time.Minute,
			RegistryRepository: "stacyvm/env",
		},
		Pool: PoolConfig{
			Policy:        PoolCold,
			Concurrency:   2,
			CheckInterval: 10 * time.Second,
			BackoffMax:    time.Minute,
		},
	}
}

// SlogLevel returns the configured level; call it on a validated config.
func (l LogConfig) SlogLevel() slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(l.Level))); err != nil {
		return slog.LevelInfo
	}
	return lv
}
