package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

func TestSpawnGetListDestroy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) { o.PreviewDomain = "preview.example.com" }))

	before := time.Now().UTC().Add(-time.Second)
	sb := e.spawn(map[string]any{"image": "img:1", "memory_mb": 256, "vcpus": 2, "ttl": "10m", "metadata": map[string]string{"k": "v"}})
	if !strings.HasPrefix(sb.ID, "sb-") || len(sb.ID) < 3+16 {
		t.Errorf("id %q is not sb- and 16+ hex", sb.ID)
	}
	if sb.State != "running" || sb.Provider != "mock" || sb.Image != "img:1" || sb.MemoryMB != 256 || sb.VCPUs != 2 {
		t.Errorf("sandbox = %+v", sb)
	}
	if sb.Metadata["k"] != "v" {
		t.Errorf("metadata = %v", sb.Metadata)
	}
	if sb.PreviewDomain != sb.ID+".preview.example.com" {
		t.Errorf("preview_domain = %q", sb.PreviewDomain)
	}
	created, err := time.Parse(time.RFC3339, sb.CreatedAt)
	if err != nil || created.Before(before) || !strings.HasSuffix(sb.CreatedAt, "Z") {
		t.Errorf("created_at %q (err %v) is not a recent RFC 3339 UTC time", sb.CreatedAt, err)
	}
	expires, err := time.Parse(time.RFC3339, sb.ExpiresAt)
	if err != nil || expires.Sub(created) < 9*time.Minute || expires.Sub(created) > 11*time.Minute {
		t.Errorf("expires_at %q is not created_at + 10m", sb.ExpiresAt)
	}

	var got sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, &got)
	if got.ID != sb.ID || got.State != "running" {
		t.Errorf("get = %+v", got)
	}

	// The raw JSON has every contract field, with metadata an object even
	// when empty and the optional strings present as null.
	plain := e.spawn(nil)
	raw := map[string]json.RawMessage{}
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+plain.ID, nil), http.StatusOK, &raw)
	for _, f := range []string{"id", "state", "provider", "image", "memory_mb", "vcpus", "owner_id", "template",
		"created_at", "expires_at", "metadata", "preview_domain"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("sandbox JSON lacks %q: %v", f, raw)
		}
	}
	if string(raw["metadata"]) != "{}" || string(raw["owner_id"]) != "null" {
		t.Errorf("metadata = %s, owner_id = %s", raw["metadata"], raw["owner_id"])
	}
	if plain.Image != "test-image" {
		t.Errorf("default image = %q", plain.Image)
	}

	var list []sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes", nil), http.StatusOK, &list)
	if len(list) != 2 || list[0].ID != plain.ID || list[1].ID != sb.ID {
		t.Errorf("list = %+v, want newest first", list)
	}

	var st map[string]string
	e.expectJSON(e.call("DELETE", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, &st)
	if st["status"] != "destroyed" {
		t.Errorf("destroy = %v", st)
	}
	e.expectError(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusNotFound, codeSandboxDestroyed)
	e.expectError(e.call("DELETE", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusNotFound, codeSandboxDestroyed)
	e.expectError(e.call("DELETE", "/api/v1/sandboxes/sb-0000000000000000", nil), http.StatusNotFound, codeNotFound)

	e.expectJSON(e.call("GET", "/api/v1/sandboxes", nil), http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != plain.ID {
		t.Errorf("list after destroy = %+v", list)
	}
	e.expectJSON(e.call("GET", "/api/v1/sandboxes?state=destroyed", nil), http.StatusOK, &list)
	if len(list) != 1 || list[0].ID != sb.ID {
		t.Errorf("destroyed list = %+v", list)
	}
}

func TestOwnerFromHeaderAndFilters(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var a sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", map[string]any{}, "X-User-ID", "alice"), http.StatusCreated, &a)
	if a.OwnerID == nil || *a.OwnerID != "alice" {
		t.Errorf("owner from X-User-ID = %v", a.OwnerID)
	}
	var b sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", map[string]any{"owner_id": "bob"}, "X-User-ID", "alice"), http.StatusCreated, &b)
	if b.OwnerID == nil || *b.OwnerID != "bob" {
		t.Errorf("body owner must win over the header, got %v", b.OwnerID)
	}
	// An empty body is a spawn with every default.
	var c sandboxJSON
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", nil), http.StatusCreated, &c)

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?owner_id=alice", []string{a.ID}},
		{"?owner_id=bob", []string{b.ID}},
		{"?owner_id=nobody", nil},
		{"?provider=mock", []string{c.ID, b.ID, a.ID}},
		{"?provider=other", nil},
		{"?state=running", []string{c.ID, b.ID, a.ID}},
		{"?state=error", nil},
	} {
		var list []sandboxJSON
		e.expectJSON(e.call("GET", "/api/v1/sandboxes"+tc.query, nil), http.StatusOK, &list)
		var ids []string
		for _, sb := range list {
			ids = append(ids, sb.ID)
		}
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("list%s = %v, want %v", tc.query, ids, tc.want)
		}
	}
	e.expectError(e.call("GET", "/api/v1/sandboxes?state=bogus", nil), http.StatusBadRequest, codeBadRequest)
}

func TestSpawnValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		name, body string
		status     int
		code       string
		mention    string // the message must name this
	}{
		{"malformed JSON", `{"image":`, 400, codeBadRequest, "malformed"},
		{"syntax error", `{"image" "x"}`, 400, codeBadRequest, "malformed"},
		{"not an object", `["x"]`, 400, codeBadRequest, "JSON object"},
		{"trailing data", `{}{}`, 400, codeBadRequest, "after the JSON object"},
		{"unknown field", `{"imagee":"x"}`, 400, codeBadRequest, "imagee"},
		{"wrong type", `{"memory_mb":"big"}`, 400, codeBadRequest, "memory_mb"},
		{"wrong type in map", `{"metadata":{"a":1}}`, 400, codeBadRequest, "metadata"},
		{"ttl as number", `{"ttl":30}`, 400, codeBadRequest, "ttl"},
		{"bad ttl", `{"ttl":"soon"}`, 400, codeBadRequest, "ttl"},
		{"empty ttl", `{"ttl":""}`, 400, codeBadRequest, "ttl"},
		{"zero ttl", `{"ttl":"0s"}`, 400, codeBadRequest, "ttl"},
		{"negative ttl", `{"ttl":"-5m"}`, 400, codeBadRequest, "ttl"},
		{"ttl over the maximum", `{"ttl":"10000h"}`, 400, codeBadRequest, "ttl"},
		{"negative memory", `{"memory_mb":-1}`, 400, codeBadRequest, "memory_mb"},
		{"bad network", `{"network":"host"}`, 400, codeBadRequest, "network"},
		{"unknown provider", `{"provider":"nope"}`, 404, codeNotFound, "nope"},
		{"unknown template", `{"template":"nope"}`, 404, codeNotFound, "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := e.expectError(e.call("POST", "/api/v1/sandboxes", tc.body), tc.status, tc.code)
			if !strings.Contains(body.Message, tc.mention) {
				t.Errorf("message %q does not mention %q", body.Message, tc.mention)
			}
		})
	}
	var list []sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes", nil), http.StatusOK, &list)
	if len(list) != 0 {
		t.Errorf("refused spawns left sandboxes: %+v", list)
	}
}

func TestSpawnDurationHint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := e.expectError(e.call("POST", "/api/v1/sandboxes", `{"ttl":30}`), 400, codeBadRequest)
	if !strings.Contains(body.Hint, "duration") {
		t.Errorf("hint %q does not explain durations", body.Hint)
	}
	body = e.expectError(e.call("POST", "/api/v1/sandboxes", `{"imagee":"x"}`), 400, codeBadRequest)
	if !strings.Contains(body.Hint, "image") || !strings.Contains(body.Hint, "ttl") {
		t.Errorf("hint %q does not list the accepted fields", body.Hint)
	}
}

func TestSandboxLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *orchestrator.Config) { c.MaxSandboxes = 1 }))
	e.spawn(nil)
	body := e.expectError(e.call("POST", "/api/v1/sandboxes", nil), http.StatusTooManyRequests, codeResourceLimit)
	if body.Hint == "" {
		t.Error("a resource limit should carry a hint")
	}
}

func TestProviderDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.mock.SetHealth(errors.New("runtime is down"))
	e.expectError(e.call("POST", "/api/v1/sandboxes", nil), http.StatusServiceUnavailable, codeUnavailable)
	e.expectError(e.call("POST", "/api/v1/sandboxes", map[string]string{"provider": "mock"}), http.StatusServiceUnavailable, codeUnavailable)
	e.mock.SetHealth(nil)
	e.spawn(nil)
}

// clock lets a test move the Manager's time forward.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }
func withClock(c *clock) envOption {
	return withConfig(func(cfg *orchestrator.Config) { cfg.Now = c.now })
}

func TestExtendAndPrune(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	e := newEnv(t, withClock(clk))
	sb := e.spawn(map[string]any{"ttl": "10m"})
	keep := e.spawn(map[string]any{"ttl": "1h"})
	path := "/api/v1/sandboxes/" + sb.ID + "/extend"

	var ext sandboxJSON
	e.expectJSON(e.call("POST", path, map[string]string{"ttl": "2h"}), http.StatusOK, &ext)
	exp, _ := time.Parse(time.RFC3339, ext.ExpiresAt)
	if d := time.Until(exp); d < 119*time.Minute || d > 121*time.Minute {
		t.Errorf("expires_at after extend 2h = %s (in %s)", ext.ExpiresAt, d)
	}
	// Extending by less than what is left never shortens the life.
	var short sandboxJSON
	e.expectJSON(e.call("POST", path, map[string]string{"ttl": "1m"}), http.StatusOK, &short)
	if short.ExpiresAt != ext.ExpiresAt {
		t.Errorf("extend 1m moved expires_at from %s to %s", ext.ExpiresAt, short.ExpiresAt)
	}

	for _, tc := range []struct{ name, body string }{
		{"missing ttl", `{}`},
		{"empty body", ``},
		{"number", `{"ttl":60}`},
		{"zero", `{"ttl":"0s"}`},
		{"negative", `{"ttl":"-1h"}`},
		{"garbage", `{"ttl":"forever"}`},
		{"unknown field", `{"ttl":"1h","x":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.expectError(e.call("POST", path, tc.body), http.StatusBadRequest, codeBadRequest)
		})
	}
	e.expectError(e.call("POST", "/api/v1/sandboxes/sb-0000000000000000/extend", `{"ttl":"1m"}`), http.StatusNotFound, codeNotFound)

	clk.advance(3 * time.Hour)
	var pr map[string]int
	e.expectJSON(e.call("DELETE", "/api/v1/sandboxes", nil), http.StatusOK, &pr)
	if pr["pruned"] != 2 {
		t.Errorf("pruned = %v, want 2", pr)
	}
	e.expectError(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusNotFound, codeSandboxDestroyed)
	e.expectError(e.call("GET", "/api/v1/sandboxes/"+keep.ID, nil), http.StatusNotFound, codeSandboxDestroyed)
	e.expectJSON(e.call("DELETE", "/api/v1/sandboxes", nil), http.StatusOK, &pr)
	if pr["pruned"] != 0 {
		t.Errorf("second prune = %v, want 0", pr)
	}
}

func TestExpiredSandboxRefusesWork(t *testing.T) {
	t.Parallel()
	clk := &clock{}
	e := newEnv(t, withClock(clk))
	sb := e.spawn(map[string]any{"ttl": "1m"})
	clk.advance(2 * time.Minute)
	e.expectError(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"true"}`), http.StatusNotFound, codeSandboxDestroyed)
}

func TestLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	for range 3 {
		e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"true"}`), http.StatusOK, nil)
	}
	var all, two []string
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID+"/logs", nil), http.StatusOK, &all)
	if len(all) < 4 {
		t.Fatalf("logs = %q, want a spawn line and lines for 3 execs", all)
	}
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID+"/logs?lines=2", nil), http.StatusOK, &two)
	if len(two) != 2 || two[1] != all[len(all)-1] {
		t.Errorf("logs?lines=2 = %q, want the last two of %q", two, all)
	}
	for _, q := range []string{"?lines=0", "?lines=-3", "?lines=many", "?lines=1000000"} {
		e.expectError(e.call("GET", "/api/v1/sandboxes/"+sb.ID+"/logs"+q, nil), http.StatusBadRequest, codeBadRequest)
	}
	e.expectError(e.call("GET", "/api/v1/sandboxes/sb-0000000000000000/logs", nil), http.StatusNotFound, codeNotFound)
}
