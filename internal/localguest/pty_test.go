//go:build linux

package localguest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

func TestTerminal(t *testing.T) {
	g, _ := newGuest(t)
	cfg := terminaltest.Config{
		Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
			return g.OpenTerminal(ctx, req)
		},
		Running: func(_ context.Context, marker string) (bool, error) {
			return hostProcessRunning(marker), nil
		},
	}
	if _, err := os.Stat("/usr/bin/top"); err == nil {
		cfg.FullScreen = []string{"top"}
	}
	terminaltest.Run(t, cfg)
}

// hostProcessRunning reports whether a live (not zombie) process's command
// line contains marker as an argument.
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

func TestTerminalBadRequests(t *testing.T) {
	g, _ := newGuest(t)
	for _, req := range []provider.TerminalRequest{
		{Argv: []string{"no-such-program-stacyvm"}},
		{Argv: []string{"sh"}, WorkDir: "/nope"},
		{Argv: []string{"sh", "a\x00b"}},
	} {
		if term, err := g.OpenTerminal(t.Context(), req); err == nil {
			term.Close()
			t.Errorf("OpenTerminal(%q) succeeded", req.Argv)
		}
	}
}
