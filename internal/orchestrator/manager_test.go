package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// testInstance is the instance id of the test's Manager.
const testInstance = "inst-test"

// clock is a settable time source.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func openStore(t testing.TB, path string) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return st
}

type env struct {
	m      *Manager
	st     store.Store
	fake   *fakeProvider
	clock  *clock
	dbPath string
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "stacyvm.db")
	st := openStore(t, dbPath)
	t.Cleanup(func() { st.Close() })
	fake := newFake("fake")
	reg := provider.NewRegistry()
	reg.Register(fake)
	c := newClock()
	cfg := Config{Now: c.Now, DefaultImage: "img:1", InstanceID: testInstance}
	if mod != nil {
		mod(&cfg)
	}
	return &env{m: New(st, reg, cfg), st: st, fake: fake, clock: c, dbPath: dbPath}
}

func (e *env) spawn(t *testing.T, req SpawnRequest) store.Sandbox {
	t.Helper()
	sb, err := e.m.Spawn(context.Background(), req)
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	return sb
}

func TestSpawnRecordsRunningSandboxWithDefaults(t *testing.T) {
	e := newEnv(t, nil)
	ch, cancel := e.m.Events().Subscribe(0)
	defer cancel()
	sb := e.spawn(t, SpawnRequest{OwnerID: "alice", Metadata: map[string]string{"k": "v"}})

	if !strings.HasPrefix(sb.ID, "sb-") || len(sb.ID) < 3+16 {
		t.Errorf("id %q: want sb- and at least 16 hex characters", sb.ID)
	}
	if sb.State != "running" || sb.Provider != "fake" || sb.Image != "img:1" {
		t.Errorf("got state=%s provider=%s image=%s", sb.State, sb.Provider, sb.Image)
	}
	if sb.MemoryMB != 512 || sb.VCPUs != 1 {
		t.Errorf("defaults: memory=%d vcpus=%d", sb.MemoryMB, sb.VCPUs)
	}
	if got := sb.ExpiresAt.Sub(sb.CreatedAt); got != 30*time.Minute {
		t.Errorf("default ttl = %s", got)
	}
	if sb.Handle != "h-"+sb.ID {
		t.Errorf("handle = %q", sb.Handle)
	}
	rec, err := e.st.GetSandbox(context.Background(), sb.ID)
	if err != nil || rec.State != "running" || rec.Metadata["k"] != "v" || rec.OwnerID != "alice" {
		t.Fatalf("stored record = %+v, %v", rec, err)
	}
	hist, err := e.m.History(context.Background(), sb.ID)
	if err != nil || len(hist) != 2 || hist[0].State != "creating" || hist[1].State != "running" {
		t.Errorf("history = %+v, %v", hist, err)
	}
	var types []string
	for len(types) < 2 {
		select {
		case ev := <-ch:
			types = append(types, ev.Type)
		case <-time.After(time.Second):
			t.Fatalf("events so far %v", types)
		}
	}
	if types[0] != events.SandboxCreated || types[1] != events.SandboxRunning {
		t.Errorf("events = %v", types)
	}
}

func TestSpawnValidation(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DefaultImage = "" })
	cases := []struct {
		name string
		req  SpawnRequest
		want error
	}{
		{"no image", SpawnRequest{}, errdefs.ErrInvalidArgument},
		{"negative ttl", SpawnRequest{Image: "i", TTL: -time.Second}, errdefs.ErrInvalidArgument},
		{"ttl over max", SpawnRequest{Image: "i", TTL: 25 * time.Hour}, errdefs.ErrInvalidArgument},
		{"negative memory", SpawnRequest{Image: "i", MemoryMB: -1}, errdefs.ErrInvalidArgument},
		{"negative vcpus", SpawnRequest{Image: "i", VCPUs: -1}, errdefs.ErrInvalidArgument},
		{"bad network", SpawnRequest{Image: "i", Network: "host"}, errdefs.ErrInvalidArgument},
		{"empty metadata key", SpawnRequest{Image: "i", Metadata: map[string]string{"": "x"}}, errdefs.ErrInvalidArgument},
		{"unknown provider", SpawnRequest{Image: "i", Provider: "nope"}, errdefs.ErrProviderNotFound},
		{"unknown template", SpawnRequest{Template: "nope"}, errdefs.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.m.Spawn(context.Background(), tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	if n := e.fake.count(); n != 0 {
		t.Errorf("%d runtimes left after rejected spawns", n)
	}
	if all, _ := e.st.ListSandboxes(context.Background(), store.SandboxFilter{}); len(all) != 0 {
		t.Errorf("%d records left after rejected spawns", len(all))
	}
}

func TestSpawnFailureLeavesErrorRecordAndNoRuntime(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.spawnErr = errdefs.New(errdefs.ErrNotFound, "image img:1 not found")
	_, err := e.m.Spawn(context.Background(), SpawnRequest{})
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	recs, _ := e.st.ListSandboxes(context.Background(), store.SandboxFilter{})
	if len(recs) != 1 || recs[0].State != "error" || !strings.Contains(recs[0].LastError, "img:1") {
		t.Fatalf("records = %+v", recs)
	}
	if e.fake.count() != 0 {
		t.Error("runtime left behind")
	}
	// An error record holds no runtime and does not count against limits,
	// and it can be destroyed.
	if err := e.m.Destroy(context.Background(), recs[0].ID); err != nil {
		t.Fatalf("destroy error record: %v", err)
	}
}

func TestSpawnOnUnhealthyProviderIsUnavailable(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.setHealth(errors.New("daemon down"))
	_, err := e.m.Spawn(context.Background(), SpawnRequest{Provider: "fake"})
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Fatalf("err = %v", err)
	}
	// auto: nothing healthy
	_, err = e.m.Spawn(context.Background(), SpawnRequest{})
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Fatalf("auto err = %v", err)
	}
}

func TestLimits(t *testing.T) {
	t.Run("overall, concurrent spawns never overshoot", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.MaxSandboxes = 5 })
		var ok, limited atomic.Int32
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				_, err := e.m.Spawn(context.Background(), SpawnRequest{})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errdefs.ErrResourceLimit):
					limited.Add(1)
				default:
					t.Errorf("unexpected err %v", err)
				}
			})
		}
		wg.Wait()
		if ok.Load() != 5 || limited.Load() != 15 {
			t.Fatalf("ok=%d limited=%d, want 5 and 15", ok.Load(), limited.Load())
		}
		if e.fake.count() != 5 {
			t.Fatalf("%d runtimes", e.fake.count())
		}
	})
	t.Run("per owner, and destroy frees a place", func(t *testing.T) {
		e := newEnv(t, func(c *Config) { c.MaxPerOwner = 1 })
		a := e.spawn(t, SpawnRequest{OwnerID: "a"})
		if _, err := e.m.Spawn(context.Background(), SpawnRequest{OwnerID: "a"}); !errors.Is(err, errdefs.ErrResourceLimit) {
			t.Fatalf("second spawn for a: %v", err)
		}
		e.spawn(t, SpawnRequest{OwnerID: "b"})
		if err := e.m.Destroy(context.Background(), a.ID); err != nil {
			t.Fatal(err)
		}
		e.spawn(t, SpawnRequest{OwnerID: "a"})
	})
}

func TestExec(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxOutputBytes = 1000 })
	sb := e.spawn(t, SpawnRequest{})
	ctx := context.Background()

	res, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "echo hi"})
	if err != nil || res.Stdout != "hi\n" || res.ExitCode != 0 {
		t.Fatalf("echo: %+v %v", res, err)
	}
	if got := e.fake.lastExec.Argv; len(got) != 3 || got[0] != "/bin/sh" || got[2] != "echo hi" {
		t.Errorf("shell argv = %q", got)
	}
	if e.fake.lastExec.Timeout != 60*time.Second {
		t.Errorf("default timeout = %s", e.fake.lastExec.Timeout)
	}

	if _, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "echo", Args: []string{"a b", `c"d`}}); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.lastExec.Argv; strings.Join(got, "|") != `echo|a b|c"d` {
		t.Errorf("argv = %q", got)
	}

	res, err = e.m.Exec(ctx, sb.ID, ExecRequest{Command: "fail 3"})
	if err != nil || res.ExitCode != 3 {
		t.Fatalf("non-zero exit must not be an error: %+v %v", res, err)
	}

	res, err = e.m.Exec(ctx, sb.ID, ExecRequest{Command: "sleep", Timeout: 20 * time.Millisecond})
	if !errors.Is(err, errdefs.ErrExecTimeout) || !res.TimedOut || res.Stdout != "partial\n" {
		t.Fatalf("timeout: %+v %v", res, err)
	}

	res, err = e.m.Exec(ctx, sb.ID, ExecRequest{Command: "flood"})
	if err != nil || len(res.Stdout) != 1000 || !res.Truncated {
		t.Fatalf("flood: len=%d truncated=%v err=%v", len(res.Stdout), res.Truncated, err)
	}

	for _, bad := range []ExecRequest{{}, {Command: "x", Timeout: -1}, {Command: "x", Timeout: 2 * time.Hour}} {
		if _, err := e.m.Exec(ctx, sb.ID, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%+v: err = %v", bad, err)
		}
	}
	if _, err := e.m.Exec(ctx, "sb-nope", ExecRequest{Command: "x"}); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("unknown sandbox: %v", err)
	}
}

func TestDestroyThenEveryOperationFails(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	if err := e.m.Destroy(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if e.fake.has(sb.ID) {
		t.Fatal("runtime still there")
	}
	rec, _ := e.st.GetSandbox(ctx, sb.ID)
	if rec.State != "destroyed" {
		t.Fatalf("record state %s", rec.State)
	}
	ops := map[string]error{}
	_, ops["get"] = e.m.Get(ctx, sb.ID)
	ops["destroy"] = e.m.Destroy(ctx, sb.ID)
	_, ops["exec"] = e.m.Exec(ctx, sb.ID, ExecRequest{Command: "echo"})
	ops["write"] = e.m.WriteFile(ctx, sb.ID, "/a", strings.NewReader("x"), 0)
	_, ops["read"] = e.m.ReadFile(ctx, sb.ID, "/a")
	_, ops["extend"] = e.m.Extend(ctx, sb.ID, time.Minute)
	_, ops["logs"] = e.m.Logs(ctx, sb.ID, 10)
	for op, err := range ops {
		if !errors.Is(err, errdefs.ErrSandboxDestroyed) {
			t.Errorf("%s after destroy: %v", op, err)
		}
	}
	if list, _ := e.m.List(ctx, ListFilter{}); len(list) != 0 {
		t.Errorf("destroyed sandbox still listed: %+v", list)
	}
	if list, _ := e.m.List(ctx, ListFilter{State: "destroyed"}); len(list) != 1 {
		t.Errorf("state=destroyed filter: %d", len(list))
	}
	if err := e.m.Destroy(ctx, "sb-unknown"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("destroy unknown: %v", err)
	}
}

func TestDestroyDuringSpawnIsAConflict(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	release := make(chan struct{})
	e.fake.spawnGate = release
	spawned := make(chan error, 1)
	go func() {
		_, err := e.m.Spawn(ctx, SpawnRequest{})
		spawned <- err
	}()
	var id string
	for deadline := time.Now().Add(5 * time.Second); id == "" && time.Now().Before(deadline); {
		if recs, _ := e.st.ListSandboxes(ctx, store.SandboxFilter{States: []string{"creating"}}); len(recs) == 1 {
			id = recs[0].ID
		}
		time.Sleep(time.Millisecond)
	}
	if id == "" {
		t.Fatal("spawn never recorded its sandbox")
	}
	if err := e.m.Destroy(ctx, id); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("destroy during spawn: %v, want conflict", err)
	}
	e.clock.Add(time.Hour) // expired, but still creating: the reaper leaves it
	if n, err := e.m.Prune(ctx); n != 0 || err != nil {
		t.Errorf("prune during spawn: %d %v", n, err)
	}
	close(release)
	if err := <-spawned; err != nil {
		t.Fatal(err)
	}
	if err := e.m.Destroy(ctx, id); err != nil {
		t.Fatalf("destroy after spawn: %v", err)
	}
	if e.fake.has(id) {
		t.Error("runtime left behind")
	}
}

// Destroy racing Extend, the reaper and itself: exactly one destroy wins,
// and nothing brings the record back to life.
func TestConcurrentDestroyExtendPrune(t *testing.T) {
	for range 20 {
		e := newEnv(t, nil)
		ctx := context.Background()
		sb := e.spawn(t, SpawnRequest{TTL: time.Minute})
		e.clock.Add(2 * time.Minute) // expired: the reaper wants it too
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if e.m.Destroy(ctx, sb.ID) == nil {
					wins.Add(1)
				}
			})
		}
		wg.Go(func() { e.m.Extend(ctx, sb.ID, time.Hour) })
		wg.Go(func() {
			if n, _ := e.m.Prune(ctx); n == 1 {
				wins.Add(1)
			}
		})
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d destroys succeeded, want exactly 1", wins.Load())
		}
		if rec, _ := e.st.GetSandbox(ctx, sb.ID); rec.State != "destroyed" {
			t.Fatalf("record ended %s", rec.State)
		}
		if list, _ := e.m.List(ctx, ListFilter{}); len(list) != 0 {
			t.Fatalf("destroyed sandbox listed: %+v", list)
		}
	}
}

func TestDestroyToleratesVanishedRuntime(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.spawn(t, SpawnRequest{})
	e.fake.Destroy(context.Background(), sb.ID) // gone behind our back
	if err := e.m.Destroy(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
}

func TestListFilters(t *testing.T) {
	e := newEnv(t, nil)
	a := e.spawn(t, SpawnRequest{OwnerID: "a"})
	e.clock.Add(time.Second)
	b := e.spawn(t, SpawnRequest{OwnerID: "b"})
	ctx := context.Background()
	all, _ := e.m.List(ctx, ListFilter{})
	if len(all) != 2 || all[0].ID != b.ID || all[1].ID != a.ID {
		t.Fatalf("want newest first: %v", all)
	}
	if got, _ := e.m.List(ctx, ListFilter{OwnerID: "a"}); len(got) != 1 || got[0].ID != a.ID {
		t.Errorf("owner filter: %v", got)
	}
	if got, _ := e.m.List(ctx, ListFilter{Provider: "other"}); len(got) != 0 {
		t.Errorf("provider filter: %v", got)
	}
	if _, err := e.m.List(ctx, ListFilter{State: "bogus"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad state: %v", err)
	}
}

func TestExtendNeverShortens(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{TTL: time.Hour})
	got, err := e.m.Extend(ctx, sb.ID, time.Minute)
	if err != nil || !got.ExpiresAt.Equal(sb.ExpiresAt) {
		t.Fatalf("shorter ttl changed expiry: %v -> %v (%v)", sb.ExpiresAt, got.ExpiresAt, err)
	}
	got, err = e.m.Extend(ctx, sb.ID, 2*time.Hour)
	if err != nil || !got.ExpiresAt.Equal(e.clock.Now().Add(2*time.Hour)) {
		t.Fatalf("extend: %v %v", got.ExpiresAt, err)
	}
	for _, bad := range []time.Duration{0, -time.Second, 48 * time.Hour} {
		if _, err := e.m.Extend(ctx, sb.ID, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("extend %s: %v", bad, err)
		}
	}
}

func TestReaperDestroysExpired(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReaperInterval = 10 * time.Millisecond })
	ctx := context.Background()
	short := e.spawn(t, SpawnRequest{TTL: time.Minute})
	long := e.spawn(t, SpawnRequest{TTL: time.Hour})
	e.clock.Add(2 * time.Minute)

	if _, err := e.m.Exec(ctx, short.ID, ExecRequest{Command: "echo"}); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("exec on an expired sandbox: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.m.Run(runCtx); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for e.fake.has(short.ID) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-done
	if e.fake.has(short.ID) {
		t.Fatal("reaper did not remove the expired runtime")
	}
	if !e.fake.has(long.ID) {
		t.Fatal("reaper removed a live sandbox")
	}
	rec, _ := e.st.GetSandbox(ctx, short.ID)
	if rec.State != "destroyed" || rec.LastError != "ttl expired" {
		t.Errorf("record: %s %q", rec.State, rec.LastError)
	}
	if n, err := e.m.Prune(ctx); n != 0 || err != nil {
		t.Errorf("second prune: %d %v", n, err)
	}
}

func TestTemplates(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	tmpl := store.Template{Name: "py", Image: "python:3", Env: map[string]string{"A": "1"},
		Setup: []string{"echo setup"}, MemoryMB: 256, CPUCores: 2, TTLSeconds: 600}
	created, err := e.m.CreateTemplate(ctx, tmpl)
	if err != nil || created.Version != 1 {
		t.Fatalf("create: %+v %v", created, err)
	}
	if _, err := e.m.CreateTemplate(ctx, tmpl); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("duplicate: %v", err)
	}
	for name, bad := range map[string]store.Template{
		"no name":      {Image: "x"},
		"no image":     {Name: "x"},
		"bad name":     {Name: "../x", Image: "x"},
		"empty setup":  {Name: "x", Image: "x", Setup: []string{" "}},
		"unknown prov": {Name: "x", Image: "x", Provider: "nope"},
		"negative ttl": {Name: "x", Image: "x", TTLSeconds: -1},
		"bad env name": {Name: "x", Image: "x", Env: map[string]string{"A=B": "1"}},
	} {
		if _, err := e.m.CreateTemplate(ctx, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}

	sb := e.spawn(t, SpawnRequest{Template: "py"})
	if sb.Image != "python:3" || sb.MemoryMB != 256 || sb.VCPUs != 2 || sb.ExpiresAt.Sub(sb.CreatedAt) != 10*time.Minute {
		t.Errorf("template not applied: %+v", sb)
	}
	res, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "env A"})
	if err != nil || res.Stdout != "1" {
		t.Errorf("template env in exec: %+v %v", res, err)
	}
	res, _ = e.m.Exec(ctx, sb.ID, ExecRequest{Command: "env A", Env: map[string]string{"A": "2"}})
	if res.Stdout != "2" {
		t.Errorf("request env must override template env: %q", res.Stdout)
	}

	upd, err := e.m.UpdateTemplate(ctx, "py", store.Template{Image: "python:3.12", Setup: []string{"fail 7"}})
	if err != nil || upd.Version != 2 {
		t.Fatalf("update: %+v %v", upd, err)
	}
	_, err = e.m.Spawn(ctx, SpawnRequest{Template: "py"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "exited 7") {
		t.Fatalf("failing setup: %v", err)
	}
	if e.fake.count() != 1 {
		t.Errorf("failing setup left a runtime: %d runtimes", e.fake.count())
	}
	if _, err := e.m.UpdateTemplate(ctx, "nope", store.Template{Image: "x"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("update missing: %v", err)
	}
	if err := e.m.DeleteTemplate(ctx, "py"); err != nil {
		t.Fatal(err)
	}
	if err := e.m.DeleteTemplate(ctx, "py"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("delete twice: %v", err)
	}
}

func TestFilePassThroughValidates(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	if err := e.m.WriteFile(ctx, sb.ID, "", strings.NewReader(""), 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty path: %v", err)
	}
	if err := e.m.WriteFile(ctx, sb.ID, "/a", strings.NewReader(""), 0o10000); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad mode: %v", err)
	}
	if _, err := e.m.Glob(ctx, sb.ID, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty pattern: %v", err)
	}
	if err := e.m.WriteFile(ctx, sb.ID, "/a", strings.NewReader("data"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.ReadFile(ctx, sb.ID, "/missing"); !errors.Is(err, errdefs.ErrFileNotFound) {
		t.Errorf("missing: %v", err)
	}
}

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []string{OrphansAdopt, OrphansDestroy} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t, nil)
			alive := e.spawn(t, SpawnRequest{})
			gone := e.spawn(t, SpawnRequest{})
			dead := e.spawn(t, SpawnRequest{})
			e.fake.Destroy(ctx, gone.ID)
			if err := e.m.Destroy(ctx, dead.ID); err != nil {
				t.Fatal(err)
			}
			// A runtime whose record says destroyed, and an orphan.
			e.fake.addRuntime(provider.Info{ID: dead.ID, State: provider.StateRunning})
			e.fake.addRuntime(provider.Info{ID: "sb-orphan000000000000", State: provider.StateRunning, Instance: testInstance,
				Image: "img:orphan", OwnerID: "zed", Metadata: map[string]string{"m": "1"}})
			// A record caught mid-spawn, with its runtime.
			mid := store.Sandbox{ID: "sb-midspawn0000000000", Provider: "fake", Image: "i", State: "creating",
				CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(time.Hour)}
			if err := e.st.CreateSandbox(ctx, mid); err != nil {
				t.Fatal(err)
			}
			e.fake.addRuntime(provider.Info{ID: mid.ID, State: provider.StateRunning})
			// A runtime never started, with no record: removed whatever the
			// policy, never adopted.
			e.fake.addRuntime(provider.Info{ID: "sb-created00000000000", State: provider.StateCreating, Instance: testInstance})
			// Another server's runtimes, and one from before instance ids:
			// never adopted nor removed, whatever the policy.
			e.fake.addRuntime(provider.Info{ID: "sb-foreign00000000000", State: provider.StateRunning, Instance: "inst-other"})
			e.fake.addRuntime(provider.Info{ID: "sb-foreigncreated0000", State: provider.StateCreating, Instance: "inst-other"})
			e.fake.addRuntime(provider.Info{ID: "sb-legacy000000000000", State: provider.StateRunning})
			// A record of a provider that is no longer configured.
			lost := store.Sandbox{ID: "sb-lostprovider000000", Provider: "gone", Image: "i", State: "running",
				CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now(), ExpiresAt: e.clock.Now().Add(time.Hour)}
			if err := e.st.CreateSandbox(ctx, lost); err != nil {
				t.Fatal(err)
			}

			reg := provider.NewRegistry()
			reg.Register(e.fake)
			m2 := New(e.st, reg, Config{Now: e.clock.Now, Orphans: policy, InstanceID: testInstance})
			rep, err := m2.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			wantAdopted, wantDestroyed := 1, 3
			if policy == OrphansDestroy {
				wantAdopted, wantDestroyed = 0, 4
			}
			want := ReconcileReport{Alive: 1, Gone: 1, Errored: 1, Adopted: wantAdopted, Destroyed: wantDestroyed}
			if rep != want {
				t.Errorf("report = %+v, want %+v", rep, want)
			}
			state := func(id string) string {
				r, err := e.st.GetSandbox(ctx, id)
				if err != nil {
					return err.Error()
				}
				return r.State
			}
			if s := state(alive.ID); s != "running" {
				t.Errorf("alive: %s", s)
			}
			if _, err := m2.Exec(ctx, alive.ID, ExecRequest{Command: "echo ok"}); err != nil {
				t.Errorf("exec on reconciled sandbox: %v", err)
			}
			if s := state(gone.ID); s != "destroyed" {
				t.Errorf("gone: %s", s)
			}
			if s := state(lost.ID); s != "error" {
				t.Errorf("lost provider: %s (records are never deleted)", s)
			}
			// A spawn interrupted by a crash ends destroyed (its caller never
			// received it), the reason in its history.
			if s := state(mid.ID); s != "destroyed" || e.fake.has(mid.ID) {
				t.Errorf("mid-spawn: %s, runtime kept=%v", s, e.fake.has(mid.ID))
			}
			if h, _ := e.st.History(ctx, mid.ID); len(h) == 0 || !strings.Contains(h[len(h)-1].Reason, "spawn interrupted") {
				t.Errorf("mid-spawn history = %+v; the last entry must say the spawn was interrupted", h)
			}
			if e.fake.has(dead.ID) {
				t.Error("runtime of a destroyed record survived")
			}
			for _, id := range []string{"sb-foreign00000000000", "sb-foreigncreated0000", "sb-legacy000000000000"} {
				if !e.fake.has(id) {
					t.Errorf("%s: another instance's (or an unclaimed legacy) runtime was removed", id)
				}
				if _, err := e.st.GetSandbox(ctx, id); !errors.Is(err, errdefs.ErrNotFound) {
					t.Errorf("%s: another instance's (or an unclaimed legacy) runtime was adopted: %v", id, err)
				}
			}
			if e.fake.has("sb-created00000000000") {
				t.Error("a never-started runtime without a record survived")
			}
			if _, err := e.st.GetSandbox(ctx, "sb-created00000000000"); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("a never-started runtime was adopted: %v", err)
			}
			orphan, err := e.st.GetSandbox(ctx, "sb-orphan000000000000")
			if policy == OrphansAdopt {
				if err != nil || orphan.State != "running" || orphan.OwnerID != "zed" || orphan.Metadata["m"] != "1" {
					t.Errorf("adopted: %+v %v", orphan, err)
				}
			} else if !errors.Is(err, errdefs.ErrNotFound) || e.fake.has("sb-orphan000000000000") {
				t.Errorf("orphan not destroyed: %v", err)
			}
		})
	}
}

func TestReconcileBrokenRuntimeAndStoppedOrphan(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	e.fake.addRuntime(provider.Info{ID: sb.ID, State: provider.StateError})
	e.fake.addRuntime(provider.Info{ID: "sb-stopped000000000000", State: provider.StateStopped, Instance: testInstance})
	rep, err := e.m.Reconcile(ctx)
	if err != nil || rep.Errored != 1 || rep.Adopted != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	if rec, _ := e.st.GetSandbox(ctx, sb.ID); rec.State != "error" {
		t.Errorf("broken runtime: record %s", rec.State)
	}
	if rec, _ := e.st.GetSandbox(ctx, "sb-stopped000000000000"); rec.State != "stopped" {
		t.Errorf("stopped orphan adopted as %s", rec.State)
	}
}

func TestReconcileUnhealthyProviderMarksError(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{})
	e.fake.setHealth(errors.New("daemon down"))
	rep, err := e.m.Reconcile(ctx)
	if err != nil || rep.Errored != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	rec, _ := e.st.GetSandbox(ctx, sb.ID)
	if rec.State != "error" || !strings.Contains(rec.LastError, "daemon down") {
		t.Errorf("record %s %q", rec.State, rec.LastError)
	}
	// Healthy again: the next reconcile brings it back.
	e.fake.setHealth(nil)
	if rep, err := e.m.Reconcile(ctx); err != nil || rep.Alive != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	if _, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "echo"}); err != nil {
		t.Errorf("exec after recovery: %v", err)
	}
}

func TestReconcileAcrossStoreReopen(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{Metadata: map[string]string{"x": "y"}})
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	st2 := openStore(t, e.dbPath)
	t.Cleanup(func() { st2.Close() })
	reg := provider.NewRegistry()
	reg.Register(e.fake)
	m2 := New(st2, reg, Config{Now: e.clock.Now})
	if rep, err := m2.Reconcile(ctx); err != nil || rep.Alive != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	got, err := m2.Get(ctx, sb.ID)
	if err != nil || got.Metadata["x"] != "y" {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := m2.Exec(ctx, sb.ID, ExecRequest{Command: "echo"}); err != nil {
		t.Fatal(err)
	}
}

func TestProvidersReport(t *testing.T) {
	e := newEnv(t, nil)
	e.m.Registry().Decline("firecracker", fmt.Errorf("/dev/kvm is missing"))
	e.spawn(t, SpawnRequest{})
	st := e.m.Providers(context.Background())
	if len(st) != 2 {
		t.Fatalf("%+v", st)
	}
	if !st[0].Healthy || !st[0].Default || st[0].SandboxCount != 1 {
		t.Errorf("fake: %+v", st[0])
	}
	if st[1].Healthy || !strings.Contains(st[1].Problem, "/dev/kvm") {
		t.Errorf("declined: %+v", st[1])
	}
	if _, err := e.m.Provider(context.Background(), "nope"); !errors.Is(err, errdefs.ErrProviderNotFound) {
		t.Errorf("unknown provider: %v", err)
	}
}

func TestSetTTLReplacesExpiry(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{TTL: time.Hour})
	got, err := e.m.SetTTL(ctx, sb.ID, time.Minute)
	if err != nil || !got.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)) {
		t.Fatalf("SetTTL shorter: %v %v", got.ExpiresAt, err)
	}
	if again, _ := e.m.Get(ctx, sb.ID); !again.ExpiresAt.Equal(got.ExpiresAt) {
		t.Fatalf("record keeps %v, want %v", again.ExpiresAt, got.ExpiresAt)
	}
	for _, bad := range []time.Duration{0, 48 * time.Hour} {
		if _, err := e.m.SetTTL(ctx, sb.ID, bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("SetTTL %s: %v", bad, err)
		}
	}
}

func TestSpawnEnvReachesCommands(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	sb := e.spawn(t, SpawnRequest{Env: map[string]string{"GREETING": "hi"}})
	if sb.Env["GREETING"] != "hi" {
		t.Fatalf("record env = %v", sb.Env)
	}
	if res, err := e.m.Exec(ctx, sb.ID, ExecRequest{Command: "env GREETING"}); err != nil || res.Stdout != "hi" {
		t.Fatalf("command sees %q (%v), want hi", res.Stdout, err)
	}
	if _, err := e.m.Spawn(ctx, SpawnRequest{Env: map[string]string{"A=B": "x"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("bad env name: %v", err)
	}
}

// TestReaperPurgesAfterRetention: a destroyed record and its history stay
// for Retention, then the reaper loop purges them.
func TestReaperPurgesAfterRetention(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReaperInterval = 10 * time.Millisecond; c.Retention = time.Hour })
	ctx := context.Background()
	gone := e.spawn(t, SpawnRequest{})
	kept := e.spawn(t, SpawnRequest{TTL: 3 * time.Hour})
	if err := e.m.Destroy(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := e.m.Purge(ctx); n != 0 || err != nil {
		t.Fatalf("purge within retention: %d %v", n, err)
	}
	if h, err := e.m.History(ctx, gone.ID); err != nil || len(h) < 2 {
		t.Fatalf("history within retention: %v %v", h, err)
	}
	e.clock.Add(time.Hour + time.Minute)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.m.Run(runCtx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.st.GetSandbox(ctx, gone.ID); errors.Is(err, errdefs.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reaper did not purge the destroyed record")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	if _, err := e.m.History(ctx, gone.ID); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("history after purge: %v", err)
	}
	if _, err := e.m.Get(ctx, kept.ID); err != nil {
		t.Errorf("a live sandbox was purged: %v", err)
	}
	counts, err := e.m.Counts(ctx)
	if err != nil || counts["destroyed"] != 0 || counts["running"] < 1 {
		t.Errorf("counts after purge = %v %v", counts, err)
	}
}

func TestActivityIsForgottenWithTheSandbox(t *testing.T) {
	e := newEnv(t, nil)
	sb := e.spawn(t, SpawnRequest{})
	if _, ok := e.m.LastActivity(sb.ID); ok {
		t.Fatal("activity recorded before any")
	}
	e.m.Touch(sb.ID)
	if _, ok := e.m.LastActivity(sb.ID); !ok {
		t.Fatal("Touch recorded nothing")
	}
	if err := e.m.Destroy(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.m.LastActivity(sb.ID); ok {
		t.Fatal("a destroyed sandbox keeps its activity entry")
	}
}
