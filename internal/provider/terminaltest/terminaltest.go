// Package terminaltest checks interactive terminals: one suite run against
// every way a terminal reaches a user (localguest directly, the agent
// protocol, the HTTP API's WebSocket) and every provider that has them.
package terminaltest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// Config says how to reach terminals of one sandbox.
type Config struct {
	// Open starts a terminal session.
	Open func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error)
	// Running reports whether a process whose command line contains marker
	// still runs in the sandbox.
	Running func(ctx context.Context, marker string) (bool, error)
	// Shell is the argv of an interactive shell (default /bin/sh).
	Shell []string
	// FullScreen is the argv of a full-screen program that quits on "q"
	// (top); empty skips that test.
	FullScreen []string
	// Editor is the argv of a vi-compatible editor (busybox vi), driven in
	// insert and command mode to write a file; empty skips that test.
	Editor []string
}

// Wait bounds every expectation: the machine running the tests may be
// slow, and a terminal that works answers long before it.
const Wait = 30 * time.Second

// Run runs the suite.
func Run(t *testing.T, cfg Config) {
	if len(cfg.Shell) == 0 {
		cfg.Shell = []string{"/bin/sh"}
	}
	t.Run("EchoAndExitCode", func(t *testing.T) {
		s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell})
		s.Type(t, "echo hi-$((40+2))\r")
		s.Expect(t, "hi-42")
		s.Type(t, "exit 7\r")
		st := s.End(t)
		if st.ExitCode != 7 {
			t.Fatalf("exit code %d, want 7", st.ExitCode)
		}
	})
	t.Run("Resize", func(t *testing.T) {
		s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell, Rows: 30, Cols: 100})
		s.Type(t, "stty size\r")
		s.Expect(t, "30 100")
		if err := s.T.Resize(41, 123); err != nil {
			t.Fatalf("Resize: %v", err)
		}
		s.Type(t, "stty size\r")
		s.Expect(t, "41 123")
	})
	t.Run("CtrlC", func(t *testing.T) {
		s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell})
		s.Type(t, "echo started-$((2+3)); sleep 1000; echo slept-$((2+3))\r")
		s.Expect(t, "started-5")
		time.Sleep(100 * time.Millisecond) // let the shell start sleep
		s.Type(t, "\x03")
		s.Type(t, "echo after-$((6*7))\r")
		s.Expect(t, "after-42")
		if strings.Contains(s.Output(), "slept-5") {
			t.Fatal("Ctrl-C did not interrupt sleep")
		}
	})
	t.Run("Signal", func(t *testing.T) {
		s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell})
		s.Type(t, "echo started-$((3+4)); sleep 1077\r")
		s.Expect(t, "started-7")
		if cfg.Running != nil {
			// Signal once, and only when sleep is surely the foreground
			// job: a SIGINT that reaches the interactive shell instead
			// discards the line being typed, so blind retries can starve
			// the echo below on a slow runtime.
			waitRunning(t, cfg, t.Context(), "1077", true)
			if err := s.T.Signal("INT"); err != nil {
				t.Fatalf("Signal: %v", err)
			}
			waitRunning(t, cfg, t.Context(), "1077", false)
			s.Type(t, "echo back-$((4+5))\r")
			s.Expect(t, "back-9")
		} else {
			// Without a way to look inside, retry until sleep has surely
			// started and the shell is back.
			deadline := time.Now().Add(Wait)
			for !strings.Contains(s.Output(), "back-9") {
				if time.Now().After(deadline) {
					t.Fatalf("no prompt after SIGINT; output:\n%q", s.Output())
				}
				if err := s.T.Signal("INT"); err != nil {
					t.Fatalf("Signal: %v", err)
				}
				s.Type(t, "echo back-$((4+5))\r")
				time.Sleep(time.Second)
			}
		}
		if err := s.T.Signal("BOGUS"); err == nil {
			t.Fatal("Signal(BOGUS) succeeded")
		}
	})
	if len(cfg.FullScreen) > 0 {
		t.Run("FullScreen", func(t *testing.T) {
			s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell, Rows: 24, Cols: 80})
			s.Type(t, "export TERM=xterm; "+strings.Join(cfg.FullScreen, " ")+"; echo quit-$((5+5))\r")
			// A full-screen program homes the cursor and clears the screen.
			s.Expect(t, "\x1b[H")
			time.Sleep(300 * time.Millisecond)
			s.Type(t, "q")
			s.Expect(t, "quit-10")
		})
	}
	if len(cfg.Editor) > 0 {
		t.Run("Editor", func(t *testing.T) {
			s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell, Rows: 24, Cols: 80})
			// The file's contents come back upper-cased, so the output can
			// only match once vi has written the file and quit: the typed
			// text itself is lower-case.
			s.Type(t, "export TERM=xterm; f=/tmp/terminaltest-vi-$$; "+strings.Join(cfg.Editor, " ")+
				" $f; tr a-z A-Z < $f; rm -f $f; echo vi-quit-$((6+6))\r")
			s.Expect(t, "\x1b[H")
			time.Sleep(300 * time.Millisecond)
			s.Type(t, "ihello from vi")
			// Esc alone: an Esc followed at once by more bytes reads as the
			// start of an escape sequence (an arrow key).
			time.Sleep(200 * time.Millisecond)
			s.Type(t, "\x1b")
			time.Sleep(500 * time.Millisecond)
			s.Type(t, ":wq\r")
			s.Expect(t, "HELLO FROM VI")
			s.Expect(t, "vi-quit-12")
		})
	}
	if cfg.Running != nil {
		t.Run("DisconnectKillsSession", func(t *testing.T) {
			s := Start(t, cfg, provider.TerminalRequest{Argv: cfg.Shell})
			s.Type(t, "sleep 4242 & sleep 4343\r")
			ctx := t.Context()
			waitRunning(t, cfg, ctx, "4343", true)
			waitRunning(t, cfg, ctx, "4242", true)
			if err := s.T.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			waitRunning(t, cfg, ctx, "4343", false)
			waitRunning(t, cfg, ctx, "4242", false)
		})
	}
}

func waitRunning(t *testing.T, cfg Config, ctx context.Context, marker string, want bool) {
	t.Helper()
	deadline := time.Now().Add(Wait)
	for {
		got, err := cfg.Running(ctx, marker)
		if err != nil {
			t.Fatalf("checking for %q: %v", marker, err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %q running=%v after %s, want %v", marker, got, Wait, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Session is a terminal whose output is collected in the background.
type Session struct {
	T provider.Terminal

	mu      sync.Mutex
	out     bytes.Buffer
	readErr error
	changed chan struct{} // closed and replaced on every change
	done    chan struct{}
}

// Start opens a terminal and collects its output; the test's cleanup
// closes it.
func Start(t *testing.T, cfg Config, req provider.TerminalRequest) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Wait)
	defer cancel()
	term, err := cfg.Open(ctx, req)
	if err != nil {
		t.Fatalf("opening a terminal: %v", err)
	}
	s := &Session{T: term, changed: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { term.Close() })
	go s.collect()
	return s
}

func (s *Session) collect() {
	defer close(s.done)
	buf := make([]byte, 4096)
	for {
		n, err := s.T.Read(buf)
		s.mu.Lock()
		s.out.Write(buf[:n])
		if err != nil {
			s.readErr = err
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Output is everything read so far.
func (s *Session) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// Type writes to the terminal.
func (s *Session) Type(t *testing.T, text string) {
	t.Helper()
	if _, err := io.WriteString(s.T, text); err != nil {
		t.Fatalf("typing %q: %v", text, err)
	}
}

// Expect waits until the output contains want.
func (s *Session) Expect(t *testing.T, want string) {
	t.Helper()
	timer := time.NewTimer(Wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ok, rerr, ch := strings.Contains(s.out.String(), want), s.readErr, s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		if rerr != nil {
			t.Fatalf("terminal ended (%v) before %q; output:\n%q", rerr, want, s.Output())
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("no %q within %s; output:\n%q", want, Wait, s.Output())
		}
	}
}

// End waits for the output to end and returns the exit status.
func (s *Session) End(t *testing.T) provider.ExitStatus {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(Wait):
		t.Fatalf("output did not end; output:\n%q", s.Output())
	}
	s.mu.Lock()
	rerr := s.readErr
	s.mu.Unlock()
	if !errors.Is(rerr, io.EOF) {
		t.Fatalf("output ended with %v, want EOF", rerr)
	}
	st, err := s.T.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return st
}

// procScript prints the command line of every process, one per line, its
// arguments separated by spaces; zombies have empty command lines.
const procScript = `for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' < "$f" 2>/dev/null; echo; done`

// TerminalProvider is a provider with terminals.
type TerminalProvider interface {
	provider.Provider
	provider.Terminals
}

// ForSandbox is the Config for sandbox id of p, with busybox's top and
// vi: sessions open through the provider and processes are looked up
// with an exec in the sandbox.
func ForSandbox(p TerminalProvider, id string) Config {
	return Config{
		Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
			return p.OpenTerminal(ctx, id, req)
		},
		Running: RunningByExec(func(ctx context.Context, script string) (string, error) {
			var out strings.Builder
			_, err := p.Exec(ctx, id, provider.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}, &out, nil)
			return out.String(), err
		}),
		FullScreen: []string{"top"},
		Editor:     []string{"vi"},
	}
}

// RunningByExec implements Config.Running with a command run in the
// sandbox (exec returns its standard output): the marker counts as
// running while a process "sleep <marker>" is alive.
func RunningByExec(exec func(ctx context.Context, script string) (string, error)) func(context.Context, string) (bool, error) {
	return func(ctx context.Context, marker string) (bool, error) {
		out, err := exec(ctx, procScript)
		if err != nil {
			return false, err
		}
		for line := range strings.Lines(out) {
			if strings.TrimSpace(line) == "sleep "+marker {
				return true, nil
			}
		}
		return false, nil
	}
}
