//go:build linux

package firecracker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/api"
	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/firecracker"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

const stackKey = "fcsnap-test-key"

// stack is one server: the API over a Manager over SQLite and a
// Firecracker provider on the FAKE VMM.
type stack struct {
	url    string
	client *client.Client
	fc     *firecracker.Provider
	stop   func()
}

// startStack starts a server on the database and state directory in dir,
// as `stacyvm serve` would after a restart on the same configuration.
func startStack(t *testing.T, dir string, pauseToDisk bool) (*stack, string) {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "stacyvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	instance, err := st.InstanceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg, image := firecracker.FakeForTest(t, filepath.Join(dir, "fc"))
	cfg.PauseToDisk = pauseToDisk
	fc, err := firecracker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := provider.NewRegistry()
	reg.Register(fc)
	reg.SetDefault(fc.Name())
	quiet := slog.New(slog.DiscardHandler)
	m := orchestrator.New(st, reg, orchestrator.Config{Logger: quiet, InstanceID: instance, DefaultImage: image})
	if _, err := m.Reconcile(ctx); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	srv := httptest.NewServer(api.New(m, api.Options{APIKey: stackKey, Version: "test", Logger: quiet}))
	cl, err := client.New(srv.URL, stackKey)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{url: srv.URL, client: cl, fc: fc}
	s.stop = func() {
		// What a SIGKILL leaves: VMs (or their snapshots) and records.
		srv.Close()
		fc.Close()
		st.Close()
	}
	t.Cleanup(s.stop)
	return s, image
}

func (s *stack) post(t *testing.T, id, op string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.url+"/api/v1/sandboxes/"+id+"/"+op, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-API-Key", stackKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", op, resp.StatusCode, b)
	}
	var sb struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(b, &sb); err != nil {
		t.Fatalf("POST %s: %v: %s", op, err, b)
	}
	return sb.State
}

func (s *stack) state(t *testing.T, id string) string {
	t.Helper()
	sb, err := s.client.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sb.State
}

// Through the real server: a sandbox paused to disk survives a server
// restart as paused (reconcile reads the provider's suspended sandbox,
// which has no VMM), resumes in the restarted server with its files, and
// its destroy removes its directory, snapshot included.
func TestServerPauseToDiskAcrossRestart(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "fcs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a, image := startStack(t, dir, true)
	sb, err := a.client.Spawn(t.Context(), client.SpawnRequest{Image: image})
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	if err := a.client.WriteFile(t.Context(), sb.ID, "/workspace/note", strings.NewReader("written before the pause"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := a.post(t, sb.ID, "pause"); got != "paused" {
		t.Fatalf("pause answered state %q", got)
	}
	sbDir := firecracker.SandboxDirForTest(a.fc, sb.ID)
	if _, err := os.Stat(filepath.Join(sbDir, "paused", "mem")); err != nil {
		t.Fatalf("no snapshot in the sandbox's directory after pause: %v", err)
	}
	a.stop()

	b, _ := startStack(t, dir, true)
	if got := b.state(t, sb.ID); got != "paused" {
		t.Fatalf("after a restart the sandbox is %q, want paused", got)
	}
	// The orchestrator resumes a paused sandbox before a guest operation
	// (sandbox.auto_resume, on by default); here the resume is explicit.
	if got := b.post(t, sb.ID, "resume"); got != "running" {
		t.Fatalf("resume answered state %q", got)
	}
	rc, err := b.client.ReadFile(t.Context(), sb.ID, "/workspace/note")
	if err != nil {
		t.Fatal(err)
	}
	note, _ := io.ReadAll(rc)
	rc.Close()
	if string(note) != "written before the pause" {
		t.Errorf("file after pause to disk, restart and resume: %q", note)
	}
	res, err := b.client.Exec(t.Context(), sb.ID, client.ExecRequest{Command: "echo resumed"})
	if err != nil || res.Stdout != "resumed\n" {
		t.Errorf("exec after resume: %+v, %v", res, err)
	}
	// A guest operation on a sandbox paused to disk resumes it first
	// (sandbox.auto_resume, on by default).
	if got := b.post(t, sb.ID, "pause"); got != "paused" {
		t.Fatalf("second pause answered state %q", got)
	}
	res, err = b.client.Exec(t.Context(), sb.ID, client.ExecRequest{Command: "cat /workspace/note"})
	if err != nil || res.Stdout != "written before the pause" {
		t.Errorf("exec on a sandbox paused to disk: %+v, %v", res, err)
	}
	if got := b.state(t, sb.ID); got != "running" {
		t.Errorf("after an exec resumed it, the sandbox is %q", got)
	}
	// Paused to disk again, then destroyed: nothing is left.
	if got := b.post(t, sb.ID, "pause"); got != "paused" {
		t.Fatalf("third pause answered state %q", got)
	}
	if err := b.client.Destroy(context.WithoutCancel(t.Context()), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sbDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox directory after destroying it paused to disk: %v", err)
	}
}
