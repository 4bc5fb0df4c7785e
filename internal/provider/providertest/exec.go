package providertest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func (s *suite) testExec(t *testing.T) {
	p := s.p
	id := s.spawn(t, p, provider.Spec{})

	tests := []struct {
		name      string
		req       provider.ExecRequest
		code      int
		stdout    string
		stderr    string // exact, unless anyStderr
		anyStderr bool   // stderr must merely be non-empty
	}{
		{name: "Success", req: provider.ExecRequest{Argv: []string{"echo", "hello"}}, stdout: "hello\n"},
		{name: "NonZeroExit", req: sh("exit 7"), code: 7},
		{name: "Stderr", req: sh("echo out; echo err >&2; echo out2"), stdout: "out\nout2\n", stderr: "err\n"},
		{name: "Env", req: provider.ExecRequest{
			Argv: []string{"sh", "-c", `printf '%s|%s' "$STACY_A" "$STACY_B"`},
			Env:  map[string]string{"STACY_A": "1", "STACY_B": "two words; 'quoted'"},
		}, stdout: "1|two words; 'quoted'"},
		{name: "Args", req: provider.ExecRequest{
			Argv: []string{"sh", "-c", `printf '%s|' "$@"`, "x", "a b", "c'd", `e"f`, "$HOME", "", "*"},
		}, stdout: `a b|c'd|e"f|$HOME||*|`},
		{name: "MissingProgram", req: provider.ExecRequest{Argv: []string{"stacyvm-no-such-program-" + token()}}, code: 127, anyStderr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := execIn(t.Context(), p, id, tt.req)
			if r.err != nil {
				t.Fatalf("Exec: %s", r)
			}
			if r.st.ExitCode != tt.code || r.stdout != tt.stdout {
				t.Errorf("got %s; want exit %d stdout %q", r, tt.code, tt.stdout)
			}
			if tt.anyStderr && r.stderr == "" || !tt.anyStderr && r.stderr != tt.stderr {
				t.Errorf("stderr %q, want %q (non-empty: %v)", r.stderr, tt.stderr, tt.anyStderr)
			}
			if r.st.TimedOut {
				t.Error("TimedOut set without a timeout")
			}
			if r.st.Duration <= 0 {
				t.Errorf("Duration %v not measured", r.st.Duration)
			}
		})
	}

	t.Run("NilWriters", func(t *testing.T) {
		t.Parallel()
		st, err := p.Exec(t.Context(), id, sh("echo discarded; echo discarded >&2; exit 4"), nil, nil)
		if err != nil || st.ExitCode != 4 {
			t.Errorf("Exec with nil writers = %+v, %v; want exit 4", st, err)
		}
	})

	t.Run("WorkDir", func(t *testing.T) {
		t.Parallel()
		dir := "/workspace/wd-" + token() + "/sub dir"
		writeFile(t, p, id, dir+"/.keep", nil, 0)
		for _, wd := range []string{dir, strings.TrimPrefix(dir, "/workspace/")} {
			r := execIn(t.Context(), p, id, provider.ExecRequest{
				Argv: []string{"sh", "-c", "echo made-here > rel.txt"}, WorkDir: wd,
			})
			if r.err != nil || r.st.ExitCode != 0 {
				t.Fatalf("exec in %q: %s", wd, r)
			}
			if got := mustRead(t, p, id, dir+"/rel.txt"); got != "made-here\n" {
				t.Errorf("file written in workdir %q reads %q", wd, got)
			}
			if err := p.DeleteFile(t.Context(), id, dir+"/rel.txt", false); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("DefaultWorkDir", func(t *testing.T) {
		t.Parallel()
		name := "default-" + token() + ".txt"
		mustExec(t, p, id, "echo in-workspace > "+name)
		if got := mustRead(t, p, id, "/workspace/"+name); got != "in-workspace\n" {
			t.Errorf("default workdir is not /workspace: file reads %q", got)
		}
	})

	t.Run("MissingWorkDir", func(t *testing.T) {
		t.Parallel()
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"true"}, WorkDir: "/no-such-dir-" + token()})
		wantClass(t, "Exec in a missing workdir", r.err, errdefs.ErrInvalidArgument)
	})

	t.Run("EmptyArgv", func(t *testing.T) {
		t.Parallel()
		r := execIn(t.Context(), p, id, provider.ExecRequest{})
		wantClass(t, "Exec without argv", r.err, errdefs.ErrInvalidArgument)
	})

	t.Run("Timeout", func(t *testing.T) {
		t.Parallel()
		tok := "timeout-" + token()
		start := time.Now()
		req := sh(survivorScript(tok) + "echo started; sleep 30")
		req.Timeout = 700 * time.Millisecond
		r := execIn(t.Context(), p, id, req)
		elapsed := time.Since(start)
		wantClass(t, "Exec past its timeout", r.err, errdefs.ErrExecTimeout)
		if !r.st.TimedOut || r.st.ExitCode != -1 {
			t.Errorf("status %+v, want TimedOut and ExitCode -1", r.st)
		}
		if elapsed > 10*time.Second {
			t.Errorf("timed-out Exec returned after %v", elapsed)
		}
		if r.stdout != "started\n" {
			t.Errorf("output before the timeout: %q, want %q", r.stdout, "started\n")
		}
		s.wantNoSurvivor(t, id, tok)
	})

	t.Run("Cancel", func(t *testing.T) {
		t.Parallel()
		tok := "cancel-" + token()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		out := &lockedBuffer{}
		done := make(chan error, 1)
		go func() {
			_, err := p.Exec(ctx, id, sh(survivorScript(tok)+"echo started; sleep 30"), out, nil)
			done <- err
		}()
		if s.caps.Streaming {
			waitFor(t, 10*time.Second, func() bool { return out.String() != "" })
		} else {
			time.Sleep(time.Second)
		}
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled Exec returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Exec did not return within 10s of its context being cancelled")
		}
		s.wantNoSurvivor(t, id, tok)
	})
}

// survivorScript starts a background child (in /workspace) that waits for
// the file tok.go and then writes tok.marker: it can only write the marker
// if it outlives the command that started it.
func survivorScript(tok string) string {
	return "(while [ ! -e " + tok + ".go ]; do sleep 1; done; echo survived > " + tok + ".marker) & "
}

// wantNoSurvivor releases the background child of survivorScript after its
// command was killed, gives it time to write its marker, checks it did not,
// and checks the sandbox still runs commands.
func (s *suite) wantNoSurvivor(t *testing.T, id, tok string) {
	t.Helper()
	writeFile(t, s.p, id, "/workspace/"+tok+".go", nil, 0)
	time.Sleep(2500 * time.Millisecond) // the child polls every second
	_, err := s.p.StatFile(t.Context(), id, "/workspace/"+tok+".marker")
	if err == nil {
		t.Error("a background child of the killed command survived and wrote its marker: the process group was not killed")
	} else if !isFileNotFound(err) {
		t.Errorf("StatFile(marker): %v", err)
	}
	if got := mustExec(t, s.p, id, "echo ok"); got != "ok\n" {
		t.Errorf("sandbox after a killed command: %q", got)
	}
}

func waitFor(t *testing.T, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stampWriter timestamps every write and flags overlapping calls across the
// writers sharing busy.
type stampWriter struct {
	mu      sync.Mutex
	busy    *atomic.Int32
	overlap *atomic.Bool
	buf     bytes.Buffer
	writes  []stamped
}

type stamped struct {
	at   time.Time
	data string
}

func (w *stampWriter) Write(p []byte) (int, error) {
	if w.busy.Add(1) > 1 {
		w.overlap.Store(true)
	}
	defer w.busy.Add(-1)
	time.Sleep(50 * time.Microsecond) // widen the window an overlap would need
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, stamped{time.Now(), string(p)})
	return w.buf.Write(p)
}

// firstWrite returns when the text containing sub first arrived.
func (w *stampWriter) firstWrite(sub string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var acc strings.Builder
	for _, s := range w.writes {
		acc.WriteString(s.data)
		if strings.Contains(acc.String(), sub) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

func (s *suite) testStream(t *testing.T) {
	s.need(t, "Streaming", s.caps.Streaming)
	p := s.p
	id := s.spawn(t, p, provider.Spec{})

	t.Run("ChunksBeforeExit", func(t *testing.T) {
		t.Parallel()
		var busy atomic.Int32
		var overlap atomic.Bool
		out := &stampWriter{busy: &busy, overlap: &overlap}
		st, err := p.Exec(t.Context(), id, sh("echo a; sleep 2; echo b; exit 3"), out, &stampWriter{busy: &busy, overlap: &overlap})
		if err != nil || st.ExitCode != 3 {
			t.Fatalf("Exec = %+v, %v; want exit 3 reported at the end of the stream", st, err)
		}
		ta, okA := out.firstWrite("a\n")
		tb, okB := out.firstWrite("b\n")
		if !okA || !okB {
			t.Fatalf("stdout %q", out.buf.String())
		}
		if gap := tb.Sub(ta); gap < time.Second {
			t.Errorf("\"a\" arrived only %v before \"b\": output is not streamed as produced", gap)
		}
	})

	t.Run("WritersNotConcurrent", func(t *testing.T) {
		t.Parallel()
		var busy atomic.Int32
		var overlap atomic.Bool
		out := &stampWriter{busy: &busy, overlap: &overlap}
		errw := &stampWriter{busy: &busy, overlap: &overlap}
		script := "i=0; while [ $i -lt 200 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"
		st, err := p.Exec(t.Context(), id, sh(script), out, errw)
		if err != nil || st.ExitCode != 0 {
			t.Fatalf("Exec = %+v, %v", st, err)
		}
		if overlap.Load() {
			t.Error("stdout and stderr writers were called concurrently")
		}
		if !strings.HasSuffix(out.buf.String(), "out199\n") || !strings.HasSuffix(errw.buf.String(), "err199\n") {
			t.Error("output lost or mixed between streams")
		}
		if strings.Contains(out.buf.String(), "err") || strings.Contains(errw.buf.String(), "out") {
			t.Error("stdout and stderr mixed")
		}
	})
}
