package providertest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func (s *suite) testHealth(t *testing.T) {
	if s.p.Name() == "" {
		t.Error("Name() is empty")
	}
	if err := s.p.Health(t.Context()); err != nil {
		t.Fatalf("Health: %v", err)
	}
}

// guestOps calls every sandbox-addressed operation once and returns the
// errors by operation name.
func guestOps(ctx context.Context, p provider.Provider, id string) map[string]error {
	errs := map[string]error{}
	_, errs["Status"] = p.Status(ctx, id)
	_, errs["Logs"] = p.Logs(ctx, id, 10)
	_, errs["Exec"] = p.Exec(ctx, id, provider.ExecRequest{Argv: []string{"echo", "hi"}}, io.Discard, io.Discard)
	errs["WriteFile"] = p.WriteFile(ctx, id, "/workspace/after.txt", strings.NewReader("x"), 0o644)
	rc, err := p.ReadFile(ctx, id, "/workspace/before.txt")
	if err == nil {
		rc.Close()
	}
	errs["ReadFile"] = err
	_, errs["ListFiles"] = p.ListFiles(ctx, id, "/workspace")
	_, errs["StatFile"] = p.StatFile(ctx, id, "/workspace/before.txt")
	errs["DeleteFile"] = p.DeleteFile(ctx, id, "/workspace/before.txt", false)
	errs["MoveFile"] = p.MoveFile(ctx, id, "/workspace/before.txt", "/workspace/moved.txt")
	errs["Chmod"] = p.Chmod(ctx, id, "/workspace/before.txt", 0o600)
	_, errs["Glob"] = p.Glob(ctx, id, "/workspace/*")
	return errs
}

func (s *suite) testLifecycle(t *testing.T) {
	t.Run("SpawnStatusDestroy", func(t *testing.T) {
		t.Parallel()
		p := s.p
		id := s.spawn(t, p, provider.Spec{})
		info, err := p.Status(t.Context(), id)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if info.ID != id || info.State != provider.StateRunning {
			t.Errorf("Status = %+v, want ID %s running", info, id)
		}
		if got := mustExec(t, p, id, "echo alive"); got != "alive\n" {
			t.Errorf("exec after spawn: stdout %q", got)
		}
		writeFile(t, p, id, "/workspace/before.txt", []byte("x"), 0)

		if err := p.Destroy(t.Context(), id); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
		if err := p.Destroy(t.Context(), id); err != nil {
			t.Errorf("second Destroy: %v, want nil (idempotent)", err)
		}
		for op, err := range guestOps(t.Context(), p, id) {
			if !isGone(err) {
				t.Errorf("%s after Destroy: %v (class %v), want sandbox destroyed or not found", op, err, errdefs.Classify(err))
			}
		}
		if inv, ok := p.(provider.Inventory); ok {
			list, err := inv.List(t.Context())
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			for _, i := range list {
				if i.ID == id {
					t.Errorf("List still reports destroyed sandbox %s", id)
				}
			}
		}
	})

	t.Run("UnknownID", func(t *testing.T) {
		t.Parallel()
		id := NewID()
		for op, err := range guestOps(t.Context(), s.p, id) {
			if !errors.Is(err, errdefs.ErrSandboxNotFound) {
				t.Errorf("%s on unknown sandbox: %v (class %v), want sandbox not found", op, err, errdefs.Classify(err))
			}
		}
		if err := s.p.Destroy(t.Context(), id); err != nil {
			t.Errorf("Destroy of unknown sandbox: %v, want nil", err)
		}
	})

	t.Run("DuplicateID", func(t *testing.T) {
		t.Parallel()
		id := s.spawn(t, s.p, provider.Spec{})
		_, err := s.p.Spawn(t.Context(), provider.Spec{ID: id, Image: s.h.Image})
		wantClass(t, "Spawn with a live sandbox's ID", err, errdefs.ErrConflict)
		if got := mustExec(t, s.p, id, "echo still"); got != "still\n" {
			t.Errorf("the first sandbox broke after a duplicate Spawn: %q", got)
		}
	})

	t.Run("SpawnEnv", func(t *testing.T) {
		t.Parallel()
		id := s.spawn(t, s.p, provider.Spec{Env: map[string]string{
			"STACY_SPAWN": "from spawn", "STACY_BOTH": "spawn",
		}})
		r := execIn(t.Context(), s.p, id, provider.ExecRequest{
			Argv: []string{"sh", "-c", `printf '%s|%s' "$STACY_SPAWN" "$STACY_BOTH"`},
			Env:  map[string]string{"STACY_BOTH": "exec"},
		})
		if r.err != nil || r.stdout != "from spawn|exec" {
			t.Errorf("sandbox env: %s; want stdout %q (spawn env applies, exec env wins)", r, "from spawn|exec")
		}
	})
}
