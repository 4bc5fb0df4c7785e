package providertest

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// hostSecret is a file on the host, outside every sandbox, that no file
// operation on a sandbox may read or change.
type hostSecret struct {
	dir, path string
	content   []byte
}

func plantSecret(t *testing.T) hostSecret {
	t.Helper()
	dir := t.TempDir()
	s := hostSecret{dir: dir, path: filepath.Join(dir, "secret.txt"), content: []byte("host-secret-" + token())}
	if err := os.WriteFile(s.path, s.content, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// leaked reports whether b holds the secret.
func (h hostSecret) leaked(b []byte) bool { return bytes.Contains(b, h.content) }

// check fails t if the host secret was changed, moved or removed.
func (h hostSecret) check(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(h.path)
	if err != nil || !bytes.Equal(b, h.content) {
		t.Fatalf("the host file outside the sandbox was changed or removed: %q, %v", b, err)
	}
	fi, err := os.Stat(h.path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the host file outside the sandbox changed mode: %v, %v", fi.Mode(), err)
	}
}

// probe runs the reading file operations against path and fails t if one
// reached the secret. Probe before attacking: an attack's writes may create
// a file of the same name inside the sandbox.
func (s *suite) probe(t *testing.T, id string, h hostSecret, path string) {
	t.Helper()
	ctx := t.Context()
	p := s.p
	if b, err := readFile(ctx, p, id, path); err == nil && h.leaked(b) {
		t.Errorf("ReadFile(%q) read the host file outside the sandbox", path)
	} else if err != nil && errdefs.Classify(err) == nil {
		t.Errorf("ReadFile(%q): unclassified error %v", path, err)
	}
	if list, err := p.ListFiles(ctx, id, path); err == nil {
		for _, fi := range list {
			if strings.HasSuffix(fi.Path, "/secret.txt") {
				t.Errorf("ListFiles(%q) lists the host directory outside the sandbox: %+v", path, fi)
			}
		}
	}
	if got, err := p.Glob(ctx, id, path+"/*"); err == nil && slices.ContainsFunc(got, func(g string) bool { return strings.HasSuffix(g, "/secret.txt") }) {
		t.Errorf("Glob(%q/*) sees the host directory outside the sandbox: %q", path, got)
	}
	h.check(t)
}

// attack runs the changing file operations against path and fails t if one
// changed the secret or made it readable. They may succeed (inside the
// sandbox) or fail.
func (s *suite) attack(t *testing.T, id string, h hostSecret, path string) {
	t.Helper()
	ctx := t.Context()
	p := s.p
	p.WriteFile(ctx, id, path, strings.NewReader("overwritten"), 0o666)
	h.check(t)
	p.Chmod(ctx, id, path, 0o777)
	h.check(t)
	stolen := "/workspace/stolen-" + token()
	if p.MoveFile(ctx, id, path, stolen) == nil {
		if b, err := readFile(ctx, p, id, stolen); err == nil && h.leaked(b) {
			t.Errorf("moving %q into the sandbox made the host file readable", path)
		}
	}
	h.check(t)
	p.DeleteFile(ctx, id, path, true)
	h.check(t)
}

func (s *suite) testPaths(t *testing.T) {
	p := s.p

	t.Run("DotDotStaysInside", func(t *testing.T) {
		t.Parallel()
		id := s.spawn(t, p, provider.Spec{})
		name := "stacyvm-conformance-" + token()
		writeFile(t, p, id, "../../../../../../tmp/"+name, []byte("inside"), 0)
		if _, err := os.Lstat("/tmp/" + name); err == nil {
			os.Remove("/tmp/" + name)
			t.Fatalf("WriteFile(../../…/tmp/%s) wrote the host's /tmp", name)
		}
		for _, path := range []string{"/tmp/" + name, "/../tmp/" + name, "../../tmp/" + name, "/workspace/../../../tmp/" + name} {
			if got := mustRead(t, p, id, path); got != "inside" {
				t.Errorf("ReadFile(%q) = %q, want the sandbox's /tmp/%s", path, got, name)
			}
		}
	})

	t.Run("HostSecret", func(t *testing.T) {
		t.Parallel()
		id := s.spawn(t, p, provider.Spec{})
		h := plantSecret(t)
		up := strings.Repeat("../", 20)
		paths := []string{
			h.path,
			up + strings.TrimPrefix(h.path, "/"),
			"/workspace/" + up + strings.TrimPrefix(h.path, "/"),
			h.dir,
			up + strings.TrimPrefix(h.dir, "/"),
		}
		for _, path := range paths {
			s.probe(t, id, h, path)
		}
		for _, path := range paths {
			s.attack(t, id, h, path)
		}
		// An absolute path names a file in the sandbox, not on the host.
		writeFile(t, p, id, h.path, []byte("sandbox copy"), 0)
		if got := mustRead(t, p, id, h.path); got != "sandbox copy" {
			t.Errorf("ReadFile(%q) after writing it = %q", h.path, got)
		}
		h.check(t)
	})

	t.Run("Symlinks", func(t *testing.T) {
		t.Parallel()
		s.need(t, "Symlinks", s.caps.Symlinks)
		id := s.spawn(t, p, provider.Spec{})
		h := plantSecret(t)
		up := strings.Repeat("../", 20)
		tok := token()
		links := map[string]string{
			"abs-" + tok:    h.path,
			"absdir-" + tok: h.dir,
			"rel-" + tok:    up + strings.TrimPrefix(h.path, "/"),
			"reldir-" + tok: up + strings.TrimPrefix(h.dir, "/"),
		}
		for name, target := range links {
			// Sandbox code plants the link; ln runs in /workspace.
			r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"ln", "-s", target, name}})
			if r.err != nil || r.st.ExitCode != 0 {
				t.Fatalf("ln -s in the sandbox: %s", r)
			}
			fi, err := p.StatFile(t.Context(), id, name)
			if err != nil || fi.Mode&fs.ModeSymlink == 0 {
				t.Errorf("StatFile(%s) = %+v, %v; want the link itself (fs.ModeSymlink)", name, fi, err)
			}
		}
		var paths []string
		for name := range links {
			paths = append(paths, "/workspace/"+name, name+"/secret.txt")
		}
		for _, path := range paths {
			s.probe(t, id, h, path)
		}
		for _, path := range paths {
			s.attack(t, id, h, path)
		}
		h.check(t)
	})

	t.Run("Hardlinks", func(t *testing.T) {
		t.Parallel()
		id := s.spawn(t, p, provider.Spec{})
		h := plantSecret(t)
		name := "hard-" + token()
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"ln", h.path, name}})
		if r.err != nil {
			t.Fatalf("exec ln: %v", r.err)
		}
		if r.st.ExitCode != 0 {
			t.Logf("sandbox code cannot hard-link the host file (exit %d): nothing can leak that way", r.st.ExitCode)
			return
		}
		// The sandbox can reach the host file system (isolation none): the
		// file operations still must not.
		s.probe(t, id, h, "/workspace/"+name)
		s.attack(t, id, h, "/workspace/"+name)
		h.check(t)
	})

	t.Run("ExecCannotReadHost", func(t *testing.T) {
		t.Parallel()
		if s.caps.Isolation == provider.IsolationNone {
			t.Skipf("provider %q declares Isolation %s: its commands run on the host", p.Name(), s.caps.Isolation)
		}
		id := s.spawn(t, p, provider.Spec{})
		h := plantSecret(t)
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"cat", h.path}})
		if h.leaked([]byte(r.stdout)) {
			t.Errorf("a command in the sandbox read a host file at %s", h.path)
		}
	})
}

func (s *suite) testIsolation(t *testing.T) {
	p := s.p
	a := s.spawn(t, p, provider.Spec{})
	b := s.spawn(t, p, provider.Spec{})
	name := "only-in-a-" + token()
	writeFile(t, p, a, "/workspace/"+name, []byte("a's"), 0)
	mustExec(t, p, a, "echo a > "+name+".exec")

	for _, f := range []string{name, name + ".exec"} {
		_, err := readFile(t.Context(), p, b, "/workspace/"+f)
		wantFileNotFound(t, "the other sandbox's file", err)
		r := execIn(t.Context(), p, b, provider.ExecRequest{Argv: []string{"cat", f}})
		if r.err != nil || r.st.ExitCode == 0 || strings.Contains(r.stdout, "a") {
			t.Errorf("cat of the other sandbox's file from a command: %s; want a failure", r)
		}
	}
	if got, err := p.Glob(t.Context(), b, "/workspace/only-in-a-*"); err != nil || len(got) != 0 {
		t.Errorf("Glob in b = %q, %v; want nothing", got, err)
	}
}

func (s *suite) testConcurrency(t *testing.T) {
	p := s.p
	id := s.spawn(t, p, provider.Spec{})
	const n = 10
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			num := string(rune('0' + i))
			r := execIn(t.Context(), p, id, provider.ExecRequest{
				Argv: []string{"sh", "-c", `echo "start-$N"; sleep 1; echo "end-$N"`},
				Env:  map[string]string{"N": num},
			})
			if want := "start-" + num + "\nend-" + num + "\n"; r.err != nil || r.st.ExitCode != 0 || r.stdout != want {
				t.Errorf("concurrent exec %d: %s; want stdout %q", i, r, want)
			}
		})
	}
	wg.Wait()
	// Ten one-second commands one after another take ten seconds.
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("%d concurrent one-second execs took %v: they do not run concurrently", n, el)
	}
}

func (s *suite) testLogs(t *testing.T) {
	id := s.spawn(t, s.p, provider.Spec{})
	mustExec(t, s.p, id, "echo to-the-log")
	for _, n := range []int{1, 5, 100} {
		lines, err := s.p.Logs(t.Context(), id, n)
		if err != nil {
			t.Fatalf("Logs(%d): %v", n, err)
		}
		if len(lines) > n {
			t.Errorf("Logs(%d) returned %d lines", n, len(lines))
		}
		for _, l := range lines {
			if strings.Contains(l, "\n") {
				t.Errorf("Logs line holds a newline: %q", l)
			}
		}
	}
}

func (s *suite) testAdoption(t *testing.T) {
	s.need(t, "Adoption", s.caps.Adoption)
	p1 := s.p
	spec := provider.Spec{
		OwnerID:  "owner-" + token(),
		Template: "tpl-" + token(),
		Metadata: map[string]string{"purpose": "adoption test"},
		Env:      map[string]string{"STACY_ADOPT": "kept"},
		Instance: "inst-" + token(),
	}
	id := s.spawn(t, p1, spec)
	writeFile(t, p1, id, "/workspace/before-restart.txt", []byte("written by the first instance"), 0)

	p2 := s.h.New(t, s.stateDir)
	inv, ok := p2.(provider.Inventory)
	if !ok {
		t.Fatal("provider declares Adoption but does not implement provider.Inventory")
	}
	list, err := inv.List(t.Context())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	i := slices.IndexFunc(list, func(i provider.Info) bool { return i.ID == id })
	if i < 0 {
		t.Fatalf("the second instance does not list sandbox %s: %+v", id, list)
	}
	got := list[i]
	if got.State != provider.StateRunning || got.Image != s.h.Image || got.OwnerID != spec.OwnerID ||
		got.Template != spec.Template || got.Metadata["purpose"] != "adoption test" || got.Instance != spec.Instance {
		t.Errorf("List reports %+v; want state running, image %q, owner, template, metadata and instance as spawned", got, s.h.Image)
	}
	if info, err := p2.Status(t.Context(), id); err != nil || info.State != provider.StateRunning || info.Instance != spec.Instance {
		t.Errorf("Status through the second instance: %+v, %v", info, err)
	}
	if got := mustRead(t, p2, id, "/workspace/before-restart.txt"); got != "written by the first instance" {
		t.Errorf("file through the second instance: %q", got)
	}
	if got := mustExec(t, p2, id, `printf %s "$STACY_ADOPT"`); got != "kept" {
		t.Errorf("sandbox env after adoption: %q, want %q", got, "kept")
	}
	writeFile(t, p2, id, "/workspace/after-restart.txt", []byte("second"), 0)
	if got := mustRead(t, p1, id, "/workspace/after-restart.txt"); got != "second" {
		t.Errorf("the instances do not share the sandbox: %q", got)
	}

	if err := p2.Destroy(t.Context(), id); err != nil {
		t.Fatalf("Destroy through the second instance: %v", err)
	}
	if _, err := p2.Status(t.Context(), id); !isGone(err) {
		t.Errorf("Status after Destroy: %v, want sandbox destroyed or not found", err)
	}
	// The first instance must notice that the runtime is gone.
	if _, err := p1.Status(t.Context(), id); !isGone(err) {
		t.Errorf("Status through the first instance after the second destroyed it: %v, want sandbox destroyed or not found", err)
	}
	if list, err := inv.List(t.Context()); err != nil || slices.ContainsFunc(list, func(i provider.Info) bool { return i.ID == id }) {
		t.Errorf("List after Destroy: %+v, %v; want the sandbox gone", list, err)
	}
}
