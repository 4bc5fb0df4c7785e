package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/envs"
	"github.com/stacyvm/stacyvm/internal/metrics"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// testEnv is the real stack: the API over a Manager over an SQLite file
// and the mock provider, served by httptest.
type testEnv struct {
	t       testing.TB
	srv     *httptest.Server
	m       *orchestrator.Manager
	mock    *mock.Provider
	mockDir string
	met     *metrics.Metrics
	logs    *syncWriter
	st      *sqlite.Store
	stOnce  sync.Once
	opts    Options
}

type envSetup struct {
	cfg  orchestrator.Config
	opts Options
	reg  *provider.Registry
	dir  string // the test's temporary directory
	// server is applied to the http.Server before it starts.
	server func(*http.Server)
	// environments, when set, makes the environments service over the
	// test's store.
	environments func(*sqlite.Store) *envs.Service
}

type envOption func(*envSetup)

func withOptions(f func(*Options)) envOption {
	return func(s *envSetup) { f(&s.opts) }
}

func withConfig(f func(*orchestrator.Config)) envOption {
	return func(s *envSetup) { f(&s.cfg) }
}

func newEnv(t testing.TB, options ...envOption) *testEnv {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "stacyvm.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	mockDir := filepath.Join(dir, "mock")
	mp, err := mock.New(mock.Options{Dir: mockDir})
	if err != nil {
		t.Fatalf("mock provider: %v", err)
	}
	reg := provider.NewRegistry()
	reg.Register(mp)
	reg.SetDefault("mock")

	logs := &syncWriter{w: &bytes.Buffer{}}
	met := metrics.New(nil)
	cfg := orchestrator.Config{DefaultImage: "test-image", Observer: met}
	opts := Options{
		// The server lists its own directories (internal/server's
		// hostPaths); here everything lives under the test's directory.
		HostPaths: []string{dir},
		Version:   "v-test",
		Logger:    slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics:   met,
	}
	setup := &envSetup{cfg: cfg, opts: opts, reg: reg, dir: dir}
	for _, o := range options {
		o(setup)
	}
	cfg, opts = setup.cfg, setup.opts
	if setup.environments != nil {
		svc := setup.environments(st)
		opts.Environments, cfg.Environments = svc, svc
	}
	m := orchestrator.New(st, reg, cfg)
	met.SetSandboxCounter(m)
	srv := httptest.NewUnstartedServer(New(m, opts))
	if setup.server != nil {
		setup.server(srv.Config)
	}
	srv.Start()
	e := &testEnv{t: t, srv: srv, m: m, mock: mp, mockDir: mockDir, met: met, logs: logs, opts: opts, st: st}
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = mp.Close()
		e.closeStore()
	})
	return e
}

// syncWriter lets the handlers of concurrent requests share one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func (e *testEnv) closeStore() { e.stOnce.Do(func() { _ = e.st.Close() }) }

// call sends a request; body may be nil, a string (sent as is), []byte,
// or anything else (sent as JSON).
func (e *testEnv) call(method, path string, body any, headers ...string) *http.Response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatalf("marshal: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatalf("new request: %v", err)
	}
	if rd != nil {
		ct := "application/json"
		if strings.HasSuffix(req.URL.Path, "/files/raw") {
			ct = "application/octet-stream"
		}
		req.Header.Set("Content-Type", ct)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if e.opts.APIKey != "" && req.Header.Get("X-API-Key") == "" {
		req.Header.Set("X-API-Key", e.opts.APIKey)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// readAll reads and closes a response body.
func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

// expectJSON checks the status and decodes the body into v.
func (e *testEnv) expectJSON(resp *http.Response, status int, v any) {
	e.t.Helper()
	b := readAll(e.t, resp)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		e.t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			e.t.Fatalf("decode %s: %v", b, err)
		}
	}
}

// expectError checks an error response against the contract: status, code,
// a request ID that matches the header, a message, and no host path.
func (e *testEnv) expectError(resp *http.Response, status int, code string) errorBody {
	e.t.Helper()
	b := readAll(e.t, resp)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL, resp.StatusCode, status, b)
	}
	var body errorBody
	if err := json.Unmarshal(b, &body); err != nil {
		e.t.Fatalf("error body %q is not JSON: %v", b, err)
	}
	if body.Code != code {
		e.t.Errorf("%s %s: code %q, want %q (message %q)", resp.Request.Method, resp.Request.URL, body.Code, code, body.Message)
	}
	if body.Message == "" {
		e.t.Errorf("error body has no message: %s", b)
	}
	if body.RequestID == "" || body.RequestID != resp.Header.Get("X-Request-ID") {
		e.t.Errorf("request_id %q, X-Request-ID header %q", body.RequestID, resp.Header.Get("X-Request-ID"))
	}
	e.noHostPath(b)
	return body
}

// noHostPath fails when b mentions the mock's directory on the host.
func (e *testEnv) noHostPath(b []byte) {
	e.t.Helper()
	if bytes.Contains(b, []byte(e.mockDir)) || bytes.Contains(b, []byte(filepath.Dir(e.mockDir))) {
		e.t.Errorf("response leaks a host path: %s", b)
	}
}

// spawn creates a sandbox and returns it.
func (e *testEnv) spawn(body any) sandboxJSON {
	e.t.Helper()
	var sb sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", body), http.StatusCreated, &sb)
	return sb
}

func (e *testEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
