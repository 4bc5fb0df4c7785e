// Package metrics exposes StacyVM's Prometheus metrics: provider operation
// latencies, reaper and reconcile actions (it implements
// orchestrator.Observer), sandboxes by state (computed at scrape time) and
// HTTP request latencies by route. Everything lives in its own registry,
// so that tests and several servers in one process do not collide.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// SandboxCounter reports how many sandboxes exist in each state;
// *orchestrator.Manager implements it.
type SandboxCounter interface {
	Counts(ctx context.Context) (map[string]int, error)
}

// states are always exported, zero or not, so that a dashboard's series
// do not appear and vanish with the first sandbox of each state.
var states = []string{"creating", "pooled", "running", "pausing", "paused", "resuming", "stopped",
	"error", "destroying", "destroyed"}

// countTimeout bounds the store query behind one scrape.
const countTimeout = 5 * time.Second

// Metrics is the registry and its instruments. The zero value is not
// usable; call New.
type Metrics struct {
	reg       *prometheus.Registry
	ops       *prometheus.HistogramVec
	reaper    *prometheus.CounterVec
	reconcile *prometheus.CounterVec
	trans     *prometheus.CounterVec
	idle      *prometheus.CounterVec
	http      *prometheus.HistogramVec
	counter   atomic.Pointer[SandboxCounter]
	pools     atomic.Pointer[func() []Pool]
}

// New returns Metrics reporting sandbox counts from c. c may be nil and
// set later with SetSandboxCounter: the Manager takes its Observer at
// construction, so wiring goes metrics.New(nil), orchestrator.New(...,
// Config{Observer: met}), met.SetSandboxCounter(mgr).
func New(c SandboxCounter) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stacyvm_provider_operation_duration_seconds",
			Help:    "Duration of provider operations (spawn, exec, destroy, file_*), by provider, operation and outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"provider", "op", "outcome"}),
		reaper: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stacyvm_reaper_actions_total",
			Help: "What the TTL reaper did, by action.",
		}, []string{"action"}),
		reconcile: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stacyvm_reconcile_actions_total",
			Help: "What reconcile did with records and runtimes, by action.",
		}, []string{"action"}),
		trans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stacyvm_sandbox_transitions_total",
			Help: "Sandbox lifecycle transitions, by state left and state entered.",
		}, []string{"from", "to"}),
		idle: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stacyvm_idle_actions_total",
			Help: "What the idle sweeper did with idle sandboxes, by action (pause, destroy, failed).",
		}, []string{"action"}),
		http: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "stacyvm_http_request_duration_seconds",
			Help:    "Duration of HTTP requests by route pattern and status code; streams count until they end.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "code"}),
	}
	if c != nil {
		m.SetSandboxCounter(c)
	}
	m.reg.MustRegister(m.ops, m.reaper, m.reconcile, m.trans, m.idle, m.http, &sandboxCollector{m: m},
		&poolCollector{m: m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetSandboxCounter sets where the sandboxes gauge comes from.
func (m *Metrics) SetSandboxCounter(c SandboxCounter) { m.counter.Store(&c) }

// Pool is one warm pool's numbers at scrape time.
type Pool struct {
	Name                      string
	Target, Ready, Creating   int
	Claimed, Misses, Failures int64
}

// SetPools sets where the warm pool metrics come from: read at each
// scrape, so they never drift from GET /api/v1/pool/status.
func (m *Metrics) SetPools(f func() []Pool) { m.pools.Store(&f) }

// Registry is the registry behind Handler, for callers that add their own
// collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the Prometheus text exposition. A failing collector
// does not hide the others' metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Op records one provider operation; it implements orchestrator.Observer.
// The outcome is "ok" or the error's class ("exec_timeout",
// "provider_unavailable"…, "error" when unclassified), a bounded set.
func (m *Metrics) Op(providerName, op string, d time.Duration, err error) {
	m.ops.WithLabelValues(providerName, op, outcome(err)).Observe(d.Seconds())
}

func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if c := errdefs.Classify(err); c != nil {
		return strings.ReplaceAll(c.Error(), " ", "_")
	}
	return "error"
}

// Transition records one sandbox lifecycle transition; it implements
// orchestrator.Observer. Both labels are lifecycle states, a bounded set.
func (m *Metrics) Transition(from, to string) {
	m.trans.WithLabelValues(from, to).Inc()
}

// Action records what the reaper, reconcile or the idle sweeper did; it implements
// orchestrator.Observer. Other sources have no metric and are ignored.
func (m *Metrics) Action(source, action string) {
	switch source {
	case "reaper":
		m.reaper.WithLabelValues(action).Inc()
	case "reconcile":
		m.reconcile.WithLabelValues(action).Inc()
	case "idle":
		m.idle.WithLabelValues(action).Inc()
	}
}

// ObserveHTTP records one finished HTTP request. route is the mux pattern
// ("POST /api/v1/sandboxes/{id}/exec"), never the raw path, so that the
// label set stays bounded.
func (m *Metrics) ObserveHTTP(route string, status int, d time.Duration) {
	m.http.WithLabelValues(route, strconv.Itoa(status)).Observe(d.Seconds())
}

// sandboxCollector reads the sandbox counts at scrape time, so the gauge
// can never drift from the store.
type sandboxCollector struct{ m *Metrics }

var sandboxesDesc = prometheus.NewDesc("stacyvm_sandboxes", "Sandboxes known to the store, by state.", []string{"state"}, nil)

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sandboxesDesc }

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.m.counter.Load()
	if p == nil || *p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), countTimeout)
	defer cancel()
	counts, err := (*p).Counts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sandboxesDesc, err)
		return
	}
	seen := map[string]bool{}
	for _, st := range states {
		seen[st] = true
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(counts[st]), st)
	}
	for st, n := range counts {
		if !seen[st] {
			ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), st)
		}
	}
}

// poolCollector exports each warm pool's target, ready and creating
// members as gauges, and its claims, misses and failed refills as
// counters (monotonic for the life of the process).
type poolCollector struct{ m *Metrics }

var (
	poolTargetDesc   = prometheus.NewDesc("stacyvm_pool_target", "Members a warm pool keeps ready.", []string{"pool"}, nil)
	poolReadyDesc    = prometheus.NewDesc("stacyvm_pool_ready", "Warm pool members ready to claim.", []string{"pool"}, nil)
	poolCreatingDesc = prometheus.NewDesc("stacyvm_pool_creating", "Warm pool members being spawned.", []string{"pool"}, nil)
	poolClaimsDesc   = prometheus.NewDesc("stacyvm_pool_claims_total", "Spawns answered with a warm pool member.", []string{"pool"}, nil)
	poolMissesDesc   = prometheus.NewDesc("stacyvm_pool_misses_total", "Spawns that matched a warm pool while it was empty.", []string{"pool"}, nil)
	poolFailDesc     = prometheus.NewDesc("stacyvm_pool_refill_failures_total", "Warm pool refill spawns that failed.", []string{"pool"}, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolTargetDesc, poolReadyDesc, poolCreatingDesc, poolClaimsDesc, poolMissesDesc, poolFailDesc} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.pools.Load()
	if f == nil || *f == nil {
		return
	}
	for _, p := range (*f)() {
		ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(p.Target), p.Name)
		ch <- prometheus.MustNewConstMetric(poolReadyDesc, prometheus.GaugeValue, float64(p.Ready), p.Name)
		ch <- prometheus.MustNewConstMetric(poolCreatingDesc, prometheus.GaugeValue, float64(p.Creating), p.Name)
		ch <- prometheus.MustNewConstMetric(poolClaimsDesc, prometheus.CounterValue, float64(p.Claimed), p.Name)
		ch <- prometheus.MustNewConstMetric(poolMissesDesc, prometheus.CounterValue, float64(p.Misses), p.Name)
		ch <- prometheus.MustNewConstMetric(poolFailDesc, prometheus.CounterValue, float64(p.Failures), p.Name)
	}
}
