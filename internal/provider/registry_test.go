package provider_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// stub is the smallest Provider for registry tests: only Name,
// Capabilities and Health matter here.
type stub struct {
	provider.Provider
	name   string
	iso    provider.Isolation
	health error
}

func (s stub) Name() string                        { return s.name }
func (s stub) Capabilities() provider.Capabilities { return provider.Capabilities{Isolation: s.iso} }
func (s stub) Health(context.Context) error        { return s.health }

func TestRegistryGetAndDecline(t *testing.T) {
	r := provider.NewRegistry()
	r.Register(stub{name: "mock"})
	r.Decline("firecracker", errors.New("/dev/kvm missing"))

	if p, err := r.Get("mock"); err != nil || p.Name() != "mock" {
		t.Fatalf("Get(mock) = %v, %v", p, err)
	}
	_, err := r.Get("firecracker")
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Fatalf("declined provider: %v", err)
	}
	if _, err := r.Get("nope"); !errors.Is(err, errdefs.ErrProviderNotFound) {
		t.Fatalf("unknown provider: %v", err)
	}
	entries := r.Entries()
	if len(entries) != 2 || entries[0].Name != "mock" || entries[1].Reason == nil {
		t.Fatalf("entries = %+v", entries)
	}
}

func TestRegistryAutoPrefersStrongestHealthy(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name      string
		providers []stub
		want      string
		wantErr   error
	}{
		{"strongest wins", []stub{{name: "mock"}, {name: "docker", iso: provider.IsolationContainer}, {name: "proot", iso: provider.IsolationProcess}}, "docker", nil},
		{"unhealthy skipped", []stub{{name: "mock"}, {name: "docker", iso: provider.IsolationContainer, health: errors.New("down")}}, "mock", nil},
		{"tie goes to first registered", []stub{{name: "a", iso: provider.IsolationVM}, {name: "b", iso: provider.IsolationVM}}, "a", nil},
		{"none healthy", []stub{{name: "docker", health: errors.New("down")}}, "", errdefs.ErrProviderUnavailable},
		{"none loaded", nil, "", errdefs.ErrProviderUnavailable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := provider.NewRegistry()
			for _, p := range tc.providers {
				r.Register(p)
			}
			p, err := r.Default(ctx)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || p.Name() != tc.want {
				t.Fatalf("got %v, %v; want %s", p, err, tc.want)
			}
		})
	}
}

func TestRegistryExplicitDefault(t *testing.T) {
	r := provider.NewRegistry()
	r.Register(stub{name: "mock"})
	r.Register(stub{name: "docker", iso: provider.IsolationContainer})
	if r.DefaultName() != "auto" {
		t.Errorf("DefaultName = %q", r.DefaultName())
	}
	r.SetDefault("mock")
	if p, err := r.Default(context.Background()); err != nil || p.Name() != "mock" {
		t.Fatalf("Default = %v, %v", p, err)
	}
}

func TestSerialWritersNeverOverlap(t *testing.T) {
	var active, overlaps int
	w := writerFunc(func(p []byte) (int, error) {
		active++
		if active > 1 {
			overlaps++
		}
		active--
		return len(p), nil
	})
	out, errw := provider.SerialWriters(w, w)
	done := make(chan struct{})
	go func() {
		for range 1000 {
			out.Write([]byte("o"))
		}
		close(done)
	}()
	for range 1000 {
		errw.Write([]byte("e"))
	}
	<-done
	if overlaps != 0 {
		t.Fatalf("%d overlapping writes", overlaps)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// flaky is a stub whose health can change, or hang until its context ends.
type flaky struct {
	stub
	down *error
	hang bool
}

func (f flaky) Health(ctx context.Context) error {
	if f.hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return *f.down
}

func TestRegistryResolvePinsAuto(t *testing.T) {
	ctx := context.Background()
	var dockerDown error
	r := provider.NewRegistry()
	r.Register(stub{name: "proot", iso: provider.IsolationProcess})
	r.Register(flaky{stub: stub{name: "docker", iso: provider.IsolationContainer}, down: &dockerDown})
	if r.Pinned() != "" {
		t.Fatalf("pinned before Resolve: %q", r.Pinned())
	}
	if p, err := r.Resolve(ctx); err != nil || p.Name() != "docker" || r.Pinned() != "docker" {
		t.Fatalf("Resolve = %v, %v (pinned %q)", p, err, r.Pinned())
	}
	dockerDown = errors.New("daemon gone")
	// Default does not probe and never moves: the orchestrator's health
	// check fails the spawn instead.
	if p, err := r.Default(ctx); err != nil || p.Name() != "docker" {
		t.Fatalf("Default after docker fell ill = %v, %v; want docker", p, err)
	}
	p, _ := r.Default(ctx)
	if err := provider.CheckHealth(ctx, p); !errors.Is(err, errdefs.ErrProviderUnavailable) || !strings.Contains(err.Error(), `"docker"`) {
		t.Fatalf("CheckHealth = %v; want unavailable naming docker", err)
	}
	// A configured default is not auto: nothing is pinned.
	r.SetDefault("proot")
	if p, err := r.Resolve(ctx); err != nil || p.Name() != "proot" || r.Pinned() != "" {
		t.Fatalf("explicit Resolve = %v, %v (pinned %q)", p, err, r.Pinned())
	}
}

func TestRegistryAutoBoundsHealthProbes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for one HealthTimeout")
	}
	r := provider.NewRegistry()
	r.Register(stub{name: "proot", iso: provider.IsolationProcess})
	r.Register(flaky{stub: stub{name: "docker", iso: provider.IsolationContainer}, hang: true})
	start := time.Now()
	p, err := r.Auto(context.Background())
	if err != nil || p.Name() != "proot" {
		t.Fatalf("Auto = %v, %v; a hung probe must time out and count as unhealthy", p, err)
	}
	if d := time.Since(start); d > provider.HealthTimeout+10*time.Second {
		t.Fatalf("Auto took %s with a hung provider", d)
	}
}
