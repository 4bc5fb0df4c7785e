package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// These tests use a fake server on purpose: they pin down how the client
// reads error responses, including ones the real server never sends
// (a proxy's HTML page, codes from a newer server).

func fakeServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(srv.URL, "k")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestErrorClassification(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		call    func(context.Context, *Client) error
		want    *errdefs.Class // nil: internal
		notWant []*errdefs.Class
	}{
		{
			name: "bare NOT_FOUND on a sandbox route is a missing sandbox", status: 404,
			body: `{"code":"NOT_FOUND","message":"sandbox sb-1 not found","request_id":"r1"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Get(ctx, "sb-1"); return err },
			want: errdefs.ErrSandboxNotFound,
		},
		{
			name: "FILE_NOT_FOUND on a sandbox route is a missing file, not a missing sandbox", status: 404,
			body: `{"code":"FILE_NOT_FOUND","message":"no such file","request_id":"r1"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.StatFile(ctx, "sb-1", "/x"); return err },
			want: errdefs.ErrFileNotFound, notWant: []*errdefs.Class{errdefs.ErrSandboxNotFound},
		},
		{
			name: "SANDBOX_DESTROYED", status: 404,
			body: `{"code":"SANDBOX_DESTROYED","message":"gone","request_id":"r1"}`,
			call: func(ctx context.Context, c *Client) error { return c.Destroy(ctx, "sb-1") },
			want: errdefs.ErrSandboxDestroyed, notWant: []*errdefs.Class{errdefs.ErrSandboxNotFound},
		},
		{
			name: "NOT_FOUND on a template route is only not found", status: 404,
			body: `{"code":"NOT_FOUND","message":"no template","request_id":"r1"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.GetTemplate(ctx, "t"); return err },
			want: errdefs.ErrNotFound, notWant: []*errdefs.Class{errdefs.ErrSandboxNotFound},
		},
		{
			name: "NOT_FOUND on a provider route is a missing provider", status: 404,
			body: `{"code":"NOT_FOUND","message":"no provider","request_id":"r1"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Provider(ctx, "p"); return err },
			want: errdefs.ErrProviderNotFound,
		},
		{
			name: "BAD_REQUEST", status: 400, body: `{"code":"BAD_REQUEST","message":"ttl","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.List(ctx, ListOptions{}); return err },
			want: errdefs.ErrInvalidArgument,
		},
		{
			name: "UNAUTHORIZED", status: 401, body: `{"code":"UNAUTHORIZED","message":"key","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.List(ctx, ListOptions{}); return err },
			want: errdefs.ErrUnauthorized,
		},
		{
			name: "CONFLICT", status: 409, body: `{"code":"CONFLICT","message":"dup","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error {
				_, err := c.CreateTemplate(ctx, Template{Name: "a", Image: "i"})
				return err
			},
			want: errdefs.ErrConflict,
		},
		{
			name: "RESOURCE_LIMIT as 413", status: 413, body: `{"code":"RESOURCE_LIMIT","message":"big","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error {
				return c.WriteFile(ctx, "sb-1", "/f", strings.NewReader("x"), 0)
			},
			want: errdefs.ErrResourceLimit,
		},
		{
			name: "UNAVAILABLE", status: 503, body: `{"code":"UNAVAILABLE","message":"docker down","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Spawn(ctx, SpawnRequest{}); return err },
			want: errdefs.ErrProviderUnavailable,
		},
		{
			name: "UNIMPLEMENTED", status: 501, body: `{"code":"UNIMPLEMENTED","message":"no","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Snapshots(ctx); return err },
			want: errdefs.ErrUnimplemented,
		},
		{
			name: "UNSUPPORTED_MEDIA_TYPE", status: 415, body: `{"code":"UNSUPPORTED_MEDIA_TYPE","message":"type","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Spawn(ctx, SpawnRequest{}); return err },
			want: errdefs.ErrInvalidArgument,
		},
		{
			name: "MISDIRECTED_REQUEST", status: 421, body: `{"code":"MISDIRECTED_REQUEST","message":"host","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.List(ctx, ListOptions{}); return err },
			want: errdefs.ErrInvalidArgument,
		},
		{
			name: "FORBIDDEN", status: 403, body: `{"code":"FORBIDDEN","message":"origin","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Spawn(ctx, SpawnRequest{}); return err },
			want: errdefs.ErrUnauthorized,
		},
		{
			name: "INTERNAL_ERROR is unclassified", status: 500, body: `{"code":"INTERNAL_ERROR","message":"x","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Snapshots(ctx); return err },
			want: nil,
		},
		{
			name: "an unknown code falls back to the status", status: 429,
			body: `{"code":"SOMETHING_NEW","message":"x","request_id":"r"}`,
			call: func(ctx context.Context, c *Client) error { _, err := c.Snapshots(ctx); return err },
			want: errdefs.ErrResourceLimit,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			err := tt.call(t.Context(), c)
			e, ok := errors.AsType[*Error](err)
			if !ok {
				t.Fatalf("error %v (%T) is not an *Error", err, err)
			}
			if e.Status != tt.status {
				t.Errorf("Status = %d, want %d", e.Status, tt.status)
			}
			if got := errdefs.Classify(err); got != tt.want {
				t.Errorf("Classify = %v, want %v", got, tt.want)
			}
			for _, nw := range tt.notWant {
				if errors.Is(err, nw) {
					t.Errorf("errors.Is(err, %v) = true, want false", nw)
				}
			}
		})
	}
}

func TestErrorFields(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"code":"BAD_REQUEST","message":"ttl must be positive","request_id":"req-9","hint":"send \"30m\""}`))
	})
	_, err := c.Spawn(t.Context(), SpawnRequest{})
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("got %v", err)
	}
	want := Error{Status: 400, Code: "BAD_REQUEST", Message: "ttl must be positive", RequestID: "req-9", Hint: `send "30m"`}
	if e.Status != want.Status || e.Code != want.Code || e.Message != want.Message || e.RequestID != want.RequestID || e.Hint != want.Hint {
		t.Errorf("got %+v, want %+v", *e, want)
	}
	for _, part := range []string{"BAD_REQUEST", "ttl must be positive", "req-9"} {
		if !strings.Contains(e.Error(), part) {
			t.Errorf("Error() = %q, missing %q", e.Error(), part)
		}
	}
}

func TestErrorFromNonJSONBody(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("X-Request-ID", "from-header")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("<html>\n<body>upstream\tdown</body></html>" + strings.Repeat("x", 1000)))
	})
	_, err := c.List(t.Context(), ListOptions{})
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("got %v", err)
	}
	if e.Code != "" || e.RequestID != "from-header" || !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("got %+v", *e)
	}
	if !strings.HasPrefix(e.Message, "<html> <body>upstream down</body></html>") || len(e.Message) > 210 {
		t.Errorf("Message = %q: want a short one-line excerpt", e.Message)
	}
}

func TestRequestHeaders(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		if r.URL.Path != "/prefix/api/v1/sandboxes" {
			t.Errorf("path = %q", r.URL.Path)
		}
		_, _ = w.Write([]byte(`[]`))
	}))
	t.Cleanup(srv.Close)
	// A base URL that already names the API prefix is accepted as is.
	c, err := New(srv.URL+"/prefix/api/v1/", "secret", WithUserID("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(WithRequestID(t.Context(), "trace-1"), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	for h, want := range map[string]string{"X-API-Key": "secret", "X-Request-ID": "trace-1", "X-User-ID": "alice"} {
		if got.Get(h) != want {
			t.Errorf("%s = %q, want %q", h, got.Get(h), want)
		}
	}

	c, _ = New(srv.URL+"/prefix", "")
	if _, err := c.List(t.Context(), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"X-API-Key", "X-Request-ID", "X-User-ID"} {
		if v := got.Get(h); v != "" {
			t.Errorf("%s = %q, want it absent", h, v)
		}
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:7423", "ftp://host", "http://", "http://h\x7f"} {
		if _, err := New(u, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%q) = %v, want invalid argument", u, err)
		}
	}
}

func TestEmptyIDNeverReachesTheCollectionRoute(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("request sent: %s %s", r.Method, r.URL)
	})
	ctx := t.Context()
	calls := map[string]error{
		"Destroy": c.Destroy(ctx, ""),
	}
	_, calls["Get"] = c.Get(ctx, "")
	_, calls["Extend"] = c.Extend(ctx, "", 1)
	_, calls["Exec"] = c.Exec(ctx, "", ExecRequest{Command: "true"})
	calls["DeleteFile"] = c.DeleteFile(ctx, "sb-1", "", false)
	calls["DeleteTemplate"] = c.DeleteTemplate(ctx, "")
	for name, err := range calls {
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s with an empty name = %v, want invalid argument", name, err)
		}
	}
}

func TestPathSegmentsAreEscaped(t *testing.T) {
	var uri string
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		uri = r.RequestURI
		_, _ = w.Write([]byte(`{}`))
	})
	if _, err := c.GetTemplate(t.Context(), "a b/c%d"); err != nil {
		t.Fatal(err)
	}
	if want := "/api/v1/templates/a%20b%2Fc%25d"; uri != want {
		t.Errorf("request URI %q, want %q", uri, want)
	}
	if _, err := c.StatFile(t.Context(), "sb-1", "/dir/a b&c"); err != nil {
		t.Fatal(err)
	}
	if want := "/api/v1/sandboxes/sb-1/files/stat?path=%2Fdir%2Fa+b%26c"; uri != want {
		t.Errorf("request URI %q, want %q", uri, want)
	}
}
