package backend_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom"
	"github.com/stacyvm/stacyvm/internal/provider/custom/backend"
	"github.com/stacyvm/stacyvm/internal/provider/custom/wire"
)

// fake answers Status with err and Exec with out on stdout; everything
// else is unimplemented (a nil embedded Provider would panic, so the
// tests only call what it defines).
type fake struct {
	provider.Provider
	err error
	out []byte
}

func (f *fake) Name() string { return "fake" }
func (f *fake) Capabilities() provider.Capabilities {
	return provider.Capabilities{Isolation: provider.IsolationVM}
}
func (f *fake) Health(context.Context) error { return f.err }
func (f *fake) Status(_ context.Context, id string) (provider.Info, error) {
	return provider.Info{ID: id, State: provider.StateRunning}, f.err
}
func (f *fake) Exec(_ context.Context, _ string, _ provider.ExecRequest, stdout, _ io.Writer) (provider.ExitStatus, error) {
	stdout.Write(f.out)
	return provider.ExitStatus{ExitCode: 3}, nil
}

const key = "k-123"

func do(t *testing.T, h http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestErrorMapping: every class travels as its status and code, and the
// client rebuilds the same class.
func TestErrorMapping(t *testing.T) {
	tests := []struct {
		class  *errdefs.Class
		status int
		code   string
	}{
		{errdefs.ErrSandboxNotFound, 404, "sandbox_not_found"},
		{errdefs.ErrSandboxDestroyed, 410, "sandbox_destroyed"},
		{errdefs.ErrProviderNotFound, 404, "provider_not_found"},
		{errdefs.ErrFileNotFound, 404, "file_not_found"},
		{errdefs.ErrNotFound, 404, "not_found"},
		{errdefs.ErrConflict, 409, "conflict"},
		{errdefs.ErrInvalidArgument, 400, "invalid_argument"},
		{errdefs.ErrUnauthorized, 401, "unauthorized"},
		{errdefs.ErrUnimplemented, 501, "unimplemented"},
		{errdefs.ErrResourceLimit, 429, "resource_limit"},
		{errdefs.ErrProviderUnavailable, 503, "provider_unavailable"},
		{errdefs.ErrExecTimeout, 408, "exec_timeout"},
	}
	if len(tests) != len(errdefs.Classes()) {
		t.Errorf("%d classes, %d mapped here: give the new class a status and a row", len(errdefs.Classes()), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			f := &fake{err: errdefs.WithHint(errdefs.New(tt.class, "it failed"), "try again")}
			h := backend.NewHandler(f, key)
			rec := do(t, h, http.MethodGet, "/v1/sandboxes/sb-1", "", nil)
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d", rec.Code, tt.status)
			}
			var e wire.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != tt.code || e.Message != "it failed" || e.Hint != "try again" {
				t.Errorf("body %q (%v), want code %s, the message and the hint", rec.Body, err, tt.code)
			}
			if ct := rec.Header().Get("Content-Type"); ct != wire.ContentJSON {
				t.Errorf("content type %q", ct)
			}

			srv := httptest.NewServer(h)
			defer srv.Close()
			c, err := custom.New(custom.Options{URL: srv.URL, APIKey: key})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Status(t.Context(), "sb-1")
			if !errors.Is(err, tt.class) || errdefs.Classify(err) != tt.class {
				t.Errorf("client error %v (class %v), want class %v", err, errdefs.Classify(err), tt.class)
			}
			if errdefs.Hint(err) != "try again" {
				t.Errorf("client lost the hint: %v", err)
			}
		})
	}
}

func TestAuth(t *testing.T) {
	h := backend.NewHandler(&fake{}, key)
	for _, tt := range []struct {
		name   string
		path   string
		hdr    map[string]string
		status int
	}{
		{"HealthOpen", "/v1/health", map[string]string{"Authorization": ""}, 200},
		{"NoKey", "/v1/sandboxes/sb-1", map[string]string{"Authorization": ""}, 401},
		{"WrongBearer", "/v1/sandboxes/sb-1", map[string]string{"Authorization": "Bearer nope"}, 401},
		{"Basic", "/v1/sandboxes/sb-1", map[string]string{"Authorization": "Basic " + key}, 401},
		{"Bearer", "/v1/sandboxes/sb-1", nil, 200},
		{"XAPIKey", "/v1/sandboxes/sb-1", map[string]string{"Authorization": "", "X-API-Key": key}, 200},
		{"WrongXAPIKey", "/v1/sandboxes/sb-1", map[string]string{"Authorization": "", "X-API-Key": key + "x"}, 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, h, http.MethodGet, tt.path, "", tt.hdr)
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
		})
	}
	// No key configured: everyone is served.
	if rec := do(t, backend.NewHandler(&fake{}, ""), http.MethodGet, "/v1/sandboxes/sb-1", "", map[string]string{"Authorization": ""}); rec.Code != 200 {
		t.Errorf("open backend: status %d", rec.Code)
	}
}

func TestRequests(t *testing.T) {
	h := backend.NewHandler(&fake{err: errdefs.New(errdefs.ErrSandboxNotFound, "no such sandbox")}, key)
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"UnknownRoute", "GET", "/v1/nope", "", 501, "unimplemented"},
		{"WrongMethod", "PATCH", "/v1/sandboxes", "", 501, "unimplemented"},
		{"MalformedJSON", "POST", "/v1/sandboxes", "{", 400, "invalid_argument"},
		{"UnknownField", "POST", "/v1/sandboxes", `{"id":"sb-1","image":"x","stdin":"y"}`, 400, "invalid_argument"},
		{"TrailingData", "POST", "/v1/sandboxes", `{"id":"sb-1","image":"x"} {}`, 400, "invalid_argument"},
		{"MissingImage", "POST", "/v1/sandboxes", `{"id":"sb-1"}`, 400, "invalid_argument"},
		{"HugeBody", "POST", "/v1/sandboxes", `{"id":"` + strings.Repeat("x", backend.MaxRequestJSON) + `"}`, 429, "resource_limit"},
		{"ExecEmptyArgv", "POST", "/v1/sandboxes/sb-1/exec", `{"argv":[]}`, 400, "invalid_argument"},
		{"ExecNegativeTimeout", "POST", "/v1/sandboxes/sb-1/exec", `{"argv":["x"],"timeout_ms":-1}`, 400, "invalid_argument"},
		// Known before the stream starts: an HTTP error, not a stream.
		{"ExecUnknownSandbox", "POST", "/v1/sandboxes/sb-1/exec", `{"argv":["x"]}`, 404, "sandbox_not_found"},
		{"BadMode", "PUT", "/v1/sandboxes/sb-1/files?path=/f&mode=999", "", 400, "invalid_argument"},
		{"BadRecursive", "DELETE", "/v1/sandboxes/sb-1/files?path=/f&recursive=maybe", "", 400, "invalid_argument"},
		{"BadLines", "GET", "/v1/sandboxes/sb-1/logs?lines=ten", "", 400, "invalid_argument"},
		{"NoInventory", "GET", "/v1/sandboxes", "", 501, "unimplemented"},
		{"NoSnapshots", "GET", "/v1/snapshots", "", 501, "unimplemented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(t, h, tt.method, tt.path, tt.body, nil)
			var e wire.Error
			json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != tt.status || e.Code != tt.code {
				t.Errorf("%d %q, want %d %s", rec.Code, rec.Body, tt.status, tt.code)
			}
		})
	}
}

// TestExecBinaryOutput: output that is not UTF-8 crosses the protocol
// unchanged.
func TestExecBinaryOutput(t *testing.T) {
	out := []byte{0xff, 0xfe, 0, 'a', 0xc3}
	out = append(out, bytes.Repeat([]byte("é"), 40000)...) // more than one chunk
	srv := httptest.NewServer(backend.NewHandler(&fake{out: out}, key))
	defer srv.Close()
	c, err := custom.New(custom.Options{URL: srv.URL, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	st, err := c.Exec(t.Context(), "sb-1", provider.ExecRequest{Argv: []string{"x"}}, &got, nil)
	if err != nil || st.ExitCode != 3 {
		t.Fatalf("Exec = %+v, %v", st, err)
	}
	if !bytes.Equal(got.Bytes(), out) {
		t.Errorf("got %d bytes, want the %d written", got.Len(), len(out))
	}
	if caps := c.Capabilities(); caps.Isolation != provider.IsolationVM || caps.Adoption {
		t.Errorf("capabilities %+v: want isolation vm and no adoption (the fake has no inventory)", caps)
	}
}
