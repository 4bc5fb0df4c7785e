package docker

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// TestSpawnCancelledAtRandom abandons hundreds of concurrent spawns at
// random points (before, during and after the container's create and
// start) and then counts containers by label: none may be left, in any
// state, and no socket directory either. A fresh machine once found a
// `created` container left by a create that raced its caller's
// cancellation; this is the test that catches that class of leak.
func TestSpawnCancelledAtRandom(t *testing.T) {
	const (
		spawns  = 200
		workers = 8
	)
	needImage(t, busyboxImage)
	// A label of this test's own, so that the count sees only its spawns.
	mark := newID()
	p := newProvider(t, "runc", func(c *Config) { c.Labels["test-case"] = mark })

	// A batch of uncancelled concurrent spawns calibrates how long a
	// spawn takes here under this load; cancellation points are drawn up
	// to a little beyond the slowest, so that some spawns finish and every
	// stage in between gets hit. They stay until cleanup, so that the count
	// below also shows that cancellations spare live sandboxes.
	var full time.Duration
	var mu sync.Mutex
	var calib sync.WaitGroup
	for range workers {
		calib.Go(func() {
			id := newID()
			start := time.Now()
			if _, err := p.Spawn(testCtx(t), provider.Spec{ID: id, Image: busyboxImage}); err != nil {
				t.Errorf("calibration spawn: %v", err)
				return
			}
			t.Cleanup(func() { p.Destroy(context.Background(), id) })
			mu.Lock()
			full = max(full, time.Since(start))
			mu.Unlock()
		})
	}
	calib.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d concurrent spawns take up to %v; cancelling %d spawns (%d at a time) within [0, %v]",
		workers, full, spawns, workers, full*5/4)

	var cancelled, finished atomic.Int64
	jobs := make(chan time.Duration)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for after := range jobs {
				id := newID()
				ctx, cancel := context.WithTimeout(context.Background(), after)
				_, err := p.Spawn(ctx, provider.Spec{ID: id, Image: busyboxImage})
				cancel()
				switch {
				case err == nil:
					finished.Add(1)
					dctx, dcancel := context.WithTimeout(context.Background(), time.Minute)
					if err := p.Destroy(dctx, id); err != nil {
						t.Errorf("Destroy(%s): %v", id, err)
					}
					dcancel()
				case errors.Is(err, context.DeadlineExceeded):
					cancelled.Add(1)
				default:
					t.Errorf("spawn cancelled after %v: %v, want the context's error", after, err)
				}
			}
		})
	}
	for range spawns {
		jobs <- time.Duration(rand.Int64N(int64(full * 5 / 4)))
	}
	close(jobs)
	wg.Wait()
	t.Logf("%d spawns cancelled, %d finished (and destroyed)", cancelled.Load(), finished.Load())
	if cancelled.Load() < spawns/4 {
		t.Errorf("only %d of %d spawns were cancelled: the test did not exercise cancellation", cancelled.Load(), spawns)
	}

	// A create that dockerd finishes after its caller gave up would show
	// up moments later: give such a straggler time to appear.
	time.Sleep(2 * time.Second)
	ctx := testCtx(t)
	res, err := env.cli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", "test-case="+mark),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The calibration spawns are alive until cleanup.
	if len(res.Items) != workers {
		for _, c := range res.Items {
			t.Logf("container %v %s", c.Names, c.State)
		}
		t.Errorf("%d container(s) left by cancelled spawns", len(res.Items)-workers)
	}
	dirs, err := os.ReadDir(filepath.Join(p.cfg.StateDir, "sandboxes"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != workers {
		t.Errorf("%d socket directories left by cancelled spawns", len(dirs)-workers)
	}
}
