//go:build linux

package fakevmm

import (
	"bufio"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseBootArgs(t *testing.T) {
	tests := []struct {
		in       string
		init     string
		args     []string
		wantFail bool
	}{
		{"console=ttyS0 rw init=/sbin/stacyvm-agent -- --listen vsock:1024 --root /", "/sbin/stacyvm-agent", []string{"--listen", "vsock:1024", "--root", "/"}, false},
		{"console=ttyS0 rw", "/sbin/init", nil, false},
		{"init=relative/init", "", nil, true},
	}
	for _, tt := range tests {
		init, args, err := parseBootArgs(tt.in)
		if (err != nil) != tt.wantFail || init != tt.init || !slices.Equal(args, tt.args) {
			t.Errorf("parseBootArgs(%q) = %q, %q, %v", tt.in, init, args, err)
		}
	}
}

// The muxer behaves like Firecracker's hybrid vsock: CONNECT to a port
// nobody listens on is closed, otherwise answered "OK <port>" and spliced;
// a paused VM answers nothing until resumed.
func TestVsockMux(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "mux")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	guestSock := filepath.Join(dir, "52.sock")
	gl, err := net.Listen("unix", guestSock)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go func() {
		for {
			c, err := gl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }() // echo
		}
	}()
	m, err := listenVsock(filepath.Join(dir, "v.sock"), func(port uint32) string {
		if port == 52 {
			return guestSock
		}
		return filepath.Join(dir, "nothing.sock")
	}, log.New(io.Discard, "", 0))
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()

	connect := func(port string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("unix", filepath.Join(dir, "v.sock"))
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "CONNECT "+port+"\n")
		return c, bufio.NewReader(c)
	}
	c, br := connect("53")
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("CONNECT to a port without a listener was answered")
	}
	c.Close()

	c, br = connect("52")
	defer c.Close()
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("handshake answer %q, %v", line, err)
	}
	io.WriteString(c, "ping\n")
	if got, _ := br.ReadString('\n'); got != "ping\n" {
		t.Errorf("spliced echo: %q", got)
	}

	m.pause()
	c2, br2 := connect("52")
	defer c2.Close()
	answered := make(chan string, 1)
	go func() { l, _ := br2.ReadString('\n'); answered <- l }()
	select {
	case l := <-answered:
		t.Fatalf("a paused VM answered %q", l)
	case <-time.After(100 * time.Millisecond):
	}
	m.resume()
	select {
	case l := <-answered:
		if !strings.HasPrefix(l, "OK ") {
			t.Errorf("after resume: %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer after resume")
	}

	// A snapshot resets every connection.
	m.reset()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("connection survived a reset")
	}
}
