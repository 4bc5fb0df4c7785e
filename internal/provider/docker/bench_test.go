package docker

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// BenchmarkDocker compares the provider with the docker CLI on each
// runtime: spawn vs `docker run -d`, exec of `true` through the agent vs
// `docker exec`, and a 64 MiB write+read through the agent. Every case
// reports p50/p95/p99 in milliseconds. Suggested:
//
//	go test -run '^$' -bench BenchmarkDocker -benchtime 30x ./internal/provider/docker/
func BenchmarkDocker(b *testing.B) {
	needImage(b, busyboxImage)
	cli, err := exec.LookPath("docker")
	if err != nil {
		b.Skip("skipping: no docker CLI on PATH for the raw comparisons")
	}
	for _, rt := range runtimes {
		b.Run(rt, func(b *testing.B) {
			needRuntime(b, rt)
			p := newProvider(b, rt)

			b.Run("Spawn", func(b *testing.B) {
				var spawnD, destroyD []time.Duration
				for b.Loop() {
					id := newID()
					t0 := time.Now()
					if _, err := p.Spawn(context.Background(), provider.Spec{ID: id, Image: busyboxImage}); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					if err := p.Destroy(context.Background(), id); err != nil {
						b.Fatal(err)
					}
					spawnD = append(spawnD, t1.Sub(t0))
					destroyD = append(destroyD, time.Since(t1))
				}
				report(b, "spawn", spawnD)
				report(b, "destroy", destroyD)
			})

			b.Run("RawDockerRunD", func(b *testing.B) {
				var runD, rmD []time.Duration
				for b.Loop() {
					t0 := time.Now()
					out := docker(b, cli, "run", "-d", "--runtime", rt, "--network", "none",
						"--label", LabelTest+"="+env.runID, busyboxImage, "sleep", "3600")
					t1 := time.Now()
					docker(b, cli, "rm", "-f", out)
					runD = append(runD, t1.Sub(t0))
					rmD = append(rmD, time.Since(t1))
				}
				report(b, "run", runD)
				report(b, "rm", rmD)
			})

			sb := spawn(b, p, provider.Spec{MemoryMB: 512})
			b.Run("ExecTrue", func(b *testing.B) {
				var ds []time.Duration
				req := provider.ExecRequest{Argv: []string{"true"}}
				for b.Loop() {
					t0 := time.Now()
					st, err := p.Exec(context.Background(), sb.ID, req, io.Discard, io.Discard)
					if err != nil || st.ExitCode != 0 {
						b.Fatalf("exec: %+v %v", st, err)
					}
					ds = append(ds, time.Since(t0))
				}
				report(b, "exec", ds)
			})

			b.Run("RawDockerExec", func(b *testing.B) {
				var ds []time.Duration
				for b.Loop() {
					t0 := time.Now()
					docker(b, cli, "exec", containerName(sb.ID), "true")
					ds = append(ds, time.Since(t0))
				}
				report(b, "exec", ds)
			})

			b.Run("File64MiB", func(b *testing.B) {
				const size = 64 << 20
				data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
				var wd, rd []time.Duration
				b.SetBytes(2 * size)
				for b.Loop() {
					t0 := time.Now()
					if err := p.WriteFile(context.Background(), sb.ID, "/tmp/big", bytes.NewReader(data), 0o644); err != nil {
						b.Fatal(err)
					}
					t1 := time.Now()
					rc, err := p.ReadFile(context.Background(), sb.ID, "/tmp/big")
					if err != nil {
						b.Fatal(err)
					}
					n, err := io.Copy(io.Discard, rc)
					rc.Close()
					if err != nil || n != size {
						b.Fatalf("read %d bytes: %v", n, err)
					}
					wd = append(wd, t1.Sub(t0))
					rd = append(rd, time.Since(t1))
				}
				report(b, "write", wd)
				report(b, "read", rd)
			})
		})
	}
}

func docker(b *testing.B, cli string, args ...string) string {
	b.Helper()
	out, err := exec.Command(cli, args...).Output()
	if err != nil {
		b.Fatalf("docker %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// report adds p50, p95 and p99 of ds, in milliseconds, to the benchmark's
// output.
func report(b *testing.B, what string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	pct := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		return float64(ds[max(0, min(i, len(ds)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), what+"-p50-ms")
	b.ReportMetric(pct(0.95), what+"-p95-ms")
	b.ReportMetric(pct(0.99), what+"-p99-ms")
}

// BenchmarkPauseResume reports p50/p95/p99 of Pause (dockerd's pause, the
// cgroup freezer) and Resume on each runtime:
//
//	STACYVM_TEST_DOCKER=1 go test -run '^$' -bench PauseResume -benchtime 50x ./internal/provider/docker/
func BenchmarkPauseResume(b *testing.B) {
	needImage(b, busyboxImage)
	for _, rt := range runtimes {
		b.Run(rt, func(b *testing.B) {
			needRuntime(b, rt)
			providertest.BenchPauseResume(b, newProvider(b, rt), busyboxImage)
		})
	}
}
