package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/envs"
)

// TestPoolImageChangeWithDocker rebuilds the tag a warm pool is declared
// on while a client keeps claiming from it, through the real server: the
// members made from the old build are destroyed and replaced by members
// of the new image ID; a claim that starts after the replacement began
// (the first old member's sandbox.destroyed event) never returns an
// old-image sandbox; and dockerd holds nothing but the members and the
// live sandboxes.
//
// The guarantee tested: the pool notices a rebuilt tag within its
// check_interval; from the moment it does, no member of the old build is
// claimable. A claim that starts before it may still get an old member.
func TestPoolImageChangeWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real server, builds images and runs containers; skipped in -short mode")
	}
	const base = "stacyvm/busybox:test"
	const size = 6
	requireDockerImage(t, base)
	ctx := t.Context()
	builder, err := envs.NewDocker(ctx, "", "none")
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { builder.Close() })
	tag := "stacyvm/pooltest:" + randHex(6)
	var built []string
	build := func(version string) string {
		t.Helper()
		img, err := builder.Build(ctx, buildContext(t, base, version), tag, map[string]string{"stacyvm.test": t.Name()}, io.Discard)
		if err != nil {
			t.Fatalf("build %s (%s): %v", tag, version, err)
		}
		built = append(built, img.ID)
		return img.ID
	}
	t.Cleanup(func() {
		// After the containers (cleanups run last registered first).
		for _, ref := range append([]string{tag}, built...) {
			if err := builder.Remove(context.Background(), ref); err != nil && !strings.Contains(err.Error(), "No such image") &&
				!strings.Contains(err.Error(), "not found") {
				t.Errorf("remove test image %s: %v", ref, err)
			}
		}
	})
	v1 := build("v1")

	dir := t.TempDir()
	bin := buildBinaries(t)
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	cfg := fmt.Sprintf(`store:
  path: %s
provider:
  enabled: [docker]
  default: docker
docker:
  runtime: runc
sandbox:
  max_sandboxes: 300
pool:
  check_interval: 1s
pools:
  - name: img
    image: %s
    provider: docker
    size: %d
    concurrency: 2
`, filepath.Join(dir, "stacyvm.db"), tag, size)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var instance string
	removeInstanceContainersAtCleanup(t, &instance)
	s := startPoolServer(t, bin, dir, cfgPath)
	instance = s.instance
	s.waitFull(t, "img", size, 3*time.Minute)
	for _, id := range s.ids(t, "?state=pooled") {
		if got := containerImage(t, id); got != v1 {
			t.Fatalf("member %s runs image %s, want the first build %s", id, got, v1)
		}
	}
	events := subscribe(t, s.base)

	// A client claims every 700 ms throughout the rebuild and the
	// replacement (and destroys nothing: until the end of the test, every
	// destroy is the pool's).
	type claim struct {
		started time.Time
		id      string
		image   string
		version string // what /version in the sandbox says
	}
	var (
		mu     sync.Mutex
		claims []claim
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 150 {
			select {
			case <-stop:
				return
			case <-time.After(700 * time.Millisecond):
			}
			c := claim{started: time.Now()}
			var sb struct {
				ID string `json:"id"`
			}
			if code := s.callJSON(t, "POST", "/sandboxes", map[string]any{"image": tag, "provider": "docker"}, &sb); code != 201 {
				t.Errorf("spawn during the rebuild: status %d", code)
				return
			}
			c.id = sb.ID
			var res struct {
				Stdout string `json:"stdout"`
			}
			s.callJSON(t, "POST", "/sandboxes/"+sb.ID+"/exec", map[string]any{"command": "cat /version"}, &res)
			c.version = strings.TrimSpace(res.Stdout)
			c.image = containerImage(t, sb.ID)
			mu.Lock()
			claims = append(claims, c)
			mu.Unlock()
		}
	})

	time.Sleep(2 * time.Second) // some claims of the first build
	old := s.ids(t, "?state=pooled")
	v2 := build("v2")
	if v2 == v1 {
		t.Fatalf("the rebuild kept the image ID %s", v1)
	}
	rebuilt := time.Now()

	// The replacement begins: the pool destroys its first member of the
	// old build, after it saw the new one. (Other sandboxes end too: a
	// refill spawn that fails while the tag moves ends destroyed, before
	// the pool has seen the new build.)
	var switched time.Time
	deadline := time.After(2 * time.Minute)
	for switched.IsZero() {
		select {
		case e := <-events.ch:
			if e.Type != "sandbox.destroyed" || !slices.Contains(old, e.SandboxID) {
				continue
			}
			switched = time.Now()
		case <-deadline:
			t.Fatalf("no member of the first build was replaced within 2 minutes of the rebuild\n%s", s.logs.String())
		}
	}

	// Then the pool holds only members of the new build.
	waitDeadline := time.Now().Add(3 * time.Minute)
	for {
		members := s.ids(t, "?state=pooled")
		ok := len(members) == size && s.pool(t, "img").Creating == 0
		for _, id := range members {
			if slices.Contains(old, id) || containerImage(t, id) != v2 {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(waitDeadline) {
			t.Fatalf("pool never held only members of the new build %s: %v\n%s", v2, members, s.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // claims after the replacement, too
	close(stop)
	wg.Wait()
	t.Logf("rebuilt; the pool began replacing its members %v later", switched.Sub(rebuilt).Round(100*time.Millisecond))

	mu.Lock()
	defer mu.Unlock()
	var before, after, oldAfterRebuild int
	for _, c := range claims {
		if c.image != v1 && c.image != v2 {
			t.Errorf("claim %s runs image %s, neither build", c.id, c.image)
		}
		if (c.image == v1) != (c.version == "v1") {
			t.Errorf("claim %s: container image %s but /version says %q", c.id, c.image, c.version)
		}
		switch {
		case c.started.After(switched):
			after++
			if c.image != v2 {
				t.Errorf("claim %s started %v after the replacement began and got the old build", c.id, c.started.Sub(switched))
			}
		case c.started.After(rebuilt) && c.image == v1:
			oldAfterRebuild++
		default:
			before++
		}
	}
	if after == 0 {
		t.Errorf("no claim started after the replacement began (%d claims)", len(claims))
	}
	t.Logf("%d claims: %d before the replacement began (%d of them after the rebuild got the old build), %d after (all the new build)",
		len(claims), before, oldAfterRebuild, after)

	// The old members are gone, their containers too; nothing leaked.
	destroyed := s.ids(t, "?state=destroyed")
	var claimedOld int
	for _, id := range old {
		if slices.Contains(destroyed, id) {
			continue
		}
		if !slices.ContainsFunc(claims, func(c claim) bool { return c.id == id }) {
			t.Errorf("old member %s was neither replaced nor claimed", id)
		}
		claimedOld++
	}
	// Once the pool is full (no member being spawned, which is a
	// container without a listed record), dockerd holds exactly the live
	// sandboxes and the members.
	exact := func(what string) []string {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			live := s.ids(t, "")
			pooled := s.ids(t, "?state=pooled")
			ctrs := instanceContainers(t, instance)
			ok := len(pooled) == size && s.pool(t, "img").Creating == 0 && len(ctrs) == len(live)+len(pooled)
			for _, id := range append(slices.Clone(live), pooled...) {
				if ctrs[id] != "running" {
					ok = false
				}
			}
			if ok {
				return live
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: dockerd holds %v; live sandboxes %v, members %v", what, ctrs, live, pooled)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, id := range exact("after the replacement") {
		if code := s.callJSON(t, "DELETE", "/sandboxes/"+id, nil, nil); code != 200 {
			t.Errorf("destroy %s: %d", id, code)
		}
	}
	if live := exact("after destroying every sandbox"); len(live) != 0 {
		t.Errorf("sandboxes left after destroying all: %v", live)
	}
	t.Logf("%d old members replaced, %d claimed", len(old)-claimedOld, claimedOld)
}

// buildContext is a tar with a Dockerfile deriving a tiny image from base
// whose /version file and label say version.
func buildContext(t *testing.T, base, version string) []byte {
	t.Helper()
	dockerfile := fmt.Sprintf("FROM %s\nLABEL stacyvm.test.version=%s\nRUN echo %s > /version\n", base, version, version)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(dockerfile)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// containerImage is the ID of the image sandbox id's container runs.
func containerImage(t *testing.T, id string) string {
	t.Helper()
	out, err := exec.Command("docker", "inspect", "--format", "{{.Image}}", "stacyvm-"+id).CombinedOutput()
	if err != nil {
		return "" // removed meanwhile
	}
	return strings.TrimSpace(string(out))
}
