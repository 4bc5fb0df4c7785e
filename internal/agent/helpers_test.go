package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/localguest"
)

// socketDir returns a short directory for unix sockets: t.TempDir's path
// grows with the test name and sun_path holds only 108 bytes.
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serveForTest runs Serve on ln until the test ends.
func serveForTest(t testing.TB, ln net.Listener, h http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// transport starts an agent serving h and returns a dialer that reaches it.
type transport struct {
	name  string
	start func(t testing.TB, h http.Handler) Dialer
}

func startUnix(t testing.TB, h http.Handler) Dialer {
	path := filepath.Join(socketDir(t), "agent.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	serveForTest(t, ln, h)
	return UnixDialer(path)
}

func startTCP(t testing.TB, h http.Handler) Dialer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveForTest(t, ln, h)
	return TCPDialer(ln.Addr().String())
}

const fakeVsockPort = 1024

// startHybridVsock puts a FakeVMMMuxer in front of a unix-socket agent.
func startHybridVsock(t testing.TB, h http.Handler) Dialer {
	guest := startUnix(t, h)
	mux := startFakeVMMMuxer(t, fakeVsockPort, guest, muxOK)
	return HybridVsockDialer(mux, fakeVsockPort)
}

var transports = []transport{
	{"unix", startUnix},
	{"tcp", startTCP},
	{"hybrid-vsock", startHybridVsock},
}

type muxBehaviour int

const (
	muxOK         muxBehaviour = iota // answer "OK <n>" for the right port, close for others
	muxGarbage                        // answer something that is not OK
	muxSilent                         // read CONNECT and never answer
	muxLongLine                       // answer a line longer than any VMM would
	muxOKThenData                     // answer OK and greeting bytes in one write, no proxying
)

// startFakeVMMMuxer is a stand-in for Firecracker's hybrid-vsock unix
// socket (no VMM can run here): it reads "CONNECT <port>\n" and, for the
// expected port, answers "OK <n>\n" and proxies the connection to the
// guest's agent through guestDial.
func startFakeVMMMuxer(t testing.TB, port uint32, guestDial Dialer, b muxBehaviour) string {
	t.Helper()
	path := filepath.Join(socketDir(t), "v.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		open = append(open, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		var hostPort uint32 = 1 << 30
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			hostPort++
			wg.Add(1)
			go func(c net.Conn, hp uint32) {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				p, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
				n, perr := strconv.ParseUint(p, 10, 32)
				if !ok || perr != nil || uint32(n) != port {
					return // Firecracker closes the connection on a bad request
				}
				switch b {
				case muxGarbage:
					io.WriteString(c, "NOPE\n")
					return
				case muxSilent:
					io.Copy(io.Discard, c)
					return
				case muxLongLine:
					io.WriteString(c, "OK "+strings.Repeat("9", 200)+"\n")
					return
				case muxOKThenData:
					fmt.Fprintf(c, "OK %d\nHELLO", hp)
					io.Copy(io.Discard, c)
					return
				}
				g, err := guestDial(context.Background())
				if err != nil {
					return
				}
				track(g)
				defer g.Close()
				fmt.Fprintf(c, "OK %d\n", hp)
				done := make(chan struct{}, 2)
				go func() { io.Copy(g, br); g.Close(); done <- struct{}{} }()
				go func() { io.Copy(c, g); c.Close(); done <- struct{}{} }()
				<-done
				<-done
			}(c, hostPort)
		}
	}()
	return path
}

// newLocalGuest is the real Guest the agent serves, rooted in a temp dir.
// MapExecPaths makes working directories resolve inside that root, since
// there is no sandbox around the commands here.
func newLocalGuest(t testing.TB) (*localguest.Guest, string) {
	t.Helper()
	root := t.TempDir()
	g, err := localguest.New(localguest.Options{Root: root, MapExecPaths: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, root
}

// newClient returns a client that is closed when the test ends.
func newClient(t testing.TB, d Dialer, opts ...ClientOption) *Client {
	c := NewClient(d, opts...)
	t.Cleanup(func() { c.Close() })
	return c
}

// processGone reports whether pid has exited: no such process, or a
// zombie waiting for a parent outside this test to reap it.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after %s", pid, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPID waits for a command to write its pid file.
func readPID(t *testing.T, path string) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && strings.HasSuffix(string(b), "\n") {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("pid file %s: %v", path, err)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid file %s never written", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signalWriter collects output and signals when it first contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func newSignalWriter(want string) *signalWriter {
	return &signalWriter{want: want, seen: make(chan struct{})}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
