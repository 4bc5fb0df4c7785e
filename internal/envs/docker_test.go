package envs_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/envs/envspec"
	"github.com/stacyvm/stacyvm/internal/envs/envstest"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

const baseImage = "stacyvm/debian:test"

// requireDocker returns a builder on the local dockerd (build steps on the
// host network, so they reach the test's index on loopback), or skips
// without dockerd and its Debian test image, except under scripts/test
// (STACYVM_TEST_DOCKER=1), where both must be there.
func requireDocker(t *testing.T) *envs.Docker {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("STACYVM_TEST_DOCKER") == "1" {
		fail = t.Fatalf
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := envs.NewDocker(ctx, "", "host")
	if err != nil {
		fail("needs dockerd (scripts/ci/docker-up.sh): %v", err)
		return nil
	}
	t.Cleanup(func() { d.Close() })
	if _, err := d.Inspect(ctx, baseImage); err != nil {
		fail("needs the image %s (scripts/ci/docker-up.sh): %v", baseImage, err)
	}
	return d
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "stacyvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startService runs the workers until the test ends.
func startService(t *testing.T, st store.Store, b envs.Builder, cfg envs.Config) *envs.Service {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	svc := envs.New(st, b, cfg)
	if err := svc.Recover(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		svc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return svc
}

// waitFinished polls until the build is finished.
func waitFinished(t *testing.T, svc *envs.Service, id string, within time.Duration) store.EnvBuild {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := svc.GetBuild(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if store.BuildFinished(b.Status) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("build %s still %s after %s; log:\n%s", id, b.Status, within, b.Log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// removeImage untags ref when the test ends.
func removeImage(t *testing.T, d *envs.Docker, ref string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = d.Client().ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	})
}

// removeStepImages removes the untagged images of the steps a canceled
// build completed (the classic builder's " ---> ID" lines in its log):
// they are build cache that no tag holds.
func removeStepImages(t *testing.T, d *envs.Docker, log string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := stepImage.FindAllStringSubmatch(log, -1)
	for i := len(ids) - 1; i >= 0; i-- {
		// dockerd may still be removing the aborted step's container,
		// which holds its parent image for a moment.
		for ctx.Err() == nil {
			img, err := d.Client().ImageInspect(ctx, ids[i][1])
			if err != nil || len(img.RepoTags) > 0 {
				break
			}
			if _, err := d.Client().ImageRemove(ctx, ids[i][1], client.ImageRemoveOptions{PruneChildren: true}); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

var (
	stepImage     = regexp.MustCompile(`(?m)^ ---> ([0-9a-f]{12})$`)
	stepContainer = regexp.MustCompile(`(?m)^ ---> Running in ([0-9a-f]{12})$`)
)

var testWheel = envstest.Wheel{Name: "stacyhello", Version: "1.0", Module: "def greet():\n    return 'hello from stacyhello'\n"}

func TestDockerBuildReadyThenReused(t *testing.T) {
	d := requireDocker(t)
	st := openStore(t)
	ix := envstest.Serve(t, testWheel)
	svc := startService(t, st, d, envs.Config{PipIndexURL: ix.URL})
	ctx := t.Context()

	spec, err := svc.CreateSpec(ctx, envspec.Spec{OwnerID: "alice", Name: "hello", BaseImage: baseImage,
		AptPackages: []string{"jq"}, PythonPackages: []string{"stacyhello==1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := svc.CreateBuild(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, d, b.Image)
	if b.Status != store.BuildQueued || !strings.HasPrefix(b.Image, envspec.ImageRepository+":") {
		t.Fatalf("new build = %+v, want queued with a content-addressed image", b)
	}
	b = waitFinished(t, svc, b.ID, 10*time.Minute)
	cold := time.Since(start)
	if b.Status != store.BuildReady {
		t.Fatalf("build ended %s (%s); log:\n%s", b.Status, b.Reason, b.Log)
	}
	t.Logf("cold build: %s", cold.Round(time.Millisecond))
	for _, want := range []string{"Step 1/", "--no-install-recommends", "Setting up jq", "Successfully installed stacyhello-1.0", "build ready"} {
		if !strings.Contains(b.Log, want) {
			t.Errorf("log lacks %q:\n%s", want, b.Log)
		}
	}
	if len(b.Artifacts) != 1 || b.Artifacts[0].Target != envs.TargetLocal || !strings.HasPrefix(b.Artifacts[0].Digest, "sha256:") || b.Artifacts[0].Size <= 0 {
		t.Errorf("artifacts = %+v, want the local image with its digest and size", b.Artifacts)
	}
	if ix.Downloads.Load() != 1 {
		t.Errorf("the wheel was downloaded %d times, want 1", ix.Downloads.Load())
	}
	img, err := d.Client().ImageInspect(ctx, b.Image)
	if err != nil {
		t.Fatal(err)
	}
	labels := img.Config.Labels
	if labels[envs.LabelSpec] != spec.ID || labels[envs.LabelBuild] != b.ID || labels[envs.LabelRecipe] == "" {
		t.Errorf("image labels = %v, want the spec, build and recipe", labels)
	}
	if img.Config.WorkingDir != "/workspace" {
		t.Errorf("image working directory = %q, want /workspace", img.Config.WorkingDir)
	}

	// Another owner's spec with the same recipe reuses the image.
	same, err := svc.CreateSpec(ctx, envspec.Spec{OwnerID: "bob", Name: "hello-again", BaseImage: "stacyvm/debian:test",
		AptPackages: []string{"jq"}, PythonPackages: []string{"StacyHello == 1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	b2, err := svc.CreateBuild(ctx, same.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2 = waitFinished(t, svc, b2.ID, 2*time.Minute)
	t.Logf("cached build: %s", time.Since(start).Round(time.Millisecond))
	if b2.Status != store.BuildReady || b2.Image != b.Image || !strings.Contains(b2.Log, "reused, not rebuilt") {
		t.Errorf("second build = %s %s, want ready with image %s reused; log:\n%s", b2.Status, b2.Image, b.Image, b2.Log)
	}
	if ix.Downloads.Load() != 1 {
		t.Errorf("the reused build downloaded the wheel again")
	}
}

func TestDockerCancelMidBuildLeavesNoImage(t *testing.T) {
	d := requireDocker(t)
	st := openStore(t)
	ix := envstest.Serve(t, testWheel)
	svc := startService(t, st, d, envs.Config{PipIndexURL: ix.URL})
	ctx := t.Context()

	// A recipe of its own (nothing to reuse): the apt layer takes seconds.
	spec, err := svc.CreateSpec(ctx, envspec.Spec{OwnerID: "alice", Name: "cancel-me", BaseImage: baseImage,
		AptPackages: []string{"jq", "bc"}, PythonPackages: []string{"stacyhello>=1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := svc.CreateBuild(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeImage(t, d, b.Image)
	// Cancel once the apt layer is running inside dockerd.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		cur, err := svc.GetBuild(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(cur.Log, "apt.sh") && strings.Contains(cur.Log, "Running in") {
			break
		}
		if store.BuildFinished(cur.Status) || time.Now().After(deadline) {
			t.Fatalf("the build never reached its apt layer (%s); log:\n%s", cur.Status, cur.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	canceled, err := svc.CancelBuild(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if canceled.Status != store.BuildCanceled {
		t.Fatalf("cancel returned %s; log:\n%s", canceled.Status, canceled.Log)
	}
	t.Cleanup(func() { removeStepImages(t, d, canceled.Log) })
	// The daemon aborted the build: it never got to tag the image.
	if strings.Contains(canceled.Log, "Successfully tagged") || strings.Contains(canceled.Log, "which the daemon tagged") {
		t.Errorf("the build ran to its end before the cancel took; log:\n%s", canceled.Log)
	}
	if _, err := d.Inspect(ctx, b.Image); errdefs.Classify(err) != errdefs.ErrNotFound {
		t.Errorf("after cancel, image %s: %v; want it absent", b.Image, err)
	}
	// The daemon ended the step: none of this build's step containers keeps
	// running. Other packages' tests may build at the same time, so only the
	// containers named in this build's log count; dockerd removes them
	// asynchronously after the abort.
	steps := stepContainer.FindAllStringSubmatch(canceled.Log, -1)
	if len(steps) == 0 {
		t.Fatalf("no step container in the canceled build's log:\n%s", canceled.Log)
	}
	for _, m := range steps {
		id := m[1]
		gone := time.Now().Add(time.Minute)
		for {
			c, err := d.Client().ContainerInspect(ctx, id, client.ContainerInspectOptions{})
			if cerrdefs.IsNotFound(err) || (err == nil && !c.Container.State.Running) {
				break
			}
			if err != nil {
				t.Fatalf("inspect step container %s: %v", id, err)
			}
			if time.Now().After(gone) {
				t.Errorf("container %s still runs the canceled build's step a minute after the cancel", id)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// A finished build cannot be canceled again.
	if _, err := svc.CancelBuild(ctx, b.ID); errdefs.Classify(err) != errdefs.ErrConflict {
		t.Errorf("second cancel: %v, want a conflict", err)
	}
}
