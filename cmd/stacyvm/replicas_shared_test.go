package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/envs/envstest"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// sharedReplicas starts two `stacyvm serve` processes on one PostgreSQL
// schema of their own and the Docker provider, with env added to their
// environment.
func sharedReplicas(t *testing.T, env ...string) (ct *crashTest, a, b *serveProcess) {
	t.Helper()
	ct, start := sharedSetup(t)
	ct.env = append(ct.env, env...)
	return ct, start(), start()
}

// sharedSetup prepares servers on one PostgreSQL schema of their own and
// the Docker provider; start starts one with ct.env as it is then.
func sharedSetup(t *testing.T) (ct *crashTest, start func() *serveProcess) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real servers and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	u, _ := pgtest.SchemaURL(t)
	requireDockerImage(t, image)
	ct = &crashTest{t: t, image: image, dir: t.TempDir(), run: randHex(8), acked: map[string]*ackedSandbox{}}
	ct.bin = buildBinaries(t)
	t.Cleanup(ct.removeContainers)
	ct.env = []string{
		"STACYVM_STORE_DRIVER=postgres", "STACYVM_STORE_DSN=" + u.String(),
		"STACYVM_STORE_LEASE_TTL=3s",
		"STACYVM_SANDBOX_REAPER_INTERVAL=1s", "STACYVM_SANDBOX_RECONCILE_INTERVAL=2s",
	}
	db := filepath.Join(ct.dir, "unused.db") // the store is PostgreSQL
	return ct, func() *serveProcess { return ct.start(db) }
}

// TestReplicasLimitsExact: spawns fired at once through both replicas
// against max_sandboxes: exactly the limit succeed, every other one is
// 429, and the containers are exactly the sandboxes that succeeded.
func TestReplicasLimitsExact(t *testing.T) {
	const limit, spawns = 3, 10
	ct, a, b := sharedReplicas(t, "STACYVM_SANDBOX_MAX_SANDBOXES=3")
	ctx := t.Context()
	meta := map[string]string{"crashtest": ct.run}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ok      []string
		refused int
		errs    []error
	)
	start := make(chan struct{})
	for i := range spawns {
		cli := a.client
		if i%2 == 1 {
			cli = b.client
		}
		wg.Go(func() {
			<-start
			sb, err := cli.Spawn(ctx, client.SpawnRequest{Image: ct.image, Metadata: meta})
			mu.Lock()
			defer mu.Unlock()
			var ce *client.Error
			switch {
			case err == nil:
				ok = append(ok, sb.ID)
			case errors.As(err, &ce) && ce.Status == 429:
				refused++
			default:
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("spawns failed other than by the limit:\n%v", err)
	}
	if len(ok) != limit || refused != spawns-limit {
		t.Fatalf("%d spawns succeeded and %d were refused with 429, want %d and %d", len(ok), refused, limit, spawns-limit)
	}
	cs := ct.containers()
	if len(cs) != limit {
		t.Errorf("containers %v, want exactly the %d sandboxes spawned (%v)", cs, limit, ok)
	}
	for _, id := range ok {
		if cs[id] != "running" {
			t.Errorf("sandbox %s: container %q, want running", id, cs[id])
		}
	}
	// A place freed through one replica is taken through the other.
	if err := a.client.Destroy(ctx, ok[0]); err != nil {
		t.Fatal(err)
	}
	sb, err := b.client.Spawn(ctx, client.SpawnRequest{Image: ct.image, Metadata: meta})
	if err != nil {
		t.Fatalf("spawn through B after a destroy through A: %v", err)
	}
	for _, id := range append(ok[1:], sb.ID) {
		if err := b.client.Destroy(ctx, id); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
	}
	waitNoContainers(t, ct)
	a.stop(t)
	b.stop(t)
}

// waitNoContainers waits for the test's containers to be gone.
func waitNoContainers(t *testing.T, ct *crashTest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for {
		cs := ct.containers()
		if len(cs) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("containers left: %v", cs)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestReplicasIdleTimeout: only A runs the reaper (B's interval is an
// hour), and a sandbox with a 6 s idle timeout spawned through A is used
// only through B: execs for longer than the timeout, then one command
// running longer than the timeout. A's idle sweep leaves it running
// throughout, since B records the activity in the store. Left idle, A
// pauses it; a second one with on_idle destroy is destroyed.
func TestReplicasIdleTimeout(t *testing.T) {
	const idle = 6 * time.Second
	ct, a, b := sharedReplicasSplit(t, []string{"STACYVM_SANDBOX_REAPER_INTERVAL=1s"},
		[]string{"STACYVM_SANDBOX_REAPER_INTERVAL=1h"})
	ctx := t.Context()
	state := func(id string) string {
		t.Helper()
		sb, err := a.client.Get(ctx, id)
		if err != nil {
			t.Fatalf("get %s through A: %v", id, err)
		}
		return sb.State
	}
	sb := spawnIdle(t, a.base, ct, "pause")
	busyUntil := time.Now().Add(idle * 5 / 2)
	for time.Now().Before(busyUntil) {
		if _, err := b.client.Exec(ctx, sb, client.ExecRequest{Command: "true"}); err != nil {
			t.Fatalf("exec through B: %v", err)
		}
		if got := state(sb); got != "running" {
			t.Fatalf("state %s while B runs execs every second, want running\nA's logs:\n%s", got, a.logs.String())
		}
		time.Sleep(time.Second)
	}
	// One command under way for twice the timeout is activity throughout.
	long := make(chan error, 1)
	go func() {
		_, err := b.client.Exec(ctx, sb, client.ExecRequest{Command: "sleep 12", Timeout: time.Minute})
		long <- err
	}()
	for waiting := true; waiting; {
		select {
		case err := <-long:
			if err != nil {
				t.Fatalf("long exec through B: %v", err)
			}
			waiting = false
		case <-time.After(500 * time.Millisecond):
			if got := state(sb); got != "running" {
				t.Fatalf("state %s while a command runs through B, want running\nA's logs:\n%s", got, a.logs.String())
			}
		}
	}
	lastUse := time.Now()
	waitState(t, a, sb, "paused", 2*time.Minute)
	if d := time.Since(lastUse); d < idle {
		t.Errorf("paused %v after its last use, before its idle timeout %v", d, idle)
	}
	t.Logf("paused %v after its last use through B (idle timeout %v)", time.Since(lastUse).Round(100*time.Millisecond), idle)

	gone := spawnIdle(t, a.base, ct, "destroy")
	if _, err := b.client.Exec(ctx, gone, client.ExecRequest{Command: "true"}); err != nil {
		t.Fatalf("exec through B: %v", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for ct.containers()[gone] != "" {
		if time.Now().After(deadline) {
			t.Fatalf("the on_idle destroy sandbox still has its container\nA's logs:\n%s", a.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := b.client.Get(ctx, gone); err == nil {
		t.Errorf("the on_idle destroy sandbox is still served through B")
	}
	if err := b.client.Destroy(ctx, sb); err != nil {
		t.Fatalf("destroy the paused sandbox through B: %v", err)
	}
	waitNoContainers(t, ct)
	a.stop(t)
	b.stop(t)
}

// sharedReplicasSplit is sharedReplicas with environment of A's and B's
// own.
func sharedReplicasSplit(t *testing.T, envA, envB []string) (ct *crashTest, a, b *serveProcess) {
	t.Helper()
	ct, start := sharedSetup(t)
	base := ct.env
	ct.env = append(slices.Clone(base), envA...)
	a = start()
	ct.env = append(slices.Clone(base), envB...)
	b = start()
	return ct, a, b
}

// spawnIdle spawns a sandbox with a 6 s idle timeout through base (the
// Go client has no idle fields) and returns its ID.
func spawnIdle(t *testing.T, base string, ct *crashTest, onIdle string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"image": ct.image, "metadata": map[string]string{"crashtest": ct.run},
		"idle_timeout": 6, "on_idle": onIdle})
	resp, err := http.Post(base+"/api/v1/sandboxes", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&sb); err != nil || resp.StatusCode != http.StatusCreated || sb.State != "running" {
		t.Fatalf("spawn: %s, %+v, %v", resp.Status, sb, err)
	}
	return sb.ID
}

// waitState waits until s reports sandbox id in state want.
func waitState(t *testing.T, s *serveProcess, id, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		sb, err := s.client.Get(t.Context(), id)
		if err == nil && sb.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sandbox %s: %+v, %v; still not %s\nlogs:\n%s", id, sb, err, want, s.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestEnvironmentBuildTwoReplicasSIGKILL runs two replicas with
// environment builds on one PostgreSQL schema and one dockerd, kills the
// replica that runs a build (found by the holder of the build's lease)
// while dockerd runs its apt layer, and checks that the other replica
// takes the build over once the lease lapses and builds it to ready on
// its second attempt, while the replica that stays up was never the one
// to steal it before (the first attempt ran to the kill).
func TestEnvironmentBuildTwoReplicasSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images on dockerd; skipped in -short mode")
	}
	requireDockerImage(t, "stacyvm/debian:test")
	u, _ := pgtest.SchemaURL(t)
	bin := buildBinaries(t)
	ix := envstest.Serve(t, envWheel)
	extra := "sandbox:\n  reaper_interval: 1s\n"
	cfg := func(dir string) string {
		y := envConfig(dir, ix.URL, extra)
		// The store is PostgreSQL: replace the SQLite path.
		y = strings.Replace(y, "store:\n  path: "+filepath.Join(dir, "stacyvm.db")+"\n",
			"store:\n  driver: postgres\n  dsn: "+u.String()+"\n  lease_ttl: 3s\n", 1)
		return y
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startEnvServer(t, bin, dirA, cfg(dirA))
	b := startEnvServer(t, bin, dirB, cfg(dirB))
	ctx := t.Context()

	spec, err := a.client.CreateEnvSpec(ctx, client.EnvSpec{OwnerID: "alice", Name: "replicas", BaseImage: "stacyvm/debian:test",
		AptPackages: []string{"jq"}, PythonPackages: []string{"stacyhello>=1"}})
	if err != nil {
		t.Fatal(err)
	}
	bld, err := b.client.CreateEnvBuild(ctx, spec.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	dockerRemoveImage(t, bld.Image)
	mid := waitBuildLog(t, a.client, bld.ID, "Running in", 5*time.Minute)
	dockerRemoveStepImages(t, mid.Log)

	// Which replica builds it: the holder of its lease names the PID.
	conn, err := pgx.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var holder string
	if err := conn.QueryRow(ctx, `SELECT holder FROM leases WHERE name = $1`, "build/"+bld.ID).Scan(&holder); err != nil {
		t.Fatalf("the lease of the running build: %v", err)
	}
	victim, survivor := a, b
	if strings.Contains(holder, fmt.Sprintf("/%d/", b.cmd.Process.Pid)) {
		victim, survivor = b, a
	} else if !strings.Contains(holder, fmt.Sprintf("/%d/", a.cmd.Process.Pid)) {
		t.Fatalf("lease holder %q is neither replica (pids %d, %d)", holder, a.cmd.Process.Pid, b.cmd.Process.Pid)
	}
	if cur, err := survivor.client.GetEnvBuild(ctx, bld.ID); err != nil || cur.Status != "building" || cur.Attempts != 1 {
		t.Fatalf("before the kill, through the other replica: %+v, %v; want building, attempt 1", cur, err)
	}
	victim.kill9()
	killed := time.Now()

	deadline := time.Now().Add(10 * time.Minute)
	for {
		cur, err := survivor.client.GetEnvBuild(ctx, bld.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Finished() {
			if cur.Status != "ready" || cur.Attempts != 2 || !strings.Contains(cur.Log, "queued again") {
				t.Fatalf("after the kill the build ended %s after %d attempts (%s); log:\n%s", cur.Status, cur.Attempts, cur.Reason, cur.Log)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build still %s 10 minutes after the kill; log:\n%s\nsurvivor's logs:\n%s", cur.Status, cur.Log, survivor.logs.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("the surviving replica finished the build %v after the kill", time.Since(killed).Round(time.Second))
	if !dockerImageExists(bld.Image) {
		t.Errorf("the rebuilt image %s is missing", bld.Image)
	}
}
