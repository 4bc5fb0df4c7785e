package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/latency"
)

// benchOptions are the knobs of `stacyvm bench`.
type benchOptions struct {
	image, provider, runtime string
	n, fileMB, serverPID     int
	raw                      bool
}

func (a *app) benchCmd() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure spawn, exec and file throughput through a running server, beside the raw runtime",
		Long: `Measure, against a running server, through the REST API: spawn, exec of
'true', and writing then reading a file; print p50/p95/p99. With --raw (the
default when the docker CLI is installed) the same image is timed with
'docker run -d' and 'docker exec' in the same run, and the ratios are
printed. With --server-pid the server's peak resident memory growth during
the file round trip is measured (Linux /proc; the peak is reset first).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return runBench(cmd.Context(), c, o, a.out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.image, "image", "stacyvm/busybox:test", "image to spawn")
	f.StringVar(&o.provider, "provider", "", "provider to spawn with (default: the server's)")
	f.StringVar(&o.runtime, "runtime", "runc", "OCI runtime for the raw docker comparison")
	f.IntVarP(&o.n, "iterations", "n", 20, "samples per measurement")
	f.IntVar(&o.fileMB, "file-mb", 64, "size of the file round trip in MiB")
	f.IntVar(&o.serverPID, "server-pid", 0, "the server's PID, to measure its peak RSS growth")
	_, dockerErr := exec.LookPath("docker")
	f.BoolVar(&o.raw, "raw", dockerErr == nil, "also time the docker CLI in the same run")
	return cmd
}

func runBench(ctx context.Context, c *client.Client, o benchOptions, out io.Writer) error {
	if o.n < 1 {
		return usagef("--iterations must be at least 1")
	}
	line := func(name string, s *latency.Sample) {
		fmt.Fprintf(out, "%-24s p50 %8.2f ms  p95 %8.2f ms  p99 %8.2f ms  (n=%d)\n", name,
			ms(s.Percentile(0.5)), ms(s.Percentile(0.95)), ms(s.Percentile(0.99)), s.Len())
	}
	ratio := func(name string, api, raw *latency.Sample) {
		fmt.Fprintf(out, "%-24s p50 %.2fx  p95 %.2fx\n", name,
			float64(api.Percentile(0.5))/float64(raw.Percentile(0.5)),
			float64(api.Percentile(0.95))/float64(raw.Percentile(0.95)))
	}

	// Spawn, destroying each sandbox outside the timing.
	spawn := &latency.Sample{}
	for range o.n {
		t0 := time.Now()
		sb, err := c.Spawn(ctx, client.SpawnRequest{Image: o.image, Provider: o.provider, TTL: 10 * time.Minute})
		if err != nil {
			return err
		}
		spawn.Add(time.Since(t0))
		if err := c.Destroy(ctx, sb.ID); err != nil {
			return err
		}
	}
	line("spawn (api)", spawn)
	var rawSpawn *latency.Sample
	if o.raw {
		var err error
		if rawSpawn, err = dockerRuns(ctx, o); err != nil {
			return err
		}
		line("docker run -d", rawSpawn)
		ratio("spawn api/raw", spawn, rawSpawn)
	}

	sb, err := c.Spawn(ctx, client.SpawnRequest{Image: o.image, Provider: o.provider, TTL: 10 * time.Minute})
	if err != nil {
		return err
	}
	defer c.Destroy(context.WithoutCancel(ctx), sb.ID)
	execs := &latency.Sample{}
	for range o.n * 5 {
		t0 := time.Now()
		res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Command: "true"})
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("bench: true exited %d", res.ExitCode)
		}
		execs.Add(time.Since(t0))
	}
	line("exec true (api)", execs)
	if o.raw {
		rawExec, err := dockerExecs(ctx, o)
		if err != nil {
			return err
		}
		line("docker exec true", rawExec)
		ratio("exec api/raw", execs, rawExec)
	}

	return benchFile(ctx, c, sb.ID, o, out)
}

// benchFile writes then reads a random file of o.fileMB MiB, streamed both
// ways, and reports throughput and the server's peak RSS growth.
func benchFile(ctx context.Context, c *client.Client, id string, o benchOptions, out io.Writer) error {
	size := int64(o.fileMB) << 20
	rssBefore := int64(-1)
	if o.serverPID > 0 {
		rssBefore = resetPeakRSS(o.serverPID)
	}
	t0 := time.Now()
	if err := c.WriteFile(ctx, id, "/tmp/bench.bin", io.LimitReader(rand.Reader, size), 0o644); err != nil {
		return err
	}
	wrote := time.Since(t0)
	t0 = time.Now()
	rc, err := c.ReadFile(ctx, id, "/tmp/bench.bin")
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil {
		return err
	}
	read := time.Since(t0)
	if n != size {
		return fmt.Errorf("bench: read %d bytes back, wrote %d", n, size)
	}
	mb := float64(size) / (1 << 20)
	fmt.Fprintf(out, "%-24s write %7.1f MiB/s (%v)  read %7.1f MiB/s (%v)\n", fmt.Sprintf("file %d MiB (api)", o.fileMB),
		mb/wrote.Seconds(), wrote.Round(time.Millisecond), mb/read.Seconds(), read.Round(time.Millisecond))
	if rssBefore >= 0 {
		if peak := procStatusKB(o.serverPID, "VmHWM"); peak >= 0 {
			fmt.Fprintf(out, "%-24s %.1f MiB (peak %d KiB, before %d KiB)\n", "server peak RSS growth",
				float64(peak-rssBefore)/1024, peak, rssBefore)
		}
	}
	return c.DeleteFile(ctx, id, "/tmp/bench.bin", false)
}

func dockerRuns(ctx context.Context, o benchOptions) (*latency.Sample, error) {
	s := &latency.Sample{}
	for range o.n {
		t0 := time.Now()
		cid, err := docker(ctx, "run", "-d", "--runtime", o.runtime, "--network", "none", o.image, "sleep", "600")
		if err != nil {
			return nil, err
		}
		s.Add(time.Since(t0))
		if _, err := docker(ctx, "rm", "-f", cid); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func dockerExecs(ctx context.Context, o benchOptions) (*latency.Sample, error) {
	cid, err := docker(ctx, "run", "-d", "--runtime", o.runtime, "--network", "none", o.image, "sleep", "600")
	if err != nil {
		return nil, err
	}
	defer docker(context.WithoutCancel(ctx), "rm", "-f", cid)
	s := &latency.Sample{}
	for range o.n * 5 {
		t0 := time.Now()
		if _, err := docker(ctx, "exec", cid, "true"); err != nil {
			return nil, err
		}
		s.Add(time.Since(t0))
	}
	return s, nil
}

func docker(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", args[0], err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

// resetPeakRSS resets the process's VmHWM to its current RSS (clear_refs
// "5") and returns that RSS in KiB, or -1 when /proc cannot tell.
func resetPeakRSS(pid int) int64 {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	return procStatusKB(pid, "VmRSS")
}

func procStatusKB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
