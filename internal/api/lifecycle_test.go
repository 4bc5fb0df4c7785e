package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
)

// states returns the states of a sandbox's history, oldest first.
func (e *testEnv) states(id string) []string {
	e.t.Helper()
	h, err := e.m.History(context.Background(), id)
	if err != nil {
		e.t.Fatalf("history of %s: %v", id, err)
	}
	var out []string
	for _, tr := range h {
		out = append(out, tr.State)
	}
	return out
}

func (e *testEnv) state(id string) string {
	e.t.Helper()
	var sb sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+id, nil), http.StatusOK, &sb)
	return sb.State
}

// conflict expects a 409 whose message has want in it.
func (e *testEnv) conflict(resp *http.Response, want string) errorBody {
	e.t.Helper()
	body := e.expectError(resp, http.StatusConflict, "CONFLICT")
	if !strings.Contains(body.Message, want) {
		e.t.Errorf("%s %s: message %q, want it to say %q", resp.Request.Method, resp.Request.URL.Path, body.Message, want)
	}
	return body
}

// runManager runs the Manager's background loops (reaper, idle sweeper,
// reconcile) until the test ends.
func (e *testEnv) runManager() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.m.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

// TestPauseResume walks running → pausing → paused → resuming → running
// through the API, and checks that the lifecycle refuses what the state
// does not allow with a 409 that says so.
func TestPauseResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID

	var got sandboxJSON
	e.expectJSON(e.call("POST", base+"/pause", nil), http.StatusOK, &got)
	if got.State != "paused" || e.state(sb.ID) != "paused" {
		t.Fatalf("after pause: returned %q, GET says %q", got.State, e.state(sb.ID))
	}
	e.conflict(e.call("POST", base+"/pause", map[string]any{}), "sandbox "+sb.ID+" is paused; cannot pause")
	// The TTL keeps running while paused, and can be extended.
	e.expectJSON(e.call("POST", base+"/extend", map[string]string{"ttl": "2h"}), http.StatusOK, &got)
	if got.State != "paused" {
		t.Errorf("extend changed the state to %q", got.State)
	}

	e.expectJSON(e.call("POST", base+"/resume", nil), http.StatusOK, &got)
	if got.State != "running" {
		t.Fatalf("after resume: %q", got.State)
	}
	e.conflict(e.call("POST", base+"/resume", nil), "sandbox "+sb.ID+" is running; cannot resume")
	e.expectError(e.call("POST", base+"/pause", `{"now":true}`), http.StatusBadRequest, "BAD_REQUEST")

	var res execResultJSON
	e.expectJSON(e.call("POST", base+"/exec", map[string]string{"command": "echo thawed"}), http.StatusOK, &res)
	if res.Stdout != "thawed\n" {
		t.Errorf("exec after resume: %+v", res)
	}
	want := []string{"creating", "running", "pausing", "paused", "resuming", "running"}
	if got := e.states(sb.ID); !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
	e.expectJSON(e.call("DELETE", base, nil), http.StatusOK, nil)
	if got, want := e.states(sb.ID), append(want, "destroying", "destroyed"); !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}

	// Every transition is counted by the metrics.
	b := string(readAll(t, e.call("GET", "/metrics", nil)))
	for _, tr := range [][2]string{{"running", "pausing"}, {"pausing", "paused"}, {"paused", "resuming"},
		{"resuming", "running"}, {"running", "destroying"}, {"destroying", "destroyed"}, {"creating", "running"}} {
		line := fmt.Sprintf(`stacyvm_sandbox_transitions_total{from=%q,to=%q} `, tr[0], tr[1])
		if !strings.Contains(b, line) {
			t.Errorf("metrics lack %s", line)
		}
	}

	e.expectError(e.call("POST", "/api/v1/sandboxes/sb-000000000000000000000000/pause", nil), http.StatusNotFound, "NOT_FOUND")
	e.expectError(e.call("POST", base+"/resume", nil), http.StatusNotFound, "SANDBOX_DESTROYED")
}

// TestGuestOperationsResumePausedSandbox: exec and file operations on a
// paused sandbox resume it first; the paused command it held continues.
func TestGuestOperationsResumePausedSandbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID
	e.expectJSON(e.call("POST", base+"/files", map[string]string{"path": "/workspace/a.txt", "content": "kept"}), http.StatusOK, nil)

	e.expectJSON(e.call("POST", base+"/pause", nil), http.StatusOK, nil)
	var res execResultJSON
	e.expectJSON(e.call("POST", base+"/exec", map[string]string{"command": "cat a.txt"}), http.StatusOK, &res)
	if res.Stdout != "kept" || e.state(sb.ID) != "running" {
		t.Fatalf("exec on a paused sandbox: %+v, state %s", res, e.state(sb.ID))
	}

	e.expectJSON(e.call("POST", base+"/pause", nil), http.StatusOK, nil)
	b := readAll(t, e.call("GET", base+"/files?path=/workspace/a.txt", nil))
	if !strings.Contains(string(b), "kept") || e.state(sb.ID) != "running" {
		t.Fatalf("file read on a paused sandbox: %s, state %s", b, e.state(sb.ID))
	}
	h, err := e.m.History(context.Background(), sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, tr := range h {
		if tr.State == "resuming" {
			reasons = append(reasons, tr.Reason)
		}
	}
	if want := []string{"resumed to exec", "resumed to read a file"}; !slices.Equal(reasons, want) {
		t.Errorf("resume reasons %q, want %q", reasons, want)
	}
}

// TestManualResume: with auto-resume off, guest operations on a paused
// sandbox are a 409 that says to resume it.
func TestManualResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *orchestrator.Config) { c.ManualResume = true }))
	sb := e.spawn(nil)
	base := "/api/v1/sandboxes/" + sb.ID
	e.expectJSON(e.call("POST", base+"/pause", nil), http.StatusOK, nil)
	body := e.conflict(e.call("POST", base+"/exec", map[string]string{"command": "true"}), "is paused; cannot exec")
	if !strings.Contains(body.Hint, "/resume") {
		t.Errorf("hint %q does not say how to resume", body.Hint)
	}
	e.conflict(e.call("POST", base+"/files", map[string]string{"path": "/workspace/x", "content": "x"}), "is paused; cannot write a file")
	if s := e.state(sb.ID); s != "paused" {
		t.Errorf("state %s, want still paused", s)
	}
}

// noPause is the mock without the pause capability.
type noPause struct{ *mock.Provider }

func (p noPause) Capabilities() provider.Capabilities {
	c := p.Provider.Capabilities()
	c.Pause = false
	return c
}

func TestPauseUnsupportedIs501(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *envSetup) {
		mp, err := mock.New(mock.Options{Dir: s.dir + "/nopause", Name: "nopause"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mp.Close() })
		s.reg.Register(noPause{mp})
	})
	sb := e.spawn(map[string]any{"provider": "nopause"})
	body := e.expectError(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/pause", nil), http.StatusNotImplemented, "UNIMPLEMENTED")
	if !strings.Contains(body.Message, "cannot pause") {
		t.Errorf("message %q", body.Message)
	}
	// An idle timeout that would pause is refused at spawn; destroy works.
	e.expectError(e.call("POST", "/api/v1/sandboxes", map[string]any{"provider": "nopause", "idle_timeout": 60}),
		http.StatusNotImplemented, "UNIMPLEMENTED")
	e.spawn(map[string]any{"provider": "nopause", "idle_timeout": 60, "on_idle": "destroy"})
}

// TestIllegalTransitions: operations a sandbox's state does not allow
// (creating, error) are 409s naming the state and the operation.
func TestIllegalTransitions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	// creating: a slow spawn owns the record.
	e.mock.SetSpawnDelay(3 * time.Second)
	spawned := make(chan sandboxJSON, 1)
	go func() {
		var sb sandboxJSON
		e.expectJSON(e.call("POST", "/api/v1/sandboxes", nil), http.StatusCreated, &sb)
		spawned <- sb
	}()
	var creating []sandboxJSON
	e.waitFor("a sandbox in state creating", func() bool {
		e.expectJSON(e.call("GET", "/api/v1/sandboxes?state=creating", nil), http.StatusOK, &creating)
		return len(creating) == 1
	})
	base := "/api/v1/sandboxes/" + creating[0].ID
	e.conflict(e.call("DELETE", base, nil), "is creating; cannot destroy")
	e.conflict(e.call("POST", base+"/pause", nil), "is creating; cannot pause")
	e.conflict(e.call("POST", base+"/exec", map[string]string{"command": "true"}), "is creating; cannot exec")
	e.conflict(e.call("POST", base+"/extend", map[string]string{"ttl": "1h"}), "is creating; cannot extend")
	sb := <-spawned
	e.mock.SetSpawnDelay(0)

	// error: reconcile finds the provider down.
	e.mock.SetHealth(fmt.Errorf("down for the test"))
	if _, err := e.m.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	e.mock.SetHealth(nil)
	base = "/api/v1/sandboxes/" + sb.ID
	if s := e.state(sb.ID); s != "error" {
		t.Fatalf("state %s after reconcile with the provider down, want error", s)
	}
	e.conflict(e.call("POST", base+"/exec", map[string]string{"command": "true"}), "is error")
	e.conflict(e.call("POST", base+"/pause", nil), "cannot pause")
	e.conflict(e.call("POST", base+"/resume", nil), "cannot resume")
	e.conflict(e.call("POST", base+"/extend", map[string]string{"ttl": "1h"}), "cannot extend")
	// error → running once the runtime answers again.
	if _, err := e.m.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	if s := e.state(sb.ID); s != "running" {
		t.Fatalf("state %s after the provider recovered, want running", s)
	}
	want := []string{"creating", "running", "error", "running"}
	if got := e.states(sb.ID); !slices.Equal(got, want) {
		t.Errorf("history %v, want %v", got, want)
	}
}

// TestIdleTimeout: idle sandboxes are paused or destroyed by the sweeper;
// a running command is activity, so a busy sandbox is left alone.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *orchestrator.Config) { c.ReaperInterval = 50 * time.Millisecond }))
	e.runManager()

	e.expectError(e.call("POST", "/api/v1/sandboxes", map[string]any{"idle_timeout": 5, "on_idle": "sleep"}), http.StatusBadRequest, "BAD_REQUEST")
	e.expectError(e.call("POST", "/api/v1/sandboxes", map[string]any{"idle_timeout": -1}), http.StatusBadRequest, "BAD_REQUEST")

	pausing := e.spawn(map[string]any{"idle_timeout": 1, "on_idle": "pause"})
	destroying := e.spawn(map[string]any{"idle_timeout": 1, "on_idle": "destroy"})
	if pausing.IdleTimeout != 1 || pausing.OnIdle != "pause" {
		t.Errorf("spawned %+v; want idle_timeout 1, on_idle pause", pausing)
	}
	busy := e.spawn(map[string]any{"idle_timeout": 1})

	// A command running three times the idle timeout keeps its sandbox
	// busy: were it paused under the command, the exec would never end.
	var res execResultJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+busy.ID+"/exec", map[string]string{"command": "sleep 3; echo done"}), http.StatusOK, &res)
	if res.Stdout != "done\n" {
		t.Errorf("busy exec: %+v", res)
	}
	if got := e.states(busy.ID); slices.Contains(got, "pausing") {
		t.Errorf("the sandbox was paused while its command ran: %v", got)
	}

	e.waitFor("the idle sandbox to be paused", func() bool { return e.state(pausing.ID) == "paused" })
	e.waitFor("the idle sandbox to be destroyed", func() bool {
		resp := e.call("GET", "/api/v1/sandboxes/"+destroying.ID, nil)
		readAll(t, resp)
		return resp.StatusCode == http.StatusNotFound
	})
	h, _ := e.m.History(context.Background(), destroying.ID)
	if last := h[len(h)-1]; last.State != "destroyed" || last.Reason != "idle for 1s" {
		t.Errorf("last history entry of the idle-destroyed sandbox: %+v", last)
	}
	b := string(readAll(t, e.call("GET", "/metrics", nil)))
	for _, line := range []string{`stacyvm_idle_actions_total{action="pause"} `, `stacyvm_idle_actions_total{action="destroy"} `} {
		if !strings.Contains(b, line) {
			t.Errorf("metrics lack %s", line)
		}
	}
	// The paused one resumes on use.
	e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+pausing.ID+"/exec", map[string]string{"command": "echo back"}), http.StatusOK, &res)
	if res.Stdout != "back\n" {
		t.Errorf("exec on the idle-paused sandbox: %+v", res)
	}

	// A template's idle settings apply to its sandboxes.
	var tmpl templateJSON
	e.expectJSON(e.call("POST", "/api/v1/templates", map[string]any{"name": "idler", "image": "test-image",
		"idle_timeout": 1, "on_idle": "destroy"}), http.StatusCreated, &tmpl)
	if tmpl.IdleTimeout != 1 || tmpl.OnIdle == nil || *tmpl.OnIdle != "destroy" {
		t.Errorf("template %+v", tmpl)
	}
	e.expectError(e.call("POST", "/api/v1/templates", map[string]any{"name": "bad", "image": "x", "on_idle": "nap"}),
		http.StatusBadRequest, "BAD_REQUEST")
	var fromTmpl sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/templates/idler/spawn", nil), http.StatusCreated, &fromTmpl)
	if fromTmpl.IdleTimeout != 1 || fromTmpl.OnIdle != "destroy" {
		t.Errorf("sandbox from the template: %+v", fromTmpl)
	}
	e.waitFor("the template's idle sandbox to be destroyed", func() bool {
		resp := e.call("GET", "/api/v1/sandboxes/"+fromTmpl.ID, nil)
		readAll(t, resp)
		return resp.StatusCode == http.StatusNotFound
	})
}
