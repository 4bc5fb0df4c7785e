package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// poolServer is `stacyvm serve` with warm pools from a configuration
// file, and the server instance it logged.
type poolServer struct {
	*serveProcess
	instance string
}

func startPoolServer(t *testing.T, bin, dir, cfgPath string) *poolServer {
	t.Helper()
	s := &poolServer{serveProcess: startServe(t, bin, dir, "", nil, "--config", cfgPath)}
	m := regexp.MustCompile(`server instance.* instance=(\S+)`).FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no instance id in the log:\n%s", s.logs.String())
	}
	s.instance = m[1]
	return s
}

// callJSON is call that decodes a successful reply into out.
func (s *poolServer) callJSON(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	code, b := s.call(t, method, path, body)
	if out != nil && code >= 200 && code < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Errorf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return code
}

type dockerPool struct {
	Name     string `json:"name"`
	Target   int    `json:"target"`
	Ready    int    `json:"ready"`
	Creating int    `json:"creating"`
	Claimed  int    `json:"claimed"`
	Misses   int    `json:"misses"`
}

func (s *poolServer) pool(t *testing.T, name string) dockerPool {
	t.Helper()
	var st struct {
		Pools []dockerPool `json:"pools"`
	}
	s.callJSON(t, "GET", "/pool/status", nil, &st)
	for _, p := range st.Pools {
		if p.Name == name {
			return p
		}
	}
	return dockerPool{}
}

func (s *poolServer) waitFull(t *testing.T, name string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p := s.pool(t, name)
		if p.Ready == n && p.Creating == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool %s = %+v, want %d ready\n%s", name, p, n, s.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *poolServer) ids(t *testing.T, query string) []string {
	t.Helper()
	var list []struct {
		ID string `json:"id"`
	}
	if code := s.callJSON(t, "GET", "/sandboxes"+query, nil, &list); code != 200 {
		t.Fatalf("list %s: %d", query, code)
	}
	var out []string
	for _, sb := range list {
		out = append(out, sb.ID)
	}
	slices.Sort(out)
	return out
}

// instanceContainers lists the containers of a server instance: sandbox
// ID → dockerd state.
// removeInstanceContainersAtCleanup removes, when the test ends, every
// container of the server instance that *instance names once the test has
// started its server, so that a failing test leaks nothing.
func removeInstanceContainersAtCleanup(t *testing.T, instance *string) {
	t.Cleanup(func() {
		if *instance == "" {
			return
		}
		out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=stacyvm.instance="+*instance).Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
		}
	})
}

func instanceContainers(t *testing.T, instance string) map[string]string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=stacyvm.instance="+instance,
		"--format", `{{.Label "stacyvm.sandbox-id"}} {{.State}}`).CombinedOutput()
	if err != nil {
		t.Fatalf("docker ps: %v\n%s", err, out)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if id, state, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			m[id] = state
		}
	}
	return m
}

// TestPoolAdoptionAfterSIGKILLWithDocker drives warm pools on real
// containers through the real binary: a pool of 50 fills; 50 concurrent
// spawns each claim a distinct, fresh member (no marker from an earlier
// user); the server is killed with SIGKILL while the pool refills; the
// next start adopts the surviving members, removes what the interrupted
// refills left, and fills up again, and then dockerd holds exactly one
// container per pool member and per live sandbox: nothing leaked.
func TestPoolAdoptionAfterSIGKILLWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers and 100 containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	requireDockerImage(t, image)
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
  max_sandboxes: 200
pool:
  check_interval: 1s
pools:
  - name: warm
    image: %s
    provider: docker
    size: 50
    concurrency: 6
`, filepath.Join(dir, "stacyvm.db"), image)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var instance string
	removeInstanceContainersAtCleanup(t, &instance)

	a := startPoolServer(t, bin, dir, cfgPath)
	instance = a.instance
	a.waitFull(t, "warm", 50, 5*time.Minute)
	members := a.ids(t, "?state=pooled")
	if len(members) != 50 {
		t.Fatalf("%d pooled records, want 50", len(members))
	}

	type claim struct {
		id    string
		code  int
		fresh bool
	}
	claims := make([]claim, 50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range claims {
		wg.Go(func() {
			<-start
			var sb struct {
				ID    string `json:"id"`
				Owner string `json:"owner_id"`
			}
			code := a.callJSON(t, "POST", "/sandboxes", map[string]any{"image": image, "provider": "docker",
				"owner_id": fmt.Sprintf("user-%d", i)}, &sb)
			claims[i] = claim{id: sb.ID, code: code}
			if code != 201 || sb.Owner != fmt.Sprintf("user-%d", i) {
				return
			}
			// Fresh: nobody left the marker, and now this user does.
			var res struct {
				ExitCode int `json:"exit_code"`
			}
			a.callJSON(t, "POST", "/sandboxes/"+sb.ID+"/exec",
				map[string]any{"command": "test ! -e /workspace/claimed && touch /workspace/claimed"}, &res)
			claims[i].fresh = res.ExitCode == 0
		})
	}
	close(start)
	wg.Wait()
	seen := map[string]bool{}
	for i, c := range claims {
		switch {
		case c.code != 201:
			t.Errorf("claim %d: status %d", i, c.code)
		case seen[c.id]:
			t.Errorf("claim %d: %s handed out twice", i, c.id)
		case !slices.Contains(members, c.id):
			t.Errorf("claim %d: %s is not a member (spawned cold)", i, c.id)
		case !c.fresh:
			t.Errorf("claim %d: %s was not fresh", i, c.id)
		}
		seen[c.id] = true
	}
	if p := a.pool(t, "warm"); p.Claimed != 50 || p.Misses != 0 {
		t.Errorf("after the claims: %+v, want 50 claimed, no misses", p)
	}

	// Kill it while the pool refills: some members ready, some being
	// created.
	deadline := time.Now().Add(2 * time.Minute)
	for p := a.pool(t, "warm"); p.Ready < 10 || p.Creating == 0; p = a.pool(t, "warm") {
		if time.Now().After(deadline) {
			t.Logf("refill never caught mid-way (%+v); killing anyway", p)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.kill9()

	b := startPoolServer(t, bin, dir, cfgPath)
	if b.instance != instance {
		t.Fatalf("instance changed across the restart: %s → %s", instance, b.instance)
	}
	b.waitFull(t, "warm", 50, 5*time.Minute)
	pooled := b.ids(t, "?state=pooled")
	live := b.ids(t, "")
	for _, c := range claims {
		if !slices.Contains(live, c.id) {
			t.Errorf("claimed sandbox %s is not live after the restart", c.id)
		}
	}
	ctrs := instanceContainers(t, instance)
	want := map[string]bool{}
	for _, id := range append(slices.Clone(pooled), live...) {
		want[id] = true
	}
	if len(ctrs) != len(pooled)+len(live) {
		t.Errorf("dockerd holds %d containers, want %d pool members + %d live sandboxes", len(ctrs), len(pooled), len(live))
	}
	for id, state := range ctrs {
		if !want[id] {
			t.Errorf("container of %s (%s) is neither a member nor a live sandbox: leaked", id, state)
		} else if state != "running" {
			t.Errorf("container of %s is %s, want running", id, state)
		}
	}
	for id := range want {
		if _, ok := ctrs[id]; !ok {
			t.Errorf("record %s has no container", id)
		}
	}
	// The claimed sandboxes still work and still hold their user's marker.
	var res struct {
		ExitCode int `json:"exit_code"`
	}
	if code := b.callJSON(t, "POST", "/sandboxes/"+claims[0].id+"/exec", map[string]any{"command": "test -e /workspace/claimed"}, &res); code != 200 || res.ExitCode != 0 {
		t.Errorf("claimed sandbox after restart: %d exit %d", code, res.ExitCode)
	}

	// Stop cleanly; the test's cleanup removes what is left.
	b.stop(t)
}
