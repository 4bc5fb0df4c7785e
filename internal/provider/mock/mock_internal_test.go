package mock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func newProvider(t *testing.T) (*Provider, string) {
	t.Helper()
	dir := t.TempDir()
	p, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, dir
}

func spawn(t *testing.T, p *Provider, id string) {
	t.Helper()
	if _, err := p.Spawn(t.Context(), provider.Spec{ID: id, Image: "img"}); err != nil {
		t.Fatalf("Spawn(%s): %v", id, err)
	}
}

func TestDeclaresNoIsolation(t *testing.T) {
	p, _ := newProvider(t)
	if p.Capabilities().Isolation != provider.IsolationNone {
		t.Errorf("Isolation = %v, want none", p.Capabilities().Isolation)
	}
	if w := p.Warning(); !strings.Contains(w, "no isolation") {
		t.Errorf("Warning() = %q, want it to say there is no isolation", w)
	}
	if p.Name() != "mock" {
		t.Errorf("Name() = %q", p.Name())
	}
	named, err := New(Options{Dir: t.TempDir(), Name: "mock2"})
	if err != nil || named.Name() != "mock2" {
		t.Errorf("named mock: %v, %v", named, err)
	}
	if _, err := New(Options{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("New without Dir: %v, want invalid argument", err)
	}
}

func TestSetHealth(t *testing.T) {
	p, dir := newProvider(t)
	p.SetHealth(errors.New("daemon down"))
	if err := p.Health(t.Context()); !errors.Is(err, errdefs.ErrProviderUnavailable) || !strings.Contains(err.Error(), "daemon down") {
		t.Errorf("Health = %v, want provider unavailable carrying the cause", err)
	}
	_, err := p.Spawn(t.Context(), provider.Spec{ID: "sb-1", Image: "img"})
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("Spawn while unhealthy = %v, want provider unavailable", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed Spawn left %d entries behind", len(entries))
	}
	p.SetHealth(nil)
	if err := p.Health(t.Context()); err != nil {
		t.Errorf("Health after reset = %v", err)
	}
	spawn(t, p, "sb-1")
}

func TestSpawnDelayHonoursContext(t *testing.T) {
	p, dir := newProvider(t)
	p.SetSpawnDelay(5 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Spawn(ctx, provider.Spec{ID: "sb-slow", Image: "img"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Spawn = %v, want the context's deadline error", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Spawn ignored its context for %v", el)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("cancelled Spawn left %d entries behind", len(entries))
	}
	p.SetSpawnDelay(50 * time.Millisecond)
	start = time.Now()
	spawn(t, p, "sb-slow")
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("Spawn took %v, want at least the 50ms delay", el)
	}
}

func TestSpawnValidation(t *testing.T) {
	p, _ := newProvider(t)
	spawn(t, p, "sb-dup")
	tests := []struct {
		spec provider.Spec
		want *errdefs.Class
	}{
		{provider.Spec{ID: "../escape", Image: "img"}, errdefs.ErrInvalidArgument},
		{provider.Spec{ID: "a/b", Image: "img"}, errdefs.ErrInvalidArgument},
		{provider.Spec{ID: "", Image: "img"}, errdefs.ErrInvalidArgument},
		{provider.Spec{ID: "sb-noimage"}, errdefs.ErrInvalidArgument},
		{provider.Spec{ID: "sb-dup", Image: "img"}, errdefs.ErrConflict},
	}
	for _, tt := range tests {
		if _, err := p.Spawn(t.Context(), tt.spec); !errors.Is(err, tt.want) {
			t.Errorf("Spawn(%+v) = %v, want %v", tt.spec, err, tt.want)
		}
	}
	if _, err := p.Status(t.Context(), "../escape"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("Status of an invalid id = %v, want sandbox not found", err)
	}
	if err := p.Destroy(t.Context(), "sb-dup"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Spawn(t.Context(), provider.Spec{ID: "sb-dup", Image: "img"}); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Spawn reusing a destroyed id = %v, want conflict", err)
	}
}

func TestRemovedDirectoryMeansGone(t *testing.T) {
	p, dir := newProvider(t)
	spawn(t, p, "sb-removed")
	if err := os.RemoveAll(filepath.Join(dir, "sb-removed")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Status(t.Context(), "sb-removed"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("Status = %v, want sandbox not found", err)
	}
	if list, err := p.List(t.Context()); err != nil || len(list) != 0 {
		t.Errorf("List = %+v, %v; want empty", list, err)
	}
	if err := p.Destroy(t.Context(), "sb-removed"); err != nil {
		t.Errorf("Destroy of a removed sandbox = %v", err)
	}
}

// A directory without a state file (a Spawn cut short) is not a sandbox.
func TestListIgnoresIncompleteDirs(t *testing.T) {
	p, dir := newProvider(t)
	spawn(t, p, "sb-ok")
	if err := os.MkdirAll(filepath.Join(dir, "sb-half", rootDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stray-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := p.List(t.Context())
	if err != nil || len(list) != 1 || list[0].ID != "sb-ok" {
		t.Errorf("List = %+v, %v; want only sb-ok", list, err)
	}
	if _, err := p.Status(t.Context(), "sb-half"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("Status(sb-half) = %v, want sandbox not found", err)
	}
}

func TestDestroyKillsRunningCommands(t *testing.T) {
	p, dir := newProvider(t)
	spawn(t, p, "sb-busy")
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := p.Exec(context.Background(), "sb-busy", provider.ExecRequest{Argv: []string{"sh", "-c", "echo up; sleep 30"}}, writerFunc(func(b []byte) (int, error) {
			select {
			case <-started:
			default:
				close(started)
			}
			return len(b), nil
		}), nil)
		done <- err
	}()
	<-started
	if err := p.Destroy(t.Context(), "sb-busy"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrSandboxDestroyed) {
			t.Errorf("Exec cut short by Destroy = %v, want sandbox destroyed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Exec still running 5s after Destroy")
	}
	if _, err := os.Stat(filepath.Join(dir, "sb-busy")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox directory still exists: %v", err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

func TestLogs(t *testing.T) {
	p, _ := newProvider(t)
	spawn(t, p, "sb-log")
	for i := range 3 {
		if _, err := p.Exec(t.Context(), "sb-log", provider.ExecRequest{Argv: []string{"sh", "-c", fmt.Sprintf("exit %d", i)}}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	all, err := p.Logs(t.Context(), "sb-log", 0)
	if err != nil {
		t.Fatal(err)
	}
	// spawned, then a start and an exit line per exec
	if len(all) != 7 || !strings.Contains(all[0], "spawned") || !strings.Contains(all[1], "exec started") ||
		!strings.Contains(all[6], "exited with code 2") {
		t.Errorf("Logs = %q", all)
	}
	last, err := p.Logs(t.Context(), "sb-log", 2)
	if err != nil || len(last) != 2 || last[1] != all[6] || last[0] != all[5] {
		t.Errorf("Logs(2) = %q, %v; want the last two lines", last, err)
	}
}
