//go:build linux

package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/proot/prootest"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

// TestTerminalRealProviders runs the terminal suite (echo and exit code,
// resize with stty size, Ctrl-C, signals, top, disconnect cleanup) through
// the real `stacyvm serve` and its WebSocket on Docker with runc, Docker
// with gVisor's runsc, and PRoot.
func TestTerminalRealProviders(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real server with real providers; skipped in -short mode")
	}
	image, runsc := dockerReady()
	requireDocker := os.Getenv("STACYVM_TEST_DOCKER") == "1"
	bin := buildBinaries(t)
	const key = "terminal-test-key"
	for _, tc := range []struct{ name, image, config string }{
		{"runc", "stacyvm/busybox:test", "provider:\n  enabled: [docker]\ndocker:\n  runtime: runc\n"},
		{"runsc", "stacyvm/busybox:test", "provider:\n  enabled: [docker]\ndocker:\n  runtime: runsc\n"},
		{"proot", prootest.Busybox, "provider:\n  enabled: [proot]\nproot:\n  images_dir: " + prootest.ImagesDir() + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			switch {
			case tc.name == "proot":
				prootest.Require(t, prootest.Busybox)
				tc.config += "  state_dir: " + prootest.StateDir(t) + "\n"
			case !image || tc.name == "runsc" && !runsc:
				msg := "needs dockerd with stacyvm/busybox:test (and the runsc runtime): run scripts/ci/docker-up.sh"
				if requireDocker {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
			srv := startRealServer(t, bin, tc.config, key)
			ctx := t.Context()
			sb, err := srv.client.Spawn(ctx, client.SpawnRequest{Image: tc.image, TTL: 10 * time.Minute})
			if err != nil {
				t.Fatalf("spawn: %v\n%s", err, srv.logs.String())
			}
			t.Cleanup(func() {
				dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := srv.client.Destroy(dctx, sb.ID); err != nil {
					t.Errorf("destroy: %v", err)
				}
			})
			terminaltest.Run(t, terminaltest.Config{
				Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
					return srv.client.OpenTerminal(ctx, sb.ID, client.TerminalOptions{Command: strings.Join(req.Argv, " "), Rows: req.Rows, Cols: req.Cols})
				},
				Running: terminaltest.RunningByExec(func(ctx context.Context, script string) (string, error) {
					res, err := srv.client.Exec(ctx, sb.ID, client.ExecRequest{Command: script})
					return res.Stdout, err
				}),
				FullScreen: []string{"top"},
				Editor:     []string{"vi"},
			})
		})
	}
}
