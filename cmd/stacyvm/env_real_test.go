package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/envs/envstest"
)

const buildAPIKey = "env-test-key"

// envConfig is the server's configuration: Docker (runc) as the only
// provider, builds on the host network so they reach the test's index on
// loopback.
func envConfig(dir, indexURL, extra string) string {
	return "provider:\n  enabled: [docker]\n  default: docker\n" +
		"docker:\n  runtime: runc\n" +
		"store:\n  path: " + filepath.Join(dir, "stacyvm.db") + "\n" +
		"server:\n  api_key: " + buildAPIKey + "\n  shutdown_timeout: 10s\n" +
		"environments:\n  pip_index_url: " + indexURL + "\n  build_network: host\n" + extra
}

// startEnvServer runs a server with the configuration yaml (envConfig)
// in dir; a test may SIGKILL it mid-build and start another on the same
// database.
func startEnvServer(t *testing.T, bin, dir, yaml string) *serveProcess {
	t.Helper()
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServe(t, bin, dir, buildAPIKey, nil, "--config", cfgPath)
}

// envCLI runs the stacyvm CLI in-process against s.
func envCLI(t *testing.T, s *serveProcess, args ...string) result {
	t.Helper()
	return cliWith(t, nil, invocation{}, append([]string{"--server", s.base, "--api-key", buildAPIKey}, args...)...)
}

// dockerRemoveImage removes an image and its untagged parents when the
// test ends.
func dockerRemoveImage(t *testing.T, ref string) {
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", ref).Run() })
}

// dockerRemoveStepImages removes the untagged images the steps of an
// aborted build left in dockerd's build cache (" ---> ID" in its log).
func dockerRemoveStepImages(t *testing.T, log string) {
	t.Cleanup(func() {
		ids := regexp.MustCompile(`(?m)^ ---> ([0-9a-f]{12})$`).FindAllStringSubmatch(log, -1)
		for i := len(ids) - 1; i >= 0; i-- {
			// dockerd may still be removing the aborted step's container,
			// which holds its parent image for a moment.
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				out, err := exec.Command("docker", "image", "inspect", "-f", "{{len .RepoTags}}", ids[i][1]).Output()
				if err != nil || strings.TrimSpace(string(out)) != "0" || exec.Command("docker", "rmi", ids[i][1]).Run() == nil {
					break
				}
			}
		}
	})
}

func dockerImageExists(ref string) bool {
	return exec.Command("docker", "image", "inspect", ref).Run() == nil
}

var envWheel = envstest.Wheel{Name: "stacyhello", Version: "1.0", Module: "def greet():\n    return 'hello from stacyhello'\n"}

// TestEnvironmentEndToEnd goes through the real server and CLI: create a
// spec, build it, follow the live log, spawn a sandbox from spawn-config,
// and use the apt package (jq, from Debian's mirror) and the Python
// package (from the test's own index) inside it. Then the same recipe is
// reused, a bad spec is refused with nothing built, and a build canceled
// mid-way leaves no image.
func TestEnvironmentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images on dockerd; skipped in -short mode")
	}
	requireDockerImage(t, "stacyvm/debian:test")
	bin := buildBinaries(t)
	ix := envstest.Serve(t, envWheel)
	s := startEnvServer(t, bin, t.TempDir(), envConfig(t.TempDir(), ix.URL, ""))
	ctx := t.Context()

	specID := strings.TrimSpace(envCLI(t, s, "env", "create", "--name", "hello", "--base", "stacyvm/debian:test",
		"--apt", "jq", "--pip", "stacyhello==1.0", "--owner", "alice").ok(t).stdout)
	if !strings.HasPrefix(specID, "envs-") {
		t.Fatalf("env create printed %q, want a spec ID", specID)
	}
	start := time.Now()
	buildID := strings.TrimSpace(envCLI(t, s, "env", "build", specID).ok(t).stdout)
	b, err := s.client.GetEnvBuild(ctx, buildID)
	if err != nil {
		t.Fatal(err)
	}
	dockerRemoveImage(t, b.Image)

	// Follow the live log: output arrives while the build is running.
	var (
		mu       sync.Mutex
		followed strings.Builder
		sawLive  bool
	)
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		followed.Write(p)
		if !sawLive && strings.Contains(followed.String(), "Step 2/") {
			cur, err := s.client.GetEnvBuild(ctx, buildID)
			if err == nil && cur.Status == "building" && strings.Contains(cur.Log, "Step 2/") {
				sawLive = true
			}
		}
		return len(p), nil
	})
	end, err := s.client.FollowEnvBuild(ctx, buildID, w)
	if err != nil {
		t.Fatal(err)
	}
	cold := time.Since(start)
	if end.Status != "ready" {
		t.Fatalf("build ended %s: %s\n%s", end.Status, end.Reason, followed.String())
	}
	if !sawLive {
		t.Errorf("no log output was followed while the build was running")
	}
	t.Logf("cold build through the server: %s", cold.Round(time.Millisecond))

	b, err = s.client.GetEnvBuild(ctx, buildID)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != "ready" || len(b.Artifacts) == 0 || b.Artifacts[0].Size <= 0 || !strings.HasPrefix(b.Artifacts[0].Digest, "sha256:") {
		t.Fatalf("ready build = %+v", b)
	}
	if logs := envCLI(t, s, "env", "logs", buildID).ok(t).stdout; !strings.Contains(logs, "Successfully installed stacyhello-1.0") {
		t.Errorf("env logs lacks the pip install:\n%s", logs)
	}
	if ls := envCLI(t, s, "env", "ls", "--owner", "alice").ok(t).stdout; !strings.Contains(ls, buildID) || !strings.Contains(ls, "ready") {
		t.Errorf("env ls = %q", ls)
	}

	// Spawn from spawn-config; the packages work inside.
	sc, err := s.client.EnvSpawnConfig(ctx, buildID)
	if err != nil || !sc.Ready || sc.Provider != "docker" {
		t.Fatalf("spawn-config = %+v, %v", sc, err)
	}
	sb, err := s.client.Spawn(ctx, client.SpawnRequest{Image: sc.Image, Provider: sc.Provider})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.client.Destroy(context.Background(), sb.ID) })
	for _, tc := range []struct{ cmd, want string }{
		{`echo '{"a":{"b":42}}' | jq .a.b`, "42"},
		{`python3 -c 'import stacyhello; print(stacyhello.greet())'`, "hello from stacyhello"},
		{`pwd`, "/workspace"},
	} {
		res, err := s.client.Exec(ctx, sb.ID, client.ExecRequest{Command: tc.cmd})
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != tc.want {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %q", tc.cmd, res.ExitCode, res.Stdout, res.Stderr, tc.want)
		}
	}

	// A template naming the spec spawns its ready build's image.
	envCLI(t, s, "templates", "create", "--name", "hello-env", "--environment", specID).ok(t)
	tsb, err := s.client.SpawnTemplate(ctx, "hello-env", client.TemplateSpawnRequest{Provider: "docker"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.client.Destroy(context.Background(), tsb.ID) })
	if tsb.Image != b.Image {
		t.Errorf("the template spawned %q, want the build's image %q", tsb.Image, b.Image)
	}
	if res, err := s.client.Exec(ctx, tsb.ID, client.ExecRequest{Command: "jq --version"}); err != nil || res.ExitCode != 0 {
		t.Errorf("jq in the template's sandbox: %+v, %v", res, err)
	}

	// The same recipe under another spec: the image is reused.
	again := strings.TrimSpace(envCLI(t, s, "env", "create", "--name", "hello-too", "--base", "stacyvm/debian:test",
		"--apt", "jq", "--pip", "stacyhello==1.0", "--owner", "bob").ok(t).stdout)
	start = time.Now()
	image := strings.TrimSpace(envCLI(t, s, "env", "build", again, "--follow").ok(t).stdout)
	t.Logf("cached build through the server: %s", time.Since(start).Round(time.Millisecond))
	if image != b.Image {
		t.Errorf("the same recipe built %q, want the reused %q", image, b.Image)
	}

	// A bad spec is a 400 and builds nothing.
	before, err := s.client.ListEnvBuilds(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	bad := envCLI(t, s, "env", "create", "--name", "evil", "--base", "stacyvm/debian:test", "--apt", "jq;touch /pwned")
	wantAPIError(t, bad, "BAD_REQUEST")
	after, err := s.client.ListEnvBuilds(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("a bad spec changed the builds: %d → %d", len(before), len(after))
	}

	// Cancel mid-build: nothing tagged.
	other := strings.TrimSpace(envCLI(t, s, "env", "create", "--name", "cancel", "--base", "stacyvm/debian:test",
		"--apt", "bc", "--owner", "alice").ok(t).stdout)
	cid := strings.TrimSpace(envCLI(t, s, "env", "build", other).ok(t).stdout)
	cb := waitBuildLog(t, s.client, cid, "Running in", 3*time.Minute)
	dockerRemoveImage(t, cb.Image)
	if got := strings.TrimSpace(envCLI(t, s, "env", "cancel", cid).ok(t).stdout); got != "canceled" {
		t.Errorf("env cancel printed %q", got)
	}
	cb, err = s.client.GetEnvBuild(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	dockerRemoveStepImages(t, cb.Log)
	if cb.Status != "canceled" || dockerImageExists(cb.Image) {
		t.Errorf("after cancel: status %s, image %s exists: %v", cb.Status, cb.Image, dockerImageExists(cb.Image))
	}
	wantAPIError(t, envCLI(t, s, "env", "cancel", cid), "CONFLICT")
}

// TestEnvironmentBuildSurvivesSIGKILL kills the server while dockerd runs
// a build's apt layer, restarts it on the same database, and checks that
// the build does not stay building: the new server queues it again and
// builds it to ready, on its second attempt.
func TestEnvironmentBuildSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images on dockerd; skipped in -short mode")
	}
	requireDockerImage(t, "stacyvm/debian:test")
	bin := buildBinaries(t)
	ix := envstest.Serve(t, envWheel)
	dir, db := t.TempDir(), t.TempDir()
	s := startEnvServer(t, bin, dir, envConfig(db, ix.URL, ""))
	ctx := t.Context()

	spec, err := s.client.CreateEnvSpec(ctx, client.EnvSpec{OwnerID: "alice", Name: "crash", BaseImage: "stacyvm/debian:test",
		AptPackages: []string{"jq", "bc"}, PythonPackages: []string{"stacyhello>=1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.client.CreateEnvBuild(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	dockerRemoveImage(t, b.Image)
	mid := waitBuildLog(t, s.client, b.ID, "Running in", 3*time.Minute)
	s.kill9()
	dockerRemoveStepImages(t, mid.Log)

	s2 := startEnvServer(t, bin, dir, envConfig(db, ix.URL, ""))
	deadline := time.Now().Add(10 * time.Minute)
	for {
		cur, err := s2.client.GetEnvBuild(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Finished() {
			if cur.Status != "ready" || cur.Attempts != 2 || !strings.Contains(cur.Log, "queued again") {
				t.Fatalf("after the restart the build ended %s after %d attempts (%s); log:\n%s", cur.Status, cur.Attempts, cur.Reason, cur.Log)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build still %s 10 minutes after the restart; log:\n%s", cur.Status, cur.Log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !dockerImageExists(b.Image) {
		t.Errorf("the rebuilt image %s is missing", b.Image)
	}
}

// waitBuildLog polls until the build's log holds want (while it builds).
func waitBuildLog(t *testing.T, c *client.Client, id, want string, within time.Duration) client.EnvBuild {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := c.GetEnvBuild(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Status == "building" && strings.Contains(b.Log, want) {
			return b
		}
		if b.Finished() || time.Now().After(deadline) {
			t.Fatalf("build %s is %s without %q in its log:\n%s", id, b.Status, want, b.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// requireRegistry returns the test registry's address and credentials
// (scripts/ci/registry-up.sh), skipping without it except under
// scripts/test (STACYVM_TEST_DOCKER=1), where it must be running.
func requireRegistry(t *testing.T) (addr, user, passwordFile string) {
	t.Helper()
	dir := os.Getenv("STACYVM_TEST_REGISTRY_DIR")
	if dir == "" {
		dir = "/tmp/stacyvm-ci/envs-registry"
	}
	a, err1 := os.ReadFile(filepath.Join(dir, "address"))
	u, err2 := os.ReadFile(filepath.Join(dir, "user"))
	if err := errors.Join(err1, err2); err != nil {
		msg := "needs the loopback registry of scripts/ci/registry-up.sh: " + err.Error()
		if os.Getenv("STACYVM_TEST_DOCKER") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return strings.TrimSpace(string(a)), strings.TrimSpace(string(u)), filepath.Join(dir, "password")
}

// TestEnvironmentRegistryPush builds with the registry target against a
// registry that requires a password, checks that the password shows in no
// answer and no log line, then removes the local images and spawns the
// pushed reference: dockerd pulls it fresh from the registry.
func TestEnvironmentRegistryPush(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images on dockerd; skipped in -short mode")
	}
	requireDockerImage(t, "stacyvm/debian:test")
	addr, user, pwFile := requireRegistry(t)
	password, err := os.ReadFile(pwFile)
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(password))
	// Without credentials the registry refuses: the push below used them.
	if resp, err := http.Get("http://" + addr + "/v2/"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("registry /v2/ without credentials: %v %v, want 401", resp, err)
	}

	bin := buildBinaries(t)
	ix := envstest.Serve(t, envWheel)
	repo := "envtest/r" + strings.ToLower(randHex(4))
	extra := "  registry_address: " + addr + "\n  registry_repository: " + repo + "\n" +
		"  registry_username: " + user + "\n  registry_password_file: " + pwFile + "\n"
	s := startEnvServer(t, bin, t.TempDir(), envConfig(t.TempDir(), ix.URL, extra))
	ctx := t.Context()

	spec, err := s.client.CreateEnvSpec(ctx, client.EnvSpec{OwnerID: "alice", Name: "pushed", BaseImage: "stacyvm/debian:test",
		AptPackages: []string{"jq"}, PythonPackages: []string{"stacyhello==1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.client.CreateEnvBuild(ctx, spec.ID, []string{"registry"})
	if err != nil {
		t.Fatal(err)
	}
	dockerRemoveImage(t, b.Image)
	end, err := s.client.FollowEnvBuild(ctx, b.ID, io.Discard)
	if err != nil || end.Status != "ready" {
		cur, _ := s.client.GetEnvBuild(ctx, b.ID)
		t.Fatalf("build: %+v, %v; log:\n%s", end, err, cur.Log)
	}
	b, err = s.client.GetEnvBuild(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	var pushed client.EnvArtifact
	for _, a := range b.Artifacts {
		if a.Target == "registry" {
			pushed = a
		}
	}
	if !strings.HasPrefix(pushed.Ref, addr+"/"+repo+":") || !strings.HasPrefix(pushed.Digest, "sha256:") || pushed.Size <= 0 {
		t.Fatalf("registry artifact = %+v (artifacts %+v)", pushed, b.Artifacts)
	}
	dockerRemoveImage(t, pushed.Ref)

	// The password is nowhere a client or an operator looks.
	for what, text := range map[string]string{"server log": s.logs.String(), "build log": b.Log} {
		if strings.Contains(text, secret) {
			t.Errorf("the registry password appears in the %s", what)
		}
	}
	for _, path := range []string{"/api/v1/environments/builds/" + b.ID, "/api/v1/environments/builds", "/api/v1/environments/specs",
		"/api/v1/providers/docker", "/api/v1/environments/builds/" + b.ID + "/spawn-config"} {
		req, _ := http.NewRequestWithContext(ctx, "GET", s.base+path, nil)
		req.Header.Set("X-API-Key", buildAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), secret) {
			t.Errorf("GET %s returns the registry password", path)
		}
	}

	// Remove every local copy; spawning the pushed reference pulls it.
	for _, ref := range []string{pushed.Ref, b.Image} {
		if out, err := exec.Command("docker", "rmi", ref).CombinedOutput(); err != nil {
			t.Fatalf("docker rmi %s: %v\n%s", ref, err, out)
		}
	}
	if dockerImageExists(pushed.Ref) {
		t.Fatal("the pushed image is still local")
	}
	sb, err := s.client.Spawn(ctx, client.SpawnRequest{Image: pushed.Ref, Provider: "docker"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.client.Destroy(context.Background(), sb.ID) })
	for _, tc := range []struct{ cmd, want string }{
		{`jq -n 1+1`, "2"},
		{`python3 -c 'import stacyhello; print(stacyhello.greet())'`, "hello from stacyhello"},
	} {
		res, err := s.client.Exec(ctx, sb.ID, client.ExecRequest{Command: tc.cmd})
		if err != nil || res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != tc.want {
			t.Errorf("%s in the pulled image: %+v, %v", tc.cmd, res, err)
		}
	}
}

// TestEnvironmentArtifactsForPRootAndFirecracker builds with the proot
// and firecracker targets through the real server: the PRoot root file
// system lands in the PRoot provider's images directory, where a PRoot
// sandbox spawns it by the same image name and finds jq and the Python
// package; the Firecracker root file system is built by the build-image
// path. Both record a digest and a size.
func TestEnvironmentArtifactsForPRootAndFirecracker(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images on dockerd; skipped in -short mode")
	}
	requireDockerImage(t, "stacyvm/debian:test")
	if _, err := exec.LookPath("proot"); err != nil {
		if os.Getenv("STACYVM_TEST_PROOT") == "1" {
			t.Fatal("needs proot (scripts/ci/proot-up.sh)")
		}
		t.Skip("needs proot (scripts/ci/proot-up.sh)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 (e2fsprogs) for the Firecracker root file system")
	}
	bin := buildBinaries(t)
	ix := envstest.Serve(t, envWheel)
	images := t.TempDir()
	// Firecracker's state directory must be short (unix socket paths).
	fcState, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(fcState) })
	// PRoot's unprivileged sandbox users must traverse the images directory.
	if err := os.Chmod(images, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := envConfig(t.TempDir(), ix.URL, "")
	yaml = strings.Replace(yaml, "provider:\n  enabled: [docker]\n", "provider:\n  enabled: [docker, proot]\n", 1) +
		"proot:\n  images_dir: " + images + "\nfirecracker:\n  state_dir: " + fcState + "\n"
	s := startEnvServer(t, bin, t.TempDir(), yaml)
	ctx := t.Context()

	spec, err := s.client.CreateEnvSpec(ctx, client.EnvSpec{OwnerID: "alice", Name: "everywhere", BaseImage: "stacyvm/debian:test",
		AptPackages: []string{"jq"}, PythonPackages: []string{"stacyhello==1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.client.CreateEnvBuild(ctx, spec.ID, []string{"proot", "firecracker"})
	if err != nil {
		t.Fatal(err)
	}
	dockerRemoveImage(t, b.Image)
	end, err := s.client.FollowEnvBuild(ctx, b.ID, io.Discard)
	if err != nil || end.Status != "ready" {
		cur, _ := s.client.GetEnvBuild(ctx, b.ID)
		t.Fatalf("build: %+v, %v; log:\n%s", end, err, cur.Log)
	}
	b, err = s.client.GetEnvBuild(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]client.EnvArtifact{}
	for _, a := range b.Artifacts {
		got[a.Target] = a
	}
	for _, target := range []string{"local", "proot", "firecracker"} {
		a := got[target]
		if a.Ref == "" || !strings.HasPrefix(a.Digest, "sha256:") || a.Size <= 0 {
			t.Errorf("artifact %s = %+v, want a reference, a digest and a size", target, a)
		}
	}

	sb, err := s.client.Spawn(ctx, client.SpawnRequest{Image: got["proot"].Ref, Provider: "proot"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.client.Destroy(context.Background(), sb.ID) })
	for _, tc := range []struct{ cmd, want string }{
		{`jq -n '"a"+"b"'`, `"ab"`},
		{`python3 -c 'import stacyhello; print(stacyhello.greet())'`, "hello from stacyhello"},
	} {
		res, err := s.client.Exec(ctx, sb.ID, client.ExecRequest{Command: tc.cmd})
		if err != nil || res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != tc.want {
			t.Errorf("%s on PRoot: %+v, %v", tc.cmd, res, err)
		}
	}
}
