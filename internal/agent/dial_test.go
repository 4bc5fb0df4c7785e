package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func TestHybridVsockDialer(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	guest := startUnix(t, NewServer(g, ServerOptions{}))

	t.Run("handshake then agent traffic", func(t *testing.T) {
		t.Parallel()
		mux := startFakeVMMMuxer(t, fakeVsockPort, guest, muxOK)
		c := newClient(t, HybridVsockDialer(mux, fakeVsockPort))
		var out strings.Builder
		st, err := c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"echo", "through the VMM"}}, &out, nil)
		if err != nil || st.ExitCode != 0 || out.String() != "through the VMM\n" {
			t.Fatalf("exec over hybrid vsock: %+v %v %q", st, err, out.String())
		}
	})
	t.Run("bytes after OK belong to the guest", func(t *testing.T) {
		t.Parallel()
		mux := startFakeVMMMuxer(t, fakeVsockPort, guest, muxOKThenData)
		conn, err := HybridVsockDialer(mux, fakeVsockPort)(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 5)
		if _, err := io.ReadFull(conn, got); err != nil || string(got) != "HELLO" {
			t.Fatalf("first guest bytes %q, %v", got, err)
		}
	})

	failures := []struct {
		name string
		b    muxBehaviour
		port uint32 // dialled port; the muxer serves fakeVsockPort only
	}{
		{"nothing listening on that port", muxOK, fakeVsockPort + 1},
		{"reply is not OK", muxGarbage, fakeVsockPort},
		{"reply line too long", muxLongLine, fakeVsockPort},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mux := startFakeVMMMuxer(t, fakeVsockPort, guest, tc.b)
			_, err := HybridVsockDialer(mux, tc.port)(t.Context())
			if !errors.Is(err, errdefs.ErrProviderUnavailable) {
				t.Fatalf("err = %v, want provider unavailable", err)
			}
		})
	}
	t.Run("VMM never answers: ctx bounds the handshake", func(t *testing.T) {
		t.Parallel()
		mux := startFakeVMMMuxer(t, fakeVsockPort, guest, muxSilent)
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := HybridVsockDialer(mux, fakeVsockPort)(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("handshake gave up after %s", d)
		}
	})
	t.Run("cancel interrupts the handshake", func(t *testing.T) {
		t.Parallel()
		mux := startFakeVMMMuxer(t, fakeVsockPort, guest, muxSilent)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := HybridVsockDialer(mux, fakeVsockPort)(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want canceled", err)
		}
	})
}

func TestListen(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	good := []string{"unix:" + filepath.Join(dir, "a", "agent.sock"), "tcp:127.0.0.1:0"}
	for _, spec := range good {
		ln, err := Listen(spec)
		if err != nil {
			t.Errorf("Listen(%q): %v", spec, err)
			continue
		}
		ln.Close()
	}
	for _, spec := range []string{"", "unix:", "tcp:", "vsock:", "vsock:x", "vsock:-1", "vsock:4294967296", "stdio:x", "http://x", "udp:1.2.3.4:5"} {
		if _, err := Listen(spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Listen(%q) = %v, want invalid argument", spec, err)
		}
	}
}

func TestListenUnix(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)

	t.Run("mode 0666 in a new directory", func(t *testing.T) {
		path := filepath.Join(dir, "new", "agent.sock")
		ln, err := ListenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o666 {
			t.Fatalf("socket: %v, %v", fi.Mode(), err)
		}
	})
	t.Run("stale socket is replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // the file stays, nobody listens: a crashed agent's leftover
		ln, err := ListenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("new socket does not accept: %v", err)
		}
		c.Close()
	})
	t.Run("live socket is a conflict", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		first, err := ListenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		go func() {
			for {
				c, err := first.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		if _, err := ListenUnix(path); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("second listener: %v, want conflict", err)
		}
	})
	t.Run("regular file is not removed", func(t *testing.T) {
		path := filepath.Join(dir, "file.sock")
		if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ListenUnix(path); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("err = %v, want conflict", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep" {
			t.Fatal("the file was clobbered")
		}
	})
	t.Run("socket removed on close", func(t *testing.T) {
		path := filepath.Join(dir, "gone.sock")
		ln, err := ListenUnix(path)
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket left behind: %v", err)
		}
	})
}

// TestStdio serves one connection made of two pipes, as the agent does on
// its stdin and stdout, and checks Serve returns once the peer hangs up.
func TestStdio(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	toAgentR, toAgentW := io.Pipe()
	fromAgentR, fromAgentW := io.Pipe()
	t.Cleanup(func() { toAgentR.Close(); fromAgentR.Close() })

	served := make(chan error, 1)
	go func() {
		served <- Serve(t.Context(), ConnListener(StdioConn(toAgentR, fromAgentW)), NewServer(g, ServerOptions{}))
	}()

	hostSide := StdioConn(fromAgentR, toAgentW)
	dialed := false
	c := newClient(t, func(context.Context) (net.Conn, error) {
		if dialed {
			return nil, errors.New("stdio offers one connection")
		}
		dialed = true
		return hostSide, nil
	})
	ctx := t.Context()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 3 { // sequential requests reuse the one connection
		var out strings.Builder
		st, err := c.Exec(ctx, provider.ExecRequest{Argv: []string{"echo", "stdio", strings.Repeat("x", i)}}, &out, nil)
		if err != nil || st.ExitCode != 0 || !strings.HasPrefix(out.String(), "stdio") {
			t.Fatalf("exec %d: %+v %v %q", i, st, err, out.String())
		}
	}
	if err := c.WriteFile(ctx, "/workspace/s.txt", strings.NewReader("over stdio"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c, "/workspace/s.txt"); string(got) != "over stdio" {
		t.Fatalf("read %q", got)
	}

	toAgentW.Close() // the host hangs up: EOF on the agent's stdin
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after stdin closed")
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	path := filepath.Join(socketDir(t), "agent.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, NewServer(g, ServerOptions{})) }()
	c := newClient(t, UnixDialer(path))
	if err := c.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(ShutdownGrace + 5*time.Second):
		t.Fatal("Serve did not stop")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := c.Health(t.Context()); !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Errorf("health after stop: %v", err)
	}
}
