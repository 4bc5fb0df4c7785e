package main

import (
	"io"
	"strings"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/stacyvm/stacyvm/internal/client/clienttest"
	"github.com/stacyvm/stacyvm/internal/mcp/mcptest"
)

// TestMCPStdio runs `stacyvm mcp` with its stdin and stdout wired to the
// official SDK's client, against a real server, and drives every tool.
// Closing the client's end ends the command with exit 0.
func TestMCPStdio(t *testing.T) {
	t.Parallel()
	env := clienttest.Start(t)
	toServerR, toServerW := io.Pipe()
	fromServerR, fromServerW := io.Pipe()
	var stderr strings.Builder
	exited := make(chan int, 1)
	go func() {
		code := run(t.Context(), []string{"--server", env.URL, "--api-key", clienttest.APIKey, "mcp"},
			streams{in: toServerR, out: fromServerW, err: &stderr}, nil)
		fromServerW.Close()
		exited <- code
	}()

	c := sdk.NewClient(&sdk.Implementation{Name: "mcp-stdio-test", Version: "1"}, nil)
	cs, err := c.Connect(t.Context(), &sdk.IOTransport{Reader: fromServerR, Writer: toServerW}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mcptest.Exercise(t, cs)
	if err := cs.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	toServerW.Close()
	if code := <-exited; code != 0 {
		t.Errorf("stacyvm mcp exited %d: %s", code, stderr.String())
	}
}

// TestMCPStdioBadKey: every tool call reports the server's refusal as a
// tool error naming the code.
func TestMCPStdioBadKey(t *testing.T) {
	t.Parallel()
	env := clienttest.Start(t)
	toServerR, toServerW := io.Pipe()
	fromServerR, fromServerW := io.Pipe()
	exited := make(chan int, 1)
	go func() {
		code := run(t.Context(), []string{"--server", env.URL, "--api-key", "wrong", "mcp"},
			streams{in: toServerR, out: fromServerW, err: io.Discard}, nil)
		fromServerW.Close()
		exited <- code
	}()
	c := sdk.NewClient(&sdk.Implementation{Name: "mcp-stdio-test", Version: "1"}, nil)
	cs, err := c.Connect(t.Context(), &sdk.IOTransport{Reader: fromServerR, Writer: toServerW}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if msg := mcptest.CallError(t, cs, "list_sandboxes", map[string]any{}); !strings.Contains(msg, "UNAUTHORIZED") {
		t.Errorf("list_sandboxes with a wrong key: %q", msg)
	}
	_ = cs.Close()
	toServerW.Close()
	<-exited
}
