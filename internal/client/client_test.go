package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/client/clienttest"
	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Everything below runs against the real API handler, orchestrator,
// SQLite store and mock provider (package clienttest). The mock runs
// commands on the host, in the sandbox's working directory: paths inside
// commands are relative so that they stay in the sandbox.

func spawn(t *testing.T, c *client.Client, req client.SpawnRequest) client.Sandbox {
	t.Helper()
	sb, err := c.Spawn(t.Context(), req)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	return sb
}

func TestSandboxLifecycle(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()

	before := time.Now()
	sb := spawn(t, c, client.SpawnRequest{TTL: time.Hour, OwnerID: "alice", Metadata: map[string]string{"task": "t1"}})
	if !strings.HasPrefix(sb.ID, "sb-") || sb.State != client.StateRunning || sb.Provider != "mock" ||
		sb.OwnerID != "alice" || sb.Metadata["task"] != "t1" {
		t.Fatalf("spawned %+v", sb)
	}
	if exp := sb.ExpiresAt.Sub(before); exp < 59*time.Minute || exp > 61*time.Minute {
		t.Errorf("expires in %s, want about 1h", exp)
	}
	if sb.CreatedAt.IsZero() {
		t.Error("CreatedAt is zero")
	}
	other := spawn(t, c, client.SpawnRequest{OwnerID: "bob"})

	got, err := c.Get(ctx, sb.ID)
	if err != nil || got.ID != sb.ID || !got.ExpiresAt.Equal(sb.ExpiresAt) {
		t.Fatalf("Get = %+v, %v", got, err)
	}

	for _, tt := range []struct {
		opts client.ListOptions
		want []string
	}{
		{client.ListOptions{}, []string{other.ID, sb.ID}}, // newest first
		{client.ListOptions{OwnerID: "alice"}, []string{sb.ID}},
		{client.ListOptions{Provider: "mock", State: client.StateRunning}, []string{other.ID, sb.ID}},
		{client.ListOptions{Provider: "nope"}, nil},
	} {
		list, err := c.List(ctx, tt.opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", tt.opts, err)
		}
		var ids []string
		for _, s := range list {
			ids = append(ids, s.ID)
		}
		if !slices.Equal(ids, tt.want) {
			t.Errorf("List(%+v) = %v, want %v", tt.opts, ids, tt.want)
		}
	}
	if _, err := c.List(ctx, client.ListOptions{State: "bogus"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("List with a bad state: %v, want invalid argument", err)
	}

	ext, err := c.Extend(ctx, sb.ID, 3*time.Hour)
	if err != nil || ext.ExpiresAt.Sub(sb.ExpiresAt) < 119*time.Minute {
		t.Errorf("Extend = %v, %v: want expiry moved by about 2h", ext.ExpiresAt, err)
	}
	// Extending never shortens.
	if short, err := c.Extend(ctx, sb.ID, time.Minute); err != nil || !short.ExpiresAt.Equal(ext.ExpiresAt) {
		t.Errorf("short Extend = %v, %v; want expiry kept at %v", short.ExpiresAt, err, ext.ExpiresAt)
	}

	if _, err := c.Exec(ctx, sb.ID, client.ExecRequest{Command: "echo logged"}); err != nil {
		t.Fatal(err)
	}
	logs, err := c.Logs(ctx, sb.ID, 50)
	if err != nil || !slices.ContainsFunc(logs, func(l string) bool { return strings.Contains(l, "echo logged") }) {
		t.Errorf("Logs = %q, %v: want the exec recorded", logs, err)
	}
	if one, err := c.Logs(ctx, sb.ID, 1); err != nil || len(one) != 1 {
		t.Errorf("Logs(1) = %q, %v", one, err)
	}

	if err := c.Destroy(ctx, sb.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if _, err := c.Get(ctx, sb.ID); !errors.Is(err, errdefs.ErrSandboxDestroyed) || !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get after Destroy: %v, want sandbox destroyed", err)
	}
	if err := c.Destroy(ctx, sb.ID); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("second Destroy: %v, want sandbox destroyed", err)
	}
	_, err = c.Get(ctx, "sb-00000000000000000000dead")
	if !errors.Is(err, errdefs.ErrSandboxNotFound) || errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("Get unknown: %v, want sandbox not found", err)
	}
	if e, ok := errors.AsType[*client.Error](err); !ok || e.Status != 404 || e.Code != "NOT_FOUND" || e.RequestID == "" {
		t.Errorf("Get unknown: %#v, want a 404 *Error with a request id", err)
	}
}

func TestPrune(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()
	short := spawn(t, c, client.SpawnRequest{TTL: time.Minute})
	long := spawn(t, c, client.SpawnRequest{TTL: time.Hour})
	env.Advance(2 * time.Minute)
	n, err := c.Prune(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if _, err := c.Get(ctx, short.ID); !errors.Is(err, errdefs.ErrSandboxDestroyed) {
		t.Errorf("expired sandbox: %v", err)
	}
	if _, err := c.Get(ctx, long.ID); err != nil {
		t.Errorf("live sandbox: %v", err)
	}
}

func TestSpawnErrors(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()
	for name, tt := range map[string]struct {
		req  client.SpawnRequest
		want *errdefs.Class
	}{
		"negative ttl":     {client.SpawnRequest{TTL: -time.Second}, errdefs.ErrInvalidArgument},
		"unknown provider": {client.SpawnRequest{Provider: "nope"}, errdefs.ErrNotFound},
		"unknown template": {client.SpawnRequest{Template: "nope"}, errdefs.ErrNotFound},
	} {
		if _, err := c.Spawn(ctx, tt.req); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", name, err, tt.want)
		}
	}
	env.Mock.SetHealth(errors.New("runtime down"))
	if _, err := c.Spawn(ctx, client.SpawnRequest{}); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("unhealthy provider: %v, want provider unavailable", err)
	}
}

func TestAuthAndRequestID(t *testing.T) {
	env := clienttest.Start(t)
	ctx := client.WithRequestID(t.Context(), "my-trace-42")
	anon, err := client.New(env.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	// Health is open; everything else needs the key.
	h, err := anon.Health(ctx)
	if err != nil || h.Status != "ok" || h.Version != clienttest.Version {
		t.Errorf("Health = %+v, %v", h, err)
	}
	_, err = anon.List(ctx, client.ListOptions{})
	e, ok := errors.AsType[*client.Error](err)
	if !ok || !errors.Is(err, errdefs.ErrUnauthorized) || e.RequestID != "my-trace-42" || e.Hint == "" {
		t.Errorf("List without key: %#v, want unauthorized with our request id and a hint", err)
	}
	wrong, _ := client.New(env.URL, "wrong")
	if _, err := wrong.Providers(ctx); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Errorf("wrong key: %v", err)
	}
	v, err := env.Client.Version(ctx)
	if err != nil || v != clienttest.Version {
		t.Errorf("Version = %q, %v", v, err)
	}
}

func TestExecBuffered(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()
	id := spawn(t, c, client.SpawnRequest{}).ID

	tests := []struct {
		name      string
		req       client.ExecRequest
		code      int
		out, errS string
	}{
		{"shell string", client.ExecRequest{Command: "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
		{"argv keeps arguments whole", client.ExecRequest{Command: "printf", Args: []string{"[%s]", "a b", "$HOME"}}, 0, "[a b][$HOME]", ""},
		{"env", client.ExecRequest{Command: "echo $A-$B", Env: map[string]string{"A": "1", "B": "two"}}, 0, "1-two\n", ""},
		{"workdir", client.ExecRequest{Command: "mkdir -p sub && cd sub && pwd -P > p; cat p | sed 's#.*/##'", WorkDir: "/workspace"}, 0, "sub\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := c.Exec(ctx, id, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tt.code || res.Stdout != tt.out || res.Stderr != tt.errS || res.TimedOut {
				t.Errorf("got %+v, want code %d out %q err %q", res, tt.code, tt.out, tt.errS)
			}
			if res.Duration <= 0 {
				t.Errorf("Duration = %s", res.Duration)
			}
		})
	}

	res, err := c.Exec(ctx, id, client.ExecRequest{Command: "echo before; sleep 10", Timeout: 300 * time.Millisecond})
	if !errors.Is(err, errdefs.ErrExecTimeout) || !res.TimedOut || res.ExitCode != -1 || res.Stdout != "before\n" {
		t.Errorf("timed out exec = %+v, %v; want ErrExecTimeout with the output so far", res, err)
	}
	if e, ok := errors.AsType[*client.Error](err); !ok || e.Status != 408 || e.Code != "TIMEOUT" {
		t.Errorf("timeout error = %#v", err)
	}
	if _, err := c.Exec(ctx, "sb-00000000000000000000dead", client.ExecRequest{Command: "true"}); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("exec in unknown sandbox: %v", err)
	}
	if _, err := c.Exec(ctx, id, client.ExecRequest{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("exec without command: %v", err)
	}
}

func TestExecStream(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()
	id := spawn(t, c, client.SpawnRequest{}).ID

	t.Run("chunks arrive while the command runs", func(t *testing.T) {
		// The command prints, then waits for a file that the test writes
		// only once it has seen that output: the test can only finish if
		// the first chunk arrived before the command ended.
		req := client.ExecRequest{
			Command: `echo ready; while [ ! -e go ]; do sleep 0.02; done; echo done >&2; exit 5`,
			Timeout: 20 * time.Second,
		}
		var chunks []client.Chunk
		st, err := c.ExecStream(ctx, id, req, func(ch client.Chunk) error {
			chunks = append(chunks, ch)
			if ch.Stream == client.Stdout && strings.Contains(ch.Data, "ready") {
				return c.WriteFile(ctx, id, "/workspace/go", strings.NewReader(""), 0)
			}
			return nil
		})
		if err != nil || st.ExitCode != 5 || st.TimedOut {
			t.Fatalf("ExecStream = %+v, %v; want exit 5", st, err)
		}
		want := []client.Chunk{{Stream: client.Stdout, Data: "ready\n"}, {Stream: client.Stderr, Data: "done\n"}}
		if !slices.Equal(chunks, want) {
			t.Errorf("chunks = %q, want %q", chunks, want)
		}
	})

	t.Run("timeout ends the stream with a timed-out status", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		start := time.Now()
		st, err := c.ExecStreamTo(ctx, id, client.ExecRequest{Command: "echo hi; sleep 10", Timeout: 300 * time.Millisecond}, &stdout, &stderr)
		if err != nil || !st.TimedOut || st.ExitCode != -1 {
			t.Fatalf("ExecStreamTo = %+v, %v; want timed out", st, err)
		}
		if time.Since(start) > 5*time.Second {
			t.Errorf("took %s: the command was not killed at its timeout", time.Since(start))
		}
		if stdout.String() != "hi\n" || !strings.Contains(stderr.String(), "timed out") {
			t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
		}
	})

	t.Run("refused before the stream starts", func(t *testing.T) {
		_, err := c.ExecStreamTo(ctx, "sb-00000000000000000000dead", client.ExecRequest{Command: "true"}, nil, nil)
		if !errors.Is(err, errdefs.ErrSandboxNotFound) {
			t.Errorf("unknown sandbox: %v", err)
		}
		_, err = c.ExecStreamTo(ctx, id, client.ExecRequest{Command: "true", WorkDir: "/no/such/dir"}, nil, nil)
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("bad workdir: %v, want invalid argument", err)
		}
	})

	t.Run("cancelling the context kills the command", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req := client.ExecRequest{Command: "echo started; sleep 0.5; touch survived", Timeout: 10 * time.Second}
		_, err := c.ExecStream(cctx, id, req, func(ch client.Chunk) error {
			cancel()
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ExecStream after cancel: %v, want context.Canceled", err)
		}
		time.Sleep(time.Second)
		if _, err := c.StatFile(ctx, id, "/workspace/survived"); !errors.Is(err, errdefs.ErrFileNotFound) {
			t.Errorf("stat of the file the cancelled command would have made: %v, want file not found", err)
		}
	})
}

func TestFiles(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()
	id := spawn(t, c, client.SpawnRequest{}).ID

	// Binary content, larger than any single buffer on the way.
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	if err := c.WriteFile(ctx, id, "/workspace/dir/blob.bin", bytes.NewReader(data), 0o600); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	rc, err := c.ReadFile(ctx, id, "/workspace/dir/blob.bin")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, rc)
	rc.Close()
	if err != nil || n != int64(len(data)) || !bytes.Equal(h.Sum(nil), sha(data)) {
		t.Fatalf("read back %d bytes, %v; content differs", n, err)
	}

	fi, err := c.StatFile(ctx, id, "/workspace/dir/blob.bin")
	if err != nil || fi.Size != int64(len(data)) || fi.Mode != 0o600 || fi.IsDir || fi.ModTime.IsZero() {
		t.Errorf("StatFile = %+v, %v", fi, err)
	}
	// Default mode.
	if err := c.WriteFile(ctx, id, "/workspace/dir/note.txt", strings.NewReader("hello"), 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := c.StatFile(ctx, id, "/workspace/dir/note.txt"); err != nil || fi.Mode != 0o644 {
		t.Errorf("default mode: %+v, %v; want 0644", fi, err)
	}

	list, err := c.ListFiles(ctx, id, "/workspace/dir")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range list {
		names = append(names, f.Path)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"/workspace/dir/blob.bin", "/workspace/dir/note.txt"}) {
		t.Errorf("ListFiles = %v", names)
	}
	root, err := c.ListFiles(ctx, id, "")
	if err != nil || !slices.ContainsFunc(root, func(f client.FileInfo) bool { return f.Path == "/workspace" && f.IsDir && f.Mode.IsDir() }) {
		t.Errorf("ListFiles(\"\") = %+v, %v; want / with /workspace in it", root, err)
	}

	if err := c.MoveFile(ctx, id, "/workspace/dir/note.txt", "/workspace/moved.txt"); err != nil {
		t.Fatal(err)
	}
	if err := c.Chmod(ctx, id, "/workspace/moved.txt", 0o751); err != nil {
		t.Fatal(err)
	}
	if fi, err := c.StatFile(ctx, id, "/workspace/moved.txt"); err != nil || fi.Mode != 0o751 || fi.Size != 5 {
		t.Errorf("after move and chmod: %+v, %v", fi, err)
	}
	matches, err := c.Glob(ctx, id, "/workspace/*.txt")
	if err != nil || !slices.Equal(matches, []string{"/workspace/moved.txt"}) {
		t.Errorf("Glob = %v, %v", matches, err)
	}
	if err := c.DeleteFile(ctx, id, "/workspace/dir", false); err == nil {
		t.Error("non-recursive delete of a non-empty directory succeeded")
	}
	if err := c.DeleteFile(ctx, id, "/workspace/dir", true); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/workspace/dir", "/workspace/dir/blob.bin"} {
		if _, err := c.StatFile(ctx, id, p); !errors.Is(err, errdefs.ErrFileNotFound) || errors.Is(err, errdefs.ErrSandboxNotFound) {
			t.Errorf("stat %s after delete: %v, want file not found", p, err)
		}
	}
	if _, err := c.ReadFile(ctx, id, "/workspace/missing"); !errors.Is(err, errdefs.ErrFileNotFound) {
		t.Errorf("ReadFile missing: %v", err)
	}
	if _, err := c.ReadFile(ctx, "sb-00000000000000000000dead", "/x"); !errors.Is(err, errdefs.ErrSandboxNotFound) {
		t.Errorf("ReadFile in unknown sandbox: %v, want sandbox not found", err)
	}
	// A path that climbs out of the sandbox stays inside it.
	if err := c.WriteFile(ctx, id, "/../../escape.txt", strings.NewReader("x"), 0); err == nil {
		if fi, err := c.StatFile(ctx, id, "/escape.txt"); err != nil || fi.Path != "/escape.txt" {
			t.Errorf("escape write landed at %+v, %v", fi, err)
		}
	} else if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("escape write: %v", err)
	}
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func TestTemplates(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()

	in := client.Template{Name: "py", Image: "python:3.12", Description: "python", Setup: []string{"echo set > setup.txt"},
		Env: map[string]string{"LANG": "C.UTF-8"}, MemoryMB: 256, CPUCores: 1, TTLSeconds: 600}
	created, err := c.CreateTemplate(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if created.Name != "py" || created.Version < 1 || created.CreatedAt.IsZero() || created.TTLSeconds != 600 ||
		!slices.Equal(created.Setup, in.Setup) || created.Env["LANG"] != "C.UTF-8" {
		t.Errorf("CreateTemplate = %+v", created)
	}
	if _, err := c.CreateTemplate(ctx, in); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("duplicate: %v, want conflict", err)
	}
	if _, err := c.CreateTemplate(ctx, client.Template{Name: "noimage"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("no image: %v, want invalid argument", err)
	}
	// What GetTemplate returns can be sent back as is.
	got, err := c.GetTemplate(ctx, "py")
	if err != nil {
		t.Fatal(err)
	}
	got.Description = "python, updated"
	upd, err := c.UpdateTemplate(ctx, "py", got)
	if err != nil || upd.Version <= created.Version || upd.Description != "python, updated" {
		t.Errorf("UpdateTemplate = %+v, %v; want a newer version", upd, err)
	}
	list, err := c.ListTemplates(ctx)
	if err != nil || len(list) != 1 || list[0].Name != "py" {
		t.Errorf("ListTemplates = %+v, %v", list, err)
	}

	sb, err := c.SpawnTemplate(ctx, "py", client.TemplateSpawnRequest{OwnerID: "carol", Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Template != "py" || sb.Image != "python:3.12" || sb.OwnerID != "carol" || sb.MemoryMB != 256 {
		t.Errorf("SpawnTemplate = %+v", sb)
	}
	if exp := time.Until(sb.ExpiresAt); exp < 9*time.Minute || exp > 11*time.Minute {
		t.Errorf("template TTL: expires in %s, want about 10m", exp)
	}
	rc, err := c.ReadFile(ctx, sb.ID, "/workspace/setup.txt")
	if err != nil {
		t.Fatalf("setup did not run: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "set\n" {
		t.Errorf("setup output %q", b)
	}
	res, err := c.Exec(ctx, sb.ID, client.ExecRequest{Command: "echo $LANG"})
	if err != nil || res.Stdout != "C.UTF-8\n" {
		t.Errorf("template env: %+v, %v", res, err)
	}

	if err := c.DeleteTemplate(ctx, "py"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetTemplate(ctx, "py"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if _, err := c.SpawnTemplate(ctx, "py", client.TemplateSpawnRequest{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("spawn deleted template: %v", err)
	}
}

func TestProvidersAndSnapshots(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()

	list, err := c.Providers(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("Providers = %+v, %v", list, err)
	}
	p := list[0]
	if p.Name != "mock" || !p.Healthy || !p.Default || p.Capabilities.Isolation != "none" || !p.Capabilities.Streaming {
		t.Errorf("provider = %+v", p)
	}
	spawn(t, c, client.SpawnRequest{})
	d, err := c.Provider(ctx, "mock")
	if err != nil || d.Name != "mock" || d.SandboxCount != 1 {
		t.Errorf("Provider = %+v, %v", d, err)
	}
	if _, err := c.Provider(ctx, "nope"); !errors.Is(err, errdefs.ErrProviderNotFound) {
		t.Errorf("unknown provider: %v, want provider not found", err)
	}
	health, err := c.ProviderTest(ctx)
	if err != nil || !health["mock"] {
		t.Errorf("ProviderTest = %v, %v", health, err)
	}

	env.Mock.SetHealth(errors.New("disk on fire"))
	list, err = c.Providers(ctx)
	if err != nil || list[0].Healthy || !strings.Contains(list[0].Problem, "disk on fire") {
		t.Errorf("unhealthy provider = %+v, %v", list, err)
	}
	if health, err := c.ProviderTest(ctx); err != nil || health["mock"] {
		t.Errorf("ProviderTest unhealthy = %v, %v", health, err)
	}

	snaps, err := c.Snapshots(ctx)
	if err != nil || len(snaps) != 0 {
		t.Errorf("Snapshots = %v, %v; the mock keeps none", snaps, err)
	}
	if ps, err := c.PoolStatus(ctx); err != nil || ps.Enabled || ps.Pools == nil || len(ps.Pools) != 0 {
		t.Errorf("PoolStatus = %+v, %v; want disabled with an empty list", ps, err)
	}
}

func TestConcurrentUse(t *testing.T) {
	env := clienttest.Start(t)
	c, ctx := env.Client, t.Context()
	id := spawn(t, c, client.SpawnRequest{}).ID
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			// The mock runs commands on the host in the sandbox's
			// working directory, so command paths are relative.
			name := "f" + string(rune('a'+i))
			if err := c.WriteFile(ctx, id, "/workspace/"+name, strings.NewReader(name), fs.FileMode(0o644)); err != nil {
				errs <- err
				return
			}
			res, err := c.Exec(ctx, id, client.ExecRequest{Command: "cat", Args: []string{name}})
			if err != nil || res.Stdout != name {
				errs <- errors.Join(err, errors.New("read back "+res.Stdout))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
