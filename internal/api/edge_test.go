package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

// count returns how many sandboxes the server has ever recorded.
func (e *testEnv) count() int {
	e.t.Helper()
	all, err := e.m.List(context.Background(), orchestrator.ListFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(all)
}

func (e *testEnv) port() string {
	_, port, _ := net.SplitHostPort(e.srv.Listener.Addr().String())
	return port
}

// TestEdgeContentType: bodies must be declared with their route's type;
// the types a page may send without a preflight are refused before any
// handler runs, and nothing is created.
func TestEdgeContentType(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(map[string]any{})
	before := e.count()
	for _, tc := range []struct {
		name, method, path, ctype, body string
		status                          int
	}{
		{"text/plain JSON", "POST", "/api/v1/sandboxes", "text/plain", `{}`, 415},
		{"text/plain with charset", "POST", "/api/v1/sandboxes", "text/plain;charset=UTF-8", `{"image":"x"}`, 415},
		{"form post", "POST", "/api/v1/sandboxes", "application/x-www-form-urlencoded", `a=b`, 415},
		{"empty form post", "POST", "/api/v1/sandboxes", "application/x-www-form-urlencoded", ``, 415},
		{"multipart", "POST", "/api/v1/sandboxes", "multipart/form-data; boundary=x", "--x--\r\n", 415},
		{"no type with a body", "POST", "/api/v1/sandboxes", "", `{}`, 415},
		{"malformed type", "POST", "/api/v1/sandboxes", "application/json; =", `{}`, 415},
		{"json look-alike", "POST", "/api/v1/sandboxes", "application/jsonx", `{}`, 415},
		{"exec as text", "POST", "/api/v1/sandboxes/" + sb.ID + "/exec", "text/plain", `{"command":"touch /workspace/pwned"}`, 415},
		{"template as text", "POST", "/api/v1/templates", "text/plain", `{"name":"t","image":"x"}`, 415},
		{"template update as form", "PUT", "/api/v1/templates/t", "application/x-www-form-urlencoded", `{}`, 415},
		{"raw upload as JSON", "PUT", "/api/v1/sandboxes/" + sb.ID + "/files/raw?path=/workspace/pwned", "application/json", `x`, 415},
		{"raw upload as text", "PUT", "/api/v1/sandboxes/" + sb.ID + "/files/raw?path=/workspace/pwned", "text/plain", `x`, 415},
		{"raw upload without type", "PUT", "/api/v1/sandboxes/" + sb.ID + "/files/raw?path=/workspace/pwned", "", `x`, 415},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.body == "" {
				req.Body, req.ContentLength = http.NoBody, 0
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := e.expectError(resp, tc.status, codeUnsupportedMediaType)
			if !strings.Contains(body.Hint, "Content-Type") {
				t.Errorf("hint %q does not name the header", body.Hint)
			}
		})
	}
	if n := e.count(); n != before {
		t.Errorf("%d sandboxes after the refused requests, want %d", n, before)
	}
	if _, err := e.m.StatFile(context.Background(), sb.ID, "/workspace/pwned"); err == nil {
		t.Error("a refused request wrote a file")
	}

	// What must keep working: JSON with parameters, a bodiless POST, a
	// content type on a read, and raw bytes declared as such.
	e.expectJSON(e.call("POST", "/api/v1/sandboxes", `{}`, "Content-Type", "application/json; charset=utf-8"), 201, nil)
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/sandboxes", nil)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	e.expectJSON(resp, 201, nil)
	e.expectJSON(e.call("GET", "/api/v1/sandboxes", nil, "Content-Type", "text/plain"), 200, nil)
	e.expectJSON(e.call("PUT", "/api/v1/sandboxes/"+sb.ID+"/files/raw?path=/workspace/ok", "x",
		"Content-Type", "application/octet-stream"), 200, nil)
	// extend requires its body: an empty POST still gets the handler's 400.
	e.expectError(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/extend", nil), 400, codeBadRequest)
}

// TestEdgeHost: the DNS-rebinding defence.
func TestEdgeHost(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) {
		o.AllowedHosts = []string{"sandbox.example.com", "proxy.example:8443"}
	}))
	port := e.port()
	before := e.count()
	for _, tc := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:" + port, true},
		{"localhost:" + port, true},
		{"LocalHost.:" + port, true},
		{"127.0.0.2:" + port, true},
		{"[::1]:" + port, true},
		{"sandbox.example.com", true},
		{"sandbox.example.com:1234", true},
		{"proxy.example:8443", true},
		{"evil.example", false},
		{"evil.example:" + port, false},
		{"proxy.example", false},
		{"proxy.example:80", false},
		{"localhost", false},              // port 80: not this server's port
		{"localhost:1", false},            // another port
		{"127.0.0.1", false},              // port 80
		{"10.1.2.3:" + port, false},       // not the address the request came in on
		{"localhost.evil.example", false}, // a name that merely starts like one
		{"[fe80::1%25lo]:" + port, false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			for _, method := range []string{"GET", "POST"} {
				req, _ := http.NewRequest(method, e.srv.URL+"/api/v1/sandboxes", strings.NewReader("{}"))
				req.Header.Set("Content-Type", "application/json")
				req.Host = tc.host
				resp, err := e.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				if tc.ok {
					if b := readAll(t, resp); resp.StatusCode >= 300 {
						t.Errorf("%s with Host %s: %d %s", method, tc.host, resp.StatusCode, b)
					}
					continue
				}
				body := e.expectError(resp, http.StatusMisdirectedRequest, codeMisdirected)
				if !strings.Contains(body.Hint, "server.allowed_hosts") {
					t.Errorf("hint %q does not name server.allowed_hosts", body.Hint)
				}
			}
		})
	}
	// Each accepted host made one sandbox by POST; no refused one did.
	if n, want := e.count()-before, 8; n != want {
		t.Errorf("%d sandboxes created, want %d (one per accepted Host)", n, want)
	}
	// Unknown paths and preflights get the same answer: nothing is served
	// to a foreign name.
	for _, method := range []string{"GET", "OPTIONS"} {
		req, _ := http.NewRequest(method, e.srv.URL+"/nowhere", nil)
		req.Host = "evil.example:" + port
		req.Header.Set("Origin", "http://evil.example:"+port)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		e.expectError(resp, http.StatusMisdirectedRequest, codeMisdirected)
	}

	star := newEnv(t, withOptions(func(o *Options) { o.AllowedHosts = []string{"*"} }))
	req, _ := http.NewRequest("GET", star.srv.URL+"/api/v1/health", nil)
	req.Host = "whatever.example"
	resp, err := star.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	star.expectJSON(resp, 200, nil)
}

// TestEdgeOrigin: state-changing requests and upgrades from other origins
// are refused, with or without an API key; the server's own origin and the
// listed ones pass.
func TestEdgeOrigin(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "k"} {
		t.Run("key="+key, func(t *testing.T) {
			e := newEnv(t, withOptions(func(o *Options) {
				o.APIKey = key
				o.CORSOrigins = []string{"https://app.example.com"}
			}))
			sb := e.spawn(map[string]any{})
			before := e.count()
			self := e.srv.URL // http://127.0.0.1:port
			for _, tc := range []struct {
				name, method, path, origin string
				status                     int
			}{
				{"foreign create", "POST", "/api/v1/sandboxes", "http://evil.example", 403},
				{"foreign create, same host other port", "POST", "/api/v1/sandboxes", "http://127.0.0.1:1", 403},
				{"opaque origin", "POST", "/api/v1/sandboxes", "null", 403},
				{"foreign destroy", "DELETE", "/api/v1/sandboxes/" + sb.ID, "http://evil.example", 403},
				{"foreign prune", "DELETE", "/api/v1/sandboxes", "http://evil.example", 403},
				{"listed origin, other scheme", "POST", "/api/v1/sandboxes", "http://app.example.com", 403},
				{"garbage origin", "POST", "/api/v1/sandboxes", "::::", 403},
				{"own origin", "POST", "/api/v1/sandboxes", self, 201},
				{"own origin as https", "POST", "/api/v1/sandboxes", "https" + strings.TrimPrefix(self, "http"), 201},
				{"listed origin", "POST", "/api/v1/sandboxes", "https://app.example.com", 201},
				{"foreign read", "GET", "/api/v1/sandboxes", "http://evil.example", 200},
			} {
				t.Run(tc.name, func(t *testing.T) {
					var body any
					if tc.method == "POST" {
						body = map[string]any{}
					}
					resp := e.call(tc.method, tc.path, body, "Origin", tc.origin)
					if tc.status == 403 {
						b := e.expectError(resp, 403, codeForbidden)
						if !strings.Contains(b.Hint, "server.cors_origins") {
							t.Errorf("hint %q does not name server.cors_origins", b.Hint)
						}
						return
					}
					e.expectJSON(resp, tc.status, nil)
				})
			}
			if n := e.count(); n != before+3 {
				t.Errorf("%d sandboxes, want %d: only the three allowed origins create", n, before+3)
			}
			if got, err := e.m.Get(context.Background(), sb.ID); err != nil || got.State != "running" {
				t.Errorf("sandbox after foreign destroy: %+v, %v", got, err)
			}

			// WebSocket upgrades: refused before the handshake, with the
			// JSON body; the own origin gets through.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			h := http.Header{"Origin": {"http://evil.example"}}
			if key != "" {
				h.Set("X-API-Key", key)
			}
			_, resp, err := websocket.Dial(ctx, wsURL(e, sb.ID), &websocket.DialOptions{HTTPHeader: h})
			if err == nil || resp == nil {
				t.Fatalf("foreign WebSocket: err %v, response %v", err, resp)
			}
			resp.Request, _ = http.NewRequest("GET", wsURL(e, sb.ID), nil)
			e.expectError(resp, 403, codeForbidden)
			h.Set("Origin", self)
			c, _, err := websocket.Dial(ctx, wsURL(e, sb.ID), &websocket.DialOptions{HTTPHeader: h})
			if err != nil {
				t.Fatalf("own-origin WebSocket: %v", err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte(`{"command":"echo hi"}`)); err != nil {
				t.Fatal(err)
			}
			if l, err := readWS(t, ctx, c); err != nil || l.Data != "hi\n" {
				t.Errorf("own-origin WebSocket: %+v, %v", l, err)
			}
		})
	}
}

// TestGuard: the exported wrapper gives another surface the same checks
// and error bodies.
func TestGuard(t *testing.T) {
	t.Parallel()
	served := 0
	h := Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		_, _ = io.WriteString(w, "ok")
	}), GuardOptions{AllowedHosts: []string{"dash.example"}, BodyTypes: []string{"application/json"}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e := &testEnv{t: t, srv: srv, mockDir: t.TempDir() + "/none"}
	for _, tc := range []struct {
		name, method, host, origin, ctype string
		status                            int
		code                              string
	}{
		{"page", "GET", "", "", "", 200, ""},
		{"listed host", "GET", "dash.example", "", "", 200, ""},
		{"rebinding", "GET", "evil.example", "", "", 421, codeMisdirected},
		{"foreign post", "POST", "", "http://evil.example", "application/json", 403, codeForbidden},
		{"text post", "POST", "", "", "text/plain", 415, codeUnsupportedMediaType},
		{"json post", "POST", "", "", "application/json", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.ctype != "" {
				body = strings.NewReader("{}")
			}
			req, _ := http.NewRequest(tc.method, srv.URL+"/mcp", body)
			if tc.host != "" {
				req.Host = tc.host
			}
			if tc.origin != "" {
				req.Header.Set("Origin", tc.origin)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.code == "" {
				if b := readAll(t, resp); resp.StatusCode != tc.status || string(b) != "ok" {
					t.Errorf("%d %q", resp.StatusCode, b)
				}
				return
			}
			e.expectError(resp, tc.status, tc.code)
		})
	}
	if served != 3 {
		t.Errorf("handler served %d requests, want 3", served)
	}
}
