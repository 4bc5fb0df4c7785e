package providertest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// testStdin checks ExecRequest.Stdin: input reaches the command as it is
// written (the command answers before its input ends), EOF closes it,
// bytes arrive unchanged, and a command that ignores its input still ends
// Exec. Providers without the capability must refuse such an exec.
func (s *suite) testStdin(t *testing.T) {
	p := s.p
	if !s.caps.Stdin {
		id := s.spawn(t, p, provider.Spec{})
		_, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"cat"}, Stdin: strings.NewReader("x")}, nil, nil)
		if !errors.Is(err, errdefs.ErrUnimplemented) {
			t.Errorf("Exec with Stdin on a provider without the capability: %v, want class %q", err, errdefs.ErrUnimplemented)
		}
		s.need(t, "Stdin", false)
	}
	id := s.spawn(t, p, provider.Spec{})

	t.Run("Interactive", func(t *testing.T) {
		t.Parallel()
		pr, pw := io.Pipe()
		defer pr.Close()
		var out, errb lockedBuffer
		type result struct {
			st  provider.ExitStatus
			err error
		}
		done := make(chan result, 1)
		go func() {
			st, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"cat"}, Stdin: pr, Timeout: time.Minute}, &out, &errb)
			done <- result{st, err}
		}()
		if _, err := pw.Write([]byte("line one\n")); err != nil {
			t.Fatalf("writing stdin: %v", err)
		}
		// cat answers the first line while its input is still open.
		waitFor(t, 30*time.Second, func() bool { return out.String() == "line one\n" })
		select {
		case r := <-done:
			t.Fatalf("cat ended before its stdin was closed: %+v, %v", r.st, r.err)
		default:
		}
		if _, err := pw.Write([]byte("two\n")); err != nil {
			t.Fatalf("writing stdin: %v", err)
		}
		pw.Close() // EOF: cat ends
		select {
		case r := <-done:
			if r.err != nil || r.st.ExitCode != 0 {
				t.Fatalf("cat = %+v, %v (stderr %q)", r.st, r.err, errb.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("cat did not end after its stdin was closed")
		}
		if got := out.String(); got != "line one\ntwo\n" {
			t.Errorf("stdout %q, want what was written", got)
		}
	})

	t.Run("Binary", func(t *testing.T) {
		t.Parallel()
		in := make([]byte, 1<<20)
		rand.Read(in)
		var out lockedBuffer
		st, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"cat"}, Stdin: bytes.NewReader(in)}, &out, nil)
		if err != nil || st.ExitCode != 0 {
			t.Fatalf("cat = %+v, %v", st, err)
		}
		if got := out.String(); got != string(in) {
			t.Errorf("cat returned %d bytes, not the %d written", len(got), len(in))
		}
	})

	t.Run("EmptyInput", func(t *testing.T) {
		t.Parallel()
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"sh", "-c", "cat; echo end"}, Stdin: strings.NewReader("")})
		if r.err != nil || r.st.ExitCode != 0 || r.stdout != "end\n" {
			t.Errorf("got %s; want end after an empty input", r)
		}
	})

	t.Run("IgnoredInput", func(t *testing.T) {
		t.Parallel()
		// The input never ends; the command does not read it. Exec ends
		// with the command, and the pipe is the caller's to close.
		pr, pw := io.Pipe()
		defer pw.Close()
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"echo", "hi"}, Stdin: pr, Timeout: time.Minute})
		if r.err != nil || r.st.ExitCode != 0 || r.stdout != "hi\n" {
			t.Errorf("got %s; want hi", r)
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		t.Parallel()
		pr, pw := io.Pipe()
		defer pw.Close()
		start := time.Now()
		r := execIn(t.Context(), p, id, provider.ExecRequest{Argv: []string{"cat"}, Stdin: pr, Timeout: 500 * time.Millisecond})
		if !errors.Is(r.err, errdefs.ErrExecTimeout) || !r.st.TimedOut {
			t.Errorf("got %s; want a timeout for cat waiting on its input", r)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("the timeout took %v", d)
		}
	})
}

// testSignals checks ExecRequest.Signals: a signal reaches the running
// command (its trap runs and chooses the exit code). Providers without the
// capability must refuse such an exec.
func (s *suite) testSignals(t *testing.T) {
	p := s.p
	id := s.spawn(t, p, provider.Spec{})
	sigs := make(chan string)
	if !s.caps.Signals {
		_, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"true"}, Signals: sigs}, nil, nil)
		if !errors.Is(err, errdefs.ErrUnimplemented) {
			t.Errorf("Exec with Signals on a provider without the capability: %v, want class %q", err, errdefs.ErrUnimplemented)
		}
		s.need(t, "Signals", false)
	}
	var out lockedBuffer
	type result struct {
		st  provider.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := p.Exec(t.Context(), id, provider.ExecRequest{Argv: []string{"sh", "-c", `trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done`}, Signals: sigs, Timeout: time.Minute}, &out, nil)
		done <- result{st, err}
	}()
	waitFor(t, 30*time.Second, func() bool { return strings.Contains(out.String(), "ready") })
	select {
	case sigs <- "TERM":
	case r := <-done:
		t.Fatalf("the command ended before it was signalled: %+v, %v", r.st, r.err)
	case <-time.After(30 * time.Second):
		t.Fatal("Exec did not take the signal")
	}
	select {
	case r := <-done:
		if r.err != nil || r.st.ExitCode != 7 || !strings.Contains(out.String(), "got-term") {
			t.Errorf("after TERM: %+v, %v, stdout %q; want the trap's exit 7", r.st, r.err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the command did not end after TERM")
	}
}
