package docker

import (
	"path/filepath"
	"testing"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// server is one orchestrator over its own database and its own Docker
// provider, as `stacyvm serve` wires them.
type server struct {
	m   *orchestrator.Manager
	p   *Provider
	id  string
	dir string
}

func newServer(t *testing.T, orphans, legacy string) server {
	t.Helper()
	ctx := testCtx(t)
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "stacyvm.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	inst, err := st.InstanceID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := newProvider(t, "runc")
	reg := provider.NewRegistry()
	reg.Register(p)
	reg.SetDefault(p.Name())
	m := orchestrator.New(st, reg, orchestrator.Config{DefaultImage: busyboxImage, InstanceID: inst,
		Orphans: orphans, LegacyRuntimes: legacy})
	return server{m: m, p: p, id: inst, dir: dir}
}

// TestTwoServersOneDaemon: two servers with their own databases on one
// dockerd label their containers with their instance ids, and reconcile,
// even with sandbox.orphans: destroy, never adopts nor removes the other's
// containers; an unlabelled (legacy) container is left alone unless a
// server claims legacy runtimes.
func TestTwoServersOneDaemon(t *testing.T) {
	needImage(t, busyboxImage)
	ctx := testCtx(t)
	a := newServer(t, orchestrator.OrphansDestroy, orchestrator.LegacyIgnore)
	b := newServer(t, orchestrator.OrphansDestroy, orchestrator.LegacyIgnore)
	if a.id == b.id {
		t.Fatalf("two databases share instance id %s", a.id)
	}
	sa, err := a.m.Spawn(ctx, orchestrator.SpawnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.m.Spawn(ctx, orchestrator.SpawnRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// A legacy container: spawned without an instance id, no record anywhere.
	legacy := spawn(t, a.p, provider.Spec{})
	t.Cleanup(func() { a.p.Destroy(ctx, legacy.ID) })

	for _, s := range []struct {
		srv        server
		own, other string
	}{{a, sa.ID, sb.ID}, {b, sb.ID, sa.ID}} {
		info, err := s.srv.p.Status(ctx, s.own)
		if err != nil || info.Instance != s.srv.id {
			t.Fatalf("container of %s carries instance %q (%v), want %q", s.own, info.Instance, err, s.srv.id)
		}
		rep, err := s.srv.m.Reconcile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Adopted != 0 || rep.Destroyed != 0 || rep.Alive != 1 {
			t.Errorf("instance %s reconcile = %+v; want its own sandbox alive and nothing else touched", s.srv.id, rep)
		}
		if _, err := s.srv.m.Get(ctx, s.other); err == nil {
			t.Errorf("instance %s adopted %s of the other server", s.srv.id, s.other)
		}
	}
	for _, c := range []struct {
		srv server
		id  string
	}{{a, sa.ID}, {b, sb.ID}} {
		if !containerExists(t, c.id) {
			t.Fatalf("the other server's reconcile removed %s", c.id)
		}
		if res, err := c.srv.m.Exec(ctx, c.id, orchestrator.ExecRequest{Command: "echo ok"}); err != nil || res.Stdout != "ok\n" {
			t.Errorf("exec on %s after both reconciles: %+v %v", c.id, res, err)
		}
	}
	if !containerExists(t, legacy.ID) {
		t.Fatal("an unlabelled legacy container was removed under legacy_runtimes: ignore")
	}

	// A server that claims legacy runtimes treats it as an orphan (here:
	// destroy), and still leaves the other instance's container alone.
	claim := newServer(t, orchestrator.OrphansDestroy, orchestrator.LegacyClaim)
	rep, err := claim.m.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Destroyed != 1 || containerExists(t, legacy.ID) {
		t.Errorf("claiming server: %+v, legacy container kept %v", rep, containerExists(t, legacy.ID))
	}
	if !containerExists(t, sa.ID) || !containerExists(t, sb.ID) {
		t.Fatal("the claiming server removed a labelled container of another instance")
	}

	for _, c := range []struct {
		srv server
		id  string
	}{{a, sa.ID}, {b, sb.ID}} {
		if err := c.srv.m.Destroy(ctx, c.id); err != nil {
			t.Fatal(err)
		}
	}
}
