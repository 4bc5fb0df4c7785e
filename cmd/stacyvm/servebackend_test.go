package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom"
)

// TestServeBackend serves the mock provider with serve-backend and drives
// it through the custom provider over real HTTP: spawn, exec, destroy.
func TestServeBackend(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	cfg := "mock:\n  dir: " + filepath.Join(dir, "mock") + "\nprovider:\n  enabled: [mock]\nserver:\n  shutdown_timeout: 5s\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + freePort(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan result, 1)
	go func() {
		var out, errOut strings.Builder
		code := run(ctx, []string{"serve-backend", "--config", cfgPath, "--provider", "mock", "--listen", addr, "--api-key", "k1"},
			streams{in: strings.NewReader(""), out: &out, err: &errOut}, []string{})
		done <- result{code: code, stdout: out.String(), stderr: errOut.String()}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v1/health")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case r := <-done:
			t.Fatalf("serve-backend exited %d: %s", r.code, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve-backend never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	p, err := custom.New(custom.Options{URL: "http://" + addr, APIKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	id := "sb-0123456789abcdef01234567"
	if _, err := p.Spawn(ctx, provider.Spec{ID: id, Image: "any"}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	st, err := p.Exec(ctx, id, provider.ExecRequest{Argv: provider.ShellArgv("echo via-backend"), Timeout: time.Minute}, &out, io.Discard)
	if err != nil || st.ExitCode != 0 || out.String() != "via-backend\n" {
		t.Fatalf("exec through the backend: %+v %v %q", st, err, out.String())
	}
	if err := p.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	bad, _ := custom.New(custom.Options{URL: "http://" + addr, APIKey: "wrong"})
	if _, err := bad.Spawn(ctx, provider.Spec{ID: "sb-0123456789abcdef01234568", Image: "any"}); err == nil {
		t.Error("a wrong key was accepted")
	}

	cancel()
	select {
	case r := <-done:
		if r.code != 0 {
			t.Fatalf("serve-backend exited %d: %s", r.code, r.stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve-backend did not stop")
	}
}
