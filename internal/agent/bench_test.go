package agent

import (
	"slices"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// reportPercentiles adds p50 and p99 of the per-call durations to the
// benchmark output; ns/op alone hides the tail.
func reportPercentiles(b *testing.B, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkExecTrue is the product's number: exec `true` through client →
// unix socket → server → localguest, on a warm pooled connection.
func BenchmarkExecTrue(b *testing.B) {
	g, _ := newLocalGuest(b)
	c := newClient(b, startUnix(b, NewServer(g, ServerOptions{})))
	ctx := b.Context()
	req := provider.ExecRequest{Argv: []string{"true"}}
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	durations := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		st, err := c.Exec(ctx, req, nil, nil)
		durations = append(durations, time.Since(start))
		if err != nil || st.ExitCode != 0 {
			b.Fatalf("exec true: %+v %v", st, err)
		}
	}
	reportPercentiles(b, durations)
}

// BenchmarkExecTrueUpgraded is BenchmarkExecTrue through the upgraded
// exec (a signal channel, no stdin): a new connection per command, the
// cost of signals and stdin.
func BenchmarkExecTrueUpgraded(b *testing.B) {
	g, _ := newLocalGuest(b)
	c := newClient(b, startUnix(b, NewServer(g, ServerOptions{})))
	ctx := b.Context()
	req := provider.ExecRequest{Argv: []string{"true"}, Signals: make(chan string)}
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	durations := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		st, err := c.Exec(ctx, req, nil, nil)
		durations = append(durations, time.Since(start))
		if err != nil || st.ExitCode != 0 {
			b.Fatalf("exec true: %+v %v", st, err)
		}
	}
	reportPercentiles(b, durations)
}

// BenchmarkExecTrueLocal is the same command without the agent, so the
// difference is the protocol's cost.
func BenchmarkExecTrueLocal(b *testing.B) {
	g, _ := newLocalGuest(b)
	ctx := b.Context()
	req := provider.ExecRequest{Argv: []string{"true"}}
	durations := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		st, err := g.Exec(ctx, req, nil, nil)
		durations = append(durations, time.Since(start))
		if err != nil || st.ExitCode != 0 {
			b.Fatalf("exec true: %+v %v", st, err)
		}
	}
	reportPercentiles(b, durations)
}

// BenchmarkHealth is one protocol round trip with no work behind it.
func BenchmarkHealth(b *testing.B) {
	g, _ := newLocalGuest(b)
	c := newClient(b, startUnix(b, NewServer(g, ServerOptions{})))
	ctx := b.Context()
	durations := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if _, err := c.Health(ctx); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	reportPercentiles(b, durations)
}
