package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/events"
)

// smallBufferDialer dials with a 4 KiB receive buffer, so that a client
// that stops reading pushes back on the server within a few writes.
func smallBufferDialer() *net.Dialer {
	return &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// stallingCommand prints without end and records the PIDs of its shell
// and of a background child, so that another exec can check that the
// whole tree is gone.
const stallingCommand = `echo $$ > stall-sh.pid; sleep 1000 & echo $! > stall-bg.pid; while :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done`

// aliveCheck prints "alive PID" for each recorded process that still
// runs (zombies waiting for a reaper count as gone).
const aliveCheck = `for f in stall-sh.pid stall-bg.pid; do [ -s $f ] || { echo missing $f; continue; }; p=$(cat $f); ` +
	`if [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null; then echo alive $p; fi; done`

// TestClientThatStopsReadingIsDropped: a client streams a command that
// prints without end and stops reading. The server must drop it within
// the stream write timeout (not the command's hour-long timeout), kill
// the command's whole process tree, and hold no growing buffer meanwhile.
func TestClientThatStopsReadingIsDropped(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	start := map[string]func(t *testing.T, e *testEnv, id string) func(){
		"ndjson": func(t *testing.T, e *testEnv, id string) func() {
			conn, err := smallBufferDialer().Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			body := fmt.Sprintf(`{"command":%q,"stream":true,"timeout":"1h"}`, stallingCommand)
			fmt.Fprintf(conn, "POST /api/v1/sandboxes/%s/exec HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				id, e.srv.Listener.Addr(), len(body), body)
			// Never read.
			return func() { conn.Close() }
		},
		"websocket": func(t *testing.T, e *testEnv, id string) func() {
			hc := &http.Client{Transport: &http.Transport{DialContext: smallBufferDialer().DialContext}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, wsURL(e, id), &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"command":%q,"timeout":"1h"}`, stallingCommand)); err != nil {
				t.Fatal(err)
			}
			// Never read.
			return func() { c.CloseNow() }
		},
	}
	for name, open := range start {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, withOptions(func(o *Options) { o.StreamWriteTimeout = writeTimeout }))
			sb := e.spawn(nil)
			execPath := "/api/v1/sandboxes/" + sb.ID + "/exec"
			check := func() string {
				var res execResultJSON
				e.expectJSON(e.call("POST", execPath, map[string]any{"command": aliveCheck}), http.StatusOK, &res)
				return strings.TrimSpace(res.Stdout)
			}

			began := time.Now()
			closeClient := open(t, e, sb.ID)
			defer closeClient()
			e.waitFor("the command to start", func() bool {
				out := check()
				return strings.Count(out, "alive") == 2
			})
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)

			// The command's own timeout is an hour: only the dropped
			// stream can end it.
			deadline := time.Now().Add(30 * time.Second)
			for {
				out := check()
				if out == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s after the client stopped reading: %q", time.Since(began), out)
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Logf("command tree gone %s after the stream began", time.Since(began).Round(time.Millisecond))

			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 32<<20 {
				t.Errorf("heap grew by %d bytes while the client did not read", grew)
			}
		})
	}
}

// TestEventSubscriberThatStopsReadingIsDropped: a subscriber to the event
// stream that stops reading is disconnected within the stream write
// timeout, however many events are published meanwhile.
func TestEventSubscriberThatStopsReadingIsDropped(t *testing.T) {
	closed := make(chan string, 16)
	e := newEnv(t,
		withOptions(func(o *Options) { o.StreamWriteTimeout = 300 * time.Millisecond }),
		func(s *envSetup) {
			s.server = func(hs *http.Server) {
				hs.ConnState = func(c net.Conn, st http.ConnState) {
					if st == http.StateClosed {
						select {
						case closed <- c.RemoteAddr().String():
						default:
						}
					}
				}
			}
		})
	conn, err := smallBufferDialer().Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/events HTTP/1.1\r\nHost: %s\r\n\r\n", e.srv.Listener.Addr())
	// Never read.

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		big := strings.Repeat("e", 16<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			e.m.Events().Publish(events.Event{Type: "test.flood", Data: map[string]string{"x": big}})
			time.Sleep(100 * time.Microsecond)
		}
	}()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case addr := <-closed:
			if addr == conn.LocalAddr().String() {
				return
			}
		case <-deadline:
			t.Fatal("the server still holds a subscriber that stopped reading")
		}
	}
}
