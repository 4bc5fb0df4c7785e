package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// hostile is an agent that speaks the protocol badly, the way code in a
// sandbox that replaced its agent could. It counts the requests it is
// still serving: a handler only returns when the client drops its
// connection (or, for the infinite ones, when a write fails).
type hostile struct {
	active atomic.Int64
	mux    *http.ServeMux
}

func newHostile() *hostile {
	h := &hostile{mux: http.NewServeMux()}
	return h
}

func (h *hostile) handle(pattern string, f http.HandlerFunc) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		h.active.Add(1)
		defer h.active.Add(-1)
		f(w, r)
	})
}

func (h *hostile) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// silent never answers. It reads the request body first: net/http only
// notices a client hanging up once the body has been consumed.
func silent(_ http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	<-r.Context().Done()
}

// forever writes chunk until the client goes away.
func forever(status int, ctype string, head, chunk []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		w.WriteHeader(status)
		if _, err := w.Write(head); err != nil {
			return
		}
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}
}

// waitZero waits until n reads 0: the hostile agent saw every connection
// it was serving dropped.
func waitZero(t *testing.T, what string, n func() int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d still active: the client did not drop them", what, n())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noGoroutineLeak fails the test if, once it ends, more goroutines run than
// before it started (allowing time for connections to wind down).
func noGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestHostEnforcesExecDeadline(t *testing.T) {
	frames := AppendFrame(nil, FrameStdout, bytes.Repeat([]byte("y"), 4096))
	cases := []struct {
		name    string
		handler http.HandlerFunc
		output  bool // whether some output must arrive before the deadline
	}{
		{"never answers", silent, false},
		{"answers then goes quiet", func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", contentTypeFrames)
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}, false},
		{"streams output forever", forever(http.StatusOK, contentTypeFrames, nil, frames), true},
		{"sends unknown frames forever", forever(http.StatusOK, contentTypeFrames, nil, AppendFrame(nil, FrameKind(99), []byte("x"))), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			noGoroutineLeak(t)
			h := newHostile()
			h.handle("POST "+pathExec, tc.handler)
			const timeout, grace = 300 * time.Millisecond, 200 * time.Millisecond
			c := NewClient(startUnix(t, h), WithLimits(Limits{ExecGrace: grace}))
			t.Cleanup(func() { c.Close() })

			var out countWriter
			start := time.Now()
			st, err := c.Exec(context.Background(), provider.ExecRequest{Argv: []string{"yes"}, Timeout: timeout}, &out, io.Discard)
			took := time.Since(start)
			if !errors.Is(err, errdefs.ErrExecTimeout) || !st.TimedOut || st.ExitCode != -1 {
				t.Fatalf("Exec = %+v, %v; want a reported timeout", st, err)
			}
			// The deadline is timeout+grace; the rest is slack for a
			// loaded machine, far below "forever".
			if took < timeout+grace || took > timeout+grace+5*time.Second {
				t.Errorf("Exec returned after %s; want timeout+grace = %s", took, timeout+grace)
			}
			if tc.output && out.n.Load() == 0 {
				t.Error("no output was delivered before the deadline")
			}
			if !strings.Contains(err.Error(), "host dropped it") {
				t.Errorf("error %q does not say the host ended it", err)
			}
			waitZero(t, "exec handlers", h.active.Load)
		})
	}
}

// TestExecTimeoutFromAgentWins: an agent that reports the timeout itself,
// within the grace, is believed (its duration included).
func TestExecTimeoutFromAgentWins(t *testing.T) {
	h := newHostile()
	h.handle("POST "+pathExec, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentTypeFrames)
		b := AppendFrame(nil, FrameError, []byte(`{"class":"exec_timeout","message":"agent says: timed out"}`))
		b = AppendFrame(b, FrameExit, []byte(`{"exit_code":-1,"timed_out":true,"duration_ns":123}`))
		w.Write(b)
	})
	c := NewClient(startUnix(t, h), WithLimits(Limits{ExecGrace: time.Hour}))
	defer c.Close()
	st, err := c.Exec(context.Background(), provider.ExecRequest{Argv: []string{"x"}, Timeout: time.Millisecond}, nil, nil)
	if !errors.Is(err, errdefs.ErrExecTimeout) || !st.TimedOut || st.Duration != 123 || !strings.Contains(err.Error(), "agent says") {
		t.Fatalf("Exec = %+v, %v", st, err)
	}
}

// TestCallerCancelIsNotATimeout: the caller leaving is reported as such,
// not as a timeout the host enforced.
func TestCallerCancelIsNotATimeout(t *testing.T) {
	h := newHostile()
	h.handle("POST "+pathExec, silent)
	c := NewClient(startUnix(t, h))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	st, err := c.Exec(ctx, provider.ExecRequest{Argv: []string{"x"}, Timeout: time.Hour}, nil, nil)
	if errors.Is(err, errdefs.ErrExecTimeout) || st.TimedOut || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exec = %+v, %v; want the caller's deadline", st, err)
	}
	waitZero(t, "exec handlers", h.active.Load)
}

type countWriter struct{ n atomic.Int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

func TestRepliesAreCapped(t *testing.T) {
	entry := []byte(`{"path":"/a","size":1,"mode":"0644","type":"file","is_dir":false,"mod_time":"2024-01-01T00:00:00Z"},`)
	const maxReply, maxEntries = 1 << 20, 1000
	cases := []struct {
		name    string
		pattern string
		handler http.HandlerFunc
		call    func(context.Context, *Client) error
		class   *errdefs.Class
		message string
	}{
		{"listing that never ends", "GET " + pathFilesList,
			forever(http.StatusOK, contentTypeJSON, []byte("["), entry),
			func(ctx context.Context, c *Client) error { _, err := c.ListFiles(ctx, "/"); return err },
			errdefs.ErrResourceLimit, "more than 1000 entries"},
		{"one huge list entry", "GET " + pathFilesList,
			forever(http.StatusOK, contentTypeJSON, []byte(`[{"path":"`), bytes.Repeat([]byte("a"), 4096)),
			func(ctx context.Context, c *Client) error { _, err := c.ListFiles(ctx, "/"); return err },
			errdefs.ErrResourceLimit, "exceeds 1048576 bytes"},
		{"millions of glob matches", "GET " + pathFilesGlob,
			forever(http.StatusOK, contentTypeJSON, []byte("["), []byte(`"/m",`)),
			func(ctx context.Context, c *Client) error { _, err := c.Glob(ctx, "*"); return err },
			errdefs.ErrResourceLimit, "more than 1000 matches"},
		{"huge stat", "GET " + pathFilesStat,
			forever(http.StatusOK, contentTypeJSON, []byte(`{"path":"`), bytes.Repeat([]byte("a"), 4096)),
			func(ctx context.Context, c *Client) error { _, err := c.StatFile(ctx, "/x"); return err },
			errdefs.ErrResourceLimit, "exceeds"},
		{"huge health", "GET " + pathHealth,
			forever(http.StatusOK, contentTypeJSON, []byte(`{"version":"`), bytes.Repeat([]byte("v"), 4096)),
			func(ctx context.Context, c *Client) error { _, err := c.Health(ctx); return err },
			errdefs.ErrResourceLimit, "exceeds"},
		{"endless error body", "GET " + pathFilesStat,
			forever(http.StatusNotFound, contentTypeJSON, []byte(`{"class":"file_not_found","message":"`), bytes.Repeat([]byte("m"), 4096)),
			func(ctx context.Context, c *Client) error { _, err := c.StatFile(ctx, "/x"); return err },
			errdefs.ErrProviderUnavailable, "without a protocol error body"},
		{"listing that is not an array", "GET " + pathFilesList,
			func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"a":1}`) },
			func(ctx context.Context, c *Client) error { _, err := c.ListFiles(ctx, "/"); return err },
			errdefs.ErrProviderUnavailable, "JSON array"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			noGoroutineLeak(t)
			h := newHostile()
			h.handle(tc.pattern, tc.handler)
			c := NewClient(startUnix(t, h), WithLimits(Limits{MaxReplyBytes: maxReply, MaxEntries: maxEntries}))
			t.Cleanup(func() { c.Close() })
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := tc.call(context.Background(), c)
			runtime.ReadMemStats(&after)
			if errdefs.Classify(err) != tc.class || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("err = %v (class %v); want %v saying %q", err, errdefs.Classify(err), tc.class, tc.message)
			}
			// What the call allocated in total stays near the cap, not
			// near "whatever the agent sent".
			if got := after.TotalAlloc - before.TotalAlloc; got > 16*maxReply {
				t.Errorf("the call allocated %d bytes for a reply capped at %d", got, maxReply)
			}
			waitZero(t, "handlers", h.active.Load)
		})
	}
}

func TestReplyWithinCapsIsAccepted(t *testing.T) {
	h := newHostile()
	var list strings.Builder
	list.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			list.WriteString(",")
		}
		fmt.Fprintf(&list, `{"path":"/f%d","size":1,"mode":"0644","type":"file","mod_time":"2024-01-01T00:00:00Z"}`, i)
	}
	list.WriteString("]")
	h.handle("GET "+pathFilesList, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, list.String()) })
	h.handle("GET "+pathFilesGlob, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "null") })
	c := NewClient(startUnix(t, h), WithLimits(Limits{MaxEntries: 1000}))
	defer c.Close()
	fis, err := c.ListFiles(context.Background(), "/")
	if err != nil || len(fis) != 1000 || fis[999].Path != "/f999" {
		t.Fatalf("ListFiles = %d entries, %v", len(fis), err)
	}
	if m, err := c.Glob(context.Background(), "*"); err != nil || len(m) != 0 {
		t.Fatalf("Glob(null) = %v, %v", m, err)
	}
}

func TestSilentAgentCallsTimeOut(t *testing.T) {
	noGoroutineLeak(t)
	h := newHostile()
	for _, p := range []string{pathFilesStat, pathFiles, pathFilesList, pathHealth} {
		h.handle("GET "+p, silent)
	}
	const callTimeout = 300 * time.Millisecond
	c := NewClient(startUnix(t, h), WithLimits(Limits{CallTimeout: callTimeout}))
	t.Cleanup(func() { c.Close() })
	calls := map[string]func(context.Context) error{
		"stat":   func(ctx context.Context) error { _, err := c.StatFile(ctx, "/x"); return err },
		"list":   func(ctx context.Context) error { _, err := c.ListFiles(ctx, "/"); return err },
		"health": func(ctx context.Context) error { _, err := c.Health(ctx); return err },
		"read": func(ctx context.Context) error {
			rc, err := c.ReadFile(ctx, "/x")
			if err == nil {
				rc.Close()
			}
			return err
		},
	}
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Go(func() {
			start := time.Now()
			err := call(context.Background())
			took := time.Since(start)
			if !errors.Is(err, errdefs.ErrProviderUnavailable) || !strings.Contains(err.Error(), "within") {
				t.Errorf("%s: err = %v; want provider unavailable after the call timeout", name, err)
			}
			if took < callTimeout || took > callTimeout+5*time.Second {
				t.Errorf("%s returned after %s; want about %s", name, took, callTimeout)
			}
		})
	}
	wg.Wait()
	waitZero(t, "handlers", h.active.Load)
}

// TestReadFileOutlivesCallTimeout: the call timeout bounds the wait for
// the answer, not the transfer.
func TestReadFileOutlivesCallTimeout(t *testing.T) {
	h := newHostile()
	h.handle("GET "+pathFiles, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		time.Sleep(400 * time.Millisecond)
		io.WriteString(w, "late but fine")
	})
	c := NewClient(startUnix(t, h), WithLimits(Limits{CallTimeout: 100 * time.Millisecond}))
	defer c.Close()
	rc, err := c.ReadFile(context.Background(), "/x")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || string(b) != "late but fine" {
		t.Fatalf("read %q, %v", b, err)
	}
}
