package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/events"
)

func TestProviders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) {
		o.ProviderConfigs = map[string]map[string]any{"mock": {"dir": "[redacted]", "answer": 42}}
	}))
	e.spawn(nil)

	var list []map[string]json.RawMessage
	e.expectJSON(e.call("GET", "/api/v1/providers", nil), http.StatusOK, &list)
	if len(list) != 1 {
		t.Fatalf("providers = %v", list)
	}
	for _, f := range []string{"name", "healthy", "default", "capabilities"} {
		if _, ok := list[0][f]; !ok {
			t.Errorf("provider JSON lacks %q", f)
		}
	}
	// Decoded as a client sees it: capabilities is a plain object.
	var p struct {
		Name         string         `json:"name"`
		Healthy      bool           `json:"healthy"`
		Default      bool           `json:"default"`
		SandboxCount int            `json:"sandbox_count"`
		Capabilities map[string]any `json:"capabilities"`
		Config       map[string]any `json:"config"`
		Problem      string         `json:"problem"`
	}
	e.expectJSON(e.call("GET", "/api/v1/providers/mock", nil), http.StatusOK, &p)
	if p.Name != "mock" || !p.Healthy || !p.Default || p.SandboxCount != 1 || p.Config["answer"] != float64(42) {
		t.Errorf("provider = %+v", p)
	}
	if p.Capabilities["isolation"] != "none" || p.Capabilities["streaming"] != true {
		t.Errorf("capabilities = %v", p.Capabilities)
	}
	e.expectError(e.call("GET", "/api/v1/providers/nope", nil), http.StatusNotFound, codeNotFound)

	var tested map[string]bool
	e.expectJSON(e.call("POST", "/api/v1/providers/test", nil), http.StatusOK, &tested)
	if len(tested) != 1 || !tested["mock"] {
		t.Errorf("test = %v", tested)
	}
	e.mock.SetHealth(errors.New("daemon stopped"))
	e.expectJSON(e.call("POST", "/api/v1/providers/test", nil), http.StatusOK, &tested)
	if tested["mock"] {
		t.Errorf("test with the runtime down = %v", tested)
	}
	e.expectJSON(e.call("GET", "/api/v1/providers/mock", nil), http.StatusOK, &p)
	if p.Healthy || p.Problem == "" || len(p.Config) != 2 {
		t.Errorf("unhealthy provider = %+v", p)
	}
}

func TestSystemEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	var snaps []snapshotJSON
	e.expectJSON(e.call("GET", "/api/v1/snapshots", nil), http.StatusOK, &snaps)
	if snaps == nil || len(snaps) != 0 {
		t.Errorf("snapshots = %#v, want []", snaps)
	}

	raw := readAll(t, e.call("GET", "/api/v1/pool/status", nil))
	if strings.TrimSpace(string(raw)) != `{"enabled":false,"vms":0,"max_vms":0,"total_users":0,"max_users_per_vm":0,"pools":[]}` {
		t.Errorf("pool = %s", raw)
	}

	var h healthJSON
	e.expectJSON(e.call("GET", "/api/v1/health", nil), http.StatusOK, &h)
	if h.Status != "ok" || h.Version != "v-test" {
		t.Errorf("health = %+v", h)
	}
	if _, err := time.ParseDuration(h.Uptime); err != nil {
		t.Errorf("uptime %q: %v", h.Uptime, err)
	}

	sb := e.spawn(nil)
	e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"true"}`), http.StatusOK, nil)
	var m metricsJSON
	e.expectJSON(e.call("GET", "/api/v1/metrics", nil), http.StatusOK, &m)
	if m.SandboxesByState["running"] != 1 || m.SandboxesActive != 1 || m.SandboxesByProvider["mock"] != 1 ||
		m.SpawnsTotal != 1 || m.ExecsTotal != 1 || m.EventsPublished == 0 || len(m.ProvidersLoaded) != 1 {
		t.Errorf("metrics = %+v", m)
	}
	if _, err := time.ParseDuration(m.Uptime); err != nil {
		t.Errorf("metrics uptime %q", m.Uptime)
	}

	resp := e.call("GET", "/api/v1/openapi.yaml", nil)
	if b := readAll(t, resp); resp.StatusCode != 200 || !strings.HasPrefix(string(b), "openapi: 3.") {
		t.Errorf("openapi.yaml: %d %q", resp.StatusCode, b[:min(len(b), 40)])
	}
}

func TestPrometheus(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"sleep 5","timeout":"100ms"}`).Body.Close()
	e.call("GET", "/no/such/route", nil).Body.Close()

	resp := e.call("GET", "/metrics", nil)
	text := string(readAll(t, resp))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`stacyvm_sandboxes{state="running"} 1`,
		`stacyvm_sandboxes{state="destroyed"} 0`,
		`stacyvm_provider_operation_duration_seconds_count{op="spawn",outcome="ok",provider="mock"} 1`,
		`stacyvm_provider_operation_duration_seconds_count{op="exec",outcome="exec_timeout",provider="mock"} 1`,
		`stacyvm_http_request_duration_seconds_count{code="201",route="POST /api/v1/sandboxes"} 1`,
		`stacyvm_http_request_duration_seconds_count{code="408",route="POST /api/v1/sandboxes/{id}/exec"} 1`,
		`stacyvm_http_request_duration_seconds_count{code="404",route="unmatched"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestPrometheusOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) { o.Metrics = nil }))
	e.expectError(e.call("GET", "/metrics", nil), http.StatusNotFound, codeNotFound)
}

// sseEvent is one parsed server-sent event.
type sseEvent struct {
	id, name string
	data     events.Event
}

// sseReader parses a text/event-stream.
type sseReader struct {
	t        testing.TB
	br       *bufio.Reader
	comments []string
}

func (r *sseReader) next() sseEvent {
	r.t.Helper()
	var ev sseEvent
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("read event stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.name != "" {
				return ev
			}
		case strings.HasPrefix(line, ":"):
			r.comments = append(r.comments, strings.TrimSpace(line[1:]))
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.name = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &ev.data); err != nil {
				r.t.Fatalf("event data %q: %v", line, err)
			}
		default:
			r.t.Fatalf("unexpected event stream line %q", line)
		}
	}
}

func (e *testEnv) subscribe(ctx context.Context, headers ...string) *sseReader {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/events", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		e.t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseReader{t: e.t, br: bufio.NewReader(resp.Body)}
}

func TestEventsLive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) { o.EventsKeepAlive = 50 * time.Millisecond }))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Subscribe returns once the headers are in, so the subscription is
	// live before the spawn.
	sse := e.subscribe(ctx)
	sb := e.spawn(nil)

	created := sse.next()
	if created.name != events.SandboxCreated || created.data.SandboxID != sb.ID || created.id != strconv.FormatUint(created.data.ID, 10) {
		t.Errorf("first event = %+v", created)
	}
	running := sse.next()
	if running.name != events.SandboxRunning || running.data.SandboxID != sb.ID {
		t.Errorf("second event = %+v", running)
	}

	// Idle: keep-alive comments flow.
	time.Sleep(200 * time.Millisecond)
	e.expectJSON(e.call("DELETE", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, nil)
	destroyed := sse.next()
	if destroyed.name != events.SandboxDestroyed {
		t.Errorf("third event = %+v", destroyed)
	}
	if !slices.Contains(sse.comments, "keep-alive") {
		t.Errorf("no keep-alive comment in %q", sse.comments)
	}

	// Resuming after the first event replays the rest.
	sse2 := e.subscribe(ctx, "Last-Event-ID", created.id)
	if ev := sse2.next(); ev.id != running.id {
		t.Errorf("resumed at %+v, want id %s", ev, running.id)
	}
	if ev := sse2.next(); ev.id != destroyed.id {
		t.Errorf("then %+v, want id %s", ev, destroyed.id)
	}
	e.expectError(e.call("GET", "/api/v1/events", nil, "Last-Event-ID", "yesterday"), http.StatusBadRequest, codeBadRequest)

	// An explicit 0 replays the whole kept history, then goes live
	// without repeating what it replayed.
	all := e.subscribe(ctx, "Last-Event-ID", "0")
	for _, want := range []sseEvent{created, running, destroyed} {
		if ev := all.next(); ev.id != want.id || ev.name != want.name {
			t.Errorf("replay gave %s %s, want %s %s", ev.id, ev.name, want.id, want.name)
		}
	}
	sb2 := e.spawn(nil)
	if ev := all.next(); ev.name != events.SandboxCreated || ev.data.SandboxID != sb2.ID {
		t.Errorf("after the replay: %+v, want the new sandbox's creation", ev)
	}
}
