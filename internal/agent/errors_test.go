package agent

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// failingGuest fails every operation with err; Exec also reports st.
type failingGuest struct {
	err error
	st  provider.ExitStatus
}

func (f failingGuest) Exec(context.Context, provider.ExecRequest, io.Writer, io.Writer) (provider.ExitStatus, error) {
	return f.st, f.err
}
func (f failingGuest) WriteFile(_ context.Context, _ string, r io.Reader, _ fs.FileMode) error {
	return f.err
}
func (f failingGuest) ReadFile(context.Context, string) (io.ReadCloser, error) { return nil, f.err }
func (f failingGuest) ListFiles(context.Context, string) ([]provider.FileInfo, error) {
	return nil, f.err
}
func (f failingGuest) StatFile(context.Context, string) (provider.FileInfo, error) {
	return provider.FileInfo{}, f.err
}
func (f failingGuest) DeleteFile(context.Context, string, bool) error   { return f.err }
func (f failingGuest) MoveFile(context.Context, string, string) error   { return f.err }
func (f failingGuest) Chmod(context.Context, string, fs.FileMode) error { return f.err }
func (f failingGuest) Glob(context.Context, string) ([]string, error)   { return nil, f.err }

// guestOps calls every Guest method and returns each one's error.
func guestOps(ctx context.Context, g provider.Guest) map[string]error {
	out := map[string]error{}
	_, out["exec"] = g.Exec(ctx, provider.ExecRequest{Argv: []string{"x"}}, io.Discard, io.Discard)
	out["write"] = g.WriteFile(ctx, "/f", strings.NewReader("data"), 0o644)
	rc, err := g.ReadFile(ctx, "/f")
	if err == nil {
		rc.Close()
		err = errors.New("ReadFile unexpectedly succeeded")
	}
	out["read"] = err
	_, out["list"] = g.ListFiles(ctx, "/")
	_, out["stat"] = g.StatFile(ctx, "/f")
	out["delete"] = g.DeleteFile(ctx, "/f", true)
	out["move"] = g.MoveFile(ctx, "/a", "/b")
	out["chmod"] = g.Chmod(ctx, "/f", 0o600)
	_, out["glob"] = g.Glob(ctx, "/*")
	return out
}

// TestErrorClassesSurviveTheWire: every errdefs class, raised by the
// Guest behind the agent, comes out of every client method as the same
// class with the same message.
func TestErrorClassesSurviveTheWire(t *testing.T) {
	t.Parallel()
	for _, class := range append(errdefs.Classes(), nil) {
		name := "unclassified"
		var guestErr error = errors.New("plain failure")
		if class != nil {
			name = class.Error()
			guestErr = errdefs.New(class, "guest says %s", class)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, startUnix(t, NewServer(failingGuest{err: guestErr}, ServerOptions{})))
			for op, err := range guestOps(t.Context(), c) {
				if err == nil {
					t.Errorf("%s: no error", op)
					continue
				}
				if got := errdefs.Classify(err); got != class {
					t.Errorf("%s: class %v, want %v (err %v)", op, got, class, err)
				}
				if class != nil && !errors.Is(err, class) {
					t.Errorf("%s: errors.Is(%v, %v) = false", op, err, class)
				}
				if err.Error() != guestErr.Error() {
					t.Errorf("%s: message %q, want %q", op, err.Error(), guestErr.Error())
				}
			}
		})
	}
}

// TestExecErrorKeepsStatus: an Exec error arrives together with the
// status the guest returned, as provider.Guest promises for timeouts.
func TestExecErrorKeepsStatus(t *testing.T) {
	t.Parallel()
	want := provider.ExitStatus{ExitCode: -1, TimedOut: true, Duration: 1234 * time.Millisecond}
	g := failingGuest{err: errdefs.New(errdefs.ErrExecTimeout, "command timed out after 1s"), st: want}
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{})))
	st, err := c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"x"}}, nil, nil)
	if !errors.Is(err, errdefs.ErrExecTimeout) || st != want {
		t.Fatalf("got %+v, %v; want %+v and an exec timeout", st, err, want)
	}
}

func TestDeadAgentIsProviderUnavailable(t *testing.T) {
	t.Parallel()
	dir := socketDir(t)
	for name, d := range map[string]Dialer{
		"unix, no socket": UnixDialer(filepath.Join(dir, "none.sock")),
		"tcp, refused":    TCPDialer(closedTCPAddr(t)),
		"vsock, no VMM":   HybridVsockDialer(filepath.Join(dir, "none.vsock"), 1024),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, d)
			for op, err := range guestOps(t.Context(), c) {
				if !errors.Is(err, errdefs.ErrProviderUnavailable) {
					t.Errorf("%s: %v, want provider unavailable", op, err)
				}
				if err != nil && strings.Contains(err.Error(), dir) {
					t.Errorf("%s: error leaks the socket path: %v", op, err)
				}
			}
			if _, err := c.Health(t.Context()); !errors.Is(err, errdefs.ErrProviderUnavailable) {
				t.Errorf("health: %v", err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			if err := c.WaitReady(ctx); !errors.Is(err, errdefs.ErrProviderUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("WaitReady: %v", err)
			}
		})
	}
}

func closedTCPAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAgentDiesMidExec: the connection breaking before the exit frame is
// an unavailable agent, not a finished command.
func TestAgentDiesMidExec(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	ln, err := ListenUnix(filepath.Join(socketDir(t), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewServer(g, ServerOptions{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := newClient(t, UnixDialer(ln.Addr().String()))

	stdout := newSignalWriter("started")
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(t.Context(), provider.ExecRequest{Argv: provider.ShellArgv("echo started; sleep 30")}, stdout, nil)
		done <- err
	}()
	<-stdout.seen
	srv.Close() // the agent vanishes: every connection is cut
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrProviderUnavailable) {
			t.Fatalf("err = %v, want provider unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Exec hung after the agent died")
	}
}

// TestReadFileCutShort: a download the agent aborts mid-way fails instead
// of looking like a shorter file.
func TestReadFileCutShort(t *testing.T) {
	t.Parallel()
	c := newClient(t, startUnix(t, NewServer(brokenReadGuest{}, ServerOptions{})))
	rc, err := c.ReadFile(t.Context(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, errdefs.ErrProviderUnavailable) {
		t.Fatalf("read %d bytes then %v, want provider unavailable", n, err)
	}
}

type brokenReadGuest struct{ failingGuest }

func (brokenReadGuest) ReadFile(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(io.MultiReader(strings.NewReader(strings.Repeat("x", 200<<10)), errReader{errors.New("disk gone")})), nil
}

func TestUnknownRouteIsUnimplemented(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{})))
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v1/nothing"},
		{http.MethodPost, pathHealth}, // known path, wrong method
		{http.MethodGet, "/v2/exec"},
	} {
		_, err := c.do(t.Context(), tc.method, tc.path, nil, nil, "")
		if !errors.Is(err, errdefs.ErrUnimplemented) {
			t.Errorf("%s %s: %v, want unimplemented", tc.method, tc.path, err)
		}
	}
}

// TestRequestValidation sends what the client never would.
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{MaxJSONBytes: 4096})))
	tests := []struct {
		name, method, path, body string
		class                    *errdefs.Class
	}{
		{"exec unknown field", http.MethodPost, pathExec, `{"argv":["true"],"stdin":"x"}`, errdefs.ErrInvalidArgument},
		{"exec not json", http.MethodPost, pathExec, `argv=true`, errdefs.ErrInvalidArgument},
		{"exec trailing data", http.MethodPost, pathExec, `{"argv":["true"]} {}`, errdefs.ErrInvalidArgument},
		{"exec negative timeout", http.MethodPost, pathExec, `{"argv":["true"],"timeout_ms":-1}`, errdefs.ErrInvalidArgument},
		{"exec too large", http.MethodPost, pathExec, `{"argv":["` + strings.Repeat("a", 5000) + `"]}`, errdefs.ErrResourceLimit},
		{"move unknown field", http.MethodPost, pathFilesMove, `{"from":"/a","to":"/b"}`, errdefs.ErrInvalidArgument},
		{"chmod bad mode", http.MethodPost, pathFilesMod, `{"path":"/a","mode":"rwx"}`, errdefs.ErrInvalidArgument},
		{"chmod mode too big", http.MethodPost, pathFilesMod, `{"path":"/a","mode":"17777"}`, errdefs.ErrInvalidArgument},
		{"write bad mode", http.MethodPut, pathFiles + "?path=/a&mode=9", ``, errdefs.ErrInvalidArgument},
		{"delete bad recursive", http.MethodDelete, pathFiles + "?path=/a&recursive=maybe", ``, errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path, query, _ := strings.Cut(tc.path, "?")
			req, err := http.NewRequestWithContext(t.Context(), tc.method, baseURL+path+"?"+query, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				t.Fatalf("status %s, want an error", resp.Status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != contentTypeJSON {
				t.Errorf("content type %q", ct)
			}
			if err := c.replyErr(t.Context(), resp); !errors.Is(err, tc.class) {
				t.Fatalf("err = %v, want %v", err, tc.class)
			}
		})
	}
}

func TestToken(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	d := startUnix(t, NewServer(g, ServerOptions{Token: "s3cret"}))
	for name, opts := range map[string][]ClientOption{
		"no token":    nil,
		"wrong token": {WithToken("guess")},
		"prefix only": {WithToken("s3c")},
	} {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, d, opts...)
			for op, err := range guestOps(t.Context(), c) {
				if !errors.Is(err, errdefs.ErrUnauthorized) {
					t.Errorf("%s: %v, want unauthorized", op, err)
				}
			}
			start := time.Now()
			if err := c.WaitReady(t.Context()); !errors.Is(err, errdefs.ErrUnauthorized) {
				t.Errorf("WaitReady: %v, want unauthorized at once", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("WaitReady kept polling a refusing agent for %s", d)
			}
		})
	}
	c := newClient(t, d, WithToken("s3cret"))
	if err := c.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if _, err := c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"echo", "ok"}}, &out, nil); err != nil || out.String() != "ok\n" {
		t.Fatalf("with the token: %v %q", err, out.String())
	}
}
