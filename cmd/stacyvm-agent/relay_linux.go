package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// installSelf copies the running binary to dst, through a temporary file
// in dst's directory so that a reader never sees half a binary.
func installSelf(dst string, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "stacyvm-agent: --install: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fail(err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".stacyvm-agent-*")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fail(err)
	}
	// 0755 rather than the temporary file's 0600: the sandbox's user may
	// be anyone.
	if err := errors.Join(tmp.Chmod(0o755), tmp.Close()); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fail(err)
	}
	return 0
}

// relayLinger is how long the relay waits, once its input has ended, for
// the agent to finish and close the connection.
const relayLinger = 10 * time.Second

// relay connects to the agent at addr and copies in to it and its replies
// to out. The end of in (the host dropped the exec stream) is passed on as
// a half-close, which the agent reads as its client going away: it kills
// the command the connection was running.
func relay(addr string, in io.Reader, out, stderr io.Writer) int {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok || path == "" {
		fmt.Fprintf(stderr, "stacyvm-agent: --connect %q: want unix:PATH\n", addr)
		return 2
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintf(stderr, "stacyvm-agent: --connect: %v\n", err)
		return 1
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	replies := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		replies <- err
	}()
	inDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(conn, in)
		_ = conn.CloseWrite()
		close(inDone)
	}()
	select {
	case err = <-replies:
	case <-inDone:
		select {
		case err = <-replies:
		case <-time.After(relayLinger):
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "stacyvm-agent: --connect: %v\n", err)
		return 1
	}
	return 0
}
