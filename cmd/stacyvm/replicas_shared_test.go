package main

import (
	"context"
	"errors"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

// sharedReplicas starts two `stacyvm serve` processes on one PostgreSQL
// schema of their own and the Docker provider, with env added to their
// environment.
func sharedReplicas(t *testing.T, env ...string) (ct *crashTest, a, b *crashServer) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs real servers and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	dsn := pgtest.DSN(t)
	requireDockerImage(t, image)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", pgtest.Schema(t, dsn, t.Name()))
	u.RawQuery = q.Encode()
	ct = &crashTest{t: t, image: image, dir: t.TempDir(), run: randHex(8), acked: map[string]*ackedSandbox{}}
	ct.bin = buildBinaries(t)
	t.Cleanup(ct.removeContainers)
	ct.env = append([]string{
		"STACYVM_STORE_DRIVER=postgres", "STACYVM_STORE_DSN=" + u.String(),
		"STACYVM_STORE_LEASE_TTL=3s",
		"STACYVM_SANDBOX_REAPER_INTERVAL=1s", "STACYVM_SANDBOX_RECONCILE_INTERVAL=2s",
	}, env...)
	db := filepath.Join(ct.dir, "unused.db") // the store is PostgreSQL
	return ct, ct.start(db), ct.start(db)
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
		cli := a.cli
		if i%2 == 1 {
			cli = b.cli
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
	if err := a.cli.Destroy(ctx, ok[0]); err != nil {
		t.Fatal(err)
	}
	sb, err := b.cli.Spawn(ctx, client.SpawnRequest{Image: ct.image, Metadata: meta})
	if err != nil {
		t.Fatalf("spawn through B after a destroy through A: %v", err)
	}
	for _, id := range append(ok[1:], sb.ID) {
		if err := b.cli.Destroy(ctx, id); err != nil {
			t.Errorf("destroy %s: %v", id, err)
		}
	}
	waitNoContainers(t, ct)
	ct.stop(a)
	ct.stop(b)
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
