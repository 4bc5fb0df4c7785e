package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// These tests drive a real dockerd. They skip, saying what is missing, when
// there is none; with STACYVM_TEST_DOCKER=1 (set by .ci/run) a missing
// daemon, runtime, image or registry fails them instead.
//
// scripts/ci/docker-up.sh provides everything: dockerd with runc, crun and
// runsc, the images stacyvm/busybox:test and stacyvm/debian:test, and a
// registry on 127.0.0.1:5000.

const (
	busyboxImage = "stacyvm/busybox:test"
	debianImage  = "stacyvm/debian:test"
)

var env struct {
	skip      string         // why docker tests cannot run; "" when they can
	cli       *client.Client // raw client for checks behind the provider's back
	agentPath string
	runID     string // value of LabelTest on this process's containers
	runtimes  map[string]bool
	images    map[string]bool
	registry  string // host:port of the test registry; "" when absent
}

func forced() bool { return os.Getenv("STACYVM_TEST_DOCKER") == "1" }

// need skips t (or fails it when forced) when what is missing.
func need(t testing.TB, missing string) {
	t.Helper()
	if forced() {
		t.Fatalf("STACYVM_TEST_DOCKER=1 but %s (run scripts/ci/docker-up.sh)", missing)
	}
	t.Skipf("skipping: %s (run scripts/ci/docker-up.sh, or set STACYVM_TEST_DOCKER=1 to fail instead)", missing)
}

func needDocker(t testing.TB) {
	t.Helper()
	if env.skip != "" {
		need(t, env.skip)
	}
}

func needRuntime(t testing.TB, rt string) {
	t.Helper()
	needDocker(t)
	if !env.runtimes[rt] {
		need(t, "runtime "+rt+" is not registered with dockerd")
	}
}

func needImage(t testing.TB, image string) {
	t.Helper()
	needDocker(t)
	if !env.images[image] {
		need(t, "image "+image+" is not on the docker host")
	}
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	env.runID = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	tmp, err := os.MkdirTemp("", "stacyvm-docker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	setup(tmp)
	if env.cli != nil {
		defer env.cli.Close()
	}
	code := m.Run()
	if env.cli != nil {
		if left := leftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: tests left %d container(s), network(s) or volume(s) behind: %s\n", len(left), strings.Join(left, ", "))
			code = 1
		}
	}
	if env.cli != nil {
		removeLeftovers()
	}
	return code
}

func setup(tmp string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agentPath, err := buildAgent(ctx, tmp)
	if err != nil {
		env.skip = err.Error()
		return
	}
	env.agentPath = agentPath
	cli, err := client.New(client.FromEnv)
	if err != nil {
		env.skip = "no docker client: " + err.Error()
		return
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		env.skip = "dockerd is not reachable: " + err.Error()
		return
	}
	env.cli = cli
	info, err := cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		env.skip = "docker info: " + err.Error()
		return
	}
	env.runtimes = map[string]bool{}
	for rt := range info.Info.Runtimes {
		env.runtimes[rt] = true
	}
	env.images = map[string]bool{}
	for _, img := range []string{busyboxImage, debianImage} {
		if _, err := cli.ImageInspect(ctx, img); err == nil {
			env.images[img] = true
		}
	}
	reg := os.Getenv("STACYVM_REGISTRY")
	if reg == "" {
		reg = "127.0.0.1:5000"
	}
	if registryUp(ctx, reg) {
		env.registry = reg
	}
}

// buildAgent provides the static agent binary every container runs:
// $STACYVM_AGENT_BIN, or a fresh build of cmd/stacyvm-agent.
func buildAgent(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("STACYVM_AGENT_BIN"); p != "" {
		return p, nil
	}
	out := filepath.Join(dir, AgentBinaryName)
	build := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/stacyvm/stacyvm/cmd/stacyvm-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the agent failed: %v\n%s", err, msg)
	}
	return out, nil
}

// testLabels marks every container a test creates.
func testLabels() map[string]string { return map[string]string{LabelTest: env.runID} }

func leftovers() []string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := env.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", LabelTest+"="+env.runID),
	})
	if err != nil {
		return []string{"(cannot list: " + err.Error() + ")"}
	}
	var names []string
	for _, c := range res.Items {
		names = append(names, "container "+strings.Join(c.Names, ",")+" "+string(c.State))
	}
	// Networks and volumes the tests made carry the same label.
	byLabel := client.Filters{}.Add("label", LabelTest+"="+env.runID)
	nets, err := env.cli.NetworkList(ctx, client.NetworkListOptions{Filters: byLabel})
	if err != nil {
		return append(names, "(cannot list networks: "+err.Error()+")")
	}
	for _, n := range nets.Items {
		names = append(names, "network "+n.Name)
	}
	vols, err := env.cli.VolumeList(ctx, client.VolumeListOptions{Filters: byLabel})
	if err != nil {
		return append(names, "(cannot list volumes: "+err.Error()+")")
	}
	for _, v := range vols.Items {
		names = append(names, "volume "+v.Name)
	}
	return names
}

func removeLeftovers() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := env.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", LabelTest+"="+env.runID),
	})
	if err != nil {
		return
	}
	for _, c := range res.Items {
		env.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}
}

// newID returns a fresh sandbox ID in the orchestrator's format.
func newID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "sb-" + hex.EncodeToString(b)
}

// shortTempDir is a state dir short enough for socket paths (t.TempDir
// paths embed the test name and can exceed the 107-byte limit).
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// newProvider builds a provider for tests; mutate adjusts its config.
func newProvider(t testing.TB, runtime string, mutate ...func(*Config)) *Provider {
	t.Helper()
	needRuntime(t, runtime)
	cfg := Config{
		Runtime:   runtime,
		StateDir:  shortTempDir(t),
		AgentPath: env.agentPath,
		Labels:    testLabels(),
		Pull:      PullNever,
	}
	for _, f := range mutate {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", runtime, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func registryUp(ctx context.Context, hostport string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+hostport+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
