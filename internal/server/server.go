// Package server wires StacyVM together for `stacyvm serve` and `stacyvm
// doctor`: configuration → store, providers, orchestrator, API; and the
// server's lifecycle (reconcile before serving, the reaper, graceful
// shutdown).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/stacyvm/stacyvm/internal/api"
	"github.com/stacyvm/stacyvm/internal/config"
	"github.com/stacyvm/stacyvm/internal/e2b"
	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/events/pgfanout"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/mcp"
	"github.com/stacyvm/stacyvm/internal/membudget"
	"github.com/stacyvm/stacyvm/internal/metrics"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/pool"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker"
	"github.com/stacyvm/stacyvm/internal/provider/proot"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/version"
	"github.com/stacyvm/stacyvm/web"
)

// Run listens on cfg.Server.Listen and serves until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Server.Listen, err)
	}
	return Serve(ctx, cfg, log, ln)
}

// Serve serves the API on ln until ctx ends, then drains in-flight requests
// (up to server.shutdown_timeout), stops the reaper and closes the store.
// Sandboxes keep running; the next start reconciles them.
func Serve(ctx context.Context, cfg *config.Config, log *slog.Logger, ln net.Listener) error {
	defer ln.Close()
	st, where, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()

	instance, err := st.InstanceID(ctx)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	// The holder names this process in the store's leases: replicas share
	// the instance id (the deployment's), never a holder.
	shared := cfg.Store.Driver == config.StorePostgres
	leases := lease.New(st, lease.NewHolder(), cfg.Store.LeaseTTL, log)
	log.Info("server instance", "instance", instance, "store", where, "replica", leases.Holder(), "shared_store", shared)
	cfg = InstanceDirs(cfg, instance)

	reg, closeProviders := BuildRegistry(ctx, cfg, log)
	defer closeProviders()
	announce(ctx, reg, log)

	var buildLeases *lease.Runner
	if shared {
		buildLeases = leases // builds run once across replicas
	}
	envSvc, closeEnvs := environments(ctx, cfg, st, buildLeases, log)
	defer closeEnvs()

	met := metrics.New(nil)
	// One budget for buffered exec output (the Manager) and JSON file
	// bodies (the API).
	budget := membudget.New(cfg.Server.MemoryBudgetBytes, 0)
	m := orchestrator.New(st, reg, orchestrator.Config{
		DefaultTTL:         cfg.Sandbox.DefaultTTL,
		MaxTTL:             cfg.Sandbox.MaxTTL,
		DefaultExecTimeout: cfg.Sandbox.DefaultExecTimeout,
		MaxExecTimeout:     cfg.Sandbox.MaxExecTimeout,
		MaxSandboxes:       cfg.Sandbox.MaxSandboxes,
		MaxPerOwner:        cfg.Sandbox.MaxPerOwner,
		ReaperInterval:     cfg.Sandbox.ReaperInterval,
		Retention:          cfg.Store.Retention,
		ReconcileInterval:  cfg.Sandbox.ReconcileInterval,
		DefaultImage:       cfg.Sandbox.DefaultImage,
		DefaultMemoryMB:    cfg.Sandbox.DefaultMemoryMB,
		DefaultVCPUs:       cfg.Sandbox.DefaultVCPUs,
		Orphans:            cfg.Sandbox.Orphans,
		InstanceID:         instance,
		LegacyRuntimes:     cfg.Sandbox.LegacyRuntimes,
		DestroyTimeout:     cfg.Sandbox.DestroyTimeout,
		ManualResume:       !cfg.Sandbox.AutoResume,
		DefaultIdleTimeout: cfg.Sandbox.IdleTimeout,
		DefaultOnIdle:      cfg.Sandbox.OnIdle,
		MemoryBudget:       budget,
		Leases:             leases,
		Shared:             shared,
		Logger:             log,
		Observer:           met,
		Environments:       resolver(envSvc),
	})
	met.SetSandboxCounter(m)
	if pg, ok := st.(*postgres.Store); ok {
		// Events of every replica reach this one's subscribers.
		fan, err := pgfanout.Start(ctx, pg.Pool(), pg.ConnConfig(), m.Events(), instance, leases.Holder(), log)
		if err != nil {
			return fmt.Errorf("event fan-out: %w", err)
		}
		defer fan.Close()
	}

	// Reconcile before the first request, so that nobody sees a record
	// that claims a dead runtime. Partial failures are logged: the server
	// still serves the sandboxes it could account for.
	// With replicas sharing the store, the one holding the reconcile lease
	// does it; a replica starting meanwhile serves at once.
	if _, ran, err := m.ReconcileOnce(ctx); err != nil {
		log.Error("reconcile finished with errors", "err", err)
	} else if !ran {
		log.Info("reconcile skipped at start: another replica is reconciling")
	}

	// Warm pools (docs/pools.md): members a previous run left are given
	// back to their pools before the first request; refills start with
	// the background loops below.
	pools := pool.New(m, poolConfig(cfg, log))
	m.SetPools(pools)
	met.SetPools(pools.Metrics)
	pools.Prepare(ctx)

	shuttingDown := make(chan struct{})
	handler := api.New(m, api.Options{
		APIKey:             cfg.Server.APIKey,
		CORSOrigins:        cfg.Server.CORSOrigins,
		AllowedHosts:       cfg.Server.AllowedHosts,
		HostPaths:          hostPaths(cfg),
		MaxBodyBytes:       cfg.Server.MaxBodyBytes,
		MaxFileBytes:       cfg.Server.MaxFileBytes,
		MaxUploadBytes:     cfg.Server.MaxUploadBytes,
		StreamWriteTimeout: cfg.Server.StreamWriteTimeout,
		MemoryBudget:       budget,
		Logger:             log,
		Version:            version.String(),
		ProviderConfigs:    providerConfigs(cfg),
		Metrics:            met,
		ShuttingDown:       shuttingDown,
		Environments:       envSvc,
		MCP:                mcp.Handler(mcp.NewServer(mcp.FromManager(m), version.String())),
	})
	// The E2B facade shares the listener under /e2b (docs/e2b.md).
	root := http.NewServeMux()
	root.Handle("/", handler)
	// The dashboard (docs/dashboard.md): its page at / and its files under
	// /ui/, static and public (the pages ask for the API key and send it
	// to /api/v1 like any client); every other path stays the API's.
	dashboard := api.Guard(web.Handler(), api.GuardOptions{AllowedHosts: cfg.Server.AllowedHosts, CORSOrigins: cfg.Server.CORSOrigins, Logger: log})
	root.Handle("GET /{$}", dashboard)
	root.Handle("GET "+web.Prefix, dashboard)
	root.Handle(e2b.Prefix+"/", api.Guard(http.StripPrefix(e2b.Prefix, e2b.New(m, e2b.Options{
		APIKey:             cfg.Server.APIKey,
		MaxUploadBytes:     cfg.Server.MaxUploadBytes,
		Scrub:              api.Scrubber(hostPaths(cfg)),
		StreamWriteTimeout: cfg.Server.StreamWriteTimeout,
		Logger:             log,
	})), api.GuardOptions{AllowedHosts: cfg.Server.AllowedHosts, CORSOrigins: cfg.Server.CORSOrigins, Logger: log}))
	srv := &http.Server{
		Handler: root,
		// No WriteTimeout: exec and event streams run as long as they need;
		// each request is bounded by its own context instead.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(shuttingDown) })

	reaperCtx, stopReaper := context.WithCancel(context.WithoutCancel(ctx))
	reaperDone := make(chan struct{})
	go func() {
		defer close(reaperDone)
		m.Run(reaperCtx)
	}()
	defer func() {
		stopReaper()
		<-reaperDone
	}()
	poolsDone := make(chan struct{})
	go func() {
		defer close(poolsDone)
		pools.Run(reaperCtx)
	}()
	defer func() {
		// Members are kept: the next start adopts them (docs/pools.md).
		stopReaper()
		<-poolsDone
	}()
	if envSvc != nil {
		// Builds outlive requests; stopping aborts a running build and
		// queues it again for the next start.
		buildersDone := make(chan struct{})
		go func() {
			defer close(buildersDone)
			envSvc.Run(reaperCtx)
		}()
		defer func() {
			stopReaper()
			<-buildersDone
		}()
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("stacyvm serving", "addr", ln.Addr().String(), "dashboard", "http://"+ln.Addr().String()+"/", "version", version.String(),
		"store", where, "auth", cfg.Server.APIKey != "")

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.Server.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("drain timed out; closing remaining connections", "err", err)
		srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped; sandboxes keep running and are reconciled on the next start")
	return nil
}

// environments starts the environment build service when it is enabled
// and dockerd answers; otherwise its routes answer 503 and the log says
// why. Builds caught building by a previous process are recovered first.
func environments(ctx context.Context, cfg *config.Config, st store.Store, leases *lease.Runner, log *slog.Logger) (*envs.Service, func()) {
	e := cfg.Environments
	if !e.Enabled {
		log.Info("environment builds disabled", "setting", "environments.enabled")
		return nil, func() {}
	}
	d, err := envs.NewDocker(ctx, cfg.Docker.Host, e.BuildNetwork)
	if err != nil {
		log.Info("environment builds unavailable", "reason", err)
		return nil, func() {}
	}
	ecfg := envs.Config{
		Leases:       leases,
		PipIndexURL:  e.PipIndexURL,
		Workers:      e.Workers,
		QueueSize:    e.QueueSize,
		MaxLogBytes:  e.MaxLogBytes,
		BuildTimeout: e.BuildTimeout,
		Registry:     environmentRegistry(cfg),
		Firecracker: func(ctx context.Context, image string) (string, string, int64, error) {
			fc := FirecrackerConfig(cfg, log)
			// Building an image touches only the shared image cache in
			// state_dir, not this server's VM directories.
			fc.SandboxesDir = ""
			img, err := firecracker.BuildImage(ctx, fc, image)
			return image, img.Digest, img.Size, err
		},
		Logger: log.With("component", "environments"),
	}
	images := cfg.Proot.ImagesDir
	if images == "" {
		images, _ = proot.DefaultImagesDir()
	}
	if images != "" {
		ecfg.PRoot = envs.PRootImages{Dir: images}
	}
	svc := envs.New(st, d, ecfg)
	if err := svc.Recover(ctx); err != nil {
		log.Error("environment builds: recovering builds interrupted by a restart", "err", err)
	}
	log.Info("environment builds enabled", "workers", e.Workers, "pip_index", e.PipIndexURL != "",
		"registry", e.RegistryAddress != "")
	return svc, func() { d.Close() }
}

// resolver is the service as the orchestrator's resolver: nil (not a
// nil pointer in an interface) when the server builds no environments.
func resolver(svc *envs.Service) orchestrator.EnvironmentResolver {
	if svc == nil {
		return nil
	}
	return svc
}

// announce logs which provider serves requests that name none, and why,
// and says loudly when that provider does not isolate anything.
func announce(ctx context.Context, reg *provider.Registry, log *slog.Logger) {
	for _, e := range reg.Entries() {
		if e.Reason != nil {
			log.Info("provider unavailable", "provider", e.Name, "reason", e.Reason)
		} else {
			log.Info("provider loaded", "provider", e.Name, "isolation", e.Provider.Capabilities().Isolation.String())
		}
	}
	p, err := reg.Resolve(ctx)
	if err != nil {
		log.Error("no default provider can serve", "err", err)
		return
	}
	why := "configured as provider.default"
	if reg.DefaultName() == config.ProviderAuto {
		why = "auto: the strongest isolation among healthy providers at start; kept while the server runs " +
			"(if it falls ill, spawns fail with 503 instead of moving to a weaker provider)"
	}
	log.Info("default provider", "provider", p.Name(), "isolation", p.Capabilities().Isolation.String(), "why", why)
	if p.Capabilities().Isolation == provider.IsolationNone {
		msg := "sandboxes are NOT isolated: commands run directly on this host"
		if w, ok := p.(interface{ Warning() string }); ok {
			msg = w.Warning()
		}
		log.Warn("!!! "+msg+" !!!", "provider", p.Name(),
			"fix", "install Docker (or proot) and run `stacyvm doctor` to see what is missing")
	}
}

// InstanceDirs returns cfg with every provider state directory left unset
// made this server instance's own: the provider's host-wide default plus
// the instance id, so that two servers on one host never share one (and
// never see each other's sandboxes). The base stays the provider's usual
// host path, which PRoot's unprivileged sandbox users can reach and whose
// socket paths stay short. Directories set in the configuration are kept.
func InstanceDirs(cfg *config.Config, instance string) *config.Config {
	out := *cfg
	if out.Mock.Dir == "" {
		out.Mock.Dir = filepath.Join(config.MockBaseDir(), instance)
	}
	if out.Proot.StateDir == "" {
		if base, err := proot.DefaultStateDir(); err == nil {
			out.Proot.StateDir = filepath.Join(base, instance)
		}
	}
	if out.Firecracker.SandboxesDir == "" {
		// Only the VMs' directories: images and snapshots are
		// content-addressed caches shared with other servers and
		// `stacyvm build-image`.
		base := out.Firecracker.StateDir
		if base == "" {
			base = firecracker.DefaultStateDir()
		}
		out.Firecracker.SandboxesDir = filepath.Join(base, "sandboxes", instance)
	}
	return &out
}

// hostPaths lists the server's own files and directories, which no
// message to a client may show: the database, provider state and images,
// binaries, the Docker socket.
func hostPaths(cfg *config.Config) []string {
	var out []string
	add := func(p string) {
		if p == "" {
			return
		}
		if abs, err := filepath.Abs(p); err == nil {
			out = append(out, abs)
		}
	}
	if cfg.Store.Driver != config.StorePostgres {
		add(cfg.Store.Path)
		add(filepath.Dir(cfg.Store.Path))
	}
	add(cfg.Mock.Dir)
	add(cfg.Proot.ImagesDir)
	add(cfg.Proot.StateDir)
	add(cfg.Firecracker.StateDir)
	add(cfg.Firecracker.Kernel)
	add(cfg.Docker.AgentPath)
	for _, bin := range []string{cfg.Proot.Binary, cfg.Firecracker.Binary, cfg.Firecracker.Jailer} {
		if filepath.IsAbs(bin) {
			add(bin)
		}
	}
	if u, err := url.Parse(cfg.Docker.Host); err == nil && u.Scheme == "unix" {
		add(u.Path)
	}
	if exe, err := os.Executable(); err == nil {
		add(exe)
		add(filepath.Join(filepath.Dir(exe), "stacyvm-agent")) // docker.agent_path's default
	}
	return out
}

// poolConfig is the pools' part of the configuration.
func poolConfig(cfg *config.Config, log *slog.Logger) pool.Config {
	pc := pool.Config{
		Policy:        cfg.Pool.Policy,
		MaxAge:        cfg.Pool.MaxAge,
		Concurrency:   cfg.Pool.Concurrency,
		CheckInterval: cfg.Pool.CheckInterval,
		BackoffMax:    cfg.Pool.BackoffMax,
		Logger:        log,
	}
	for _, p := range cfg.Pools {
		pc.Pools = append(pc.Pools, pool.Def{
			Name: p.Name, Image: p.Image, Provider: p.Provider, MemoryMB: p.MemoryMB, VCPUs: p.VCPUs,
			Size: p.Size, Policy: p.Policy, MaxAge: p.MaxAge, Concurrency: p.Concurrency,
		})
	}
	return pc
}
