package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// UnixDialer connects to an agent listening on the unix socket at path.
// Errors name no host path, since they can reach API clients.
func UnixDialer(path string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, dialErr(ctx, err, "agent socket")
		}
		return c, nil
	}
}

// TCPDialer connects to an agent listening on addr (host:port).
func TCPDialer(addr string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, dialErr(ctx, err, "agent at "+addr)
		}
		return c, nil
	}
}

// dialErr keeps the OS's reason (connection refused, no such file) and
// drops the address net.OpError would print.
func dialErr(ctx context.Context, err error, what string) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return fmt.Errorf("dialing %s abandoned: %w", what, cerr)
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Err != nil {
		err = oe.Err
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "dialing %s", what)
}

// maxHandshakeLine bounds the VMM's reply to CONNECT. Firecracker answers
// "OK <host port>\n", well under it.
const maxHandshakeLine = 64

// HybridVsockDialer connects to an agent listening on vsock port inside a
// Firecracker microVM, through the VMM's hybrid-vsock unix socket at
// udsPath: it sends "CONNECT <port>\n" and expects "OK <n>\n", after which
// the connection is a byte stream to the guest. Any other reply, or the VMM
// closing the connection (no listener on that port yet), is an
// errdefs.ErrProviderUnavailable error.
func HybridVsockDialer(udsPath string, port uint32) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", udsPath)
		if err != nil {
			return nil, dialErr(ctx, err, "VMM vsock socket")
		}
		if err := vsockHandshake(ctx, c, port); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

func vsockHandshake(ctx context.Context, c net.Conn, port uint32) error {
	// Interrupt a VMM that accepts but never answers: when ctx ends, a
	// past deadline on the connection wakes the blocked read. (Setting
	// ctx's deadline on the connection instead would race ctx itself and
	// report a timeout as a VMM failure.)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	fail := func(err error, format string, args ...any) error {
		if cerr := context.Cause(ctx); cerr != nil {
			return fmt.Errorf("vsock handshake abandoned: %w", cerr)
		}
		if err == nil {
			return errdefs.New(errdefs.ErrProviderUnavailable, format, args...)
		}
		if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Err != nil {
			err = oe.Err // drop the socket path
		}
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, format, args...)
	}

	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return fail(err, "sending vsock CONNECT %d", port)
	}
	// One byte at a time: whatever follows the newline belongs to the
	// guest and must stay in the connection.
	var line []byte
	var b [1]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return fail(err, "no answer to vsock CONNECT %d (nothing listening on that port?)", port)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) > maxHandshakeLine {
			return fail(nil, "VMM answer to CONNECT %d is too long", port)
		}
	}
	hostPort, ok := bytes.CutPrefix(line, []byte("OK "))
	if !ok {
		return fail(nil, "VMM refused CONNECT %d: %q", port, line)
	}
	if _, err := strconv.ParseUint(string(hostPort), 10, 32); err != nil {
		return fail(nil, "VMM answered CONNECT %d with %q, want \"OK <port>\"", port, line)
	}
	if !stop() {
		// ctx ended just now; its past deadline may already be set.
		return fail(context.Cause(ctx), "vsock handshake abandoned")
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return fail(err, "clearing handshake deadline")
	}
	return nil
}
