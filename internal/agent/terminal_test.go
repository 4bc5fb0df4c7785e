//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

// TestTerminal runs the terminal suite through the agent protocol: a
// localguest served over a unix socket, reached with the client.
func TestTerminal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(testing.TB, http.Handler) Dialer
	}{{"unix", startUnix}, {"hybrid-vsock", startHybridVsock}} {
		t.Run(tc.name, func(t *testing.T) {
			g, _ := newLocalGuest(t)
			c := newClient(t, tc.start(t, NewServer(g, ServerOptions{})))
			cfg := terminaltest.Config{
				Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
					return c.OpenTerminal(ctx, req)
				},
				Running: func(_ context.Context, marker string) (bool, error) { return hostProcessRunning(marker), nil },
			}
			if _, err := os.Stat("/usr/bin/top"); err == nil {
				cfg.FullScreen = []string{"top"}
			}
			terminaltest.Run(t, cfg)
		})
	}
}

func TestTerminalErrors(t *testing.T) {
	g, _ := newLocalGuest(t)
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{Token: "tok"})))
	if _, err := c.OpenTerminal(t.Context(), provider.TerminalRequest{Argv: []string{"sh"}}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("without the token: %v, want unauthorized", err)
	}
	c = newClient(t, startUnix(t, NewServer(g, ServerOptions{})))
	if _, err := c.OpenTerminal(t.Context(), provider.TerminalRequest{Argv: []string{"sh"}, WorkDir: "/no/such/dir"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("missing workdir: %v, want invalid_argument", err)
	}
	// A guest without terminals says so.
	c = newClient(t, startUnix(t, NewServer(noTerminals{g}, ServerOptions{})))
	if _, err := c.OpenTerminal(t.Context(), provider.TerminalRequest{}); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("guest without terminals: %v, want unimplemented", err)
	}
}

type noTerminals struct{ provider.Guest }

func hostProcessRunning(marker string) bool {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == marker {
				st, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
				if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] != 'Z' {
					return true
				}
			}
		}
	}
	return false
}
