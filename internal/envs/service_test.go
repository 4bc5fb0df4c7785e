package envs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/registry"

	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/envs/envspec"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// fakeBuilder builds nothing: each Build writes its lines and waits for
// release (or its context) so that tests control when builds end.
type fakeBuilder struct {
	mu      sync.Mutex
	images  map[string]envs.Image
	started chan string
	release chan struct{}
	builds  int
}

func newFake() *fakeBuilder {
	return &fakeBuilder{images: map[string]envs.Image{}, started: make(chan string, 10), release: make(chan struct{})}
}

func (f *fakeBuilder) Build(ctx context.Context, _ []byte, tag string, _ map[string]string, log io.Writer) (envs.Image, error) {
	f.mu.Lock()
	f.builds++
	f.mu.Unlock()
	fmt.Fprintln(log, "Step 1/5 : FROM base")
	f.started <- tag
	select {
	case <-ctx.Done():
		return envs.Image{}, ctx.Err()
	case <-f.release:
	}
	img := envs.Image{ID: "sha256:feed", Size: 1234}
	f.mu.Lock()
	f.images[tag] = img
	f.mu.Unlock()
	fmt.Fprintln(log, "Successfully tagged "+tag)
	return img, nil
}

func (f *fakeBuilder) Inspect(_ context.Context, ref string) (envs.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	img, ok := f.images[ref]
	if !ok {
		return envs.Image{}, errdefs.New(errdefs.ErrNotFound, "no image %s", ref)
	}
	return img, nil
}

func (f *fakeBuilder) Remove(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, ref)
	return nil
}

func (f *fakeBuilder) Push(context.Context, string, string, registry.AuthConfig, io.Writer) (string, error) {
	return "", errors.New("no registry")
}

func (f *fakeBuilder) Export(context.Context, string, io.Writer) error {
	return errors.New("no export")
}

func newSpec(t *testing.T, svc *envs.Service, name string, apt ...string) store.EnvSpec {
	t.Helper()
	spec, err := svc.CreateSpec(t.Context(), envspec.Spec{OwnerID: "alice", Name: name, BaseImage: "debian:bookworm", AptPackages: apt})
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestSpecValidationAndConflict(t *testing.T) {
	svc := envs.New(openStore(t), newFake(), envs.Config{})
	ctx := t.Context()
	newSpec(t, svc, "one", "jq")
	_, err := svc.CreateSpec(ctx, envspec.Spec{OwnerID: "alice", Name: "one", BaseImage: "debian"})
	if errdefs.Classify(err) != errdefs.ErrConflict {
		t.Errorf("duplicate name: %v, want a conflict", err)
	}
	if _, err := svc.CreateSpec(ctx, envspec.Spec{OwnerID: "bob", Name: "one", BaseImage: "debian"}); err != nil {
		t.Errorf("the same name for another owner: %v", err)
	}
	_, err = svc.CreateSpec(ctx, envspec.Spec{OwnerID: "alice", Name: "bad", BaseImage: "debian", AptPackages: []string{"jq; rm -rf /"}})
	if errdefs.Classify(err) != errdefs.ErrInvalidArgument {
		t.Errorf("hostile package: %v, want invalid argument", err)
	}
	specs, err := svc.ListSpecs(ctx, "alice")
	if err != nil || len(specs) != 1 {
		t.Errorf("alice's specs = %d (%v), want 1: the bad spec is not stored", len(specs), err)
	}
	for _, targets := range [][]string{{"nowhere"}, {"registry"}, {"proot"}, {"firecracker"}} {
		if _, err := svc.CreateBuild(ctx, specs[0].ID, targets); errdefs.Classify(err) != errdefs.ErrInvalidArgument {
			t.Errorf("targets %v on a server without them: %v, want invalid argument", targets, err)
		}
	}
	if _, err := svc.CreateBuild(ctx, "envs-missing", nil); errdefs.Classify(err) != errdefs.ErrNotFound {
		t.Errorf("build of a missing spec: %v, want not found", err)
	}
}

func TestQueueBoundAndCancelQueued(t *testing.T) {
	// No workers run: builds stay queued.
	svc := envs.New(openStore(t), newFake(), envs.Config{QueueSize: 2})
	ctx := t.Context()
	spec := newSpec(t, svc, "q", "jq")
	a, err := svc.CreateBuild(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateBuild(ctx, spec.ID, []string{"local"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateBuild(ctx, spec.ID, nil); errdefs.Classify(err) != errdefs.ErrResourceLimit {
		t.Fatalf("third build in a queue of 2: %v, want a resource limit", err)
	}
	c, err := svc.CancelBuild(ctx, a.ID)
	if err != nil || c.Status != store.BuildCanceled {
		t.Fatalf("cancel queued = %s, %v", c.Status, err)
	}
	if _, err := svc.CancelBuild(ctx, a.ID); errdefs.Classify(err) != errdefs.ErrConflict {
		t.Errorf("cancel of a canceled build: %v, want a conflict", err)
	}
	if _, err := svc.CreateBuild(ctx, spec.ID, nil); err != nil {
		t.Errorf("the cancel freed no place in the queue: %v", err)
	}
}

func TestCancelRunningAbortsBuild(t *testing.T) {
	f := newFake()
	svc := startService(t, openStore(t), f, envs.Config{})
	spec := newSpec(t, svc, "run", "jq")
	b, err := svc.CreateBuild(t.Context(), spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-f.started
	cur, err := svc.GetBuild(t.Context(), b.ID)
	if err != nil || cur.Status != store.BuildBuilding || !strings.Contains(cur.Log, "Step 1/5") {
		t.Fatalf("running build = %s %q (%v), want building with its live log", cur.Status, cur.Log, err)
	}
	c, err := svc.CancelBuild(t.Context(), b.ID)
	if err != nil || c.Status != store.BuildCanceled || c.Reason == "" {
		t.Fatalf("cancel = %+v, %v", c, err)
	}
	if _, err := f.Inspect(t.Context(), b.Image); err == nil {
		t.Error("a canceled build left its image")
	}
}

func TestFollowStreamsUntilReady(t *testing.T) {
	f := newFake()
	svc := startService(t, openStore(t), f, envs.Config{})
	spec := newSpec(t, svc, "follow", "jq")
	b, err := svc.CreateBuild(t.Context(), spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu  sync.Mutex
		got strings.Builder
	)
	firstChunk := make(chan struct{})
	var once sync.Once
	done := make(chan store.EnvBuild)
	go func() {
		final, err := svc.Follow(t.Context(), b.ID, func(data string, _ int64) error {
			mu.Lock()
			got.WriteString(data)
			mu.Unlock()
			once.Do(func() { close(firstChunk) })
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		done <- final
	}()
	<-f.started
	// The follower sees output before the build ends.
	select {
	case <-firstChunk:
	case <-time.After(10 * time.Second):
		t.Fatal("no log chunk while the build ran")
	}
	close(f.release)
	final := <-done
	if final.Status != store.BuildReady {
		t.Fatalf("final status %s", final.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if got.String() != final.Log {
		t.Errorf("followed log differs from the stored one:\n got  %q\n want %q", got.String(), final.Log)
	}
}

func TestRecoverRequeuesThenFails(t *testing.T) {
	st := openStore(t)
	svc := envs.New(st, newFake(), envs.Config{MaxAttempts: 2})
	ctx := t.Context()
	spec := newSpec(t, svc, "crash", "jq")
	b, err := svc.CreateBuild(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two claims and two "crashes".
	for attempt := 1; attempt <= 2; attempt++ {
		claimed, err := st.ClaimEnvBuild(ctx, time.Now())
		if err != nil || claimed.ID != b.ID || claimed.Attempts != attempt {
			t.Fatalf("claim %d = %+v, %v", attempt, claimed, err)
		}
		if err := envs.New(st, newFake(), envs.Config{MaxAttempts: 2}).Recover(ctx); err != nil {
			t.Fatal(err)
		}
		got, _ := st.GetEnvBuild(ctx, b.ID)
		want := store.BuildQueued
		if attempt == 2 {
			want = store.BuildFailed
		}
		if got.Status != want {
			t.Fatalf("after crash %d: %s, want %s; log:\n%s", attempt, got.Status, want, got.Log)
		}
		if attempt == 2 && !strings.Contains(got.Reason, "server stopped") {
			t.Errorf("reason = %q, want it to say the server stopped", got.Reason)
		}
	}
}
