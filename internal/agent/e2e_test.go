package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// TestRoutes drives every route end to end, client → transport → server
// → localguest, over each transport.
func TestRoutes(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			g, root := newLocalGuest(t)
			c := newClient(t, tr.start(t, NewServer(g, ServerOptions{Version: "test-1"})))
			ctx := t.Context()
			if err := c.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			t.Run("health", func(t *testing.T) {
				v, err := c.Health(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if v.Status != "ok" || v.Version != "test-1" || v.Protocol != ProtocolVersion || v.OS == "" || v.Arch == "" {
					t.Fatalf("health = %+v", v)
				}
			})
			t.Run("exec", func(t *testing.T) { testExec(t, c, root) })
			t.Run("files", func(t *testing.T) { testFiles(t, c, root) })
		})
	}
}

func testExec(t *testing.T, c *Client, root string) {
	ctx := t.Context()
	if err := os.MkdirAll(filepath.Join(root, "workspace", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		req          provider.ExecRequest
		code         int
		stdout       string
		stderr       string
		errClass     *errdefs.Class
		stdoutSuffix bool
	}{
		{name: "exit code and separate streams",
			req:  provider.ExecRequest{Argv: provider.ShellArgv("echo out; echo err >&2; exit 7")},
			code: 7, stdout: "out\n", stderr: "err\n"},
		{name: "args are not split by a shell",
			req:    provider.ExecRequest{Argv: []string{"printf", "%s|", "a b", "c"}},
			stdout: "a b|c|"},
		{name: "env",
			req:    provider.ExecRequest{Argv: provider.ShellArgv(`printf %s "$GREETING"`), Env: map[string]string{"GREETING": "hi there"}},
			stdout: "hi there"},
		{name: "workdir",
			req:    provider.ExecRequest{Argv: []string{"pwd"}, WorkDir: "/workspace/sub"},
			stdout: filepath.Join(root, "workspace", "sub") + "\n"},
		{name: "binary output survives",
			req:    provider.ExecRequest{Argv: provider.ShellArgv(`printf '\000\001\377'`)},
			stdout: "\x00\x01\xff"},
		{name: "large output is split into frames and reassembled",
			req:    provider.ExecRequest{Argv: provider.ShellArgv(`head -c 300000 /dev/zero`)},
			stdout: strings.Repeat("\x00", 300000)},
		{name: "missing program exits 127",
			req:  provider.ExecRequest{Argv: []string{"no-such-program-xyz"}},
			code: 127, stderr: "command not found", stdoutSuffix: true},
		{name: "missing workdir is the guest's invalid_argument, sent as an error frame",
			req:      provider.ExecRequest{Argv: []string{"true"}, WorkDir: "/nope"},
			errClass: errdefs.ErrInvalidArgument},
		{name: "empty argv rejected by the protocol",
			req:      provider.ExecRequest{},
			errClass: errdefs.ErrInvalidArgument},
		{name: "bad env name rejected by the protocol",
			req:      provider.ExecRequest{Argv: []string{"true"}, Env: map[string]string{"A=B": "x"}},
			errClass: errdefs.ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			st, err := c.Exec(ctx, tc.req, &stdout, &stderr)
			if tc.errClass != nil {
				if !errors.Is(err, tc.errClass) {
					t.Fatalf("err = %v, want class %v", err, tc.errClass)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.ExitCode != tc.code || st.TimedOut || st.Duration <= 0 {
				t.Errorf("status = %+v, want exit %d", st, tc.code)
			}
			if stdout.String() != tc.stdout {
				t.Errorf("stdout = %.80q, want %.80q", stdout.String(), tc.stdout)
			}
			if tc.stdoutSuffix {
				if !strings.Contains(stderr.String(), tc.stderr) {
					t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.stderr)
				}
			} else if stderr.String() != tc.stderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tc.stderr)
			}
		})
	}
}

func testFiles(t *testing.T, c *Client, root string) {
	ctx := t.Context()
	binary := make([]byte, 256*3)
	for i := range binary {
		binary[i] = byte(i)
	}

	t.Run("write and read binary", func(t *testing.T) {
		if err := c.WriteFile(ctx, "/workspace/dir/bin.dat", bytes.NewReader(binary), 0o600); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, c, "/workspace/dir/bin.dat")
		if !bytes.Equal(got, binary) {
			t.Fatalf("read back %d bytes, differ from the %d written", len(got), len(binary))
		}
		onDisk, err := os.Stat(filepath.Join(root, "workspace", "dir", "bin.dat"))
		if err != nil || onDisk.Mode().Perm() != 0o600 {
			t.Fatalf("on disk: %v %v, want mode 0600", onDisk, err)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		if err := c.WriteFile(ctx, "/workspace/empty", strings.NewReader(""), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c, "/workspace/empty"); len(got) != 0 {
			t.Fatalf("read %q", got)
		}
	})
	t.Run("stat", func(t *testing.T) {
		fi, err := c.StatFile(ctx, "/workspace/dir/bin.dat")
		if err != nil {
			t.Fatal(err)
		}
		if fi.Path != "/workspace/dir/bin.dat" || fi.Size != int64(len(binary)) || fi.Mode != 0o600 || fi.IsDir || fi.ModTime.IsZero() {
			t.Fatalf("stat = %+v", fi)
		}
		di, err := c.StatFile(ctx, "/workspace/dir")
		if err != nil {
			t.Fatal(err)
		}
		if !di.IsDir || di.Mode&fs.ModeDir == 0 {
			t.Fatalf("stat dir = %+v", di)
		}
	})
	t.Run("list", func(t *testing.T) {
		if err := c.WriteFile(ctx, "/workspace/dir/b.txt", strings.NewReader("bb"), 0o644); err != nil {
			t.Fatal(err)
		}
		infos, err := c.ListFiles(ctx, "/workspace/dir")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, fi := range infos {
			names = append(names, fi.Path)
		}
		slices.Sort(names)
		if want := []string{"/workspace/dir/b.txt", "/workspace/dir/bin.dat"}; !slices.Equal(names, want) {
			t.Fatalf("list = %v, want %v", names, want)
		}
	})
	t.Run("chmod", func(t *testing.T) {
		if err := c.Chmod(ctx, "/workspace/dir/b.txt", 0o751); err != nil {
			t.Fatal(err)
		}
		fi, err := c.StatFile(ctx, "/workspace/dir/b.txt")
		if err != nil || fi.Mode.Perm() != 0o751 {
			t.Fatalf("after chmod: %+v, %v", fi, err)
		}
	})
	t.Run("glob", func(t *testing.T) {
		got, err := c.Glob(ctx, "/workspace/dir/*.txt")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []string{"/workspace/dir/b.txt"}) {
			t.Fatalf("glob = %v", got)
		}
		none, err := c.Glob(ctx, "/workspace/*.nothing")
		if err != nil || len(none) != 0 {
			t.Fatalf("glob with no match = %v, %v", none, err)
		}
	})
	t.Run("move", func(t *testing.T) {
		if err := c.MoveFile(ctx, "/workspace/dir/b.txt", "/workspace/moved.txt"); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, c, "/workspace/moved.txt"); string(got) != "bb" {
			t.Fatalf("moved file holds %q", got)
		}
		if _, err := c.StatFile(ctx, "/workspace/dir/b.txt"); !errors.Is(err, errdefs.ErrFileNotFound) {
			t.Fatalf("old path after move: %v", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := c.ReadFile(ctx, "/workspace/missing"); !errors.Is(err, errdefs.ErrFileNotFound) {
			t.Fatalf("read missing: %v", err)
		}
		if _, err := c.StatFile(ctx, "/workspace/missing"); !errors.Is(err, errdefs.ErrFileNotFound) {
			t.Fatalf("stat missing: %v", err)
		}
	})
	t.Run("path escape stays inside", func(t *testing.T) {
		// The guest confines paths; the protocol must pass them through
		// unaltered and bring the verdict back.
		err := c.WriteFile(ctx, "/../../escape.txt", strings.NewReader("x"), 0o644)
		if _, serr := os.Stat(filepath.Join(filepath.Dir(root), "escape.txt")); serr == nil {
			t.Fatalf("a file was written outside the root (WriteFile err %v)", err)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := c.DeleteFile(ctx, "/workspace/dir", false); err == nil {
			t.Fatal("non-recursive delete of a non-empty directory succeeded")
		}
		if err := c.DeleteFile(ctx, "/workspace/dir", true); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(root, "workspace", "dir")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("directory still there: %v", err)
		}
		if err := c.DeleteFile(ctx, "/workspace/moved.txt", false); err != nil {
			t.Fatal(err)
		}
	})
}

func readAll(t *testing.T, c *Client, path string) []byte {
	t.Helper()
	rc, err := c.ReadFile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unixClient(t *testing.T) (*Client, string) {
	g, root := newLocalGuest(t)
	return newClient(t, startUnix(t, NewServer(g, ServerOptions{}))), root
}

func TestExecStreamsBeforeTheCommandEnds(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	stdout := newSignalWriter("a\n")
	start := time.Now()
	type result struct {
		st  provider.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := c.Exec(t.Context(), provider.ExecRequest{Argv: provider.ShellArgv("echo a; sleep 2; echo b")}, stdout, io.Discard)
		done <- result{st, err}
	}()
	select {
	case <-stdout.seen:
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("first frame took %s", d)
		}
	case r := <-done:
		t.Fatalf("command ended (%+v, %v) before its first output was seen", r.st, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no output")
	}
	select {
	case <-done:
		t.Fatalf("command ended at %s, before its sleep", time.Since(start))
	default:
	}
	r := <-done
	if r.err != nil || r.st.ExitCode != 0 || stdout.String() != "a\nb\n" {
		t.Fatalf("got %+v, %v, stdout %q", r.st, r.err, stdout.String())
	}
}

// TestExecCancelKillsProcessGroup: a client that goes away takes its
// command, and the command's background children, with it.
func TestExecCancelKillsProcessGroup(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	dir := t.TempDir()
	shPID, bgPID := filepath.Join(dir, "sh.pid"), filepath.Join(dir, "bg.pid")
	script := fmt.Sprintf("echo $$ > %s; sleep 60 & echo $! > %s; echo ready; wait", shPID, bgPID)

	ctx, cancel := context.WithCancel(t.Context())
	stdout := newSignalWriter("ready")
	done := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, provider.ExecRequest{Argv: provider.ShellArgv(script)}, stdout, io.Discard)
		done <- err
	}()
	select {
	case <-stdout.seen:
	case err := <-done:
		t.Fatalf("exec ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("command never became ready")
	}
	sh, bg := readPID(t, shPID), readPID(t, bgPID)
	if processGone(sh) || processGone(bg) {
		t.Fatal("processes gone before the cancel")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Exec after cancel: %v, want context.Canceled", err)
		}
		if errdefs.Classify(err) != nil {
			t.Fatalf("a cancelled call must not look like an agent failure: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Exec did not return after cancel")
	}
	waitGone(t, sh, 5*time.Second)
	waitGone(t, bg, 5*time.Second)
}

func TestExecTimeout(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	bgPID := filepath.Join(t.TempDir(), "bg.pid")
	start := time.Now()
	st, err := c.Exec(t.Context(), provider.ExecRequest{
		Argv:    provider.ShellArgv(fmt.Sprintf("sleep 30 & echo $! > %s; wait", bgPID)),
		Timeout: 300 * time.Millisecond,
	}, io.Discard, io.Discard)
	if !errors.Is(err, errdefs.ErrExecTimeout) {
		t.Fatalf("err = %v, want exec timeout", err)
	}
	if !st.TimedOut || st.ExitCode != -1 || st.Duration < 300*time.Millisecond {
		t.Fatalf("status = %+v", st)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %s", d)
	}
	waitGone(t, readPID(t, bgPID), 5*time.Second)
}

// TestExecWriterFailureStopsCommand: when the caller's writer fails the
// client drops the stream, and the agent kills the command.
func TestExecWriterFailureStopsCommand(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	pidFile := filepath.Join(t.TempDir(), "sh.pid")
	boom := errors.New("sink full")
	_, err := c.Exec(t.Context(), provider.ExecRequest{
		Argv: provider.ShellArgv(fmt.Sprintf("echo $$ > %s; echo x; sleep 60", pidFile)),
	}, failingWriter{boom}, io.Discard)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the writer's error", err)
	}
	waitGone(t, readPID(t, pidFile), 5*time.Second)
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

// prng is a reproducible stream of n pseudo-random bytes.
func prng(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), n)
}

func TestLargeFileRoundTrip(t *testing.T) {
	t.Parallel()
	const size = 64 << 20
	c, root := unixClient(t)
	ctx := t.Context()

	want := sha256.New()
	if err := c.WriteFile(ctx, "/workspace/big.bin", io.TeeReader(prng(1, size), want), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "workspace", "big.bin"))
	if err != nil || fi.Size() != size {
		t.Fatalf("on disk: %v, %v", fi, err)
	}
	rc, err := c.ReadFile(ctx, "/workspace/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil || n != size {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("downloaded content differs from the upload")
	}
}

// spyGuest reports how many upload bytes have reached the Guest.
type spyGuest struct {
	provider.Guest
	mu       sync.Mutex
	received int64
	changed  chan struct{}
}

func (s *spyGuest) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	return s.Guest.WriteFile(ctx, path, &countingReader{r: r, s: s}, mode)
}

type countingReader struct {
	r io.Reader
	s *spyGuest
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.s.mu.Lock()
	c.s.received += int64(n)
	c.s.mu.Unlock()
	select {
	case c.s.changed <- struct{}{}:
	default:
	}
	return n, err
}

// TestUploadIsStreamed: the Guest receives the first part of an upload
// while the client is still holding back the rest, so neither the client
// nor the server buffers whole bodies.
func TestUploadIsStreamed(t *testing.T) {
	t.Parallel()
	g, root := newLocalGuest(t)
	spy := &spyGuest{Guest: g, changed: make(chan struct{}, 1)}
	c := newClient(t, startUnix(t, NewServer(spy, ServerOptions{})))

	const part = 1 << 20
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- c.WriteFile(t.Context(), "/workspace/streamed", pr, 0o644) }()

	if _, err := io.Copy(pw, prng(2, part)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		spy.mu.Lock()
		got := spy.received
		spy.mu.Unlock()
		if got >= part/2 {
			break
		}
		select {
		case <-spy.changed:
		case err := <-done:
			t.Fatalf("upload ended early: %v", err)
		case <-deadline:
			t.Fatalf("only %d bytes reached the guest while the client held the rest back", got)
		}
	}
	if _, err := io.Copy(pw, prng(3, part)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "workspace", "streamed"))
	if err != nil || fi.Size() != 2*part {
		t.Fatalf("uploaded file: %v, %v", fi, err)
	}
}

func TestUploadSourceErrorIsReported(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	boom := errors.New("disk on fire")
	src := io.MultiReader(strings.NewReader(strings.Repeat("x", 100<<10)), errReader{boom})
	err := c.WriteFile(t.Context(), "/workspace/partial", src, 0o644)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the source's error", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	ctx := t.Context()

	// Commands overlap rather than queue: eight half-second sleeps finish
	// in far less than four seconds.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Go(func() {
			st, err := c.Exec(ctx, provider.ExecRequest{Argv: []string{"sleep", "0.5"}}, nil, nil)
			if err != nil || st.ExitCode != 0 {
				errs <- fmt.Errorf("sleep %d: %+v %v", i, st, err)
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("8 concurrent 0.5 s commands took %s", d)
	}

	for i := range 32 {
		wg.Go(func() {
			var out bytes.Buffer
			st, err := c.Exec(ctx, provider.ExecRequest{Argv: []string{"echo", fmt.Sprint(i)}}, &out, nil)
			if err != nil || st.ExitCode != 0 || out.String() != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("echo %d: %+v %v %q", i, st, err, out.String())
				return
			}
			path := fmt.Sprintf("/workspace/f%d", i)
			body := strings.Repeat(fmt.Sprint(i), 1000)
			if err := c.WriteFile(ctx, path, strings.NewReader(body), 0o644); err != nil {
				errs <- err
				return
			}
			rc, err := c.ReadFile(ctx, path)
			if err != nil {
				errs <- err
				return
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != body {
				errs <- fmt.Errorf("file %d: %v, %d bytes", i, err, len(got))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// watchedReader fails the test if it is read after the call that owns it
// returned.
type watchedReader struct {
	r        io.Reader
	mu       sync.Mutex
	returned bool
	late     bool
}

func (w *watchedReader) Read(p []byte) (int, error) {
	w.mu.Lock()
	if w.returned {
		w.late = true
	}
	w.mu.Unlock()
	return w.r.Read(p)
}

// TestWriteFileRejectedEarly: when the guest refuses an upload before
// reading it, the client returns the guest's error promptly and never
// touches the caller's reader afterwards.
func TestWriteFileRejectedEarly(t *testing.T) {
	t.Parallel()
	c, _ := unixClient(t)
	src := &watchedReader{r: prng(4, 32<<20)}
	start := time.Now()
	err := c.WriteFile(t.Context(), "/workspace", src, 0o644) // a directory
	src.mu.Lock()
	src.returned = true
	src.mu.Unlock()
	if err == nil || errdefs.Classify(err) == nil {
		t.Fatalf("err = %v, want the guest's classified refusal", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusal took %s", d)
	}
	time.Sleep(100 * time.Millisecond) // give a stray background read its chance
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.late {
		t.Fatal("the upload source was read after WriteFile returned")
	}
	// The client is still healthy afterwards.
	if _, err := c.Health(t.Context()); err != nil {
		t.Fatal(err)
	}
}
