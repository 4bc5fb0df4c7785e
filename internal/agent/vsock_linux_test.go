package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func listenVsockOrSkip(t *testing.T) (net.Listener, uint32) {
	t.Helper()
	// A port unlikely to be taken; vsock has no "port 0 picks one".
	port := uint32(40000 + os.Getpid()%20000)
	ln, err := ListenVsock(port)
	if errors.Is(err, errdefs.ErrUnimplemented) {
		t.Skipf("AF_VSOCK unavailable on this machine (no vsock transport loaded): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln, port
}

func TestVsockListenerClose(t *testing.T) {
	ln, port := listenVsockOrSkip(t)
	if got := ln.Addr().String(); !strings.HasSuffix(got, ":"+strconv.FormatUint(uint64(port), 10)) {
		t.Errorf("Addr() = %s", got)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		accepted <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Accept park in the poller
	ln.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake Accept")
	}
}

// TestVsockEndToEnd needs a loopback vsock transport to connect to itself.
func TestVsockEndToEnd(t *testing.T) {
	if _, err := os.Stat("/sys/module/vsock_loopback"); err != nil {
		t.Skip("vsock end to end needs the vsock_loopback kernel module (CID 1), absent here")
	}
	ln, port := listenVsockOrSkip(t)
	g, _ := newLocalGuest(t)
	serveForTest(t, ln, NewServer(g, ServerOptions{}))
	c := newClient(t, func(ctx context.Context) (net.Conn, error) { return dialVsock(ctx, unix.VMADDR_CID_LOCAL, port) })
	var out strings.Builder
	st, err := c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"echo", "vsock"}}, &out, nil)
	if err != nil || st.ExitCode != 0 || out.String() != "vsock\n" {
		t.Fatalf("exec over vsock: %+v %v %q", st, err, out.String())
	}
}

// dialVsock is the guest-to-guest dialer the end-to-end test needs; the
// host never dials vsock directly (it goes through the VMM's socket).
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		tv := unix.NsecToTimeval(time.Until(dl).Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: cid, Port: port}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &vsockConn{f: os.NewFile(uintptr(fd), "vsock-client"), remote: vsockAddr{cid, port}}, nil
}
