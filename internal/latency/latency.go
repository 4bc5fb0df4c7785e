// Package latency turns benchmark timings into the percentiles StacyVM's
// performance targets are stated in (p50/p95/p99), so that every benchmark
// reports them the same way.
package latency

import (
	"slices"
	"testing"
	"time"
)

// Sample is a set of measured durations.
type Sample struct {
	d       []time.Duration
	elapsed time.Duration
}

// Add records one duration.
func (s *Sample) Add(d time.Duration) { s.d = append(s.d, d) }

// Len is the number of recorded durations.
func (s *Sample) Len() int { return len(s.d) }

// Percentile returns the p-th percentile (0 < p ≤ 1) by nearest rank, or 0
// for an empty sample.
func (s *Sample) Percentile(p float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	sorted := slices.Clone(s.d)
	slices.Sort(sorted)
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Report adds prefix-p50-ms, -p95-ms and -p99-ms (and prefix-req/s when
// the sample was taken by Measure) to the benchmark's output.
func (s *Sample) Report(b *testing.B, prefix string) {
	if prefix != "" {
		prefix += "-"
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(s.Percentile(0.50)), prefix+"p50-ms")
	b.ReportMetric(ms(s.Percentile(0.95)), prefix+"p95-ms")
	b.ReportMetric(ms(s.Percentile(0.99)), prefix+"p99-ms")
	if s.elapsed > 0 {
		b.ReportMetric(float64(len(s.d))/s.elapsed.Seconds(), prefix+"req/s")
	}
}

// Measure runs op in the benchmark loop, timing each call, and reports the
// percentiles and the sequential rate under prefix. A failing op fails
// the benchmark.
func Measure(b *testing.B, prefix string, op func() error) *Sample {
	s := &Sample{}
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		s.Add(time.Since(t0))
	}
	s.elapsed = time.Since(start)
	s.Report(b, prefix)
	return s
}
