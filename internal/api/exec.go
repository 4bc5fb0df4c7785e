package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

type execBody struct {
	Command string            `json:"command"`
	Args    []string          `json:"args"`
	Env     map[string]string `json:"env"`
	WorkDir string            `json:"workdir"`
	Timeout *durationString   `json:"timeout"`
	Stream  bool              `json:"stream"`
}

func (b execBody) request() (orchestrator.ExecRequest, error) {
	timeout, err := parseDuration("timeout", b.Timeout)
	if err != nil {
		return orchestrator.ExecRequest{}, err
	}
	return orchestrator.ExecRequest{Command: b.Command, Args: b.Args, Env: b.Env, WorkDir: b.WorkDir, Timeout: timeout}, nil
}

// timeoutBody is the 408 of a buffered exec: the contract's error body
// plus, as extensions, what the command printed before it was killed.
type timeoutBody struct {
	errorBody
	execResultJSON
}

func (s *server) exec(w http.ResponseWriter, r *http.Request) {
	var b execBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := b.request()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := r.PathValue("id")
	// A command may run for up to the configured maximum timeout.
	clearDeadlines(w, false, true)
	if b.Stream {
		s.execNDJSON(w, r, id, req)
		return
	}
	res, err := s.m.Exec(r.Context(), id, req)
	if err != nil {
		if errdefs.Classify(err) == errdefs.ErrExecTimeout {
			status, body := s.describe(r.Context(), err)
			writeJSON(w, status, timeoutBody{errorBody: body, execResultJSON: execResultOut(res)})
			return
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, execResultOut(res))
}

// The stream frames: one NDJSON line or one WebSocket text message each.
type chunkFrame struct {
	Stream string `json:"stream"`
	Data   string `json:"data"`
}

type exitFrame struct {
	Type     string `json:"type"`
	ExitCode int    `json:"exit_code"`
	TimedOut bool   `json:"timed_out,omitempty"`
	Duration string `json:"duration,omitempty"` // extension
}

type errorFrame struct {
	Type string `json:"type"`
	errorBody
}

// frameSink delivers frames to a client, each as soon as it is sent.
type frameSink interface {
	send(v any) error
}

func marshalFrame(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

// ndjsonSink writes each frame under a deadline: a client that stops
// reading fails the write, which stops the command, instead of holding
// the handler (and the command) forever.
type ndjsonSink struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (n *ndjsonSink) send(v any) error {
	line, err := marshalFrame(v)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.rc.SetWriteDeadline(time.Now().Add(n.timeout)); err != nil {
		return err
	}
	if _, err := n.w.Write(line); err != nil {
		return err
	}
	return n.rc.Flush()
}

// wsSink writes each frame under a deadline, like ndjsonSink; a write
// whose context ends closes the connection.
type wsSink struct {
	ctx     context.Context
	c       *websocket.Conn
	timeout time.Duration
}

func (ws *wsSink) send(v any) error {
	msg, err := marshalFrame(v)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ws.ctx, ws.timeout)
	defer cancel()
	return ws.c.Write(ctx, websocket.MessageText, bytes.TrimSuffix(msg, []byte("\n")))
}

// chunker turns one output stream into chunk frames. It never splits a
// UTF-8 sequence across two frames: an incomplete sequence at the end of
// a write waits for the bytes that complete it.
type chunker struct {
	stream  string
	sink    frameSink
	pending []byte
}

func (c *chunker) Write(p []byte) (int, error) {
	data := p
	if len(c.pending) > 0 {
		data = append(c.pending, p...)
		c.pending = nil
	}
	cut := completeUTF8(data)
	if cut < len(data) {
		c.pending = slices.Clone(data[cut:])
	}
	if cut == 0 {
		return len(p), nil
	}
	if err := c.sink.send(chunkFrame{Stream: c.stream, Data: string(data[:cut])}); err != nil {
		return 0, err
	}
	return len(p), nil
}

// flush sends what was held back; at the end of a stream an incomplete
// sequence will never be completed.
func (c *chunker) flush() error {
	if len(c.pending) == 0 {
		return nil
	}
	data := c.pending
	c.pending = nil
	return c.sink.send(chunkFrame{Stream: c.stream, Data: string(data)})
}

// completeUTF8 returns the length of the longest prefix of b that does not
// end inside a UTF-8 sequence that later bytes could complete. Invalid
// bytes count as complete: waiting would not make them valid.
func completeUTF8(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}

// runStream runs a command, sending its output to sink as produced and
// ending with an exit frame (or, for a failure after the start, an error
// frame). It returns the HTTP status of that failure, 0 when there was
// none or the client left.
func (s *server) runStream(ctx context.Context, id string, req orchestrator.ExecRequest, sink frameSink) int {
	stdout := &chunker{stream: "stdout", sink: sink}
	stderr := &chunker{stream: "stderr", sink: sink}
	st, err := s.m.ExecStream(ctx, id, req, stdout, stderr)
	if ctx.Err() != nil {
		return 0 // the client left; its command was cancelled with it
	}
	_ = stdout.flush()
	_ = stderr.flush()
	switch {
	case err == nil:
		_ = sink.send(exitFrame{Type: "exit", ExitCode: st.ExitCode, Duration: st.Duration.String()})
		return 0
	case st.TimedOut || errdefs.Classify(err) == errdefs.ErrExecTimeout:
		timeout := req.Timeout
		if timeout == 0 {
			timeout = s.m.Config().DefaultExecTimeout
		}
		_ = sink.send(chunkFrame{Stream: "stderr", Data: fmt.Sprintf("stacyvm: command timed out after %s and was killed\n", timeout)})
		_ = sink.send(exitFrame{Type: "exit", ExitCode: -1, TimedOut: true, Duration: st.Duration.String()})
		return 0
	}
	status, body := s.describe(ctx, err)
	_ = sink.send(errorFrame{Type: "error", errorBody: body})
	return status
}

// execNDJSON streams a command as NDJSON. Everything that can be refused
// is checked before the 200 is sent, so that a bad request still gets its
// status; the headers then go out at once, so that a quiet command does
// not leave the client waiting for them.
func (s *server) execNDJSON(w http.ResponseWriter, r *http.Request, id string, req orchestrator.ExecRequest) {
	if err := s.m.CheckExec(r.Context(), id, req); err != nil {
		s.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no") // keep nginx from buffering the stream
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		s.log.Debug("flush exec stream", "request_id", requestID(r.Context()), "err", err)
		return
	}
	s.runStream(r.Context(), id, req, &ndjsonSink{w: w, rc: rc, timeout: s.opts.StreamWriteTimeout})
}

// wsFirstMessageTimeout bounds the wait for the exec request after the
// WebSocket handshake.
const wsFirstMessageTimeout = 30 * time.Second

// wsOptions turns off the library's own Origin check: withEdge has
// already refused foreign origins for every upgrade, with the JSON error
// body, under the one rule (the server's own origin or server.cors_origins)
// that the rest of the API follows.
func (s *server) wsOptions() *websocket.AcceptOptions {
	return &websocket.AcceptOptions{InsecureSkipVerify: true}
}

// execWebSocket runs one command over a WebSocket: the first client
// message is the exec body, then the server sends the frames and closes.
// An unknown sandbox is refused before the upgrade, with a plain error
// response. Errors after it are an error frame and a close code of 4000
// plus the HTTP status the error would have had.
func (s *server) execWebSocket(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		s.writeError(w, r, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "this route takes a WebSocket upgrade"),
			"connect with a WebSocket client, or use POST /api/v1/sandboxes/{id}/exec with \"stream\": true"))
		return
	}
	if _, err := s.m.Get(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := websocket.Accept(w, r, s.wsOptions())
	if err != nil {
		s.log.Debug("websocket handshake failed", "request_id", requestID(r.Context()), "err", err)
		return // Accept has answered the request
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(s.opts.MaxBodyBytes)

	ctx := r.Context()
	rctx, cancel := context.WithTimeout(ctx, wsFirstMessageTimeout)
	_, msg, err := c.Read(rctx)
	cancel()
	if err != nil {
		_ = s.closeWS(c, websocket.StatusPolicyViolation, "expected the exec request as the first message")
		return
	}
	sink := &wsSink{ctx: ctx, c: c, timeout: s.opts.StreamWriteTimeout}
	var b execBody
	err = decodeJSON(bytes.NewReader(msg), &b, false)
	var req orchestrator.ExecRequest
	if err == nil {
		req, err = b.request()
	}
	if err != nil {
		status, body := s.describe(ctx, err)
		_ = sink.send(errorFrame{Type: "error", errorBody: body})
		_ = s.closeWS(c, websocket.StatusCode(4000+status), body.Code)
		return
	}
	// From here on the connection is only written; CloseRead answers
	// control frames and cancels ctx when the client goes away, which
	// kills the command.
	ctx = c.CloseRead(ctx)
	sink.ctx = ctx
	if status := s.runStream(ctx, id, req, sink); status != 0 {
		_ = s.closeWS(c, websocket.StatusCode(4000+status), "")
		return
	}
	_ = s.closeWS(c, websocket.StatusNormalClosure, "")
}

// closeWS closes a WebSocket with a reason the client sees, scrubbed like
// every other message.
func (s *server) closeWS(c *websocket.Conn, code websocket.StatusCode, reason string) error {
	return c.Close(code, s.scrub(reason))
}

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
