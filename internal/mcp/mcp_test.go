package mcp_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stacyvm/stacyvm/internal/client/clienttest"
	"github.com/stacyvm/stacyvm/internal/mcp/mcptest"
)

// keyed adds the API key to every request, as an MCP client configured
// with a header does.
type keyed struct{ key string }

func (k keyed) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-API-Key", k.key)
	return http.DefaultTransport.RoundTrip(r)
}

func connect(t *testing.T, url, key string) (*sdk.ClientSession, error) {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "mcp-test", Version: "1"}, nil)
	return c.Connect(t.Context(), &sdk.StreamableClientTransport{
		Endpoint:             url + "/mcp",
		HTTPClient:           &http.Client{Transport: keyed{key}},
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}, nil)
}

// TestStreamableHTTP drives every tool through /mcp on the real API stack,
// with the official SDK's client.
func TestStreamableHTTP(t *testing.T) {
	t.Parallel()
	env := clienttest.Start(t)
	cs, err := connect(t, env.URL, clienttest.APIKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	mcptest.Exercise(t, cs)
}

// TestHTTPMiddleware: /mcp is behind the API's middleware: the key is
// required, errors are the API's error body with a request ID, and only
// POST is routed.
func TestHTTPMiddleware(t *testing.T) {
	t.Parallel()
	env := clienttest.Start(t)
	if _, err := connect(t, env.URL, "wrong-key"); err == nil {
		t.Fatal("connecting with a wrong key succeeded")
	}
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}`
	for _, tc := range []struct {
		method, key string
		status      int
		code        string
	}{
		{"POST", "", http.StatusUnauthorized, "UNAUTHORIZED"},
		{"GET", clienttest.APIKey, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{"POST", clienttest.APIKey, http.StatusOK, ""},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, env.URL+"/mcp", strings.NewReader(init))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("X-Request-ID", "mcp-req-1")
		if tc.key != "" {
			req.Header.Set("X-API-Key", tc.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("X-Request-ID") != "mcp-req-1" {
			t.Errorf("%s %s: status %d, X-Request-ID %q; want %d", tc.method, tc.key, resp.StatusCode, resp.Header.Get("X-Request-ID"), tc.status)
		}
		if tc.code != "" && (body["code"] != tc.code || body["request_id"] != "mcp-req-1") {
			t.Errorf("%s: body %v, want code %s with the request id", tc.method, body, tc.code)
		}
		if tc.code == "" && body["result"] == nil {
			t.Errorf("initialize answered %v", body)
		}
	}
}
