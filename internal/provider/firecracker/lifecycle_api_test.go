//go:build linux

package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/api"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// apiServer is the real server stack (API with its middleware, Manager,
// SQLite) over one firecracker provider on the FAKE VMM.
type apiServer struct {
	t   *testing.T
	m   *orchestrator.Manager
	srv *httptest.Server
}

func newAPIServer(t *testing.T, db string, p *Provider, cfg orchestrator.Config) *apiServer {
	t.Helper()
	st, err := sqlite.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	reg := provider.NewRegistry()
	reg.Register(p)
	reg.SetDefault(p.Name())
	cfg.DefaultImage = testEnv.image
	cfg.InstanceID = "inst-fc-api-test"
	m := orchestrator.New(st, reg, cfg)
	if _, err := m.Reconcile(context.Background()); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	srv := httptest.NewServer(api.New(m, api.Options{}))
	s := &apiServer{t: t, m: m, srv: srv}
	t.Cleanup(func() { srv.Close(); st.Close() })
	return s
}

func (s *apiServer) call(method, path string, body any) (int, map[string]any) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.srv.URL+"/api/v1"+path, rd)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		s.t.Fatalf("%s %s: %d %s is not a JSON object", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

func (s *apiServer) want(method, path string, body any, status int, field, value string) map[string]any {
	s.t.Helper()
	code, out := s.call(method, path, body)
	if code != status || (field != "" && !strings.Contains(asString(out[field]), value)) {
		s.t.Fatalf("%s %s: %d %v; want %d with %s %q", method, path, code, out, status, field, value)
	}
	return out
}

func asString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestAPIPauseResumeFakeVMM drives pause, resume, auto-resume, an illegal
// transition, the idle sweeper and reconcile after a restart through the
// API against Firecracker's provider on the FAKE VMM.
func TestAPIPauseResumeFakeVMM(t *testing.T) {
	stateDir := shortDir(t)
	db := filepath.Join(t.TempDir(), "stacyvm.db")
	p1, _ := newFake(t, stateDir)
	s := newAPIServer(t, db, p1, orchestrator.Config{ReaperInterval: 50 * time.Millisecond})

	id := asString(s.want("POST", "/sandboxes", map[string]any{}, http.StatusCreated, "state", "running")["id"])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p1.Destroy(ctx, id)
	})
	sb := "/sandboxes/" + id
	s.want("POST", sb+"/exec", map[string]string{"command": "echo kept > /workspace/f"}, http.StatusOK, "exit_code", "0")
	s.want("POST", sb+"/pause", nil, http.StatusOK, "state", "paused")
	s.want("GET", sb, nil, http.StatusOK, "state", "paused")
	s.want("POST", sb+"/pause", nil, http.StatusConflict, "message", "is paused; cannot pause")
	// Exec resumes it first.
	s.want("POST", sb+"/exec", map[string]string{"command": "cat /workspace/f"}, http.StatusOK, "stdout", "kept")
	s.want("GET", sb, nil, http.StatusOK, "state", "running")
	s.want("POST", sb+"/resume", nil, http.StatusConflict, "message", "is running; cannot resume")

	// Paused when the server stops; a new server (a new provider on the
	// same state, the same database) finds it paused, then resumes it.
	s.want("POST", sb+"/pause", nil, http.StatusOK, "state", "paused")
	s.srv.Close()
	p1.Close()
	p2, _ := newFake(t, stateDir)
	s2 := newAPIServer(t, db, p2, orchestrator.Config{ReaperInterval: 50 * time.Millisecond})
	s2.want("GET", sb, nil, http.StatusOK, "state", "paused")
	s2.want("POST", sb+"/resume", nil, http.StatusOK, "state", "running")
	s2.want("POST", sb+"/exec", map[string]string{"command": "cat /workspace/f"}, http.StatusOK, "stdout", "kept")

	// Idle: the sweeper pauses it; destroy works on a paused VM.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s2.m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	idle := asString(s2.want("POST", "/sandboxes", map[string]any{"idle_timeout": 1}, http.StatusCreated, "on_idle", "pause")["id"])
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, out := s2.call("GET", "/sandboxes/"+idle, nil)
		if out["state"] == "paused" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the idle sandbox was not paused within 30s: %v", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	s2.want("DELETE", "/sandboxes/"+idle, nil, http.StatusOK, "", "")
	s2.want("DELETE", sb, nil, http.StatusOK, "", "")

	h, err := s2.m.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, tr := range h {
		states = append(states, tr.State)
	}
	want := []string{"creating", "running", "pausing", "paused", "resuming", "running", "pausing", "paused",
		"resuming", "running", "destroying", "destroyed"}
	if !slices.Equal(states, want) {
		t.Errorf("history %v, want %v", states, want)
	}
}
