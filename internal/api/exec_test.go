package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
)

func TestExecBuffered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	path := "/api/v1/sandboxes/" + sb.ID + "/exec"

	for _, tc := range []struct {
		name   string
		body   any
		code   int
		stdout string
		stderr string
	}{
		{"shell string", map[string]any{"command": "echo out; echo err >&2"}, 0, "out\n", "err\n"},
		{"non-zero exit is still 200", map[string]any{"command": "echo bye; exit 3"}, 3, "bye\n", ""},
		{"args run without a shell", map[string]any{"command": "printf", "args": []string{"%s|%s", "a b", "$HOME"}}, 0, "a b|$HOME", ""},
		{"env", map[string]any{"command": "printf %s \"$GREETING\"", "env": map[string]string{"GREETING": "hello"}}, 0, "hello", ""},
		{"html is not escaped", map[string]any{"command": "printf '<a&b>'"}, 0, "<a&b>", ""},
		{"explicit timeout", map[string]any{"command": "echo fast", "timeout": "5s"}, 0, "fast\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res execResultJSON
			e.expectJSON(e.call("POST", path, tc.body), http.StatusOK, &res)
			if res.ExitCode != tc.code || res.Stdout != tc.stdout || res.Stderr != tc.stderr {
				t.Errorf("result = %+v, want exit %d stdout %q stderr %q", res, tc.code, tc.stdout, tc.stderr)
			}
			if d, err := time.ParseDuration(res.Duration); err != nil || d <= 0 {
				t.Errorf("duration %q is not a positive Go duration", res.Duration)
			}
			if res.TimedOut {
				t.Error("timed_out set on a command that finished")
			}
		})
	}

	// workdir: a relative path written by the command lands there.
	e.expectJSON(e.call("POST", path, map[string]any{"command": "echo here > wd.txt", "workdir": "/tmp"}), http.StatusOK, nil)
	var fi fileInfoJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID+"/files/stat?path=/tmp/wd.txt", nil), http.StatusOK, &fi)
	if fi.Size != 5 {
		t.Errorf("workdir file = %+v", fi)
	}
}

func TestExecErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	gone := e.spawn(nil)
	e.expectJSON(e.call("DELETE", "/api/v1/sandboxes/"+gone.ID, nil), http.StatusOK, nil)
	path := "/api/v1/sandboxes/" + sb.ID + "/exec"

	for _, tc := range []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"missing command", path, `{}`, 400, codeBadRequest},
		{"empty body", path, ``, 400, codeBadRequest},
		{"malformed", path, `{"command":"true"`, 400, codeBadRequest},
		{"args not strings", path, `{"command":"echo","args":[1]}`, 400, codeBadRequest},
		{"timeout as number", path, `{"command":"true","timeout":5}`, 400, codeBadRequest},
		{"bad timeout", path, `{"command":"true","timeout":"5 seconds"}`, 400, codeBadRequest},
		{"zero timeout", path, `{"command":"true","timeout":"0s"}`, 400, codeBadRequest},
		{"timeout over the maximum", path, `{"command":"true","timeout":"1000h"}`, 400, codeBadRequest},
		{"stream not bool", path, `{"command":"true","stream":"yes"}`, 400, codeBadRequest},
		{"unknown sandbox", "/api/v1/sandboxes/sb-0000000000000000/exec", `{"command":"true"}`, 404, codeNotFound},
		{"destroyed sandbox", "/api/v1/sandboxes/" + gone.ID + "/exec", `{"command":"true"}`, 404, codeSandboxDestroyed},
		{"unknown sandbox, streamed", "/api/v1/sandboxes/sb-0000000000000000/exec", `{"command":"true","stream":true}`, 404, codeNotFound},
		{"destroyed sandbox, streamed", "/api/v1/sandboxes/" + gone.ID + "/exec", `{"command":"true","stream":true}`, 404, codeSandboxDestroyed},
		{"bad request, streamed", path, `{"stream":true}`, 400, codeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.expectError(e.call("POST", tc.path, tc.body), tc.status, tc.code)
		})
	}
}

func TestExecTimeoutIs408WithPartialOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	start := time.Now()
	resp := e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"echo partial; sleep 10","timeout":"300ms"}`)
	raw := readAll(t, resp)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408: %s", resp.StatusCode, raw)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("the timeout did not stop the command: took %s", time.Since(start))
	}
	var body timeoutBody
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatal(err)
	}
	if body.Code != codeTimeout || body.RequestID == "" || body.Message == "" {
		t.Errorf("error part = %+v", body.errorBody)
	}
	if body.Stdout != "partial\n" || !body.TimedOut || body.ExitCode != -1 {
		t.Errorf("partial result = %+v", body.execResultJSON)
	}
}

// ndjsonLine is any line of an exec stream.
type ndjsonLine struct {
	Stream   string `json:"stream"`
	Data     string `json:"data"`
	Type     string `json:"type"`
	ExitCode *int   `json:"exit_code"`
	TimedOut bool   `json:"timed_out"`
	Code     string `json:"code"`
	Message  string `json:"message"`
}

func readLine(t *testing.T, br *bufio.Reader) ndjsonLine {
	t.Helper()
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read stream line: %v (got %q)", err, line)
	}
	var l ndjsonLine
	if err := json.Unmarshal(line, &l); err != nil {
		t.Fatalf("stream line %q: %v", line, err)
	}
	return l
}

// readStream reads lines up to and including the final one.
func readStream(t *testing.T, br *bufio.Reader) (out, errOut string, last ndjsonLine) {
	t.Helper()
	for {
		l := readLine(t, br)
		switch {
		case l.Stream == "stdout":
			out += l.Data
		case l.Stream == "stderr":
			errOut += l.Data
		case l.Type == "exit" || l.Type == "error":
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				t.Errorf("data after the final line (err %v)", err)
			}
			return out, errOut, l
		default:
			t.Fatalf("unexpected line %+v", l)
		}
	}
}

func TestExecStreamDeliversOutputAsProduced(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	start := time.Now()
	resp := e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"echo a; sleep 2; echo b","stream":true}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	first := readLine(t, br)
	if got := time.Since(start); got > 1500*time.Millisecond {
		t.Errorf("first line after %s: the stream is buffered", got)
	}
	if first.Stream != "stdout" || first.Data != "a\n" {
		t.Errorf("first line = %+v", first)
	}
	out, _, last := readStream(t, br)
	if time.Since(start) < 2*time.Second {
		t.Errorf("stream ended after %s, before the command did", time.Since(start))
	}
	if out != "b\n" || last.Type != "exit" || last.ExitCode == nil || *last.ExitCode != 0 || last.TimedOut {
		t.Errorf("rest = %q, last = %+v", out, last)
	}
}

func TestExecStreamFrames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	path := "/api/v1/sandboxes/" + sb.ID + "/exec"

	stream := func(body string) (string, string, ndjsonLine) {
		resp := e.call("POST", path, body)
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
		}
		return readStream(t, bufio.NewReader(resp.Body))
	}

	t.Run("exit code and both streams", func(t *testing.T) {
		out, errOut, last := stream(`{"command":"echo o; echo e >&2; exit 7","stream":true}`)
		if out != "o\n" || errOut != "e\n" || last.Type != "exit" || *last.ExitCode != 7 {
			t.Errorf("out %q err %q last %+v", out, errOut, last)
		}
	})
	t.Run("a UTF-8 sequence split across writes stays whole", func(t *testing.T) {
		// é is \303\251; the sleep makes the two bytes two writes.
		resp := e.call("POST", path, `{"command":"printf '\\303'; sleep 0.3; printf '\\251!'","stream":true}`)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		first := readLine(t, br)
		if first.Data != "é!" {
			t.Errorf("first chunk %q, want the whole \"é!\"", first.Data)
		}
		readStream(t, br)
	})
	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		out, errOut, last := stream(`{"command":"echo a; sleep 10","stream":true,"timeout":"300ms"}`)
		if time.Since(start) > 5*time.Second {
			t.Errorf("took %s", time.Since(start))
		}
		if out != "a\n" || !strings.Contains(errOut, "timed out") {
			t.Errorf("out %q err %q", out, errOut)
		}
		if last.Type != "exit" || last.ExitCode == nil || *last.ExitCode != -1 || !last.TimedOut {
			t.Errorf("last = %+v, want exit -1 timed_out", last)
		}
	})
	t.Run("destroy mid-stream ends the stream", func(t *testing.T) {
		resp := e.call("POST", path, `{"command":"echo started; sleep 10","stream":true}`)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if l := readLine(t, br); l.Data != "started\n" {
			t.Fatalf("first line %+v", l)
		}
		start := time.Now()
		e.expectJSON(e.call("DELETE", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, nil)
		_, _, last := readStream(t, br)
		if time.Since(start) > 5*time.Second || last.Type == "exit" && *last.ExitCode == 0 {
			t.Errorf("last = %+v after %s, want a killed command's final line", last, time.Since(start))
		}
	})
}

// agentLostProvider is the mock with one injected fault: each Exec, after
// the command ran and streamed its output, reports that the connection to
// the sandbox's agent was lost. Real providers can fail like that
// mid-stream; the mock, whose commands run locally, cannot.
type agentLostProvider struct{ *mock.Provider }

func (p agentLostProvider) Exec(ctx context.Context, id string, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	st, err := p.Provider.Exec(ctx, id, req, stdout, stderr)
	if err != nil {
		return st, err
	}
	return st, errdefs.New(errdefs.ErrProviderUnavailable, "lost the connection to the agent of %s", id)
}

func withAgentLostProvider() envOption {
	return func(s *envSetup) {
		mp, err := mock.New(mock.Options{Dir: filepath.Join(s.dir, "lossy"), Name: "lossy"})
		if err != nil {
			panic(err)
		}
		s.reg.Register(agentLostProvider{mp})
	}
}

func TestExecStreamErrorAfterStart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAgentLostProvider())
	sb := e.spawn(map[string]string{"provider": "lossy"})
	resp := e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"echo started","stream":true}`)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	out, _, last := readStream(t, bufio.NewReader(resp.Body))
	if out != "started\n" {
		t.Errorf("output %q", out)
	}
	if last.Type != "error" || last.Code != codeUnavailable || !strings.Contains(last.Message, "lost the connection") {
		t.Errorf("last = %+v, want an UNAVAILABLE error line", last)
	}

	// Over a WebSocket: the same error frame, then a close code of 4000 +
	// the status.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(e, sb.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"command":"echo started"}`)); err != nil {
		t.Fatal(err)
	}
	if l, err := readWS(t, ctx, c); err != nil || l.Data != "started\n" {
		t.Fatalf("first = %+v, %v", l, err)
	}
	if l, err := readWS(t, ctx, c); err != nil || l.Type != "error" || l.Code != codeUnavailable {
		t.Errorf("second = %+v, %v; want an UNAVAILABLE error frame", l, err)
	}
	if _, err := readWS(t, ctx, c); websocket.CloseStatus(err) != 4503 {
		t.Errorf("close = %v, want 4503", err)
	}

	// The buffered form of the same failure is a plain 503.
	e.expectError(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"true"}`), http.StatusServiceUnavailable, codeUnavailable)
}

func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

func TestExecStreamClientDisconnectKillsCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body := `{"command":"echo $$ > shell.pid; sleep 60 & echo $! > child.pid; echo started; wait","stream":true}`
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/api/v1/sandboxes/"+sb.ID+"/exec", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if l := readLine(t, bufio.NewReader(resp.Body)); l.Data != "started\n" {
		t.Fatalf("first line %+v", l)
	}
	pids := e.pids(sb.ID, "shell.pid", "child.pid")
	cancel()
	e.waitFor("the command's processes to die", func() bool { return processGone(pids[0]) && processGone(pids[1]) })
}

// pids reads process IDs the command wrote into files in /workspace.
func (e *testEnv) pids(id string, files ...string) []int {
	e.t.Helper()
	var out []int
	for _, f := range files {
		b := readAll(e.t, e.call("GET", "/api/v1/sandboxes/"+id+"/files?path=/workspace/"+f, nil))
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			e.t.Fatalf("pid file %s = %q", f, b)
		}
		if processGone(pid) {
			e.t.Fatalf("process %d from %s is not running before the disconnect", pid, f)
		}
		out = append(out, pid)
	}
	return out
}

func wsURL(e *testEnv, id string) string {
	return "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/api/v1/sandboxes/" + id + "/exec/ws"
}

func readWS(t *testing.T, ctx context.Context, c *websocket.Conn) (ndjsonLine, error) {
	t.Helper()
	typ, msg, err := c.Read(ctx)
	if err != nil {
		return ndjsonLine{}, err
	}
	if typ != websocket.MessageText {
		t.Errorf("message type %v, want text", typ)
	}
	var l ndjsonLine
	if err := json.Unmarshal(msg, &l); err != nil {
		t.Fatalf("message %q: %v", msg, err)
	}
	return l, nil
}

func TestExecWebSocket(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	start := time.Now()
	c, _, err := websocket.Dial(ctx, wsURL(e, sb.ID), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"command":"echo a; sleep 2; echo b >&2; exit 4"}`)); err != nil {
		t.Fatal(err)
	}
	first, err := readWS(t, ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got > 1500*time.Millisecond {
		t.Errorf("first message after %s", got)
	}
	if first.Stream != "stdout" || first.Data != "a\n" {
		t.Errorf("first = %+v", first)
	}
	second, err := readWS(t, ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if second.Stream != "stderr" || second.Data != "b\n" || time.Since(start) < 2*time.Second {
		t.Errorf("second = %+v after %s", second, time.Since(start))
	}
	exit, err := readWS(t, ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Type != "exit" || exit.ExitCode == nil || *exit.ExitCode != 4 {
		t.Errorf("exit = %+v", exit)
	}
	if _, err := readWS(t, ctx, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after exit: %v, want a normal close", err)
	}
}

func TestExecWebSocketErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withOptions(func(o *Options) { o.APIKey = "k" }))
	sb := e.spawn(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	auth := &websocket.DialOptions{HTTPHeader: http.Header{"X-Api-Key": {"k"}}}

	t.Run("unknown sandbox is refused before the upgrade", func(t *testing.T) {
		_, resp, err := websocket.Dial(ctx, wsURL(e, "sb-0000000000000000"), auth)
		if err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("dial = %v, %v; want a 404", resp, err)
		}
	})
	t.Run("a plain GET is told to upgrade", func(t *testing.T) {
		e.expectError(e.call("GET", "/api/v1/sandboxes/"+sb.ID+"/exec/ws", nil), http.StatusBadRequest, codeBadRequest)
	})
	t.Run("no API key", func(t *testing.T) {
		_, resp, err := websocket.Dial(ctx, wsURL(e, sb.ID), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("dial = %v, %v; want a 401", resp, err)
		}
	})
	for _, tc := range []struct {
		name, msg string
		code      string
		close     websocket.StatusCode
	}{
		{"malformed request", `{"command":`, codeBadRequest, 4400},
		{"unknown field", `{"command":"true","nope":1}`, codeBadRequest, 4400},
		{"missing command", `{}`, codeBadRequest, 4400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := websocket.Dial(ctx, wsURL(e, sb.ID), auth)
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageText, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			l, err := readWS(t, ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if l.Type != "error" || l.Code != tc.code || l.Message == "" {
				t.Errorf("frame = %+v", l)
			}
			if _, err := readWS(t, ctx, c); websocket.CloseStatus(err) != tc.close {
				t.Errorf("close = %v, want %d", err, tc.close)
			}
		})
	}
}

func TestExecWebSocketClientDisconnectKillsCommand(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	sb := e.spawn(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL(e, sb.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	msg := `{"command":"echo $$ > shell.pid; sleep 60 & echo $! > child.pid; echo started; wait"}`
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if l, err := readWS(t, ctx, c); err != nil || l.Data != "started\n" {
		t.Fatalf("first = %+v, %v", l, err)
	}
	pids := e.pids(sb.ID, "shell.pid", "child.pid")
	_ = c.CloseNow()
	e.waitFor("the command's processes to die", func() bool { return processGone(pids[0]) && processGone(pids[1]) })
}

// A server-wide WriteTimeout sized for ordinary requests must not cut off
// streams, long buffered commands or downloads.
func TestLongRequestsOutliveServerWriteTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(s *envSetup) {
		s.server = func(hs *http.Server) { hs.WriteTimeout = 300 * time.Millisecond }
	})
	sb := e.spawn(nil)
	path := "/api/v1/sandboxes/" + sb.ID + "/exec"

	resp := e.call("POST", path, `{"command":"echo a; sleep 1; echo b","stream":true}`)
	defer resp.Body.Close()
	out, _, last := readStream(t, bufio.NewReader(resp.Body))
	if out != "a\nb\n" || last.Type != "exit" {
		t.Errorf("stream: out %q, last %+v", out, last)
	}
	var res execResultJSON
	e.expectJSON(e.call("POST", path, `{"command":"sleep 1; echo done"}`), http.StatusOK, &res)
	if res.Stdout != "done\n" {
		t.Errorf("buffered: %+v", res)
	}
}

// ReadFile of agentLostProvider hands back a reader whose first read
// fails, as a broken agent stream would.
func (p agentLostProvider) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	if _, err := p.Provider.StatFile(ctx, id, path); err != nil {
		return nil, err
	}
	return io.NopCloser(failingReader{}), nil
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) {
	return 0, errdefs.New(errdefs.ErrProviderUnavailable, "lost the connection to the agent")
}

func TestReadFileFailingAtOnceGetsAnErrorBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withAgentLostProvider())
	sb := e.spawn(map[string]string{"provider": "lossy"})
	base := "/api/v1/sandboxes/" + sb.ID + "/files"
	e.expectJSON(e.call("POST", base, `{"path":"/workspace/a.txt","content":"x"}`), http.StatusOK, nil)
	e.expectError(e.call("GET", base+"?path=/workspace/a.txt", nil), http.StatusServiceUnavailable, codeUnavailable)
}
