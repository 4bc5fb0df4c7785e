package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
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
	// pool names a warm pool of the server to time claims and refills of.
	pool            string
	poolConcurrency int
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
the file round trip is measured (Linux /proc; the peak is reset first).
With --pool, spawns that claim members of that warm pool are timed too,
then how fast the pool refills, beside 'docker run -d' at the pool's
concurrency (--pool-concurrency).`,
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
	f.IntVar(&o.poolConcurrency, "pool-concurrency", 2, "the pool's refill concurrency, for the raw comparison")
	f.IntVar(&o.serverPID, "server-pid", 0, "the server's PID, to measure its peak RSS growth")
	f.StringVar(&o.pool, "pool", "", "a warm pool of the server (its target at least -n): time claims from it and its refill")
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

	if o.pool != "" {
		// A pool still filling would slow the cold spawns down.
		if _, err := waitPool(ctx, c, o.pool, func(p client.Pool) bool { return p.Ready == p.Target && p.Creating == 0 }); err != nil {
			return err
		}
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

	if o.pool != "" {
		if err := benchPool(ctx, c, o, spawn, line, ratio, out); err != nil {
			return err
		}
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

// benchPool times o.n spawns that claim members of the warm pool o.pool
// (waiting first until it is full; each claim finds a member), then the
// refill of those n members, beside o.n 'docker run -d' run o.poolConcurrency
// at a time: the same work as the pool's refill without StacyVM.
func benchPool(ctx context.Context, c *client.Client, o benchOptions, cold *latency.Sample,
	line func(string, *latency.Sample), ratio func(string, *latency.Sample, *latency.Sample), out io.Writer) error {
	pool, err := waitPool(ctx, c, o.pool, func(p client.Pool) bool { return p.Ready == p.Target && p.Creating == 0 })
	if err != nil {
		return err
	}
	if pool.Target < o.n {
		return usagef("pool %s keeps %d members, fewer than -n %d", o.pool, pool.Target, o.n)
	}
	req := client.SpawnRequest{Image: pool.Image, Provider: pool.Provider, MemoryMB: pool.MemoryMB, VCPUs: pool.VCPUs, TTL: 10 * time.Minute}
	if pool.Template != nil {
		req = client.SpawnRequest{Template: *pool.Template, TTL: 10 * time.Minute}
	}
	claims := &latency.Sample{}
	var ids []string
	defer func() {
		for _, id := range ids {
			_ = c.Destroy(context.WithoutCancel(ctx), id)
		}
	}()
	before := pool.Claimed
	// The refill starts with the first claim.
	refillStart := time.Now()
	for range o.n {
		t0 := time.Now()
		sb, err := c.Spawn(ctx, req)
		if err != nil {
			return err
		}
		claims.Add(time.Since(t0))
		ids = append(ids, sb.ID)
	}
	line("pool claim (api)", claims)
	ratio("claim/cold spawn", claims, cold)
	after, err := waitPool(ctx, c, o.pool, func(p client.Pool) bool { return p.Ready == p.Target && p.Creating == 0 })
	if err != nil {
		return err
	}
	refill := time.Since(refillStart)
	if got := after.Claimed - before; got != int64(o.n) {
		return fmt.Errorf("bench: %d of %d spawns claimed a member of pool %s", got, o.n, o.pool)
	}
	fmt.Fprintf(out, "%-24s %d members in %.2f s: %.2f/s (pool concurrency)\n", "pool refill", o.n, refill.Seconds(), float64(o.n)/refill.Seconds())
	if o.raw {
		conc := max(o.poolConcurrency, 1)
		t0 := time.Now()
		errs := make(chan error, o.n)
		sem := make(chan struct{}, conc)
		cids := make(chan string, o.n)
		for range o.n {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				cid, err := docker(ctx, "run", "-d", "--runtime", o.runtime, "--network", "none", o.image, "sleep", "600")
				errs <- err
				cids <- cid
			}()
		}
		var failed error
		for range o.n {
			if err := <-errs; err != nil && failed == nil {
				failed = err
			}
		}
		raw := time.Since(t0)
		close(cids)
		for cid := range cids {
			if cid != "" {
				_, _ = docker(context.WithoutCancel(ctx), "rm", "-f", cid)
			}
		}
		if failed != nil {
			return failed
		}
		fmt.Fprintf(out, "%-24s %d containers in %.2f s: %.2f/s (%d at a time)\n", "docker run -d", o.n, raw.Seconds(), float64(o.n)/raw.Seconds(), conc)
		fmt.Fprintf(out, "%-24s %.2fx\n", "refill time pool/raw", refill.Seconds()/raw.Seconds())
	}
	return nil
}

// waitPool polls the pool status until the pool called name satisfies ok
// (at most five minutes).
func waitPool(ctx context.Context, c *client.Client, name string, ok func(client.Pool) bool) (client.Pool, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := c.PoolStatus(ctx)
		if err != nil {
			return client.Pool{}, err
		}
		i := slices.IndexFunc(st.Pools, func(p client.Pool) bool { return p.Name == name })
		if i < 0 {
			return client.Pool{}, usagef("the server has no pool %q", name)
		}
		if ok(st.Pools[i]) {
			return st.Pools[i], nil
		}
		if time.Now().After(deadline) {
			return st.Pools[i], fmt.Errorf("bench: pool %s did not fill in 5 minutes: %+v", name, st.Pools[i])
		}
		select {
		case <-ctx.Done():
			return client.Pool{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
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
