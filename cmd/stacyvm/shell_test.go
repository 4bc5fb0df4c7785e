//go:build linux

package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/client/clienttest"
)

func TestShellPiped(t *testing.T) {
	env := clienttest.Start(t)
	id := spawnID(t, env)
	r := cliWith(t, env, invocation{stdin: strings.NewReader("echo in-$((1+2))\nexit 5\n")}, "shell", id)
	if r.code != 5 || !strings.Contains(r.stdout, "in-3") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 5 and in-3", r.code, r.stdout, r.stderr)
	}
	r = cli(t, env, "shell", id, "--", "exit", "3")
	if r.code != 3 {
		t.Fatalf("shell -- exit 3: exit %d (stderr %q)", r.code, r.stderr)
	}
	wantAPIError(t, cli(t, env, "shell", "sb-0000000000000000"), "NOT_FOUND")
}

// TestShellRawMode runs `stacyvm shell` on a real terminal: it goes raw
// (so Ctrl-C reaches the sandbox instead of stopping stacyvm), passes its
// size on, and restores the terminal when it exits.
func TestShellRawMode(t *testing.T) {
	env := clienttest.Start(t)
	id := spawnID(t, env)
	master, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer master.Close()
	defer tty.Close()
	if err := pty.Setsize(tty, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitScreen := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			ok := strings.Contains(screen.String(), want)
			s := screen.String()
			mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the screen:\n%q", want, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	done := make(chan result, 1)
	go func() { done <- cliWith(t, env, invocation{stdin: tty, stdout: tty}, "shell", id, "--", "sh") }()
	master.WriteString("stty size\r")
	waitScreen("33 101")
	// In raw mode Ctrl-C is a byte for the sandbox: it interrupts sleep
	// there, and stacyvm keeps running.
	master.WriteString("echo a-$((1+1)); sleep 100\r")
	waitScreen("a-2")
	time.Sleep(200 * time.Millisecond)
	master.WriteString("\x03")
	master.WriteString("echo b-$((2+2))\r")
	waitScreen("b-4")
	master.WriteString("exit 6\r")
	select {
	case r := <-done:
		if r.code != 6 {
			t.Fatalf("exit %d, want 6 (stderr %q)", r.code, r.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stacyvm shell did not exit")
	}
	after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Fatalf("terminal not restored: %+v, was %+v", after, before)
	}
}
