package api

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
)

// ranked is a mock that claims a stronger isolation, so that auto prefers
// it over the plain mock.
type ranked struct {
	*mock.Provider
	iso provider.Isolation
}

func (r ranked) Capabilities() provider.Capabilities {
	c := r.Provider.Capabilities()
	c.Isolation = r.iso
	return c
}

// TestAutoStaysPinned: auto resolves once to the strongest healthy
// provider; when that one falls ill, a spawn that names no provider fails
// with 503 naming it, and nothing lands on the weaker provider.
func TestAutoStaysPinned(t *testing.T) {
	t.Parallel()
	var strong *mock.Provider
	e := newEnv(t, func(s *envSetup) {
		var err error
		strong, err = mock.New(mock.Options{Dir: filepath.Join(s.dir, "strong"), Name: "strong"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = strong.Close() })
		s.reg.Register(ranked{strong, provider.IsolationContainer})
		s.reg.SetDefault("auto")
		if p, err := s.reg.Resolve(t.Context()); err != nil || p.Name() != "strong" {
			t.Fatalf("Resolve = %v, %v; want strong", p, err)
		}
	})

	if sb := e.spawn(nil); sb.Provider != "strong" {
		t.Fatalf("spawn landed on %q, want strong", sb.Provider)
	}
	strong.SetHealth(errors.New("dockerd stopped answering"))
	for range 3 {
		body := e.expectError(e.call("POST", "/api/v1/sandboxes", nil), http.StatusServiceUnavailable, codeUnavailable)
		if !strings.Contains(body.Message, `"strong"`) || !strings.Contains(body.Hint, "weaker") {
			t.Fatalf("503 must name the pinned provider and say why: %+v", body)
		}
	}
	var provs []struct {
		Name    string `json:"name"`
		Default bool   `json:"default"`
		Healthy bool   `json:"healthy"`
	}
	e.expectJSON(e.call("GET", "/api/v1/providers", nil), http.StatusOK, &provs)
	for _, p := range provs {
		switch p.Name {
		case "strong":
			if !p.Default || p.Healthy {
				t.Errorf("strong = %+v; want the unhealthy default", p)
			}
		case "mock":
			if p.Default {
				t.Errorf("mock = %+v; auto moved to it", p)
			}
		}
	}
	var onMock []sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes?provider=mock", nil), http.StatusOK, &onMock)
	if len(onMock) != 0 {
		t.Fatalf("%d sandboxes fell through to the weaker provider", len(onMock))
	}
	// A request may still name the weaker provider explicitly.
	if sb := e.spawn(map[string]string{"provider": "mock"}); sb.Provider != "mock" {
		t.Fatalf("explicit spawn landed on %q", sb.Provider)
	}
	strong.SetHealth(nil)
	if sb := e.spawn(nil); sb.Provider != "strong" {
		t.Fatalf("after recovery spawn landed on %q, want strong", sb.Provider)
	}
}
