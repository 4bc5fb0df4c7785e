package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// BenchmarkExecTrue measures `true` run through the whole HTTP stack (one
// client, sequential requests, keep-alive) against the same command
// through the provider directly, so that the difference is the API's and
// the orchestrator's cost. Reported: p50 and p99 latency, and requests per
// second of the single client.
func BenchmarkExecTrue(b *testing.B) {
	e := newEnv(b, withOptions(func(o *Options) { o.Logger = slog.New(slog.DiscardHandler) }))
	sb := e.spawn(nil)

	b.Run("http", func(b *testing.B) {
		url := e.srv.URL + "/api/v1/sandboxes/" + sb.ID + "/exec"
		body := []byte(`{"command":"true"}`)
		client := e.srv.Client()
		measure(b, func() error {
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
			return nil
		})
	})
	b.Run("provider", func(b *testing.B) {
		ctx := context.Background()
		req := provider.ExecRequest{Argv: provider.ShellArgv("true"), Timeout: time.Minute}
		measure(b, func() error {
			st, err := e.mock.Exec(ctx, sb.ID, req, io.Discard, io.Discard)
			if err == nil && st.ExitCode != 0 {
				b.Fatalf("exit %d", st.ExitCode)
			}
			return err
		})
	})
}

func measure(b *testing.B, op func() error) {
	lat := make([]time.Duration, 0, 1024)
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
}
