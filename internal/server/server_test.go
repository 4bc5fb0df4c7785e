package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/config"
)

func testConfig(t *testing.T, dir string) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Store.Path = filepath.Join(dir, "stacyvm.db")
	cfg.Mock.Dir = filepath.Join(dir, "mock")
	cfg.Provider.Enabled = []string{"mock"}
	cfg.Server.ShutdownTimeout = 5 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// start serves cfg on a loopback port and returns its base URL and a stop
// function that shuts it down as SIGTERM would and waits.
func start(t *testing.T, cfg *config.Config, logs io.Writer) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)), ln) }()
	base := "http://" + ln.Addr().String()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("server did not stop")
		}
	}
	t.Cleanup(stop)
	return base, stop
}

func call(t *testing.T, method, url string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

// TestRestartKeepsSandboxesUsable runs the server, spawns, stops it the
// way SIGTERM does, starts it again on the same store and mock directory,
// and uses the sandbox: reconcile found it alive.
func TestRestartKeepsSandboxesUsable(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	var logs bytes.Buffer
	base, stop := start(t, cfg, &logs)

	var sb struct{ ID, State string }
	if code := call(t, "POST", base+"/api/v1/sandboxes", map[string]any{"image": "any"}, &sb); code != 201 {
		t.Fatalf("spawn: %d", code)
	}
	stop()
	if !strings.Contains(logs.String(), "NOT isolated") && !strings.Contains(logs.String(), "no isolation") {
		t.Errorf("the mock-only server must warn loudly; logs:\n%s", logs.String())
	}

	base2, _ := start(t, cfg, io.Discard)
	var res struct {
		ExitCode int    `json:"exit_code"`
		Stdout   string `json:"stdout"`
	}
	if code := call(t, "POST", base2+"/api/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"command": "echo back"}, &res); code != 200 || res.Stdout != "back\n" {
		t.Fatalf("exec after restart: %d %+v", code, res)
	}
	var health struct{ Status string }
	if code := call(t, "GET", base2+"/api/v1/health", nil, &health); code != 200 || health.Status != "ok" {
		t.Fatalf("health: %d %+v", code, health)
	}
	resp, err := http.Get(base2 + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"stacyvm_sandboxes", "stacyvm_reconcile_actions_total"} {
		if !strings.Contains(string(metricsText), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestShutdownDrainsInFlightExec(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	base, stop := start(t, cfg, io.Discard)
	var sb struct{ ID string }
	call(t, "POST", base+"/api/v1/sandboxes", map[string]any{"image": "any"}, &sb)

	type result struct {
		code int
		out  string
	}
	got := make(chan result, 1)
	go func() {
		var res struct{ Stdout string }
		code := call(t, "POST", base+"/api/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"command": "sleep 1; echo finished"}, &res)
		got <- result{code, res.Stdout}
	}()
	time.Sleep(300 * time.Millisecond) // the exec is in flight
	stop()
	r := <-got
	if r.code != 200 || r.out != "finished\n" {
		t.Fatalf("in-flight exec was not drained: %d %q", r.code, r.out)
	}
}

func TestDoctorReportsEveryProvider(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	checks := Doctor(context.Background(), cfg)
	var mockCheck *Check
	for i := range checks {
		if checks[i].Provider == "mock" {
			mockCheck = &checks[i]
		}
		if !checks[i].Available && checks[i].Problem == "" {
			t.Errorf("%s unavailable without a reason", checks[i].Provider)
		}
	}
	if mockCheck == nil || !mockCheck.Available || mockCheck.Warning == "" || mockCheck.Isolation != "none" {
		t.Fatalf("mock check = %+v", mockCheck)
	}
}

func TestShutdownEndsEventStreams(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	base, stop := start(t, cfg, io.Discard)
	resp, err := http.Get(base + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 64)
	if _, err := resp.Body.Read(first); err != nil {
		t.Fatalf("no opening comment: %v", err)
	}
	t0 := time.Now()
	stop() // must not wait for shutdown_timeout (5s here) on the open stream
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("shutdown waited %v for an event stream", d)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Logf("stream ended with %v", err)
	}
}

// TestMockNeverImplicit: a configuration that does not name the mock never
// loads it, and both GET /providers and doctor say how to enable it.
func TestMockNeverImplicit(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.Provider.Enabled = []string{"custom"} // declines: no custom.url
	base, _ := start(t, cfg, io.Discard)

	var provs []struct{ Name, Problem string }
	if code := call(t, "GET", base+"/api/v1/providers", nil, &provs); code != 200 {
		t.Fatalf("providers: %d", code)
	}
	found := false
	for _, p := range provs {
		if p.Name == "mock" {
			found = true
			if !strings.Contains(p.Problem, "not loaded") || !strings.Contains(p.Problem, "provider.enabled: [mock]") {
				t.Errorf("mock problem = %q; must say it is not loaded and how to enable it", p.Problem)
			}
		}
	}
	if !found {
		t.Errorf("GET /providers does not list the mock: %+v", provs)
	}
	var errBody struct{ Code, Message string }
	if code := call(t, "POST", base+"/api/v1/sandboxes", map[string]any{"image": "any"}, &errBody); code != http.StatusServiceUnavailable {
		t.Fatalf("spawn with no provider loaded: %d %+v; want 503", code, errBody)
	}

	cfg.Provider.Enabled = nil
	for _, c := range Doctor(context.Background(), cfg) {
		if c.Provider == "mock" && (c.Available || !strings.Contains(c.Problem, "provider.default: mock")) {
			t.Errorf("doctor's mock check = %+v; must say it is not loaded and how to enable it", c)
		}
	}
	cfg.Provider.Default = "mock"
	if !MockNamed(cfg) {
		t.Error("provider.default: mock must load the mock")
	}
}

// TestHostPaths: the API learns the server's own files and directories,
// so that no message shows them.
func TestHostPaths(t *testing.T) {
	cfg := config.Default()
	dir := t.TempDir()
	cfg.Store.Path = filepath.Join(dir, "db", "stacyvm.db")
	cfg.Mock.Dir = filepath.Join(dir, "mock")
	cfg.Proot.StateDir = filepath.Join(dir, "proot")
	cfg.Docker.Host = "unix:///srv/run/docker.sock"
	cfg.Proot.Binary = "proot" // looked up on PATH: not a path of ours
	got := hostPaths(cfg)
	for _, want := range []string{cfg.Store.Path, filepath.Dir(cfg.Store.Path), cfg.Mock.Dir, cfg.Proot.StateDir, "/srv/run/docker.sock"} {
		if !slices.Contains(got, want) {
			t.Errorf("hostPaths lacks %s: %v", want, got)
		}
	}
	if slices.Contains(got, "proot") {
		t.Errorf("hostPaths lists a bare command name: %v", got)
	}
}

// TestServersKeepToTheirOwnSandboxes: two servers with their own
// databases and no mock.dir set get state directories of their own, so
// the second (with sandbox.orphans: destroy) neither adopts nor removes
// the first one's sandbox, which is usable when the first comes back.
func TestServersKeepToTheirOwnSandboxes(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // the mock's base directory, for this test only
	newCfg := func(db string) *config.Config {
		cfg := testConfig(t, t.TempDir())
		cfg.Store.Path = db
		cfg.Mock.Dir = ""
		cfg.Sandbox.Orphans = config.OrphansDestroy
		return cfg
	}
	dbA := filepath.Join(t.TempDir(), "a.db")
	cfgA := newCfg(dbA)
	base, stop := start(t, cfgA, io.Discard)
	var sb struct{ ID, State string }
	if code := call(t, "POST", base+"/api/v1/sandboxes", map[string]any{"image": "any"}, &sb); code != 201 {
		t.Fatalf("spawn: %d", code)
	}
	stop()

	baseB, stopB := start(t, newCfg(filepath.Join(t.TempDir(), "b.db")), io.Discard)
	var list []struct{ ID string }
	if code := call(t, "GET", baseB+"/api/v1/sandboxes", nil, &list); code != 200 || len(list) != 0 {
		t.Fatalf("the second server lists %d sandboxes (%d); it must not adopt the first's", len(list), code)
	}
	stopB()

	baseA, _ := start(t, newCfg(dbA), io.Discard)
	var res struct{ Stdout string }
	if code := call(t, "POST", baseA+"/api/v1/sandboxes/"+sb.ID+"/exec", map[string]any{"command": "echo back"}, &res); code != 200 || res.Stdout != "back\n" {
		t.Fatalf("the first server's sandbox after the second ran: %d %q", code, res.Stdout)
	}
	dirs, _ := filepath.Glob(filepath.Join(config.MockBaseDir(), "inst-*"))
	if len(dirs) != 2 {
		t.Errorf("mock state directories = %v; want one per server instance", dirs)
	}
}

func TestInstanceDirsAreTheInstancesOwn(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "")
	a := InstanceDirs(config.Default(), "inst-a")
	b := InstanceDirs(config.Default(), "inst-b")
	for name, dirs := range map[string][2]string{
		"mock":                  {a.Mock.Dir, b.Mock.Dir},
		"firecracker sandboxes": {a.Firecracker.SandboxesDir, b.Firecracker.SandboxesDir},
	} {
		if dirs[0] == "" || dirs[0] == dirs[1] {
			t.Errorf("%s: instances get %q and %q, want two different directories", name, dirs[0], dirs[1])
		}
	}
	if want := "/run/stacyvm/firecracker/sandboxes/inst-a"; a.Firecracker.SandboxesDir != want {
		t.Errorf("firecracker sandboxes dir = %q, want %q", a.Firecracker.SandboxesDir, want)
	}
	// Images and snapshots stay shared with build-image.
	if a.Firecracker.StateDir != "" {
		t.Errorf("state_dir changed to %q", a.Firecracker.StateDir)
	}
	set := config.Default()
	set.Firecracker.SandboxesDir = "/srv/fc-vms"
	if got := InstanceDirs(set, "inst-a").Firecracker.SandboxesDir; got != "/srv/fc-vms" {
		t.Errorf("a configured sandboxes_dir became %q", got)
	}
}

// TestDashboardIsServed: the dashboard is at / and under /ui/, public
// (its page asks for the key), behind the same Host check as the API;
// every other path is still the API's, key included.
func TestDashboardIsServed(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Server.APIKey = "dash-key"
	base, _ := start(t, cfg, io.Discard)
	for _, tc := range []struct {
		path, host  string
		status      int
		contentType string
	}{
		{"/", "", http.StatusOK, "text/html; charset=utf-8"},
		{"/ui/app/main.js", "", http.StatusOK, "text/javascript; charset=utf-8"},
		{"/api/v1/health", "", http.StatusOK, "application/json"},
		{"/api/v1/sandboxes", "", http.StatusUnauthorized, "application/json"},
		{"/nope", "", http.StatusUnauthorized, "application/json"}, // the API's, behind its key
		{"/", "evil.example", http.StatusMisdirectedRequest, "application/json"},
		{"/ui/app/main.js", "evil.example", http.StatusMisdirectedRequest, "application/json"},
	} {
		req, _ := http.NewRequest(http.MethodGet, base+tc.path, nil)
		if tc.host != "" {
			req.Host = tc.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.contentType {
			t.Errorf("GET %s (Host %q): %d %s, want %d %s", tc.path, tc.host, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.contentType)
		}
	}
}
