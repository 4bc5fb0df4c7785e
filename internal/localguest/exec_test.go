package localguest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func execReq(argv ...string) provider.ExecRequest { return provider.ExecRequest{Argv: argv} }

func sh(script string) provider.ExecRequest { return execReq("sh", "-c", script) }

type result struct {
	st             provider.ExitStatus
	stdout, stderr string
	err            error
}

func run(t *testing.T, g *Guest, req provider.ExecRequest) result {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := g.Exec(t.Context(), req, &out, &errb)
	return result{st, out.String(), errb.String(), err}
}

func TestExec(t *testing.T) {
	g, _ := newGuest(t)
	must(t, os.WriteFile(filepath.Join(g.hostDir, "workspace", "noexec"), []byte("#!/bin/sh\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(g.hostDir, "workspace", "sub"), 0o755))
	tests := []struct {
		name       string
		req        provider.ExecRequest
		wantCode   int
		wantOut    string
		wantErrOut string // substring
		wantErr    *errdefs.Class
	}{
		{name: "stdout", req: execReq("echo", "hi"), wantOut: "hi\n"},
		{name: "stderr separate", req: sh("echo out; echo err >&2; exit 3"), wantCode: 3, wantOut: "out\n", wantErrOut: "err"},
		{name: "argv intact", req: execReq("sh", "-c", `printf '%s|' "$@"`, "x", "a b", "c'd", `e"f`, ""), wantOut: `a b|c'd|e"f||`},
		{name: "missing program", req: execReq("no-such-program-stacyvm"), wantCode: 127, wantErrOut: "not found"},
		{name: "missing path", req: execReq("./nope"), wantCode: 127, wantErrOut: "no such file"},
		{name: "not executable", req: execReq("./noexec"), wantCode: 126, wantErrOut: "permission denied"},
		{name: "killed by signal", req: sh("kill -9 $$"), wantCode: 137},
		{name: "env merged", req: provider.ExecRequest{Argv: []string{"sh", "-c", "echo $FOO-$BAR"}, Env: map[string]string{"FOO": "1", "BAR": "two words"}}, wantOut: "1-two words\n"},
		{name: "env overrides base", req: provider.ExecRequest{Argv: []string{"sh", "-c", "echo $PATH"}, Env: map[string]string{"PATH": os.Getenv("PATH") + ":/x"}}, wantOut: os.Getenv("PATH") + ":/x\n"},
		{name: "workdir", req: provider.ExecRequest{Argv: []string{"sh", "-c", "echo in-sub > here.txt && cat ../sub/here.txt"}, WorkDir: "sub"}, wantOut: "in-sub\n"},
		{name: "missing workdir", req: provider.ExecRequest{Argv: []string{"true"}, WorkDir: "/nope"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "workdir is a file", req: provider.ExecRequest{Argv: []string{"true"}, WorkDir: "noexec"}, wantErr: errdefs.ErrInvalidArgument},
		{name: "empty argv", req: provider.ExecRequest{}, wantErr: errdefs.ErrInvalidArgument},
		{name: "bad env key", req: provider.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"A=B": "c"}}, wantErr: errdefs.ErrInvalidArgument},
		{name: "negative timeout", req: provider.ExecRequest{Argv: []string{"true"}, Timeout: -time.Second}, wantErr: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, g, tt.req)
			if tt.wantErr != nil {
				if !errors.Is(r.err, tt.wantErr) {
					t.Fatalf("Exec error = %v, want %v", r.err, tt.wantErr)
				}
				return
			}
			if r.err != nil {
				t.Fatalf("Exec: %v", r.err)
			}
			if r.st.ExitCode != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", r.st.ExitCode, tt.wantCode, r.stderr)
			}
			if tt.wantOut != "" && r.stdout != tt.wantOut {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.wantOut)
			}
			if !strings.Contains(r.stderr, tt.wantErrOut) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.wantErrOut)
			}
			if strings.Contains(r.stdout, tt.wantErrOut) && tt.wantErrOut != "" {
				t.Errorf("stderr text leaked into stdout: %q", r.stdout)
			}
			if r.st.Duration <= 0 {
				t.Errorf("duration not measured: %v", r.st.Duration)
			}
		})
	}
}

func TestExecDefaultEnv(t *testing.T) {
	g, err := New(Options{Root: t.TempDir(), MapExecPaths: true})
	must(t, err)
	t.Cleanup(func() { g.Close() })
	r := run(t, g, execReq("sh", "-c", "echo $HOME $LANG"))
	if r.err != nil || r.stdout != "/root C.UTF-8\n" {
		t.Errorf("default env: %q, %v", r.stdout, r.err)
	}
}

// survivor is a shell fragment starting a background child that waits for
// the file "go" in /workspace and then writes "marker": it can only write
// the marker if it outlives the command that started it.
const survivor = "(while [ ! -e go ]; do sleep 0.1; done; echo survived > marker) >/dev/null 2>&1 & "

// wantNoSurvivor releases survivor's child and checks it never writes its
// marker.
func wantNoSurvivor(t *testing.T, dir string) {
	t.Helper()
	ws := filepath.Join(dir, "workspace")
	must(t, os.WriteFile(filepath.Join(ws, "go"), nil, 0o644))
	time.Sleep(time.Second)
	if _, err := os.Stat(filepath.Join(ws, "marker")); err == nil {
		t.Error("a child of the killed command survived (it wrote its marker)")
	}
}

func TestExecTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	g, dir := newGuest(t)
	start := time.Now()
	req := sh(survivor + "sleep 30")
	req.Timeout = 300 * time.Millisecond
	r := run(t, g, req)
	if !errors.Is(r.err, errdefs.ErrExecTimeout) {
		t.Fatalf("Exec error = %v, want exec timeout", r.err)
	}
	if !r.st.TimedOut || r.st.ExitCode != -1 {
		t.Errorf("status = %+v, want TimedOut and exit code -1", r.st)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("timed-out Exec took %v", el)
	}
	wantNoSurvivor(t, dir)
}

func TestExecCancelKillsGroup(t *testing.T) {
	t.Parallel()
	g, dir := newGuest(t)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	st, err := g.Exec(ctx, sh(survivor+"sleep 30"), nil, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec error = %v, want context.Canceled", err)
	}
	if st.TimedOut {
		t.Errorf("cancel reported as a timeout: %+v", st)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("cancelled Exec took %v", el)
	}
	wantNoSurvivor(t, dir)
}

// A background child that keeps stdout open must not hold Exec until it
// exits; Close then kills it.
func TestExecBackgroundChild(t *testing.T) {
	t.Parallel()
	g, dir := newGuest(t)
	start := time.Now()
	r := run(t, g, sh(survivor+"sleep 30 & echo started"))
	if r.err != nil || r.stdout != "started\n" || r.st.ExitCode != 0 {
		t.Fatalf("Exec = %+v", r)
	}
	// sleep 30 holds stdout; Exec stops reading pipeGrace after sh exits.
	if el := time.Since(start); el > pipeGrace+5*time.Second {
		t.Errorf("Exec waited %v for a background child", el)
	}
	must(t, g.Close())
	wantNoSurvivor(t, dir)
}

// stampWriter records when each write arrives and fails the test if two
// writes overlap.
type stampWriter struct {
	mu     sync.Mutex
	busy   *atomic.Int32
	t      *testing.T
	stamps []time.Time
	buf    bytes.Buffer
}

func (w *stampWriter) Write(p []byte) (int, error) {
	if w.busy.Add(1) != 1 {
		w.t.Error("writers called concurrently")
	}
	defer w.busy.Add(-1)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stamps = append(w.stamps, time.Now())
	return w.buf.Write(p)
}

func TestExecStreamsAsProduced(t *testing.T) {
	t.Parallel()
	g, _ := newGuest(t)
	var busy atomic.Int32
	out := &stampWriter{busy: &busy, t: t}
	errw := &stampWriter{busy: &busy, t: t}
	st, err := g.Exec(t.Context(), sh("echo a; sleep 1; echo b"), out, errw)
	end := time.Now()
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("Exec = %+v, %v", st, err)
	}
	if out.buf.String() != "a\nb\n" || len(out.stamps) < 2 {
		t.Fatalf("stdout = %q in %d writes", out.buf.String(), len(out.stamps))
	}
	if gap := end.Sub(out.stamps[0]); gap < 700*time.Millisecond {
		t.Errorf("first chunk arrived only %v before the end: output was buffered", gap)
	}
}

func TestExecWritersNeverConcurrent(t *testing.T) {
	t.Parallel()
	g, _ := newGuest(t)
	var busy atomic.Int32
	out := &stampWriter{busy: &busy, t: t}
	errw := &stampWriter{busy: &busy, t: t}
	st, err := g.Exec(t.Context(), sh("i=0; while [ $i -lt 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"), out, errw)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("Exec = %+v, %v", st, err)
	}
	if !strings.Contains(out.buf.String(), "out299\n") || !strings.Contains(errw.buf.String(), "err299\n") || strings.Contains(out.buf.String(), "err") {
		t.Errorf("output mixed up or lost")
	}
}

func TestExecConcurrent(t *testing.T) {
	t.Parallel()
	g, _ := newGuest(t)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			var out bytes.Buffer
			st, err := g.Exec(t.Context(), sh(fmt.Sprintf("echo %d > f%d; cat f%d", i, i, i)), &out, nil)
			if err != nil || st.ExitCode != 0 || out.String() != fmt.Sprintf("%d\n", i) {
				t.Errorf("exec %d: %+v %q %v", i, st, out.String(), err)
			}
		})
	}
	wg.Wait()
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("client went away") }

func TestExecWriterFails(t *testing.T) {
	t.Parallel()
	g, _ := newGuest(t)
	done := make(chan error, 1)
	go func() {
		_, err := g.Exec(t.Context(), sh("while :; do echo spam; done"), failWriter{}, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Exec succeeded although its writer failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Exec kept running after its writer failed")
	}
}
