package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// TestCrashUnderLoadWithDocker kills the real server binary with SIGKILL
// while 16 clients spawn, exec, write, read and destroy sandboxes on
// Docker, restarts it on the same database, and checks that the store and
// dockerd agree; three rounds, then everything is deleted. After every
// restart:
//
//   - every container of the test has a running record (no leaked runtime);
//   - every running record has a running container whose agent answers an
//     exec, and keeps the files whose writes were acknowledged;
//   - every spawn and destroy acknowledged before the kill holds;
//   - a record cut off mid-spawn is no longer live, and has no runtime;
//   - a never-started container with no record is removed, not adopted.
//
// Finally deleting every record leaves no container behind.
func TestCrashUnderLoadWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	requireDockerImage(t, image)
	began := time.Now()
	ct := &crashTest{t: t, image: image, dir: t.TempDir(), run: randHex(8), acked: map[string]*ackedSandbox{}}
	ct.bin = buildBinaries(t)
	t.Cleanup(ct.removeContainers)

	db := filepath.Join(ct.dir, "stacyvm.db")
	s := ct.start(db)
	for round := 1; round <= 3; round++ {
		start := time.Now()
		st := ct.storm(s, 100+mrand.IntN(40)) // ends with SIGKILL
		orphan := ct.createdOrphan()
		s = ct.start(db)
		rep := ct.verify(s, orphan)
		t.Logf("round %d: %d ops started (%d succeeded, %d cut off by the kill, %d in flight at the kill); "+
			"%d spawns acknowledged, %d destroys acknowledged; after restart: %s; %d live sandboxes verified by exec; %v",
			round, st.started, st.ok, st.cut, st.inFlight, st.spawned, st.destroyed, rep.reconciled, rep.live, time.Since(start).Round(time.Millisecond))
	}
	n := ct.deleteAll(s)
	s.stop(t)
	t.Logf("deleted the %d remaining sandboxes; nothing left; whole test %v", n, time.Since(began).Round(time.Second))
}

type crashTest struct {
	t     *testing.T
	image string
	dir   string
	bin   string
	run   string   // metadata value marking this test's sandboxes
	env   []string // more environment for the servers (later entries win)

	mu    sync.Mutex
	acked map[string]*ackedSandbox // spawns the server acknowledged, by ID
}

// ackedSandbox is what the server acknowledged about one sandbox.
type ackedSandbox struct {
	destroyed  bool              // a destroy was acknowledged
	destroying bool              // a destroy was sent but not acknowledged
	files      map[string]string // acknowledged writes: path → content
	pending    map[string]string // a write sent but not acknowledged: path → content
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// start runs a server with the docker provider (runc) on the database db.
func (ct *crashTest) start(db string) *serveProcess {
	ct.t.Helper()
	env := append([]string{"STACYVM_PROVIDER_ENABLED=docker", "STACYVM_DOCKER_RUNTIME=runc", "STACYVM_LOG_FORMAT=text"}, ct.env...)
	return startServe(ct.t, ct.bin, ct.dir, "", env, "--db", db)
}

type stormStats struct {
	started, ok, cut, inFlight int64
	spawned, destroyed         int64
}

// storm runs 16 clients against s, each spawning, using and destroying
// sandboxes (its own and those that survived earlier rounds), and kills s
// with SIGKILL once target operations have started, with operations of
// every kind in flight.
func (ct *crashTest) storm(s *serveProcess, target int) stormStats {
	const workers = 16
	t := ct.t
	var st stormStats
	var started, ok, cut, inFlight, spawned, destroyed atomic.Int64
	killed := make(chan struct{})
	var killOnce sync.Once

	// Survivors of earlier rounds are shared out among the workers.
	ct.mu.Lock()
	var survivors []string
	for id, a := range ct.acked {
		if !a.destroyed {
			survivors = append(survivors, id)
		}
	}
	ct.mu.Unlock()
	slices.Sort(survivors)

	var wg sync.WaitGroup
	for w := range workers {
		var mine []string
		for i := w; i < len(survivors); i += workers {
			mine = append(mine, survivors[i])
		}
		wg.Go(func() {
			ctx := context.Background()
			for n := 0; ; n++ {
				select {
				case <-killed:
					return
				default:
				}
				if started.Add(1) > int64(target) {
					killOnce.Do(func() {
						st.inFlight = inFlight.Load()
						close(killed) // first: the errors the kill causes are expected
						s.kill9()
					})
					return
				}
				inFlight.Add(1)
				octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				err := ct.op(octx, s.client, &mine, n, &spawned, &destroyed)
				cancel()
				inFlight.Add(-1)
				select {
				case <-killed:
					if err != nil {
						cut.Add(1)
					} else {
						ok.Add(1)
					}
					return
				default:
				}
				if err != nil {
					t.Errorf("before the kill: %v", err)
					killOnce.Do(func() { close(killed); s.kill9() })
					return
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	st.started = min(started.Load(), int64(target))
	st.ok, st.cut = ok.Load(), cut.Load()
	st.spawned, st.destroyed = spawned.Load(), destroyed.Load()
	if t.Failed() {
		t.FailNow()
	}
	return st
}

// op performs one random operation for a worker that owns the sandboxes
// in mine.
func (ct *crashTest) op(ctx context.Context, c *client.Client, mine *[]string, n int, spawned, destroyed *atomic.Int64) error {
	r := mrand.IntN(100)
	if len(*mine) == 0 || (r < 30 && len(*mine) < 4) {
		sb, err := c.Spawn(ctx, client.SpawnRequest{Image: ct.image, TTL: time.Hour, OwnerID: ct.run,
			Metadata: map[string]string{"crashtest": ct.run}})
		if err != nil {
			return fmt.Errorf("spawn: %w", err)
		}
		ct.mu.Lock()
		ct.acked[sb.ID] = &ackedSandbox{files: map[string]string{}, pending: map[string]string{}}
		ct.mu.Unlock()
		spawned.Add(1)
		*mine = append(*mine, sb.ID)
		return nil
	}
	i := mrand.IntN(len(*mine))
	id := (*mine)[i]
	switch {
	case r < 45:
		res, err := c.Exec(ctx, id, client.ExecRequest{Command: "echo $((6*7))"})
		if err != nil {
			return fmt.Errorf("exec in %s: %w", id, err)
		}
		if res.ExitCode != 0 || res.Stdout != "42\n" {
			return fmt.Errorf("exec in %s: %+v", id, res)
		}
	case r < 70:
		path, content := fmt.Sprintf("/workspace/f%d", n%3), randHex(16)
		ct.mu.Lock()
		ct.acked[id].pending[path] = content
		ct.mu.Unlock()
		if err := c.WriteFile(ctx, id, path, strings.NewReader(content), 0o644); err != nil {
			return fmt.Errorf("write in %s: %w", id, err)
		}
		ct.mu.Lock()
		ct.acked[id].files[path] = content
		delete(ct.acked[id].pending, path)
		ct.mu.Unlock()
	case r < 82:
		ct.mu.Lock()
		var path, want string
		for p, c := range ct.acked[id].files {
			path, want = p, c
			break
		}
		ct.mu.Unlock()
		if path == "" {
			_, err := c.StatFile(ctx, id, "/workspace")
			return err
		}
		got, err := readAll(ctx, c, id, path)
		if err != nil {
			return fmt.Errorf("read in %s: %w", id, err)
		}
		if got != want {
			return fmt.Errorf("read %s in %s: %q, want %q", path, id, got, want)
		}
	default:
		ct.mu.Lock()
		ct.acked[id].destroying = true
		ct.mu.Unlock()
		if err := c.Destroy(ctx, id); err != nil {
			return fmt.Errorf("destroy %s: %w", id, err)
		}
		ct.mu.Lock()
		ct.acked[id].destroyed = true
		ct.mu.Unlock()
		destroyed.Add(1)
		*mine = slices.Delete(*mine, i, i+1)
	}
	return nil
}

func readAll(ctx context.Context, c *client.Client, id, path string) (string, error) {
	rc, err := c.ReadFile(ctx, id, path)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// containers lists the test's containers: sandbox ID → dockerd state.
func (ct *crashTest) containers() map[string]string {
	ct.t.Helper()
	out, err := exec.Command("docker", "ps", "-a", "--filter", "label=stacyvm.meta.crashtest="+ct.run,
		"--format", `{{.Label "stacyvm.sandbox-id"}} {{.State}}`).CombinedOutput()
	if err != nil {
		ct.t.Fatalf("docker ps: %v\n%s", err, out)
	}
	m := map[string]string{}
	for line := range strings.Lines(string(out)) {
		if id, state, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			m[id] = state
		}
	}
	return m
}

// createdOrphan makes what a server killed between a container's create
// and its start leaves when it had no record yet: a never-started
// container with the labels the server gives its containers (copied from
// one of its live sandboxes, so that whatever marks the server's own
// containers is there too). The next start must remove it.
func (ct *crashTest) createdOrphan() string {
	t := ct.t
	t.Helper()
	id := "sb-" + randHex(12)
	labels := map[string]string{"stacyvm.provider": "docker", "stacyvm.meta.crashtest": ct.run}
	for live, state := range ct.containers() {
		if state != "running" {
			continue
		}
		out, err := exec.Command("docker", "inspect", "--format", "{{json .Config.Labels}}", "stacyvm-"+live).Output()
		if err != nil {
			continue // destroyed meanwhile
		}
		if err := json.Unmarshal(out, &labels); err != nil {
			t.Fatalf("labels of %s: %v", live, err)
		}
		break
	}
	labels["stacyvm.sandbox-id"] = id
	args := []string{"create", "--name", "stacyvm-" + id, "--network", "none"}
	for k, v := range labels {
		args = append(args, "--label", k+"="+v)
	}
	if out, err := exec.Command("docker", append(args, ct.image, "true")...).CombinedOutput(); err != nil {
		t.Fatalf("docker create: %v\n%s", err, out)
	}
	return id
}

type verifyReport struct {
	reconciled string // the server's own count
	live       int
}

var reconciledLine = regexp.MustCompile(`msg=reconciled (.*)`)

// verify checks, after a restart, that the store and dockerd agree.
func (ct *crashTest) verify(s *serveProcess, orphan string) verifyReport {
	t := ct.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var rep verifyReport
	if m := reconciledLine.FindStringSubmatch(s.logs.String()); m != nil {
		rep.reconciled = strings.TrimSpace(m[1])
	} else {
		t.Errorf("the server logged no reconcile\n%s", s.logs.String())
	}

	if _, err := s.client.Get(ctx, orphan); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("never-started orphan %s: %v, want no record (not adopted)", orphan, err)
	}
	records, err := s.client.List(ctx, client.ListOptions{OwnerID: ct.run})
	if err != nil {
		t.Fatal(err)
	}
	ctrs := ct.containers()
	if st, ok := ctrs[orphan]; ok {
		t.Errorf("never-started orphan %s survived the restart (%s)", orphan, st)
	}
	running := map[string]bool{}
	for _, r := range records {
		switch r.State {
		case "running":
			running[r.ID] = true
			if ctrs[r.ID] != "running" {
				t.Errorf("record %s is running but its container is %q", r.ID, ctrs[r.ID])
			}
		case "error":
			// A spawn cut off by the kill: its runtime must be gone.
			if st, ok := ctrs[r.ID]; ok {
				t.Errorf("record %s is in error (%s) but its container is still there (%s)", r.ID, r.Error, st)
			}
		default:
			t.Errorf("record %s is %s after reconcile (%s)", r.ID, r.State, r.Error)
		}
	}
	for id, st := range ctrs {
		if !running[id] {
			t.Errorf("container of %s (%s) has no running record", id, st)
		}
	}

	// What the server acknowledged before the kill holds; a destroy cut
	// off by the kill may have happened or not.
	ct.mu.Lock()
	acked := map[string]ackedSandbox{}
	for id, a := range ct.acked {
		if a.destroying && !a.destroyed {
			a.destroying, a.destroyed = false, !running[id]
		}
		acked[id] = ackedSandbox{destroyed: a.destroyed, files: maps.Clone(a.files), pending: maps.Clone(a.pending)}
	}
	ct.mu.Unlock()
	for id, a := range acked {
		switch {
		case a.destroyed && running[id]:
			t.Errorf("%s: destroy acknowledged, but it is running again", id)
		case !a.destroyed && !running[id]:
			r, err := s.client.Get(ctx, id)
			t.Errorf("%s: spawn acknowledged, but it is not running after the restart: %s %q %v", id, r.State, r.Error, err)
		}
	}

	// Every running record is usable, and keeps what it was told to.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for id := range running {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := s.client.Exec(ctx, id, client.ExecRequest{Command: "echo alive"})
			if err != nil || res.Stdout != "alive\n" {
				t.Errorf("exec in %s after restart: %+v %v", id, res, err)
				return
			}
			for path, want := range acked[id].files {
				// A write cut off by the kill may have landed after the
				// acknowledged one: either content is right, nothing else.
				got, err := readAll(ctx, s.client, id, path)
				if err != nil {
					t.Errorf("%s: acknowledged file %s: %v", id, path, err)
				} else if got != want && got != acked[id].pending[path] {
					t.Errorf("%s: acknowledged file %s holds %q, want %q", id, path, got, want)
				}
			}
		})
	}
	wg.Wait()
	rep.live = len(running)
	if t.Failed() {
		t.FailNow()
	}
	return rep
}

// deleteAll destroys every sandbox of the test through the API and checks
// that dockerd holds none of its containers afterwards.
func (ct *crashTest) deleteAll(s *serveProcess) int {
	t := ct.t
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	records, err := s.client.List(ctx, client.ListOptions{OwnerID: ct.run})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, r := range records {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.client.Destroy(ctx, r.ID); err != nil {
				t.Errorf("destroy %s (%s): %v", r.ID, r.State, err)
			}
		})
	}
	wg.Wait()
	if left, err := s.client.List(ctx, client.ListOptions{OwnerID: ct.run}); err != nil || len(left) > 0 {
		t.Errorf("records left after deleting all: %d %v", len(left), err)
	}
	if ctrs := ct.containers(); len(ctrs) > 0 {
		t.Errorf("containers left after deleting all: %v", ctrs)
	}
	return len(records)
}

// removeContainers removes whatever a failed run left.
func (ct *crashTest) removeContainers() {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=stacyvm.meta.crashtest="+ct.run).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
}
