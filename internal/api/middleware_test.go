package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) {
		o.APIKey = "s3cret"
		o.CORSOrigins = []string{"https://app.example.com"}
	}))
	for _, tc := range []struct {
		name, method, path string
		headers            []string
		status             int
	}{
		{"no key", "GET", "/api/v1/sandboxes", []string{"X-API-Key", ""}, 401},
		{"wrong key", "GET", "/api/v1/sandboxes", []string{"X-API-Key", "guess"}, 401},
		{"key prefix", "GET", "/api/v1/sandboxes", []string{"X-API-Key", "s3cre"}, 401},
		{"right key", "GET", "/api/v1/sandboxes", []string{"X-API-Key", "s3cret"}, 200},
		{"health is open", "GET", "/api/v1/health", []string{"X-API-Key", ""}, 200},
		{"health by POST is not", "POST", "/api/v1/health", []string{"X-API-Key", ""}, 401},
		{"openapi needs the key", "GET", "/api/v1/openapi.yaml", []string{"X-API-Key", ""}, 401},
		{"prometheus needs the key", "GET", "/metrics", []string{"X-API-Key", ""}, 401},
		{"prometheus takes a bearer token", "GET", "/metrics", []string{"X-API-Key", "", "Authorization", "Bearer s3cret"}, 200},
		{"wrong bearer token", "GET", "/metrics", []string{"X-API-Key", "", "Authorization", "Bearer nope"}, 401},
		{"unknown routes do not reveal themselves", "GET", "/api/v1/nope", []string{"X-API-Key", ""}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
			for i := 0; i+1 < len(tc.headers); i += 2 {
				if tc.headers[i+1] != "" {
					req.Header.Set(tc.headers[i], tc.headers[i+1])
				}
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 401 {
				body := e.expectError(resp, 401, codeUnauthorized)
				if body.Hint == "" {
					t.Error("a 401 should say where the key goes")
				}
				return
			}
			if b := readAll(t, resp); resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
		})
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) {
		o.APIKey = "s3cret"
		o.CORSOrigins = []string{"https://app.example.com"}
	}))
	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", e.srv.URL+"/api/v1/sandboxes", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "x-api-key, content-type")
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		return resp
	}
	// Answered before auth: a preflight carries no key.
	resp := preflight("https://app.example.com")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "X-API-Key") ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp = preflight("https://evil.example.com")
	if resp.StatusCode == http.StatusUnauthorized || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from a foreign origin: %d %v", resp.StatusCode, resp.Header)
	}

	// Actual requests from an allowed origin get the CORS headers, errors included.
	resp = e.call("GET", "/api/v1/sandboxes", nil, "Origin", "https://app.example.com")
	readAll(t, resp)
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-Request-ID") {
		t.Errorf("CORS headers: %v", resp.Header)
	}
	resp = e.call("GET", "/api/v1/sandboxes", nil, "Origin", "https://app.example.com", "X-API-Key", "bad")
	e.expectError(resp, 401, codeUnauthorized)
	if resp.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Error("a 401 to an allowed origin lacks CORS headers, so the browser hides it")
	}

	// None by default.
	plain := newEnv(t)
	req, _ := http.NewRequest("OPTIONS", plain.srv.URL+"/api/v1/sandboxes", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "GET")
	r2, err := plain.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, r2)
	if r2.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("CORS allowed with no origins configured: %v", r2.Header)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	resp := e.call("GET", "/api/v1/sandboxes/sb-0000000000000000", nil, "X-Request-ID", "trace-123")
	body := e.expectError(resp, 404, codeNotFound)
	if body.RequestID != "trace-123" || resp.Header.Get("X-Request-ID") != "trace-123" {
		t.Errorf("request id %q / %q, want the client's", body.RequestID, resp.Header.Get("X-Request-ID"))
	}
	resp = e.call("GET", "/api/v1/health", nil)
	readAll(t, resp)
	minted := resp.Header.Get("X-Request-ID")
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(minted) {
		t.Errorf("minted request id %q", minted)
	}
	resp = e.call("GET", "/api/v1/health", nil, "X-Request-ID", "has spaces\tand tabs")
	readAll(t, resp)
	if got := resp.Header.Get("X-Request-ID"); !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(got) {
		t.Errorf("an unusable request id was kept: %q", got)
	}
	resp = e.call("GET", "/api/v1/health", nil, "X-Request-ID", strings.Repeat("a", 200))
	readAll(t, resp)
	if got := resp.Header.Get("X-Request-ID"); len(got) != 24 {
		t.Errorf("an oversized request id was kept: %d bytes", len(got))
	}

	// The access log names the request ID, the route and the status.
	if !strings.Contains(e.logs.String(), `"request_id":"trace-123"`) ||
		!strings.Contains(e.logs.String(), `"route":"GET /api/v1/sandboxes/{id}"`) {
		t.Errorf("access log lacks the request id or route:\n%s", e.logs.String())
	}
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.expectError(e.call("GET", "/api/v1/nope", nil), http.StatusNotFound, codeNotFound)
	e.expectError(e.call("GET", "/", nil), http.StatusNotFound, codeNotFound)
	resp := e.call("PATCH", "/api/v1/sandboxes", nil)
	allow := resp.Header.Get("Allow")
	e.expectError(resp, http.StatusMethodNotAllowed, codeMethodNotAllowed)
	if allow != "GET, POST, DELETE" {
		t.Errorf("Allow = %q", allow)
	}
	resp = e.call("DELETE", "/api/v1/providers/test", nil)
	allow = resp.Header.Get("Allow")
	e.expectError(resp, http.StatusMethodNotAllowed, codeMethodNotAllowed)
	if allow != "GET, POST" {
		t.Errorf("Allow = %q", allow)
	}
}

func TestInternalErrorsHideDetails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	// Pull the store out from under the Manager: every store call now
	// fails with an unclassified error whose text may name the database
	// file.
	e.closeStore()
	resp := e.call("GET", "/api/v1/sandboxes", nil)
	body := e.expectError(resp, http.StatusInternalServerError, codeInternal)
	if !strings.Contains(body.Message, body.RequestID) || strings.Contains(body.Message, "sql") || strings.Contains(body.Message, "closed") {
		t.Errorf("500 message %q shows internals or lacks the request id", body.Message)
	}
	if !strings.Contains(e.logs.String(), `"level":"ERROR"`) || !strings.Contains(e.logs.String(), body.RequestID) {
		t.Errorf("the real error is not logged with the request id:\n%s", e.logs.String())
	}
	e.expectError(e.call("GET", "/api/v1/templates", nil), http.StatusInternalServerError, codeInternal)
	// Live sandboxes are served from memory, so this one still answers.
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, nil)
}

func TestPanicBecomes500(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := &server{opts: Options{}, log: slog.New(slog.NewJSONHandler(&logs, nil)), mux: http.NewServeMux()}
	h := s.withRequestID(s.withRecovery(s.withAccessLog(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom at /secret/host/path")
	}))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/anything", nil))
	if rec.Code != 500 {
		t.Fatalf("status %d", rec.Code)
	}
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if body.Code != codeInternal || body.RequestID == "" || strings.Contains(body.Message, "secret") {
		t.Errorf("body = %+v", body)
	}
	if !strings.Contains(logs.String(), "boom") || !strings.Contains(logs.String(), `"status":500`) {
		t.Errorf("log lacks the panic or the access line:\n%s", logs.String())
	}

	// After the headers went out the connection is aborted instead, so
	// the client cannot take a truncated body for a whole one.
	h = s.withRequestID(s.withRecovery(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(200)
		panic("late")
	})))
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Errorf("late panic re-raised as %v, want http.ErrAbortHandler", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	}()
}

func TestErrorStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{errdefs.New(errdefs.ErrInvalidArgument, "x"), 400, codeBadRequest},
		{errdefs.New(errdefs.ErrUnauthorized, "x"), 401, codeUnauthorized},
		{errdefs.New(errdefs.ErrNotFound, "x"), 404, codeNotFound},
		{errdefs.New(errdefs.ErrSandboxNotFound, "x"), 404, codeNotFound},
		{errdefs.New(errdefs.ErrProviderNotFound, "x"), 404, codeNotFound},
		{errdefs.New(errdefs.ErrSandboxDestroyed, "x"), 404, codeSandboxDestroyed},
		{errdefs.New(errdefs.ErrFileNotFound, "x"), 404, codeFileNotFound},
		{errdefs.New(errdefs.ErrExecTimeout, "x"), 408, codeTimeout},
		{errdefs.New(errdefs.ErrConflict, "x"), 409, codeConflict},
		{errdefs.New(errdefs.ErrResourceLimit, "x"), 429, codeResourceLimit},
		{errdefs.New(errdefs.ErrUnimplemented, "x"), 501, codeUnimplemented},
		{errdefs.New(errdefs.ErrProviderUnavailable, "x"), 503, codeUnavailable},
		{fmt.Errorf("outer: %w", errdefs.New(errdefs.ErrFileNotFound, "x")), 404, codeFileNotFound},
		{errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "x"), "h"), 409, codeConflict},
		{fmt.Errorf("read body: %w", &http.MaxBytesError{Limit: 1}), 413, codeResourceLimit},
		{&errMethodNotAllowed{"PATCH", "/x"}, 405, codeMethodNotAllowed},
		{context.Canceled, 500, codeInternal},
		{errors.New("disk on fire"), 500, codeInternal},
	} {
		if status, code := errorStatus(tc.err); status != tc.status || code != tc.code {
			t.Errorf("errorStatus(%v) = %d %s, want %d %s", tc.err, status, code, tc.status, tc.code)
		}
	}
	// A class added to errdefs later must get a status of its own.
	for _, c := range errdefs.Classes() {
		if status, _ := errorStatus(c); status == http.StatusInternalServerError {
			t.Errorf("class %q has no status", c)
		}
	}
}

func TestHostPathsAreNeverShown(t *testing.T) {
	t.Parallel()
	s := &server{log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	for _, err := range []error{
		errdefs.Wrap(errdefs.ErrFileNotFound, &fs.PathError{Op: "open", Path: "/var/lib/stacyvm/sb-1/root/x", Err: fs.ErrNotExist}, "read /x"),
		errdefs.Wrap(errdefs.ErrProviderUnavailable, &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: "/run/docker.sock", Net: "unix"}, Err: errors.New("refused")}, "docker"),
		errdefs.Wrap(errdefs.ErrConflict, &os.LinkError{Op: "rename", Old: "/srv/a", New: "/srv/b", Err: fs.ErrExist}, "move"),
	} {
		_, body := s.describe(ctx, err)
		if strings.Contains(body.Message, "/var/lib") || strings.Contains(body.Message, "docker.sock") || strings.Contains(body.Message, "/srv/") {
			t.Errorf("message %q shows a host path", body.Message)
		}
		if body.Message == "" {
			t.Errorf("empty message for %v", err)
		}
	}
	// A path relative to an os.Root is the sandbox's own and stays.
	_, body := s.describe(ctx, errdefs.Wrap(errdefs.ErrFileNotFound, &fs.PathError{Op: "openat", Path: "workspace/x", Err: fs.ErrNotExist}, "read /workspace/x"))
	if !strings.Contains(body.Message, "workspace/x") {
		t.Errorf("message %q lost the sandbox path", body.Message)
	}
}
