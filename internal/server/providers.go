package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"

	"go.yaml.in/yaml/v3"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/config"
	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom"
	"github.com/stacyvm/stacyvm/internal/provider/docker"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker"
	"github.com/stacyvm/stacyvm/internal/provider/kubernetes"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/provider/proot"
)

// opener loads one provider from the configuration, or says why it cannot
// run on this host.
type opener struct {
	name string
	open func(ctx context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error)
}

// openers lists every provider StacyVM ships, strongest isolation first
// (the registry's auto choice ranks by Capabilities, not by this order).
func openers() []opener {
	return []opener{
		{"firecracker", func(ctx context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error) {
			fc := FirecrackerConfig(cfg, log)
			if err := firecracker.Check(ctx, fc); err != nil {
				return nil, err
			}
			return firecracker.New(fc)
		}},
		// gVisor through the same daemon, as its own provider so that auto
		// can prefer its user-space kernel; it declines where runsc is not
		// registered with dockerd.
		{"gvisor", func(ctx context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error) {
			if cfg.Docker.Runtime == "runsc" {
				return nil, errors.New("docker.runtime is runsc already: the docker provider is gVisor")
			}
			dc := dockerConfig(cfg, log)
			dc.Name, dc.Runtime = "gvisor", "runsc"
			return docker.New(ctx, dc)
		}},
		{"docker", func(ctx context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error) {
			return docker.New(ctx, dockerConfig(cfg, log))
		}},
		{"kubernetes", func(ctx context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error) {
			// Only when configured: a kubeconfig lying around must not make
			// a server start pods in some cluster.
			if cfg.Kubernetes.AgentImage == "" {
				return nil, errors.New("kubernetes.agent_image is not set: build an image holding the agent and name it (docs/kubernetes.md)")
			}
			return kubernetes.New(ctx, KubernetesConfig(cfg, log))
		}},
		{"proot", func(_ context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error) {
			return proot.New(ProotOptions(cfg, log))
		}},
		{"custom", func(_ context.Context, cfg *config.Config, log *slog.Logger) (provider.Provider, error) {
			if cfg.Custom.URL == "" {
				return nil, errors.New("custom.url is not set: no backend to talk to (see docs/custom-provider-protocol.md)")
			}
			return custom.New(custom.Options{URL: cfg.Custom.URL, APIKey: cfg.Custom.APIKey, Timeout: cfg.Custom.Timeout,
				Logger: log.With("provider", "custom")})
		}},
		{"mock", func(_ context.Context, cfg *config.Config, _ *slog.Logger) (provider.Provider, error) {
			dir := cfg.Mock.Dir
			if dir == "" {
				dir = config.MockBaseDir()
			}
			return mock.New(mock.Options{Dir: dir})
		}},
	}
}

// FirecrackerConfig is the Firecracker provider's configuration, for the
// provider and for `stacyvm build-image`.
func FirecrackerConfig(cfg *config.Config, log *slog.Logger) firecracker.Config {
	return firecracker.Config{
		Binary:       cfg.Firecracker.Binary,
		Kernel:       cfg.Firecracker.Kernel,
		StateDir:     cfg.Firecracker.StateDir,
		SandboxesDir: cfg.Firecracker.SandboxesDir,
		PauseToDisk:  cfg.Firecracker.PauseToDisk,
		DockerHost:   cfg.Docker.Host,
		Logger:       log.With("provider", "firecracker"),
		AgentLimits:  agentLimits(cfg),
	}
}

// ProotOptions is the PRoot provider's configuration, for the provider and
// for `stacyvm serve-backend`.
func ProotOptions(cfg *config.Config, log *slog.Logger) proot.Options {
	maxSandboxes := cfg.Proot.MaxSandboxes
	if maxSandboxes == 0 {
		maxSandboxes = -1 // no cap of its own; sandbox.max_sandboxes applies
	}
	return proot.Options{
		ImagesDir:    cfg.Proot.ImagesDir,
		StateDir:     cfg.Proot.StateDir,
		ProotPath:    cfg.Proot.Binary,
		MaxSandboxes: maxSandboxes,
		Logger:       log.With("provider", "proot"),
		AgentLimits:  agentLimits(cfg),
	}
}

// KubernetesConfig is the Kubernetes provider's configuration.
func KubernetesConfig(cfg *config.Config, log *slog.Logger) kubernetes.Config {
	k := cfg.Kubernetes
	return kubernetes.Config{
		Kubeconfig:   k.Kubeconfig,
		Context:      k.Context,
		Namespace:    k.Namespace,
		RuntimeClass: k.RuntimeClass,
		NodeName:     k.NodeName,
		AgentImage:   k.AgentImage,
		PullPolicy:   k.PullPolicy,
		Network:      k.Network,
		User:         k.User,
		ReadyTimeout: k.ReadyTimeout,
		Logger:       log.With("provider", "kubernetes"),
		AgentLimits:  agentLimits(cfg),
	}
}

func dockerConfig(cfg *config.Config, log *slog.Logger) docker.Config {
	return docker.Config{
		Host:         cfg.Docker.Host,
		Runtime:      cfg.Docker.Runtime,
		Network:      cfg.Docker.Network,
		ReadOnlyRoot: cfg.Docker.ReadOnlyRoot,
		User:         cfg.Docker.User,
		PidsLimit:    cfg.Docker.PidsLimit,
		AgentPath:    cfg.Docker.AgentPath,
		Logger:       log.With("provider", "docker"),
		AgentLimits:  agentLimits(cfg),
		PullAuth:     environmentRegistry(cfg).PullAuth,
	}
}

// environmentRegistry is the registry environment builds push to; the
// Docker provider pulls from it with the same credentials.
func environmentRegistry(cfg *config.Config) envs.Registry {
	e := cfg.Environments
	return envs.Registry{
		Address: e.RegistryAddress, Repository: e.RegistryRepository,
		Username: e.RegistryUsername, Password: e.RegistryPassword, PasswordFile: e.RegistryPasswordFile,
	}
}

// agentLimits is what every agent-backed provider's client accepts from
// the agent in a sandbox.
func agentLimits(cfg *config.Config) agent.Limits {
	return agent.Limits{
		ExecGrace:     cfg.Guest.ExecGrace,
		CallTimeout:   cfg.Guest.CallTimeout,
		MaxReplyBytes: cfg.Guest.MaxReplyBytes,
		MaxEntries:    cfg.Guest.MaxEntries,
	}
}

// BuildRegistry loads every enabled provider; one that cannot run here is
// recorded with its reason. The returned func releases what they hold.
//
// The mock runs commands on the host without any isolation, so it is loaded
// only when the configuration names it (MockNamed); otherwise it is listed
// as declined, with how to enable it.
func BuildRegistry(ctx context.Context, cfg *config.Config, log *slog.Logger) (*provider.Registry, func()) {
	return buildRegistry(ctx, cfg, log, MockNamed(cfg))
}

// MockNamed reports whether the configuration asks for the mock by name:
// in provider.enabled, or as provider.default (`serve --provider mock`).
func MockNamed(cfg *config.Config) bool {
	return slices.Contains(cfg.Provider.Enabled, "mock") || cfg.Provider.Default == "mock"
}

// errMockNotNamed is why the mock is not loaded by default.
var errMockNotNamed = errors.New("not loaded: the mock runs commands directly on this host, without isolation, " +
	"so it is loaded only when named: provider.enabled: [mock], provider.default: mock, or `stacyvm serve --provider mock`")

func buildRegistry(ctx context.Context, cfg *config.Config, log *slog.Logger, withMock bool) (*provider.Registry, func()) {
	reg := provider.NewRegistry()
	var closers []io.Closer
	for _, o := range openers() {
		if o.name == "mock" && !withMock {
			reg.Decline(o.name, errMockNotNamed)
			continue
		}
		if len(cfg.Provider.Enabled) > 0 && !slices.Contains(cfg.Provider.Enabled, o.name) && o.name != "mock" {
			continue
		}
		p, err := o.open(ctx, cfg, log)
		if err != nil {
			reg.Decline(o.name, err)
			continue
		}
		reg.Register(p)
		if c, ok := p.(io.Closer); ok {
			closers = append(closers, c)
		}
	}
	reg.SetDefault(cfg.Provider.Default)
	return reg, func() {
		for _, c := range closers {
			if err := c.Close(); err != nil {
				log.Warn("close provider", "err", err)
			}
		}
	}
}

// providerConfigs returns each provider's section of the configuration,
// secrets redacted, as plain maps for GET /providers/{name}.
func providerConfigs(cfg *config.Config) map[string]map[string]any {
	red := cfg.Redacted()
	sections := map[string]any{
		"mock": red.Mock, "docker": red.Docker, "proot": red.Proot,
		"custom": red.Custom, "firecracker": red.Firecracker, "kubernetes": red.Kubernetes,
	}
	out := map[string]map[string]any{}
	for name, sec := range sections {
		b, err := yaml.Marshal(sec)
		if err != nil {
			continue
		}
		m := map[string]any{}
		if yaml.Unmarshal(b, &m) == nil {
			out[name] = m
		}
	}
	return out
}

// Check is doctor's verdict on one provider.
type Check struct {
	Provider  string
	Available bool
	Isolation string
	// Problem says exactly what is missing when the provider cannot run.
	Problem string
	// Warning is what a user must know even when it runs (the mock does
	// not isolate anything; PRoot is no security boundary).
	Warning string
}

// Doctor reports, for every provider StacyVM ships, whether it can run on
// this host with this configuration, and if not exactly why.
func Doctor(ctx context.Context, cfg *config.Config) []Check {
	all := *cfg
	all.Provider.Enabled = nil // doctor looks at every provider, the mock only when named
	reg, closeAll := buildRegistry(ctx, &all, slog.New(slog.DiscardHandler), MockNamed(cfg))
	defer closeAll()
	var out []Check
	for _, e := range reg.Entries() {
		c := Check{Provider: e.Name}
		switch {
		case e.Reason != nil:
			c.Problem = e.Reason.Error()
		default:
			c.Isolation = e.Provider.Capabilities().Isolation.String()
			if err := provider.CheckHealth(ctx, e.Provider); err != nil {
				c.Problem = err.Error()
			} else {
				c.Available = true
			}
			if w, ok := e.Provider.(interface{ Warning() string }); ok {
				c.Warning = w.Warning()
			}
		}
		out = append(out, c)
	}
	return out
}
