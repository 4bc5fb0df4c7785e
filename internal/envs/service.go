// Package envs builds environment specs into images: the specs and builds
// routes' logic over the store, a bounded queue that lives in the store
// (queued builds survive restarts), a worker pool that builds through
// dockerd, cancellation that aborts the daemon's build, per-build logs
// readable while they grow, and artifacts for other providers (a PRoot
// root file system, a Firecracker root file system, a registry push).
package envs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/types/registry"

	"github.com/stacyvm/stacyvm/internal/envs/envspec"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/lease"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Build targets.
const (
	TargetLocal       = "local"
	TargetPRoot       = "proot"
	TargetFirecracker = "firecracker"
	TargetRegistry    = "registry"
)

// Labels on every environment image, tracing it to what built it.
const (
	LabelSpec   = "stacyvm.env.spec"
	LabelBuild  = "stacyvm.env.build"
	LabelRecipe = "stacyvm.env.recipe"
)

// Config configures the service.
type Config struct {
	// PipIndexURL is the index pip installs from ("" is pip's default).
	PipIndexURL string
	// Workers is how many builds run at once (default 1).
	Workers int
	// QueueSize bounds the queued builds; past it a new build is
	// errdefs.ErrResourceLimit (default 16).
	QueueSize int
	// MaxLogBytes bounds each build's kept log (default 1 MiB).
	MaxLogBytes int
	// BuildTimeout bounds one build (default 30m).
	BuildTimeout time.Duration
	// MaxAttempts is how many times a build is started before a restart
	// mid-build fails it instead of queueing it again (default 2).
	MaxAttempts int
	// Provider is the provider spawn-config names (default "docker").
	Provider string
	// Registry is the registry target; without an Address the target is
	// refused.
	Registry Registry
	// PRoot writes root file systems for the proot target; nil refuses it.
	PRoot RootfsWriter
	// Firecracker builds root file systems for the firecracker target;
	// nil refuses it.
	Firecracker FirecrackerBuilder
	// Leases, when set, makes builds safe across replicas sharing the
	// store: each build runs under the lease "build/<id>", renewed while
	// it runs, and Recover (at start, then every lease TTL) requeues or
	// fails only builds whose lease has lapsed, one replica at a time. A
	// build whose lease was lost writes nothing more. Without Leases,
	// Recover takes every building build for one this process left.
	Leases *lease.Runner
	Logger *slog.Logger
	Now    func() time.Time
}

// Names of the leases the service takes (Config.Leases).
const (
	leaseBuild   = "build/"
	LeaseRecover = "builds-recover"
)

// Registry is where the registry target pushes. The credentials never
// leave the service: not in a build, an artifact, a log line or a route.
type Registry struct {
	// Address is host[:port] of the registry.
	Address string
	// Repository is the path under the address (default "stacyvm/env").
	Repository string
	Username   string
	Password   string
	// PasswordFile, when set, is read at each push instead of Password.
	PasswordFile string
}

// RootfsWriter unpacks an image's exported file system as a PRoot image.
type RootfsWriter interface {
	// WriteRootfs makes the PRoot image named image from export and
	// returns its digest (sha256 of the export stream) and size in bytes.
	WriteRootfs(ctx context.Context, b Builder, image string) (ref, digest string, size int64, err error)
}

// FirecrackerBuilder makes a Firecracker root file system from a local
// Docker image (the `stacyvm build-image` path).
type FirecrackerBuilder func(ctx context.Context, image string) (ref, digest string, size int64, err error)

// Service serves environment specs and builds.
type Service struct {
	st  store.Store
	b   Builder
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	running map[string]*run
	changed chan struct{} // closed and replaced at every state change
	wake    chan struct{}
	tags    map[string]*sync.Mutex
}

// run is a build this process is building.
type run struct {
	cancel context.CancelCauseFunc
	log    *buildLog
	done   chan struct{}
}

// errCanceled is the cause of a build canceled by request.
var errCanceled = errors.New("canceled by request")

// New returns a service over st building with b. Call Recover, then Run.
func New(st store.Store, b Builder, cfg Config) *Service {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 16
	}
	if cfg.MaxLogBytes <= 0 {
		cfg.MaxLogBytes = 1 << 20
	}
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = 30 * time.Minute
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 2
	}
	if cfg.Provider == "" {
		cfg.Provider = "docker"
	}
	if cfg.Registry.Repository == "" {
		cfg.Registry.Repository = "stacyvm/env"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{
		st: st, b: b, cfg: cfg, log: cfg.Logger,
		running: map[string]*run{}, changed: make(chan struct{}),
		wake: make(chan struct{}, 1), tags: map[string]*sync.Mutex{},
	}
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// notify wakes everyone waiting for a state change.
func (s *Service) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Service) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// CreateSpec validates and stores a spec. A duplicate name for the owner
// is errdefs.ErrConflict.
func (s *Service) CreateSpec(ctx context.Context, in envspec.Spec) (store.EnvSpec, error) {
	if _, err := envspec.NewRecipe(in, s.cfg.PipIndexURL); err != nil {
		return store.EnvSpec{}, err
	}
	spec := store.EnvSpec{
		ID: newID("envs-"), OwnerID: in.OwnerID, Name: in.Name, BaseImage: in.BaseImage,
		PythonPackages: orEmpty(in.PythonPackages), AptPackages: orEmpty(in.AptPackages),
		PythonVersion: in.PythonVersion, CreatedAt: s.now(),
	}
	if err := s.st.CreateEnvSpec(ctx, spec); err != nil {
		if errdefs.Classify(err) == errdefs.ErrConflict {
			return store.EnvSpec{}, errdefs.WithHint(
				errdefs.New(errdefs.ErrConflict, "owner %q already has an environment spec named %q", in.OwnerID, in.Name),
				"specs are immutable: choose another name, or build the existing spec")
		}
		return store.EnvSpec{}, err
	}
	return spec, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// GetSpec returns one spec.
func (s *Service) GetSpec(ctx context.Context, id string) (store.EnvSpec, error) {
	return s.st.GetEnvSpec(ctx, id)
}

// ListSpecs returns ownerID's specs (everyone's when empty), newest first.
func (s *Service) ListSpecs(ctx context.Context, ownerID string) ([]store.EnvSpec, error) {
	return s.st.ListEnvSpecs(ctx, ownerID)
}

// validTargets normalises targets: "local" always, first; the rest known,
// configured and listed once.
func (s *Service) validTargets(targets []string) ([]string, error) {
	out := []string{TargetLocal}
	for _, t := range targets {
		switch t {
		case TargetLocal:
			continue
		case TargetPRoot:
			if s.cfg.PRoot == nil {
				return nil, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "target %q is not available on this server", t),
					"the proot target needs the PRoot provider's images directory (proot.images_dir)")
			}
		case TargetFirecracker:
			if s.cfg.Firecracker == nil {
				return nil, errdefs.New(errdefs.ErrInvalidArgument, "target %q is not available on this server", t)
			}
		case TargetRegistry:
			if s.cfg.Registry.Address == "" {
				return nil, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "target %q is not available on this server", t),
					"name a registry in the configuration: environments.registry.address")
			}
		default:
			return nil, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "unknown target %q", t),
				"targets are local (always built), proot, firecracker and registry")
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// CreateBuild queues a build of the spec. A full queue is
// errdefs.ErrResourceLimit.
func (s *Service) CreateBuild(ctx context.Context, specID string, targets []string) (store.EnvBuild, error) {
	if specID == "" {
		return store.EnvBuild{}, errdefs.New(errdefs.ErrInvalidArgument, "spec_id is required")
	}
	targets, err := s.validTargets(targets)
	if err != nil {
		return store.EnvBuild{}, err
	}
	spec, err := s.st.GetEnvSpec(ctx, specID)
	if err != nil {
		return store.EnvBuild{}, err
	}
	recipe, err := envspec.NewRecipe(specInput(spec), s.cfg.PipIndexURL)
	if err != nil {
		return store.EnvBuild{}, err
	}
	// The count and the insert share the lock, so concurrent requests
	// of this process cannot overshoot the bound.
	s.mu.Lock()
	defer s.mu.Unlock()
	queued, err := s.st.ListEnvBuilds(ctx, store.EnvBuildFilter{Statuses: []string{store.BuildQueued}, Limit: s.cfg.QueueSize})
	if err != nil {
		return store.EnvBuild{}, err
	}
	if len(queued) >= s.cfg.QueueSize {
		return store.EnvBuild{}, errdefs.WithHint(
			errdefs.New(errdefs.ErrResourceLimit, "the build queue is full (%d builds queued)", len(queued)),
			"retry when queued builds have started, or cancel some")
	}
	now := s.now()
	b := store.EnvBuild{
		ID: newID("envb-"), SpecID: spec.ID, OwnerID: spec.OwnerID, Status: store.BuildQueued,
		Targets: targets, Image: recipe.Tag(), Artifacts: []store.EnvArtifact{}, CreatedAt: now, UpdatedAt: now,
	}
	if err := s.st.CreateEnvBuild(ctx, b); err != nil {
		return store.EnvBuild{}, err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return b, nil
}

func specInput(spec store.EnvSpec) envspec.Spec {
	return envspec.Spec{OwnerID: spec.OwnerID, Name: spec.Name, BaseImage: spec.BaseImage,
		PythonPackages: spec.PythonPackages, AptPackages: spec.AptPackages, PythonVersion: spec.PythonVersion}
}

// GetBuild returns a build; while this process builds it, its log is the
// live one.
func (s *Service) GetBuild(ctx context.Context, id string) (store.EnvBuild, error) {
	b, err := s.st.GetEnvBuild(ctx, id)
	if err != nil {
		return store.EnvBuild{}, err
	}
	s.mu.Lock()
	r := s.running[id]
	s.mu.Unlock()
	if r != nil && b.Status == store.BuildBuilding {
		b.Log = r.log.String()
	}
	return b, nil
}

// BuildWithSpec is a build listed with its spec.
type BuildWithSpec struct {
	Build store.EnvBuild
	Spec  store.EnvSpec
}

// ListBuilds returns ownerID's builds (everyone's when empty), newest
// first, at most limit when positive, each with its spec.
func (s *Service) ListBuilds(ctx context.Context, ownerID string, limit int) ([]BuildWithSpec, error) {
	if limit < 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "limit must not be negative")
	}
	builds, err := s.st.ListEnvBuilds(ctx, store.EnvBuildFilter{OwnerID: ownerID, Limit: limit})
	if err != nil {
		return nil, err
	}
	specs := map[string]store.EnvSpec{}
	out := make([]BuildWithSpec, 0, len(builds))
	for _, b := range builds {
		spec, ok := specs[b.SpecID]
		if !ok {
			if spec, err = s.st.GetEnvSpec(ctx, b.SpecID); err != nil {
				return nil, err
			}
			specs[b.SpecID] = spec
		}
		s.mu.Lock()
		if r := s.running[b.ID]; r != nil && b.Status == store.BuildBuilding {
			b.Log = r.log.String()
		}
		s.mu.Unlock()
		out = append(out, BuildWithSpec{Build: b, Spec: spec})
	}
	return out, nil
}

// CancelBuild cancels a queued or running build and returns it once it is
// canceled; a finished build is errdefs.ErrConflict.
func (s *Service) CancelBuild(ctx context.Context, id string) (store.EnvBuild, error) {
	for {
		b, err := s.st.GetEnvBuild(ctx, id)
		if err != nil {
			return store.EnvBuild{}, err
		}
		if store.BuildFinished(b.Status) {
			return store.EnvBuild{}, errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "build %s is already %s", id, b.Status),
				"only queued and building builds can be canceled")
		}
		s.mu.Lock()
		r := s.running[id]
		s.mu.Unlock()
		if r != nil {
			r.cancel(errCanceled)
			select {
			case <-r.done:
			case <-ctx.Done():
				return store.EnvBuild{}, ctx.Err()
			}
			return s.st.GetEnvBuild(ctx, id)
		}
		// Queued, or building in no worker of this process (left by a
		// crash before Recover ran): the record is all there is.
		now := s.now()
		b.Status, b.Reason, b.UpdatedAt, b.FinishedAt = store.BuildCanceled, errCanceled.Error(), now, now
		b.Log += "stacyvm: build canceled by request\n"
		err = s.st.UpdateEnvBuild(ctx, b, store.BuildQueued, store.BuildBuilding)
		if errdefs.Classify(err) == errdefs.ErrConflict {
			// A worker claimed it meanwhile (or it finished): look again.
			select {
			case <-ctx.Done():
				return store.EnvBuild{}, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return store.EnvBuild{}, err
		}
		s.notify()
		return b, nil
	}
}

// SpawnConfig is what POST /sandboxes needs to spawn a build's image.
type SpawnConfig struct {
	BuildID  string
	Ready    bool
	Image    string
	Provider string
}

// SpawnConfig returns the image and provider a sandbox of the build uses;
// Ready says whether the image exists yet.
func (s *Service) SpawnConfig(ctx context.Context, id string) (SpawnConfig, error) {
	b, err := s.st.GetEnvBuild(ctx, id)
	if err != nil {
		return SpawnConfig{}, err
	}
	return SpawnConfig{BuildID: b.ID, Ready: b.Status == store.BuildReady, Image: b.Image, Provider: s.cfg.Provider}, nil
}

// ResolveImage returns the image of an environment named by build ID or
// spec ID: the build's, which must be ready, or the spec's latest ready
// build's. It is how templates name environments.
func (s *Service) ResolveImage(ctx context.Context, ref string) (string, error) {
	b, err := s.st.GetEnvBuild(ctx, ref)
	if err == nil {
		if b.Status != store.BuildReady {
			return "", errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "environment build %s is %s, not ready", ref, b.Status),
				"wait for the build to be ready, or name the spec to use its latest ready build")
		}
		return b.Image, nil
	}
	if errdefs.Classify(err) != errdefs.ErrNotFound {
		return "", err
	}
	if _, err := s.st.GetEnvSpec(ctx, ref); err != nil {
		if errdefs.Classify(err) == errdefs.ErrNotFound {
			return "", errdefs.New(errdefs.ErrNotFound, "environment %q is neither a spec nor a build", ref)
		}
		return "", err
	}
	ready, err := s.st.ListEnvBuilds(ctx, store.EnvBuildFilter{SpecID: ref, Statuses: []string{store.BuildReady}, Limit: 1})
	if err != nil {
		return "", err
	}
	if len(ready) == 0 {
		return "", errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "environment spec %s has no ready build", ref),
			"build it with POST /api/v1/environments/builds and wait until it is ready")
	}
	return ready[0].Image, nil
}

// Follow calls emit with the build's log as it grows (skipped > 0 when
// output was dropped by the bound before emit saw it) until the build
// finishes, and returns the finished build.
func (s *Service) Follow(ctx context.Context, id string, emit func(data string, skipped int64) error) (store.EnvBuild, error) {
	var (
		off  int64
		seen *buildLog // the live log this follower read, if any
	)
	for {
		changed := s.changes()
		b, err := s.st.GetEnvBuild(ctx, id)
		if err != nil {
			return store.EnvBuild{}, err
		}
		s.mu.Lock()
		r := s.running[id]
		s.mu.Unlock()
		if r != nil && b.Status == store.BuildBuilding {
			seen = r.log
			data, skipped, next, logChanged := r.log.ReadFrom(off)
			off = next
			if data != "" || skipped > 0 {
				if err := emit(data, skipped); err != nil {
					return store.EnvBuild{}, err
				}
			}
			select {
			case <-ctx.Done():
				return store.EnvBuild{}, ctx.Err()
			case <-logChanged:
			case <-r.done:
			case <-changed:
			}
			continue
		}
		if store.BuildFinished(b.Status) {
			// A follower that read the live log gets the rest of it (the
			// last lines are written before the build is recorded
			// finished); one that never did gets the stored log.
			data, skipped := b.Log, int64(0)
			if seen != nil {
				data, skipped, _, _ = seen.ReadFrom(off)
			}
			if data != "" || skipped > 0 {
				if err := emit(data, skipped); err != nil {
					return store.EnvBuild{}, err
				}
			}
			return b, nil
		}
		// Queued, or building elsewhere: wait for a change, and poll the
		// store now and then for another process's progress.
		select {
		case <-ctx.Done():
			return store.EnvBuild{}, ctx.Err()
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// Recover runs before the workers: builds left building by a process
// that died are queued again, or failed once they have used their
// attempts. No build stays building forever. With Config.Leases, a build
// is left alone while its lease is held (another replica builds it) or
// for a lease TTL after its claim (its worker is taking the lease), and
// one replica at a time recovers.
func (s *Service) Recover(ctx context.Context) error {
	if s.cfg.Leases == nil {
		return s.recover(ctx)
	}
	_, err := s.cfg.Leases.Do(ctx, LeaseRecover, s.recover)
	return err
}

// orphaned reports whether building build b has no worker anywhere.
func (s *Service) orphaned(ctx context.Context, b store.EnvBuild) (bool, error) {
	if s.cfg.Leases == nil {
		return true, nil
	}
	s.mu.Lock()
	_, here := s.running[b.ID]
	s.mu.Unlock()
	if here || s.now().Sub(b.StartedAt) < s.cfg.Leases.TTL() {
		return false, nil
	}
	held, err := lease.Held(ctx, s.cfg.Leases.Store(), leaseBuild+b.ID)
	return !held, err
}

func (s *Service) recover(ctx context.Context) error {
	stuck, err := s.st.ListEnvBuilds(ctx, store.EnvBuildFilter{Statuses: []string{store.BuildBuilding}})
	if err != nil {
		return fmt.Errorf("environments: recover: %w", err)
	}
	var errs []error
	for _, b := range stuck {
		orphan, err := s.orphaned(ctx, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !orphan {
			continue
		}
		if err := lease.Check(ctx); err != nil {
			errs = append(errs, err)
			break // another replica recovers now
		}
		now := s.now()
		b.UpdatedAt = now
		if b.Attempts < s.cfg.MaxAttempts {
			b.Status = store.BuildQueued
			b.Log += fmt.Sprintf("stacyvm: the server stopped during attempt %d; the build is queued again\n", b.Attempts)
			s.log.Warn("environment build interrupted by a restart; queued again", "build", b.ID, "attempt", b.Attempts)
		} else {
			b.Status, b.FinishedAt = store.BuildFailed, now
			b.Reason = fmt.Sprintf("the server stopped during the build %d times; not retried", b.Attempts)
			b.Log += "stacyvm: " + b.Reason + "\n"
			s.log.Warn("environment build interrupted by a restart; failed", "build", b.ID, "attempts", b.Attempts)
		}
		if err := s.st.UpdateEnvBuild(ctx, b, store.BuildBuilding); err != nil && errdefs.Classify(err) != errdefs.ErrConflict {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run runs the workers until ctx ends. A build running when ctx ends is
// aborted and queued again: the next start builds it.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() { s.worker(ctx) })
	}
	if s.cfg.Leases != nil {
		// A replica that dies mid-build leaves it building: the others
		// find it once its lease lapses.
		wg.Go(func() {
			t := time.NewTicker(s.cfg.Leases.TTL())
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := s.Recover(ctx); err != nil && ctx.Err() == nil {
						s.log.Error("environments: recover builds of stopped replicas", "err", err)
					}
				}
			}
		})
	}
	wg.Wait()
}

// executeClaimed builds a claimed build, under its lease with
// Config.Leases.
func (s *Service) executeClaimed(ctx context.Context, b store.EnvBuild) error {
	if s.cfg.Leases == nil {
		s.execute(ctx, b)
		return nil
	}
	held, release, err := s.cfg.Leases.Hold(ctx, leaseBuild+b.ID)
	if err != nil {
		// Give the claim back: this attempt never started.
		b.Status, b.Attempts, b.StartedAt, b.UpdatedAt = store.BuildQueued, b.Attempts-1, time.Time{}, s.now()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if uerr := s.st.UpdateEnvBuild(wctx, b, store.BuildBuilding); uerr != nil {
			err = errors.Join(err, uerr)
		}
		if ctx.Err() == nil {
			s.log.Error("environments: take a build's lease; the build is queued again", "build", b.ID, "err", err)
		}
		return err
	}
	defer release()
	s.execute(held, b)
	return nil
}

func (s *Service) worker(ctx context.Context) {
	for ctx.Err() == nil {
		b, err := s.st.ClaimEnvBuild(ctx, s.now())
		if err == nil {
			if err = s.executeClaimed(ctx, b); err == nil {
				continue
			}
			// The lease could not be taken: wait before claiming again.
		} else if errdefs.Classify(err) != errdefs.ErrNotFound && ctx.Err() == nil {
			s.log.Error("environments: claim a build", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-time.After(2 * time.Second): // builds queued by another process
		}
	}
}

func (s *Service) tagLock(tag string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.tags[tag]
	if m == nil {
		m = &sync.Mutex{}
		s.tags[tag] = m
	}
	return m
}

// execute builds a claimed build to its end.
func (s *Service) execute(parent context.Context, b store.EnvBuild) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	r := &run{cancel: cancel, log: newBuildLog(s.cfg.MaxLogBytes, b.Log), done: make(chan struct{})}
	s.mu.Lock()
	s.running[b.ID] = r
	s.mu.Unlock()
	s.notify()
	defer func() {
		s.mu.Lock()
		delete(s.running, b.ID)
		s.mu.Unlock()
		close(r.done)
		s.notify()
	}()

	// The log is saved every second while the build runs, so that a
	// crash keeps most of it and other processes can read it.
	flushCtx, stopFlush := context.WithCancel(context.WithoutCancel(ctx))
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		s.flushLog(flushCtx, b, r)
	}()

	fmt.Fprintf(r.log, "stacyvm: build %s (attempt %d) of spec %s started\n", b.ID, b.Attempts, b.SpecID)
	arts, image, err := s.build(ctx, b, r.log)
	stopFlush()
	<-flushed

	now := s.now()
	b.UpdatedAt, b.FinishedAt, b.Image = now, now, image
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errCanceled):
		b.Status, b.Reason = store.BuildCanceled, errCanceled.Error()
		fmt.Fprintln(r.log, "stacyvm: build canceled by request")
	case parent.Err() != nil:
		// The server is stopping: the build goes back to the queue.
		b.Status, b.FinishedAt, b.StartedAt = store.BuildQueued, time.Time{}, time.Time{}
		fmt.Fprintln(r.log, "stacyvm: the server is stopping; the build is queued again")
	case err != nil:
		b.Status, b.Reason = store.BuildFailed, err.Error()
		fmt.Fprintf(r.log, "stacyvm: build failed: %v\n", err)
	default:
		b.Status, b.Artifacts = store.BuildReady, arts
		fmt.Fprintf(r.log, "stacyvm: build ready: %s\n", image)
	}
	b.Log = r.log.String()
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer wcancel()
	if name, token, ok := lease.Token(parent); ok {
		// A replica paused past its lease may find the build recovered,
		// claimed again, even finished by another: its result is not
		// the build's any more.
		if err := s.cfg.Leases.Store().CheckLease(wctx, name, token); err != nil {
			s.log.Warn("environments: the build's lease was lost; its result is dropped (another replica recovers the build)",
				"build", b.ID, "attempt", b.Attempts, "status", b.Status, "err", err)
			return
		}
	}
	if err := s.st.UpdateEnvBuild(wctx, b, store.BuildBuilding); err != nil {
		if errdefs.Classify(err) == errdefs.ErrConflict {
			// Canceled through another replica meanwhile: that stands.
			s.log.Info("environments: the build's record changed meanwhile; kept", "build", b.ID, "err", err)
			return
		}
		s.log.Error("environments: record the end of a build", "build", b.ID, "status", b.Status, "err", err)
		return
	}
	s.log.Info("environment build finished", "build", b.ID, "status", b.Status, "image", image, "reason", b.Reason)
}

func (s *Service) flushLog(ctx context.Context, b store.EnvBuild, r *run) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.cfg.Leases != nil {
			// A cancel through another replica only changes the record.
			if cur, err := s.st.GetEnvBuild(ctx, b.ID); err == nil && cur.Status == store.BuildCanceled {
				r.cancel(errCanceled)
				return
			}
		}
		text := r.log.String()
		if text == last {
			continue
		}
		b.Log, b.UpdatedAt = text, s.now()
		if err := s.st.UpdateEnvBuild(ctx, b, store.BuildBuilding); err != nil {
			if ctx.Err() == nil && errdefs.Classify(err) != errdefs.ErrConflict {
				s.log.Warn("environments: save a build's log", "build", b.ID, "err", err)
			}
			continue
		}
		last = text
	}
}

// build makes the image and the artifacts of b's targets.
func (s *Service) build(ctx context.Context, b store.EnvBuild, log *buildLog) ([]store.EnvArtifact, string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.BuildTimeout)
	defer cancel()
	spec, err := s.st.GetEnvSpec(ctx, b.SpecID)
	if err != nil {
		return nil, "", err
	}
	recipe, err := envspec.NewRecipe(specInput(spec), s.cfg.PipIndexURL)
	if err != nil {
		return nil, "", err
	}
	tag := recipe.Tag()
	fmt.Fprintf(log, "stacyvm: recipe %s builds image %s\n", recipe.Hash(), tag)

	// One build per tag at a time: a second build of the same recipe
	// waits, then finds the image.
	lock := s.tagLock(tag)
	lock.Lock()
	defer lock.Unlock()

	img, err := s.b.Inspect(ctx, tag)
	switch {
	case err == nil:
		fmt.Fprintf(log, "stacyvm: image %s exists (the same recipe was built before): reused, not rebuilt\n", tag)
	case errdefs.Classify(err) == errdefs.ErrNotFound:
		bctx, err := recipe.Context()
		if err != nil {
			return nil, tag, err
		}
		labels := map[string]string{LabelSpec: spec.ID, LabelBuild: b.ID, LabelRecipe: recipe.Hash()}
		img, err = s.b.Build(ctx, bctx, tag, labels, log)
		if ctx.Err() != nil {
			// Aborted: whatever the daemon finished in the meantime must
			// not stay tagged.
			s.untag(tag, log)
			return nil, tag, context.Cause(ctx)
		}
		if err != nil {
			return nil, tag, err
		}
	default:
		return nil, tag, err
	}
	arts := []store.EnvArtifact{{Target: TargetLocal, Ref: tag, Digest: img.ID, Size: img.Size}}
	for _, target := range b.Targets {
		if target == TargetLocal {
			continue
		}
		fmt.Fprintf(log, "stacyvm: target %s\n", target)
		a, err := s.artifact(ctx, target, tag, recipe, log)
		if err != nil {
			return nil, tag, fmt.Errorf("target %s: %w", target, err)
		}
		fmt.Fprintf(log, "stacyvm: target %s ready: %s (%s, %d bytes)\n", target, a.Ref, a.Digest, a.Size)
		arts = append(arts, a)
	}
	return arts, tag, nil
}

func (s *Service) untag(tag string, log *buildLog) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.b.Inspect(ctx, tag); err != nil {
		return
	}
	if err := s.b.Remove(ctx, tag); err != nil {
		s.log.Error("environments: untag an aborted build's image", "image", tag, "err", err)
		return
	}
	fmt.Fprintf(log, "stacyvm: removed %s, which the daemon tagged as the build was aborted\n", tag)
}

func (s *Service) artifact(ctx context.Context, target, tag string, recipe envspec.Recipe, log *buildLog) (store.EnvArtifact, error) {
	switch target {
	case TargetPRoot:
		ref, digest, size, err := s.cfg.PRoot.WriteRootfs(ctx, s.b, tag)
		return store.EnvArtifact{Target: target, Ref: ref, Digest: digest, Size: size}, err
	case TargetFirecracker:
		ref, digest, size, err := s.cfg.Firecracker(ctx, tag)
		return store.EnvArtifact{Target: target, Ref: ref, Digest: digest, Size: size}, err
	case TargetRegistry:
		return s.push(ctx, tag, recipe, log)
	}
	return store.EnvArtifact{}, errdefs.New(errdefs.ErrInvalidArgument, "unknown target %q", target)
}

func (s *Service) push(ctx context.Context, tag string, recipe envspec.Recipe, log *buildLog) (store.EnvArtifact, error) {
	reg := s.cfg.Registry
	remote := reg.Address + "/" + strings.Trim(reg.Repository, "/") + ":" + recipe.Hash()[:32]
	auth, err := reg.auth()
	if err != nil {
		return store.EnvArtifact{}, err
	}
	digest, err := s.b.Push(ctx, tag, remote, auth, log)
	if err != nil {
		return store.EnvArtifact{}, err
	}
	img, err := s.b.Inspect(ctx, tag)
	if err != nil {
		return store.EnvArtifact{}, err
	}
	return store.EnvArtifact{Target: TargetRegistry, Ref: remote, Digest: digest, Size: img.Size}, nil
}

// auth is the registry's credentials, the password read from its file
// when one is configured (so a rotated secret needs no restart).
func (r Registry) auth() (registry.AuthConfig, error) {
	auth := registry.AuthConfig{Username: r.Username, Password: r.Password, ServerAddress: r.Address}
	if r.PasswordFile != "" {
		b, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			// The error names the setting, not the file's path.
			return registry.AuthConfig{}, errors.New("environments.registry_password_file cannot be read")
		}
		auth.Password = strings.TrimSpace(string(b))
	}
	return auth, nil
}

// PullAuth is the encoded credentials (X-Registry-Auth) for pulling image
// when it lives in this registry, else "": other registries never see
// these credentials.
func (r Registry) PullAuth(image string) (string, error) {
	if r.Address == "" || r.Username == "" {
		return "", nil
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil || reference.Domain(named) != r.Address {
		return "", nil
	}
	auth, err := r.auth()
	if err != nil {
		return "", err
	}
	return encodeAuth(auth)
}
