package latency

import (
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var s Sample
	if s.Percentile(0.5) != 0 {
		t.Fatal("empty sample must give 0")
	}
	for i := 100; i >= 1; i-- { // unsorted on purpose
		s.Add(time.Duration(i) * time.Millisecond)
	}
	cases := map[float64]time.Duration{0.01: 1, 0.50: 50, 0.95: 95, 0.99: 99, 1: 100}
	for p, want := range cases {
		if got := s.Percentile(p); got != want*time.Millisecond {
			t.Errorf("p%v = %v, want %vms", p*100, got, want)
		}
	}
	if s.Len() != 100 {
		t.Errorf("Len = %d", s.Len())
	}
}
