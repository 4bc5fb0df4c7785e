package client_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/client/clienttest"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

// TestTerminal runs the terminal suite through the real API stack (auth,
// edge checks, WebSocket) on the mock provider.
func TestTerminal(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the suite's process checks read /proc")
	}
	env := clienttest.Start(t)
	sb, err := env.Client.Spawn(t.Context(), client.SpawnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := terminaltest.Config{
		Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
			return env.Client.OpenTerminal(ctx, sb.ID, client.TerminalOptions{Command: strings.Join(req.Argv, " "), Rows: req.Rows, Cols: req.Cols})
		},
		Running: terminaltest.RunningByExec(func(ctx context.Context, script string) (string, error) {
			res, err := env.Client.Exec(ctx, sb.ID, client.ExecRequest{Command: script})
			return res.Stdout, err
		}),
	}
	if _, err := os.Stat("/usr/bin/top"); err == nil {
		cfg.FullScreen = []string{"top"}
	}
	terminaltest.Run(t, cfg)
}

func TestTerminalErrors(t *testing.T) {
	env := clienttest.Start(t)
	ctx := t.Context()
	if _, err := env.Client.OpenTerminal(ctx, "sb-missing", client.TerminalOptions{}); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Fatalf("unknown sandbox: %v, want sandbox not found", err)
	}
	sb, err := env.Client.Spawn(ctx, client.SpawnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	url := env.URL + "/api/v1/sandboxes/" + sb.ID + "/terminal"

	// A plain GET is told to upgrade.
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("X-API-Key", clienttest.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d, want 400", resp.StatusCode)
	}
	// A bad size is refused before the upgrade.
	if _, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"?rows=0&cols=80", &websocket.DialOptions{
		HTTPHeader: http.Header{"X-API-Key": {clienttest.APIKey}},
	}); err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("rows=0: %v %v, want 400", err, resp)
	}

	// Browsers cannot set headers: the key travels as a subprotocol, and
	// the server selects only the terminal protocol.
	ws := "ws" + strings.TrimPrefix(url, "http") + "?command=" + "echo%20via-$((1%2B1))"
	for _, tc := range []struct {
		name   string
		protos []string
		ok     bool
	}{
		{"key as subprotocol", []string{client.TerminalProtocol, "stacyvm.key." + base64.RawURLEncoding.EncodeToString([]byte(clienttest.APIKey))}, true},
		{"wrong key", []string{client.TerminalProtocol, "stacyvm.key." + base64.RawURLEncoding.EncodeToString([]byte("nope"))}, false},
		{"no key", []string{client.TerminalProtocol}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := websocket.Dial(ctx, ws, &websocket.DialOptions{Subprotocols: tc.protos})
			if !tc.ok {
				if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("dial: %v %v, want 401", err, resp)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.CloseNow()
			if c.Subprotocol() != client.TerminalProtocol {
				t.Fatalf("subprotocol %q, want %q", c.Subprotocol(), client.TerminalProtocol)
			}
			var out []byte
			for {
				typ, msg, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("read: %v (output %q)", err, out)
				}
				if typ == websocket.MessageText {
					if !strings.Contains(string(msg), `"exit_code":0`) {
						t.Fatalf("control message %s, want exit 0", msg)
					}
					break
				}
				out = append(out, msg...)
			}
			if !strings.Contains(string(out), "via-2") {
				t.Fatalf("output %q lacks via-2", out)
			}
		})
	}

	// A bad control message is answered and the session goes on.
	term, err := env.Client.OpenTerminal(ctx, sb.ID, client.TerminalOptions{Command: "sh"})
	if err != nil {
		t.Fatal(err)
	}
	defer term.Close()
	if err := term.Signal("NOPE"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("Signal(NOPE): %v", err)
	}
}
