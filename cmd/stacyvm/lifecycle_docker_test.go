package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// TestLifecycleWithDocker drives every lifecycle transition a client or
// the server's own loops can cause on Docker through the real binary,
// one row per path, and checks the record's history (read from the
// server's store) and the container: spawn, pause and resume (explicit
// and by an exec), destroy from running and from paused, TTL expiry,
// idle pause and idle destroy, a container stopped behind the server's
// back, a failed spawn, a runtime without a record adopted by reconcile,
// and a warm pool member's claim. Operations a
// state does not allow answer 409 naming the state (404
// SANDBOX_DESTROYED once destroyed); an empty pool whose policy is reject
// answers 429 with Retry-After; and at the end dockerd holds exactly the
// live records' and the members' containers.
func TestLifecycleWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real server and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	requireDockerImage(t, image)
	dir := t.TempDir()
	bin := buildBinaries(t)
	db := filepath.Join(dir, "stacyvm.db")
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	// The pool's memory differs from the default, so only the row that
	// asks for it claims a member.
	cfg := fmt.Sprintf(`store:
  path: %s
provider:
  enabled: [docker]
  default: docker
docker:
  runtime: runc
sandbox:
  default_image: %s
  reaper_interval: 200ms
  reconcile_interval: 2s
pool:
  check_interval: 1s
pools:
  - name: lifecycle
    image: %s
    provider: docker
    memory_mb: 96
    size: 1
  - name: rejecting
    image: %s
    provider: docker
    memory_mb: 80
    size: 1
    policy: reject
`, db, image, image, image)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var instance string
	removeInstanceContainersAtCleanup(t, &instance)
	s := startPoolServer(t, bin, dir, cfgPath)
	instance = s.instance
	s.waitFull(t, "lifecycle", 1, 3*time.Minute)
	s.waitFull(t, "rejecting", 1, 3*time.Minute)
	st, err := sqlite.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	type sandbox struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	spawn := func(t *testing.T, body map[string]any) string {
		t.Helper()
		var sb sandbox
		if code := s.callJSON(t, "POST", "/sandboxes", body, &sb); code != 201 || sb.State != "running" {
			t.Fatalf("spawn %v: %d %+v", body, code, sb)
		}
		return sb.ID
	}
	// do sends one request and checks its status; a 409's message must
	// name the state.
	do := func(t *testing.T, method, path string, body any, want int, state string) {
		t.Helper()
		var out struct {
			State   string `json:"state"`
			Code    string `json:"code"`
			Message string `json:"message"`
		}
		code := s.callAny(t, method, path, body, &out)
		if code != want {
			t.Fatalf("%s %s: %d %+v, want %d", method, path, code, out, want)
		}
		switch {
		case want == 409 && (out.Code != "CONFLICT" || !strings.Contains(out.Message, "is "+state)):
			t.Errorf("%s %s: %+v, want a CONFLICT naming state %s", method, path, out, state)
		case want == 200 && state != "" && out.State != state:
			t.Errorf("%s %s: state %q, want %s", method, path, out.State, state)
		}
	}
	stateOf := func(id string) string {
		sb, err := st.GetSandbox(t.Context(), id)
		if err != nil {
			return "?" + err.Error()
		}
		return sb.State
	}
	waitState := func(t *testing.T, id, want string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for stateOf(id) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: state %s, want %s\n%s", id, stateOf(id), want, s.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	ctr := func(id string) string {
		out, err := exec.Command("docker", "inspect", "--format", "{{.State.Status}}", "stacyvm-"+id).CombinedOutput()
		if err != nil {
			return "gone"
		}
		return strings.TrimSpace(string(out))
	}
	sb := func(id string) string { return "/api/v1/sandboxes/" + id }

	// failedOp makes the provider's pause or resume fail: the container
	// stops (docker command) just before the request, so the record
	// returns to where it started; reconcile then finds it stopped. When
	// reconcile notices the stop before the request arrives (409 "is
	// stopped"), it tries again with a new sandbox.
	failedOp := func(t *testing.T, docker, op string) string {
		t.Helper()
		// Reconcile runs every 2 s (not more often: on a loaded machine
		// it would notice the stop first every time).
		for range 10 {
			id := spawn(t, map[string]any{})
			if op == "/resume" {
				do(t, "POST", sb(id)+"/pause", nil, 200, "paused")
			}
			args := append(strings.Fields(docker), "stacyvm-"+id)
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", docker, err, out)
			}
			var out struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			code := s.callAny(t, "POST", sb(id)+op, nil, &out)
			if code == 409 && strings.Contains(out.Message, "is stopped") {
				do(t, "DELETE", sb(id), nil, 200, "")
				continue // reconcile was first
			}
			if code < 400 || code == 500 {
				t.Fatalf("%s of a stopped container: %d %+v, want a clear error", op, code, out)
			}
			waitState(t, id, "stopped")
			do(t, "DELETE", sb(id), nil, 200, "")
			return id
		}
		t.Fatalf("reconcile always noticed the stop before the %s request", op)
		return ""
	}

	rows := []struct {
		name    string
		run     func(t *testing.T) string // returns the sandbox
		history []string
		ctr     string // the container at the end
	}{
		{"pause, resume, exec resumes, destroy", func(t *testing.T) string {
			id := spawn(t, map[string]any{})
			do(t, "POST", sb(id)+"/resume", nil, 409, "running")
			do(t, "POST", sb(id)+"/pause", nil, 200, "paused")
			if c := ctr(id); c != "paused" {
				t.Errorf("container %s after pause, want paused", c)
			}
			do(t, "POST", sb(id)+"/pause", nil, 409, "paused")
			do(t, "POST", sb(id)+"/extend", map[string]any{"ttl": "1h"}, 200, "paused")
			do(t, "POST", sb(id)+"/resume", nil, 200, "running")
			if c := ctr(id); c != "running" {
				t.Errorf("container %s after resume, want running", c)
			}
			do(t, "POST", sb(id)+"/pause", nil, 200, "paused")
			do(t, "POST", sb(id)+"/exec", map[string]any{"command": "echo hi"}, 200, "")
			do(t, "DELETE", sb(id), nil, 200, "")
			do(t, "DELETE", sb(id), nil, 404, "")
			do(t, "POST", sb(id)+"/exec", map[string]any{"command": "true"}, 404, "")
			do(t, "POST", sb(id)+"/resume", nil, 404, "")
			return id
		}, []string{"creating", "running", "pausing", "paused", "resuming", "running", "pausing", "paused",
			"resuming", "running", "destroying", "destroyed"}, "gone"},
		{"destroy while paused", func(t *testing.T) string {
			id := spawn(t, map[string]any{})
			do(t, "POST", sb(id)+"/pause", nil, 200, "paused")
			do(t, "DELETE", sb(id), nil, 200, "")
			return id
		}, []string{"creating", "running", "pausing", "paused", "destroying", "destroyed"}, "gone"},
		{"TTL expires", func(t *testing.T) string {
			id := spawn(t, map[string]any{"ttl": "2s"})
			waitState(t, id, "destroyed")
			return id
		}, []string{"creating", "running", "destroying", "destroyed"}, "gone"},
		{"idle pauses", func(t *testing.T) string {
			id := spawn(t, map[string]any{"idle_timeout": 1, "on_idle": "pause"})
			waitState(t, id, "paused")
			return id
		}, []string{"creating", "running", "pausing", "paused"}, "paused"},
		{"idle destroys", func(t *testing.T) string {
			id := spawn(t, map[string]any{"idle_timeout": 1, "on_idle": "destroy"})
			waitState(t, id, "destroyed")
			return id
		}, []string{"creating", "running", "destroying", "destroyed"}, "gone"},
		{"stopped behind the server's back", func(t *testing.T) string {
			id := spawn(t, map[string]any{})
			if out, err := exec.Command("docker", "stop", "-t", "1", "stacyvm-"+id).CombinedOutput(); err != nil {
				t.Fatalf("docker stop: %v %s", err, out)
			}
			waitState(t, id, "stopped")
			do(t, "POST", sb(id)+"/exec", map[string]any{"command": "true"}, 409, "stopped")
			do(t, "POST", sb(id)+"/pause", nil, 409, "stopped")
			do(t, "POST", sb(id)+"/extend", map[string]any{"ttl": "1h"}, 409, "stopped")
			do(t, "DELETE", sb(id), nil, 200, "")
			return id
		}, []string{"creating", "running", "stopped", "destroying", "destroyed"}, "gone"},
		{"pause fails: the container stopped behind the server's back", func(t *testing.T) string {
			return failedOp(t, "docker stop -t 0", "/pause")
		}, []string{"creating", "running", "pausing", "running", "stopped", "destroying", "destroyed"}, "gone"},
		{"resume fails: the paused container killed behind the server's back", func(t *testing.T) string {
			return failedOp(t, "docker kill", "/resume")
		}, []string{"creating", "running", "pausing", "paused", "resuming", "paused", "stopped", "destroying", "destroyed"}, "gone"},
		{"failed spawn", func(t *testing.T) string {
			// On a loopback registry that is not there: the pull fails
			// without leaving the machine.
			missing := "127.0.0.1:1/stacyvm/missing:" + randHex(4)
			before := s.ids(t, "?state=error")
			if code := s.callJSON(t, "POST", "/sandboxes", map[string]any{"image": missing}, nil); code < 400 || code == 500 {
				t.Fatalf("spawn of a missing image: %d, want a clear 4xx/5xx", code)
			}
			var id string
			for _, e := range s.ids(t, "?state=error") {
				if !slices.Contains(before, e) {
					id = e
				}
			}
			if id == "" {
				t.Fatal("no error record for the failed spawn")
			}
			do(t, "POST", sb(id)+"/exec", map[string]any{"command": "true"}, 409, "error")
			do(t, "POST", sb(id)+"/resume", nil, 409, "error")
			do(t, "DELETE", sb(id), nil, 200, "")
			return id
		}, []string{"creating", "error", "destroying", "destroyed"}, "gone"},
		{"adopted by reconcile", func(t *testing.T) string {
			// A running container of this instance without a record (a
			// spawn's runtime whose record was lost): the labels of a
			// live sandbox's container, under a new ID.
			donor := spawn(t, map[string]any{})
			out, err := exec.Command("docker", "inspect", "--format", "{{json .Config.Labels}}", "stacyvm-"+donor).Output()
			if err != nil {
				t.Fatal(err)
			}
			labels := map[string]string{}
			if err := json.Unmarshal(out, &labels); err != nil {
				t.Fatal(err)
			}
			do(t, "DELETE", sb(donor), nil, 200, "")
			// Reconcile (every 2 s) removes a container it catches
			// between docker run's create and start (never started: a
			// crashed spawn's), so a run it caught is tried again.
			for range 10 {
				id := "sb-" + randHex(12)
				labels["stacyvm.sandbox-id"] = id
				args := []string{"run", "-d", "--name", "stacyvm-" + id, "--network", "none"}
				for k, v := range labels {
					args = append(args, "--label", k+"="+v)
				}
				exec.Command("docker", append(args, image, "sleep", "3600")...).Run()
				deadline := time.Now().Add(30 * time.Second)
				for stateOf(id) != "running" && ctr(id) == "running" && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				if stateOf(id) == "running" {
					do(t, "DELETE", sb(id), nil, 200, "")
					return id
				}
				exec.Command("docker", "rm", "-f", "stacyvm-"+id).Run()
			}
			t.Fatal("a running container of this instance without a record was never adopted")
			return ""
		}, []string{"running", "destroying", "destroyed"}, "gone"},
		{"pool member claimed", func(t *testing.T) string {
			id := spawn(t, map[string]any{"memory_mb": 96})
			do(t, "DELETE", sb(id), nil, 200, "")
			return id
		}, []string{"creating", "pooled", "running", "destroying", "destroyed"}, "gone"},
	}
	// An empty pool whose policy is reject: 429 with Retry-After. Its one
	// member is claimed, and the claims that follow before the refill
	// finds it empty (a Docker spawn takes far longer than a request).
	t.Run("reject answers 429 with Retry-After", func(t *testing.T) {
		for i := range 5 {
			req, _ := http.NewRequest("POST", s.base+"/api/v1/sandboxes", strings.NewReader(`{"memory_mb": 80}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Code string `json:"code"`
				Hint string `json:"hint"`
			}
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == 201 {
				continue // a member: claimed
			}
			ra := resp.Header.Get("Retry-After")
			if n, err := strconv.Atoi(ra); resp.StatusCode != 429 || body.Code != "RESOURCE_LIMIT" || err != nil || n < 1 {
				t.Fatalf("claim %d from the empty pool: %d %+v, Retry-After %q; want 429 RESOURCE_LIMIT with whole seconds", i, resp.StatusCode, body, ra)
			}
			if p := s.pool(t, "rejecting"); p.Misses < 1 {
				t.Errorf("status after a rejected claim: %+v, want a miss", p)
			}
			return
		}
		t.Fatal("5 claims in a row from a pool of 1 all succeeded: never empty")
	})

	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			id := row.run(t)
			h, err := st.History(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tr := range h {
				got = append(got, tr.State)
			}
			if !slices.Equal(got, row.history) {
				t.Errorf("history %v, want %v", got, row.history)
			}
			if c := ctr(id); c != row.ctr {
				t.Errorf("container %s, want %s", c, row.ctr)
			}
		})
	}

	// Nothing leaked: once the pools are full again, the containers are
	// the live records and the members.
	s.waitFull(t, "lifecycle", 1, time.Minute)
	s.waitFull(t, "rejecting", 1, time.Minute)
	records := append(s.ids(t, ""), s.ids(t, "?state=pooled")...)
	ctrs := instanceContainers(t, instance)
	if len(ctrs) != len(records) {
		t.Errorf("dockerd holds %v; the records are %v", ctrs, records)
	}
	for _, id := range records {
		if _, ok := ctrs[id]; !ok {
			t.Errorf("record %s has no container", id)
		}
	}
}

// callAny is call that decodes the body whatever the status, errors
// included.
func (s *poolServer) callAny(t *testing.T, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Errorf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}
