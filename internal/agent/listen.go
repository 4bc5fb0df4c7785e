package agent

import (
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Listen opens the listener named by an agent --listen value:
//
//	unix:/run/stacyvm/agent.sock   unix socket, mode 0666 (see ListenUnix)
//	tcp:0.0.0.0:7424               TCP
//	vsock:1024                     AF_VSOCK, any CID (Linux only)
//	stdio                          the single connection on stdin/stdout
func Listen(spec string) (net.Listener, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	switch kind {
	case "unix":
		if arg == "" {
			break
		}
		return ListenUnix(arg)
	case "tcp":
		if arg == "" {
			break
		}
		ln, err := net.Listen("tcp", arg)
		if err != nil {
			return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "listening on tcp:%s", arg)
		}
		return ln, nil
	case "vsock":
		port, err := strconv.ParseUint(arg, 10, 32)
		if err != nil {
			break
		}
		return ListenVsock(uint32(port))
	case "stdio":
		if arg != "" {
			break
		}
		return ConnListener(StdioConn(os.Stdin, os.Stdout)), nil
	}
	return nil, errdefs.New(errdefs.ErrInvalidArgument,
		"listen address %q: want unix:PATH, tcp:HOST:PORT, vsock:PORT or stdio", spec)
}

// ListenUnix listens on a unix socket at path, creating its directory
// (0755) if needed. The socket is made mode 0666 because the host side
// connects from outside the sandbox, often as another user. A stale socket
// left by a previous run is removed; a live one (something answers) or a
// non-socket file at path is a conflict.
func ListenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "creating socket directory")
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, errdefs.New(errdefs.ErrConflict, "%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, errdefs.New(errdefs.ErrConflict, "another process is listening on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, errdefs.Wrap(errdefs.ErrConflict, err, "removing stale socket")
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrConflict, err, "listening on unix socket")
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "making socket world-connectable")
	}
	return ln, nil
}

// ConnListener is a listener that yields c once. When c is closed (by
// the server, when its peer goes away) the listener closes too, so Serve
// returns and a stdio agent exits with its connection.
func ConnListener(c net.Conn) net.Listener {
	l := &connListener{conns: make(chan net.Conn, 1), done: make(chan struct{}), addr: c.LocalAddr()}
	l.conns <- &listenedConn{Conn: c, l: l}
	return l
}

type connListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

type listenedConn struct {
	net.Conn
	l    *connListener
	once sync.Once
}

func (c *listenedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.Close() })
	return err
}

// StdioConn turns a reader and a writer (the agent's stdin and stdout)
// into a net.Conn. net/http needs read deadlines to stop its background
// read between requests, which plain pipes and terminals do not offer, so
// both directions go through in-memory net.Pipes, with a goroutine copying
// each way. EOF on in reads as the peer hanging up.
func StdioConn(in io.Reader, out io.Writer) net.Conn {
	serverIn, inFeed := net.Pipe()
	outDrain, serverOut := net.Pipe()
	go func() {
		_, _ = io.Copy(inFeed, in)
		inFeed.Close()
	}()
	go func() {
		_, _ = io.Copy(out, outDrain)
		outDrain.Close()
	}()
	return &stdioConn{r: serverIn, w: serverOut}
}

type stdioConn struct {
	r, w net.Conn
}

func (c *stdioConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *stdioConn) Close() error {
	c.r.Close()
	return c.w.Close()
}

func (c *stdioConn) LocalAddr() net.Addr  { return stdioAddr{} }
func (c *stdioConn) RemoteAddr() net.Addr { return stdioAddr{} }

func (c *stdioConn) SetDeadline(t time.Time) error {
	c.r.SetDeadline(t)
	return c.w.SetDeadline(t)
}

func (c *stdioConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *stdioConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

type stdioAddr struct{}

func (stdioAddr) Network() string { return "stdio" }
func (stdioAddr) String() string  { return "stdio" }
