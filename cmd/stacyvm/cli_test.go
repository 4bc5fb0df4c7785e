package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
	"github.com/stacyvm/stacyvm/internal/client/clienttest"
	"github.com/stacyvm/stacyvm/internal/version"
)

// Every command runs in-process against a real server (package
// clienttest: the API over SQLite and the mock provider). The mock runs
// commands on the host in the sandbox's working directory, so paths in
// commands are relative.

type result struct {
	code           int
	stdout, stderr string
}

type invocation struct {
	stdin  io.Reader
	stdout io.Writer // default: captured into result.stdout
	env    []string  // NAME=value
}

// cli runs stacyvm with args against env's server (unless args name one).
func cli(t *testing.T, env *clienttest.Env, args ...string) result {
	t.Helper()
	return cliWith(t, env, invocation{}, args...)
}

func cliWith(t *testing.T, env *clienttest.Env, inv invocation, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	s := streams{in: inv.stdin, out: &out, err: &errOut}
	if s.in == nil {
		s.in = strings.NewReader("")
	}
	if inv.stdout != nil {
		s.out = inv.stdout
	}
	if env != nil {
		args = append([]string{"--server", env.URL, "--api-key", clienttest.APIKey}, args...)
	}
	code := run(t.Context(), args, s, inv.env)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// ok fails the test unless the command exited 0.
func (r result) ok(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

var idPattern = regexp.MustCompile(`^sb-[0-9a-f]{16,}$`)

func spawnID(t *testing.T, env *clienttest.Env, args ...string) string {
	t.Helper()
	r := cli(t, env, append([]string{"spawn"}, args...)...).ok(t)
	id := strings.TrimSpace(r.stdout)
	if !idPattern.MatchString(id) {
		t.Fatalf("spawn printed %q, want an ID alone", r.stdout)
	}
	return id
}

// wantAPIError checks the error report: exit 1, the server's code, and a
// request id.
func wantAPIError(t *testing.T, r result, code string) {
	t.Helper()
	if r.code != exitFailure {
		t.Errorf("exit %d, want %d (stderr %q)", r.code, exitFailure, r.stderr)
	}
	if !strings.Contains(r.stderr, code) || !regexp.MustCompile(`request id: \S+`).MatchString(r.stderr) {
		t.Errorf("stderr %q: want code %s and a request id", r.stderr, code)
	}
}

func TestSandboxCommands(t *testing.T) {
	env := clienttest.Start(t)

	id := spawnID(t, env, "--owner", "alice", "--meta", "task=t1", "--meta", "team=x=y", "--ttl", "1h", "--memory", "1g", "--vcpus", "2")
	var sb client.Sandbox
	r := cli(t, env, "spawn", "--json", "--owner", "bob").ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &sb); err != nil || !idPattern.MatchString(sb.ID) || sb.OwnerID != "bob" {
		t.Fatalf("spawn --json printed %q (%v)", r.stdout, err)
	}

	r = cli(t, env, "get", id).ok(t)
	for _, want := range []string{id, "running", "mock", "alice", "1024 MiB", "task=t1, team=x=y", clienttest.DefaultImage} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("get: %q missing %q", r.stdout, want)
		}
	}
	r = cli(t, env, "get", "--json", id).ok(t)
	var got client.Sandbox
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || got.ID != id || got.MemoryMB != 1024 || got.VCPUs != 2 || got.Metadata["team"] != "x=y" {
		t.Errorf("get --json = %+v (%v)", got, err)
	}

	r = cli(t, env, "ls").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !regexp.MustCompile(`^ID\s+STATE\s+PROVIDER\s+IMAGE\s+OWNER\s+EXPIRES$`).MatchString(lines[0]) {
		t.Fatalf("ls:\n%s", r.stdout)
	}
	// Newest first, columns aligned, expiry relative.
	if !regexp.MustCompile(`^`+sb.ID+`\s+running\s+mock\s+\S+\s+bob\s+in \d+m`).MatchString(lines[1]) ||
		!regexp.MustCompile(`^`+id+`\s+running\s+mock\s+\S+\s+alice\s+in (59m|1h)`).MatchString(lines[2]) {
		t.Errorf("ls rows:\n%s", r.stdout)
	}
	if r := cli(t, env, "ls", "-q", "--owner", "alice").ok(t); r.stdout != id+"\n" {
		t.Errorf("ls -q --owner alice = %q", r.stdout)
	}
	r = cli(t, env, "ls", "--json", "--state", "running", "--provider", "mock").ok(t)
	var list []client.Sandbox
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 2 {
		t.Errorf("ls --json = %q (%v)", r.stdout, err)
	}
	if r := cli(t, env, "ls", "--json", "--provider", "nope").ok(t); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("empty ls --json = %q, want []", r.stdout)
	}

	r = cli(t, env, "extend", id, "--ttl", "3h").ok(t)
	if !regexp.MustCompile(`^` + id + ` expires at \S+ \(in (2h59m|3h0m)`).MatchString(r.stdout) {
		t.Errorf("extend printed %q", r.stdout)
	}
	if r := cli(t, env, "extend", id); r.code != exitUsage {
		t.Errorf("extend without --ttl: exit %d, want %d", r.code, exitUsage)
	}

	cli(t, env, "exec", id, "--", "echo logged-line").ok(t)
	r = cli(t, env, "logs", id, "--lines", "5").ok(t)
	if !strings.Contains(r.stdout, "logged-line") {
		t.Errorf("logs = %q", r.stdout)
	}
	r = cli(t, env, "logs", "-n", "1", "--json", id).ok(t)
	var logLines []string
	if err := json.Unmarshal([]byte(r.stdout), &logLines); err != nil || len(logLines) != 1 {
		t.Errorf("logs --json = %q (%v)", r.stdout, err)
	}

	r = cli(t, env, "kill", id, "sb-00000000000000000000dead", sb.ID)
	if r.stdout != id+"\n"+sb.ID+"\n" {
		t.Errorf("kill printed %q, want both live IDs", r.stdout)
	}
	wantAPIError(t, r, "NOT_FOUND")
	if !strings.Contains(r.stderr, "sb-00000000000000000000dead") {
		t.Errorf("kill stderr %q does not name the failed ID", r.stderr)
	}
	wantAPIError(t, cli(t, env, "get", id), "SANDBOX_DESTROYED")
	if r := cli(t, env, "ls", "-q").ok(t); r.stdout != "" {
		t.Errorf("ls after kill = %q", r.stdout)
	}

	short := spawnID(t, env, "--ttl", "1m")
	env.Advance(2 * time.Minute)
	if r := cli(t, env, "prune").ok(t); r.stdout != "pruned 1\n" {
		t.Errorf("prune = %q", r.stdout)
	}
	wantAPIError(t, cli(t, env, "get", short), "SANDBOX_DESTROYED")

	for _, args := range [][]string{
		{"spawn", "--meta", "novalue"},
		{"spawn", "--memory", "lots"},
		{"spawn", "--ttl", "soon"},
		{"spawn", "extra-arg"},
		{"get"},
		{"kill"},
		{"logs", "x", "--lines", "-3"},
	} {
		if r := cli(t, env, args...); r.code != exitUsage || !strings.Contains(r.stderr, "--help") {
			t.Errorf("%v: exit %d, stderr %q; want usage error %d", args, r.code, r.stderr, exitUsage)
		}
	}
}

// triggerWriter captures output and calls fire once when it first sees
// want, while the command that prints it is still running.
type triggerWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	fired bool
	fire  func()
}

func (w *triggerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.fired && strings.Contains(w.buf.String(), w.want) {
		w.fired = true
		w.fire()
	}
	return len(p), nil
}

func TestExecCommand(t *testing.T) {
	env := clienttest.Start(t)
	id := spawnID(t, env)

	t.Run("output streams live and the exit code passes through", func(t *testing.T) {
		// The command waits for a file that is written only once its
		// first line has reached our stdout, so this finishes only if
		// output is streamed while the command runs.
		w := &triggerWriter{want: "ready", fire: func() {
			if err := env.Client.WriteFile(context.Background(), id, "/workspace/go", strings.NewReader(""), 0); err != nil {
				t.Errorf("write trigger: %v", err)
			}
		}}
		r := cliWith(t, env, invocation{stdout: w}, "exec", "--timeout", "20s", id, "--",
			"echo ready; while [ ! -e go ]; do sleep 0.02; done; echo after; echo oops >&2; exit 7")
		if r.code != 7 || w.buf.String() != "ready\nafter\n" || r.stderr != "oops\n" {
			_, statErr := env.Client.StatFile(t.Context(), id, "/workspace/go")
			t.Errorf("exit %d, stdout %q, stderr %q (trigger fired: %v, trigger file: %v)", r.code, w.buf.String(), r.stderr, w.fired, statErr)
		}
	})

	tests := []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"one argument is a shell string", []string{"--", "echo a b | tr a-z A-Z"}, 0, "A B\n", ""},
		{"several arguments are an argv", []string{"--", "printf", "[%s]", "a b", "$HOME", "|"}, 0, "[a b][$HOME][|]", ""},
		{"flags before the dash", []string{"-e", "A=1", "--env", "B=two words", "--", "echo $A/$B"}, 0, "1/two words\n", ""},
		{"workdir", []string{"-w", "/workspace/sub", "--", "pwd | sed 's#.*/##'"}, 0, "sub\n", ""},
		{"no dash needed without flags", []string{"exit 3"}, 3, "", ""},
		{"missing program", []string{"--", "definitely-not-a-program-xyz"}, 127, "", "definitely-not-a-program-xyz"},
	}
	cli(t, env, "exec", id, "--", "mkdir -p sub").ok(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := cli(t, env, append([]string{"exec", id}, tt.args...)...)
			if r.code != tt.code || r.stdout != tt.out || !strings.Contains(r.stderr, tt.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tt.code, tt.out, tt.err)
			}
		})
	}

	t.Run("timeout exits 124 with a message", func(t *testing.T) {
		start := time.Now()
		r := cli(t, env, "exec", "--timeout", "300ms", id, "--", "echo started; sleep 10")
		if r.code != exitTimeout || r.stdout != "started\n" || !strings.Contains(r.stderr, "timed out") {
			t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %s", d)
		}
	})

	t.Run("an interrupt abandons the command and exits 130", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		w := &triggerWriter{want: "started", fire: cancel}
		var errOut bytes.Buffer
		args := []string{"--server", env.URL, "--api-key", clienttest.APIKey, "exec", id, "--", "echo started; sleep 0.5; touch survived"}
		start := time.Now()
		code := run(ctx, args, streams{in: strings.NewReader(""), out: w, err: &errOut}, nil)
		if code != exitSignal || !strings.Contains(errOut.String(), "interrupted") || time.Since(start) > 400*time.Millisecond {
			t.Errorf("exit %d after %s, stderr %q", code, time.Since(start), errOut.String())
		}
		time.Sleep(time.Second)
		wantAPIError(t, cli(t, env, "files", "stat", id, "/workspace/survived"), "FILE_NOT_FOUND")
	})

	t.Run("errors", func(t *testing.T) {
		wantAPIError(t, cli(t, env, "exec", "sb-00000000000000000000dead", "--", "true"), "NOT_FOUND")
		wantAPIError(t, cli(t, env, "exec", "-w", "/nope", id, "--", "true"), "BAD_REQUEST")
		for _, args := range [][]string{{"exec", id}, {"exec", "-e", "NOEQUALS", id, "--", "true"}, {"exec", "--timeout", "-1s", id, "true"}} {
			if r := cli(t, env, args...); r.code != exitUsage {
				t.Errorf("%v: exit %d, want %d", args, r.code, exitUsage)
			}
		}
	})
}

func sum(t *testing.T, r io.Reader) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func TestFilesCommands(t *testing.T) {
	env := clienttest.Start(t)
	id := spawnID(t, env)
	dir := t.TempDir()

	// 20 MiB of random bytes: binary, and far larger than any buffer.
	big := filepath.Join(dir, "big.bin")
	data := make([]byte, 20<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(big, data, 0o640); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	cli(t, env, "files", "put", id, big, "/workspace/in/big.bin").ok(t)
	r := cli(t, env, "files", "stat", id, "/workspace/in/big.bin").ok(t)
	if !strings.Contains(r.stdout, "20971520") || !strings.Contains(r.stdout, "0640") {
		t.Errorf("stat after put (local mode kept): %q", r.stdout)
	}
	local := filepath.Join(dir, "back.bin")
	cli(t, env, "files", "get", id, "/workspace/in/big.bin", local).ok(t)
	f, err := os.Open(local)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum(t, f); got != want {
		t.Error("files get to a file: content differs")
	}
	f.Close()
	var stdout bytes.Buffer
	r = cliWith(t, env, invocation{stdout: &stdout}, "files", "get", id, "/workspace/in/big.bin", "-").ok(t)
	if got := sha256.Sum256(stdout.Bytes()); got != want {
		t.Errorf("files get to stdout: %d bytes, content differs", stdout.Len())
	}
	// Without LOCAL the file lands under its base name in a directory.
	t.Chdir(dir)
	cli(t, env, "files", "get", id, "/workspace/in/big.bin").ok(t)
	if fi, err := os.Stat(filepath.Join(dir, "big.bin")); err != nil || fi.Size() != int64(len(data)) {
		t.Errorf("get without LOCAL: %v, %v", fi, err)
	}
	sub := filepath.Join(dir, "sub")
	_ = os.Mkdir(sub, 0o755)
	cli(t, env, "files", "get", id, "/workspace/in/big.bin", sub).ok(t)
	if _, err := os.Stat(filepath.Join(sub, "big.bin")); err != nil {
		t.Errorf("get into a directory: %v", err)
	}
	// A failed download leaves nothing behind.
	r = cli(t, env, "files", "get", id, "/workspace/missing", filepath.Join(dir, "never"))
	wantAPIError(t, r, "FILE_NOT_FOUND")
	if entries, _ := filepath.Glob(filepath.Join(dir, "*never*")); len(entries) != 0 {
		t.Errorf("failed get left %v", entries)
	}

	cliWith(t, env, invocation{stdin: strings.NewReader("from stdin\n")}, "files", "put", "--mode", "0600", id, "-", "/workspace/note.txt").ok(t)
	r = cli(t, env, "files", "stat", "--json", id, "/workspace/note.txt").ok(t)
	var fi client.FileInfo
	if err := json.Unmarshal([]byte(r.stdout), &fi); err != nil || fi.Size != 11 || fi.Mode != 0o600 || !strings.Contains(r.stdout, `"mode": "0600"`) {
		t.Errorf("stat --json = %q (%v)", r.stdout, err)
	}
	if r := cli(t, env, "exec", id, "--", "cat note.txt").ok(t); r.stdout != "from stdin\n" {
		t.Errorf("note.txt holds %q", r.stdout)
	}

	r = cli(t, env, "files", "ls", id, "/workspace").ok(t)
	if !regexp.MustCompile(`(?m)^MODE\s+SIZE\s+MODIFIED\s+PATH$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^drwx\S+\s+\d+\s+\S+\s+/workspace/in$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^-rw-------\s+11\s+\S+\s+/workspace/note.txt$`).MatchString(r.stdout) {
		t.Errorf("files ls:\n%s", r.stdout)
	}
	r = cli(t, env, "files", "ls", "--json", id, "/workspace/in").ok(t)
	var infos []client.FileInfo
	if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil || len(infos) != 1 || infos[0].Size != int64(len(data)) {
		t.Errorf("files ls --json = %q (%v)", r.stdout, err)
	}

	cli(t, env, "files", "mv", id, "/workspace/note.txt", "/workspace/in/moved.txt").ok(t)
	cli(t, env, "files", "chmod", id, "0755", "/workspace/in/moved.txt").ok(t)
	r = cli(t, env, "files", "stat", id, "/workspace/in/moved.txt").ok(t)
	if !strings.Contains(r.stdout, "0755 (-rwxr-xr-x)") || !strings.Contains(r.stdout, "file") {
		t.Errorf("stat after mv+chmod: %q", r.stdout)
	}
	if r := cli(t, env, "files", "glob", id, "/workspace/in/*.txt").ok(t); r.stdout != "/workspace/in/moved.txt\n" {
		t.Errorf("glob = %q", r.stdout)
	}
	if r := cli(t, env, "files", "glob", "--json", id, "/workspace/*.none").ok(t); strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("empty glob --json = %q", r.stdout)
	}

	wantAPIError(t, cli(t, env, "files", "rm", id, "/workspace/in"), "")
	cli(t, env, "files", "rm", id, "/workspace/in/moved.txt").ok(t)
	cli(t, env, "files", "rm", "-r", id, "/workspace/in").ok(t)
	wantAPIError(t, cli(t, env, "files", "stat", id, "/workspace/in"), "FILE_NOT_FOUND")
	wantAPIError(t, cli(t, env, "files", "rm", id, "/workspace/gone"), "FILE_NOT_FOUND")

	for _, args := range [][]string{
		{"files", "chmod", id, "rwx", "/x"},
		{"files", "put", "--mode", "9", id, "-", "/x"},
		{"files", "put", id, "-"},
		{"files", "bogus"},
	} {
		if r := cli(t, env, args...); r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, r.code, exitUsage)
		}
	}
	if r := cli(t, env, "files", "put", id, filepath.Join(dir, "no-such-file"), "/x"); r.code != exitFailure || !strings.Contains(r.stderr, "no-such-file") {
		t.Errorf("put of a missing local file: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestTemplateCommands(t *testing.T) {
	env := clienttest.Start(t)

	r := cli(t, env, "templates", "create", "--name", "py", "--image", "python:3.12", "--setup", "echo one > setup.txt",
		"--setup", "echo two >> setup.txt", "--env", "LANG=C.UTF-8", "--memory", "256", "--cpus", "2", "--ttl", "10m",
		"--description", "python box").ok(t)
	if r.stdout != "py\n" {
		t.Errorf("create printed %q", r.stdout)
	}
	wantAPIError(t, cli(t, env, "templates", "create", "--name", "py", "--image", "x"), "CONFLICT")

	file := filepath.Join(t.TempDir(), "t.json")
	if err := os.WriteFile(file, []byte(`{"name":"fromfile","image":"alpine","ttl_seconds":60,"setup":["true"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r = cli(t, env, "templates", "create", "--file", file, "--description", "flag wins", "--json").ok(t)
	var tp client.Template
	if err := json.Unmarshal([]byte(r.stdout), &tp); err != nil || tp.Name != "fromfile" || tp.Description != "flag wins" || tp.TTLSeconds != 60 {
		t.Errorf("create --file = %q (%v)", r.stdout, err)
	}
	// What get --json prints is accepted back by create --file.
	r = cli(t, env, "templates", "get", "--json", "fromfile").ok(t)
	r = cliWith(t, env, invocation{stdin: strings.NewReader(r.stdout)}, "templates", "create", "-f", "-", "--name", "copy").ok(t)
	if r.stdout != "copy\n" {
		t.Errorf("create from get --json printed %q", r.stdout)
	}

	r = cli(t, env, "templates", "ls").ok(t)
	if !regexp.MustCompile(`(?m)^NAME\s+VERSION\s+IMAGE\s+PROVIDER\s+MEMORY\s+CPUS\s+TTL\s+DESCRIPTION$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^py\s+1\s+python:3.12\s+-\s+256Mi\s+2\s+10m0s\s+python box$`).MatchString(r.stdout) ||
		strings.Count(r.stdout, "\n") != 4 {
		t.Errorf("templates ls:\n%s", r.stdout)
	}
	r = cli(t, env, "templates", "get", "py").ok(t)
	for _, want := range []string{"python:3.12", "echo one > setup.txt && echo two >> setup.txt", "LANG=C.UTF-8", "10m0s"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("templates get: %q missing %q", r.stdout, want)
		}
	}

	id := strings.TrimSpace(cli(t, env, "templates", "spawn", "py", "--owner", "dave", "--meta", "a=b").ok(t).stdout)
	if !idPattern.MatchString(id) {
		t.Fatalf("templates spawn printed %q", id)
	}
	if r := cli(t, env, "exec", id, "--", "cat setup.txt; echo $LANG").ok(t); r.stdout != "one\ntwo\nC.UTF-8\n" {
		t.Errorf("sandbox from template: %q", r.stdout)
	}
	r = cli(t, env, "get", "--json", id).ok(t)
	var sb client.Sandbox
	if err := json.Unmarshal([]byte(r.stdout), &sb); err != nil || sb.Template != "py" || sb.OwnerID != "dave" || sb.Metadata["a"] != "b" {
		t.Errorf("get of template sandbox: %q (%v)", r.stdout, err)
	}

	r = cli(t, env, "templates", "rm", "py", "nope")
	if r.stdout != "py\n" {
		t.Errorf("rm printed %q", r.stdout)
	}
	wantAPIError(t, r, "NOT_FOUND")
	wantAPIError(t, cli(t, env, "templates", "spawn", "py"), "NOT_FOUND")

	for _, args := range [][]string{
		{"templates", "create", "--name", "x"},
		{"templates", "create", "--name", "x", "--image", "y", "--ttl", "1500ms"},
		{"templates", "create", "--file", file, "--env", "bad"},
	} {
		if r := cli(t, env, args...); r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, r.code, exitUsage, r.stderr)
		}
	}
}

func TestProvidersAndVersion(t *testing.T) {
	env := clienttest.Start(t)

	r := cli(t, env, "providers").ok(t)
	if !regexp.MustCompile(`(?m)^NAME\s+DEFAULT\s+HEALTHY\s+ISOLATION\s+STREAMING\s+NETWORK\s+LIMITS\s+PROBLEM$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^mock\s+yes\s+yes\s+none\s+yes\s+no\s+no\s+-$`).MatchString(r.stdout) {
		t.Errorf("providers:\n%s", r.stdout)
	}
	var list []client.ProviderInfo
	r = cli(t, env, "providers", "--json").ok(t)
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 || list[0].Name != "mock" {
		t.Errorf("providers --json = %q (%v)", r.stdout, err)
	}

	r = cli(t, env, "version").ok(t)
	if r.stdout != "client: "+version.String()+"\nserver: "+clienttest.Version+"\n" {
		t.Errorf("version = %q", r.stdout)
	}
	// An unreachable server still gets the client's version, and exit 0.
	r = cli(t, nil, "--server", "http://127.0.0.1:1", "version").ok(t)
	if !strings.HasPrefix(r.stdout, "client: "+version.String()+"\nserver: unreachable (") {
		t.Errorf("version without a server = %q", r.stdout)
	}
}

func TestGlobalOptionsAndErrors(t *testing.T) {
	env := clienttest.Start(t)

	// The environment supplies the server and key when no flag does.
	r := cliWith(t, nil, invocation{env: []string{envServer + "=" + env.URL, envAPIKey + "=" + clienttest.APIKey}}, "ls", "-q").ok(t)
	if r.stdout != "" {
		t.Errorf("ls = %q", r.stdout)
	}
	// A flag beats the environment.
	r = cliWith(t, nil, invocation{env: []string{envServer + "=http://127.0.0.1:1", envAPIKey + "=wrong"}},
		"--server", env.URL, "--api-key", clienttest.APIKey, "ls").ok(t)

	r = cliWith(t, nil, invocation{env: []string{envServer + "=" + env.URL}}, "ls")
	wantAPIError(t, r, "UNAUTHORIZED")
	if !strings.Contains(r.stderr, "hint: ") {
		t.Errorf("stderr %q: want the server's hint", r.stderr)
	}

	r = cli(t, nil, "--server", "http://127.0.0.1:1", "ls")
	if r.code != exitFailure || !strings.Contains(r.stderr, "stacyvm serve") || strings.Count(r.stderr, "stacyvm:") != 1 {
		t.Errorf("unreachable server: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := cli(t, nil, "--server", "not a url", "ls"); r.code != exitUsage {
		t.Errorf("bad --server: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, args := range [][]string{{"bogus"}, {"ls", "--bogus"}, {"templates", "bogus"}} {
		if r := cli(t, env, args...); r.code != exitUsage || !strings.Contains(r.stderr, "Run 'stacyvm") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	for _, args := range [][]string{{}, {"files"}, {"--help"}, {"exec", "--help"}} {
		if r := cli(t, nil, args...); r.code != exitOK || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
		}
	}
}
