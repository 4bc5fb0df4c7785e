package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

// Metrics is what the orchestrator reports to.
var _ orchestrator.Observer = (*Metrics)(nil)

// countsFunc adapts a function to SandboxCounter.
type countsFunc func(ctx context.Context) (map[string]int, error)

func (f countsFunc) Counts(ctx context.Context) (map[string]int, error) { return f(ctx) }

func scrape(t *testing.T, m *Metrics) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestExposition(t *testing.T) {
	m := New(nil)
	m.Op("docker", "spawn", 250*time.Millisecond, nil)
	m.Op("docker", "exec", 2*time.Second, errdefs.New(errdefs.ErrExecTimeout, "slow"))
	m.Op("docker", "exec", time.Millisecond, fmt.Errorf("wrapped: %w", errdefs.New(errdefs.ErrSandboxDestroyed, "gone")))
	m.Op("docker", "file_read", time.Millisecond, errors.New("unclassified"))
	m.Action("reaper", "expired")
	m.Action("reaper", "expired")
	m.Action("reconcile", "adopted")
	m.Action("elsewhere", "ignored")
	m.ObserveHTTP("POST /api/v1/sandboxes", 201, 30*time.Millisecond)

	code, text := scrape(t, m)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{
		`stacyvm_provider_operation_duration_seconds_count{op="spawn",outcome="ok",provider="docker"} 1`,
		`stacyvm_provider_operation_duration_seconds_sum{op="spawn",outcome="ok",provider="docker"} 0.25`,
		`stacyvm_provider_operation_duration_seconds_bucket{op="spawn",outcome="ok",provider="docker",le="0.25"} 1`,
		`stacyvm_provider_operation_duration_seconds_bucket{op="spawn",outcome="ok",provider="docker",le="0.1"} 0`,
		`stacyvm_provider_operation_duration_seconds_count{op="exec",outcome="exec_timeout",provider="docker"} 1`,
		`stacyvm_provider_operation_duration_seconds_count{op="exec",outcome="sandbox_destroyed",provider="docker"} 1`,
		`stacyvm_provider_operation_duration_seconds_count{op="file_read",outcome="error",provider="docker"} 1`,
		`stacyvm_reaper_actions_total{action="expired"} 2`,
		`stacyvm_reconcile_actions_total{action="adopted"} 1`,
		`stacyvm_http_request_duration_seconds_count{code="201",route="POST /api/v1/sandboxes"} 1`,
		`# TYPE stacyvm_provider_operation_duration_seconds histogram`,
		`process_start_time_seconds`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(text, "ignored") {
		t.Error("an action from an unknown source was exported")
	}
	// No counter set: no sandboxes gauge rather than a wrong one.
	if strings.Contains(text, "stacyvm_sandboxes{") {
		t.Error("stacyvm_sandboxes exported without a counter")
	}
}

func TestSandboxesGaugeReadsAtScrapeTime(t *testing.T) {
	var running atomic.Int64
	var fail atomic.Bool
	m := New(countsFunc(func(ctx context.Context) (map[string]int, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("Counts called without a deadline")
		}
		if fail.Load() {
			return nil, errors.New("store is gone")
		}
		return map[string]int{"running": int(running.Load()), "destroyed": 4, "hibernating": 1}, nil
	}))

	running.Store(2)
	_, text := scrape(t, m)
	for _, want := range []string{
		`stacyvm_sandboxes{state="running"} 2`,
		`stacyvm_sandboxes{state="destroyed"} 4`,
		`stacyvm_sandboxes{state="creating"} 0`, // every known state, zero or not
		`stacyvm_sandboxes{state="error"} 0`,
		`stacyvm_sandboxes{state="hibernating"} 1`, // and states it does not know
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	running.Store(5)
	if _, text = scrape(t, m); !strings.Contains(text, `stacyvm_sandboxes{state="running"} 5`) {
		t.Error("the gauge did not follow the counter")
	}

	// A failing count does not hide the other metrics.
	fail.Store(true)
	m.Op("mock", "spawn", time.Millisecond, nil)
	code, text := scrape(t, m)
	if !strings.Contains(text, `stacyvm_provider_operation_duration_seconds_count{op="spawn",outcome="ok",provider="mock"} 1`) {
		t.Errorf("status %d; other metrics hidden by the failing count:\n%s", code, text)
	}
	if strings.Contains(text, `stacyvm_sandboxes{state="running"}`) {
		t.Error("a stale gauge was exported after the count failed")
	}
}

func TestSetSandboxCounterLater(t *testing.T) {
	m := New(nil)
	m.SetSandboxCounter(countsFunc(func(context.Context) (map[string]int, error) {
		return map[string]int{"paused": 3}, nil
	}))
	if _, text := scrape(t, m); !strings.Contains(text, `stacyvm_sandboxes{state="paused"} 3`) {
		t.Errorf("counter set after New is not used:\n%s", text)
	}
}

func TestInstancesAreIndependent(t *testing.T) {
	a, b := New(nil), New(nil)
	a.Action("reaper", "expired")
	if _, text := scrape(t, b); strings.Contains(text, "stacyvm_reaper_actions_total{") {
		t.Error("two Metrics share a registry")
	}
}

func TestPoolMetrics(t *testing.T) {
	m := New(nil)
	_, text := scrape(t, m)
	if strings.Contains(text, "stacyvm_pool_") {
		t.Errorf("pool metrics without pools:\n%s", text)
	}
	var ready atomic.Int64
	ready.Store(2)
	m.SetPools(func() []Pool {
		return []Pool{{Name: "py", Target: 3, Ready: int(ready.Load()), Creating: 1, Claimed: 7, Misses: 2, Failures: 1}}
	})
	_, text = scrape(t, m)
	for _, want := range []string{
		`stacyvm_pool_target{pool="py"} 3`,
		`stacyvm_pool_ready{pool="py"} 2`,
		`stacyvm_pool_creating{pool="py"} 1`,
		`stacyvm_pool_claims_total{pool="py"} 7`,
		`stacyvm_pool_misses_total{pool="py"} 2`,
		`stacyvm_pool_refill_failures_total{pool="py"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q", want)
		}
	}
	ready.Store(3) // read at scrape time
	if _, text = scrape(t, m); !strings.Contains(text, `stacyvm_pool_ready{pool="py"} 3`) {
		t.Errorf("ready gauge not read at scrape time")
	}
}
