package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ListenVsock listens on AF_VSOCK port for connections from any CID: inside
// a Firecracker guest, that is the host reaching in through the VMM's hybrid
// vsock. The net package knows no vsock, so the socket is driven through
// os.File, which still parks Accept, Read and Write in the runtime poller
// and supports the deadlines net/http relies on.
func ListenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrUnimplemented, err, "creating vsock socket (no vsock device?)")
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, errdefs.Wrap(errdefs.ErrConflict, err, "binding vsock port %d", port)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return nil, errdefs.Wrap(errdefs.ErrConflict, err, "listening on vsock port %d", port)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d", port))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("vsock listener: %w", err)
	}
	return &vsockListener{f: f, rc: rc, addr: vsockAddr{cid: unix.VMADDR_CID_ANY, port: port}}, nil
}

type vsockListener struct {
	closed atomic.Bool
	f      *os.File
	rc     syscall.RawConn
	addr   vsockAddr
}

func (l *vsockListener) Accept() (net.Conn, error) {
	var (
		nfd  int
		sa   unix.Sockaddr
		aerr error
	)
	err := l.rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		// false parks the goroutine until the socket is readable again.
		return aerr != unix.EAGAIN
	})
	if err != nil {
		// The poller reports a concurrent Close as its own unexported
		// error; http.Server needs net.ErrClosed to stop cleanly.
		if l.closed.Load() || errors.Is(err, os.ErrClosed) {
			return nil, net.ErrClosed
		}
		return nil, err
	}
	if aerr != nil {
		// A syscall.Errno is a net.Error: http.Server retries the
		// temporary ones (ECONNABORTED, EMFILE) with backoff.
		return nil, aerr
	}
	remote := vsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = vsockAddr{cid: vm.CID, port: vm.Port}
	}
	return &vsockConn{f: os.NewFile(uintptr(nfd), "vsock-conn"), local: l.addr, remote: remote}, nil
}

func (l *vsockListener) Close() error {
	l.closed.Store(true)
	return l.f.Close()
}

func (l *vsockListener) Addr() net.Addr { return l.addr }

type vsockConn struct {
	f             *os.File
	local, remote vsockAddr
}

func (c *vsockConn) Read(p []byte) (int, error)         { return c.f.Read(p) }
func (c *vsockConn) Write(p []byte) (int, error)        { return c.f.Write(p) }
func (c *vsockConn) Close() error                       { return c.f.Close() }
func (c *vsockConn) LocalAddr() net.Addr                { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr               { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

type vsockAddr struct{ cid, port uint32 }

func (vsockAddr) Network() string  { return "vsock" }
func (a vsockAddr) String() string { return fmt.Sprintf("vsock:%d:%d", a.cid, a.port) }
