package custom_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom"
	"github.com/stacyvm/stacyvm/internal/provider/custom/backend"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/provider/proot"
	"github.com/stacyvm/stacyvm/internal/provider/proot/prootest"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	prootest.Cleanup()
	os.Exit(code)
}

const testKey = "test-key-3f9a"

// serve runs the reference backend for p on a loopback HTTP server and
// returns a custom provider talking to it.
func serve(t *testing.T, p provider.Provider, opts custom.Options) *custom.Provider {
	t.Helper()
	srv := httptest.NewServer(backend.NewHandler(p, testKey))
	t.Cleanup(srv.Close)
	if opts.URL == "" {
		opts.URL = srv.URL
	}
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	c, err := custom.New(opts)
	if err != nil {
		t.Fatalf("custom.New: %v", err)
	}
	return c
}

// TestConformanceMock runs the conformance suite against the custom
// provider talking over real HTTP to the reference backend, which wraps
// the mock provider.
func TestConformanceMock(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		Image: "mock-image",
		New: func(t *testing.T, stateDir string) provider.Provider {
			m, err := mock.New(mock.Options{Dir: stateDir})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			return serve(t, m, custom.Options{})
		},
	})
}

// TestConformanceProot does the same with the PRoot provider behind the
// backend: what `stacyvm serve-backend --provider proot` serves.
func TestConformanceProot(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	agent := prootest.Agent(t)
	providertest.Run(t, providertest.Harness{
		Image: prootest.Busybox,
		New: func(t *testing.T, stateDir string) provider.Provider {
			prootest.Reachable(t, stateDir)
			p, err := proot.New(proot.Options{
				ImagesDir:    prootest.ImagesDir(),
				StateDir:     stateDir,
				AgentPath:    agent,
				MaxSandboxes: -1,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			return serve(t, p, custom.Options{})
		},
	})
}

func TestAPIKey(t *testing.T) {
	m, err := mock.New(mock.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Value
	h := backend.NewHandler(m, testKey)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()

	good, err := custom.New(custom.Options{URL: srv.URL, APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := good.Health(t.Context()); err != nil {
		t.Fatalf("Health with the right key: %v", err)
	}
	if got := seen.Load(); got != "Bearer "+testKey {
		t.Errorf("Authorization header %q, want the bearer key", got)
	}
	if _, err := good.List(t.Context()); err != nil {
		t.Errorf("List with the right key: %v", err)
	}
	for _, key := range []string{"", "wrong"} {
		bad, err := custom.New(custom.Options{URL: srv.URL, APIKey: key})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bad.List(t.Context()); !errors.Is(err, errdefs.ErrUnauthorized) {
			t.Errorf("List with key %q: %v, want unauthorized", key, err)
		}
	}
	// X-API-Key is accepted too, for backends behind tools that use it.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/sandboxes", nil)
	req.Header.Set("X-API-Key", testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("X-API-Key: status %d", resp.StatusCode)
	}
}

// blocker is a provider whose Exec streams a tick every 50ms until its
// context ends, and records that end.
type blocker struct {
	provider.Provider // nil: only the methods below are called
	cancelled         chan struct{}
}

func (b *blocker) Name() string                        { return "blocker" }
func (b *blocker) Capabilities() provider.Capabilities { return provider.Capabilities{Streaming: true} }
func (b *blocker) Health(context.Context) error        { return nil }
func (b *blocker) Status(_ context.Context, id string) (provider.Info, error) {
	return provider.Info{ID: id, State: provider.StateRunning}, nil
}

func (b *blocker) Exec(ctx context.Context, id string, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	n := 0
	limit := 1 << 30
	if req.Argv[0] == "ticks" && len(req.Argv) > 1 {
		fmt.Sscan(req.Argv[1], &limit)
	}
	for {
		select {
		case <-ctx.Done():
			close(b.cancelled)
			return provider.ExitStatus{ExitCode: -1}, ctx.Err()
		case <-t.C:
			if n == limit {
				return provider.ExitStatus{ExitCode: 0}, nil
			}
			n++
			fmt.Fprintf(stdout, "tick %d\n", n)
		}
	}
}

// TestCancelReachesBackend: cancelling Exec ends the backend's request
// context, which is what makes a provider kill the command.
func TestCancelReachesBackend(t *testing.T) {
	b := &blocker{cancelled: make(chan struct{})}
	c := serve(t, b, custom.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, "sb-1", provider.ExecRequest{Argv: []string{"forever"}}, &lockedWriter{}, nil)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Exec: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Exec did not return after cancel")
	}
	select {
	case <-b.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the backend's provider never saw the request context end")
	}
}

// TestLongStreamOutlivesTimeout: Options.Timeout bounds non-streaming
// calls only; a stream that keeps flowing runs as long as it lasts.
func TestLongStreamOutlivesTimeout(t *testing.T) {
	b := &blocker{cancelled: make(chan struct{})}
	c := serve(t, b, custom.Options{Timeout: 150 * time.Millisecond})
	var out lockedWriter
	start := time.Now()
	st, err := c.Exec(t.Context(), "sb-1", provider.ExecRequest{Argv: []string{"ticks", "12"}}, &out, nil)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("Exec = %+v, %v", st, err)
	}
	if el := time.Since(start); el < 500*time.Millisecond {
		t.Errorf("the stream took %v; the test needs it longer than the timeout", el)
	}
	if !strings.Contains(out.String(), "tick 12\n") {
		t.Errorf("output %q", out.String())
	}
}

type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestNewOptions(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "http://", "http://user:pw@host", "http://h/?q=1", "::"} {
		if _, err := custom.New(custom.Options{URL: u}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(URL %q): %v, want invalid argument", u, err)
		}
	}
	// An unreachable backend is not fatal: capabilities stay unknown and
	// Health says why.
	c, err := custom.New(custom.Options{URL: "http://127.0.0.1:1", Timeout: time.Second})
	if err != nil {
		t.Fatalf("New with an unreachable backend: %v", err)
	}
	if err := c.Health(t.Context()); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("Health of an unreachable backend: %v, want provider unavailable", err)
	}
	if c.Capabilities() != (provider.Capabilities{}) {
		t.Errorf("Capabilities before the backend answered: %+v, want none", c.Capabilities())
	}
}
