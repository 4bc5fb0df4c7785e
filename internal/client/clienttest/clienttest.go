// Package clienttest starts a real StacyVM API server for tests of its
// clients: the api handler over an orchestrator.Manager with a SQLite store
// in a temporary file and the mock provider. Nothing in it is faked except
// the clock, which a test may move forward to expire sandboxes.
package clienttest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/api"
	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/mcp"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// APIKey is the key the test server requires.
const APIKey = "clienttest-key"

// DefaultImage is the image of sandboxes spawned without one. The mock
// runs no image; the name only has to be recorded.
const DefaultImage = "clienttest/image:1"

// Version is what the test server reports as its version.
const Version = "clienttest-1.0"

// Env is one running server and a client of it.
type Env struct {
	URL     string // base URL, without /api/v1
	Client  *client.Client
	Manager *orchestrator.Manager
	Mock    *mock.Provider

	mu     sync.Mutex
	offset time.Duration
}

// Now is the server's clock: the real time plus whatever Advance added.
func (e *Env) Now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return time.Now().Add(e.offset)
}

// Advance moves the server's clock forward by d.
func (e *Env) Advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.offset += d
}

// Start runs a server until the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "stacyvm.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	mp, err := mock.New(mock.Options{Dir: filepath.Join(dir, "mock")})
	if err != nil {
		t.Fatalf("mock provider: %v", err)
	}
	reg := provider.NewRegistry()
	reg.Register(mp)
	reg.SetDefault(mp.Name())

	e := &Env{Mock: mp}
	quiet := slog.New(slog.DiscardHandler)
	e.Manager = orchestrator.New(st, reg, orchestrator.Config{Logger: quiet, Now: e.Now, DefaultImage: DefaultImage})
	if _, err := e.Manager.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	srv := httptest.NewServer(api.New(e.Manager, api.Options{APIKey: APIKey, Version: Version, Logger: quiet,
		MCP: mcp.Handler(mcp.NewServer(mcp.FromManager(e.Manager), Version))}))
	// Destroy what a test left running: mock sandboxes are host processes.
	t.Cleanup(func() {
		srv.Close()
		list, _ := e.Manager.List(ctx, orchestrator.ListFilter{})
		for _, sb := range list {
			_ = e.Manager.Destroy(ctx, sb.ID)
		}
	})
	e.URL = srv.URL
	e.Client, err = client.New(srv.URL, APIKey)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
