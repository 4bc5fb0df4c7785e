package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// TerminalProtocol is the WebSocket subprotocol of the terminal route.
const TerminalProtocol = "stacyvm.terminal.v1"

// TerminalOptions start an interactive session.
type TerminalOptions struct {
	// Command is a shell string; "" starts the sandbox's login shell.
	Command    string
	WorkDir    string
	Rows, Cols uint16
}

// Terminal is an interactive session in a sandbox, over the API's
// terminal WebSocket. It implements provider.Terminal: Read returns the
// terminal's output and io.EOF when the program has exited; Wait then
// returns its status. Close hangs up, which kills the session.
type Terminal struct {
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc

	pending []byte

	endOnce sync.Once
	ended   chan struct{}
	status  provider.ExitStatus
	err     error
}

var _ provider.Terminal = (*Terminal)(nil)

// OpenTerminal starts an interactive session in sandbox id. ctx bounds the
// handshake; the session lasts until the program exits or Close.
func (cl *Client) OpenTerminal(ctx context.Context, id string, opts TerminalOptions) (*Terminal, error) {
	if err := checkID("sandbox id", id); err != nil {
		return nil, err
	}
	u := *cl.base
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	default:
		u.Scheme = "ws"
	}
	u.RawPath = cl.base.EscapedPath() + APIPrefix + "/sandboxes/" + seg(id) + "/terminal"
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("stacyvm: bad sandbox id %q: %w", id, err)
	}
	u.Path = p
	q := url.Values{}
	if opts.Command != "" {
		q.Set("command", opts.Command)
	}
	if opts.WorkDir != "" {
		q.Set("workdir", opts.WorkDir)
	}
	if opts.Rows > 0 && opts.Cols > 0 {
		q.Set("rows", strconv.Itoa(int(opts.Rows)))
		q.Set("cols", strconv.Itoa(int(opts.Cols)))
	}
	u.RawQuery = q.Encode()
	h := http.Header{}
	h.Set("User-Agent", cl.userAgent)
	if cl.apiKey != "" {
		h.Set("X-API-Key", cl.apiKey)
	}
	if cl.userID != "" {
		h.Set("X-User-ID", cl.userID)
	}
	if rid := RequestID(ctx); rid != "" {
		h.Set("X-Request-ID", rid)
	}
	// The session outlives ctx, which bounds only the handshake.
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	c, resp, err := websocket.Dial(lctx, u.String(), &websocket.DialOptions{
		HTTPClient:   cl.hc,
		HTTPHeader:   h,
		Subprotocols: []string{TerminalProtocol},
	})
	if !stop() {
		cancel()
		if err == nil {
			_ = c.CloseNow()
		}
		return nil, fmt.Errorf("stacyvm: terminal: %w", context.Cause(ctx))
	}
	if err != nil {
		cancel()
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols && resp.Body != nil {
			return nil, parseError(resp, errdefs.ErrSandboxNotFound)
		}
		return nil, fmt.Errorf("stacyvm: terminal: %w", err)
	}
	c.SetReadLimit(1 << 20)
	return &Terminal{c: c, ctx: lctx, cancel: cancel, ended: make(chan struct{})}, nil
}

func (t *Terminal) end(st provider.ExitStatus, err error) {
	t.endOnce.Do(func() {
		t.status, t.err = st, err
		close(t.ended)
	})
}

// terminalMessage is a server's text message.
type terminalMessage struct {
	Type     string `json:"type"`
	ExitCode *int   `json:"exit_code"`
	errorBody
}

func (t *Terminal) Read(p []byte) (int, error) {
	for len(t.pending) == 0 {
		typ, msg, err := t.c.Read(t.ctx)
		if err != nil {
			select {
			case <-t.ended:
				return 0, io.EOF
			default:
			}
			err = fmt.Errorf("stacyvm: terminal connection ended: %w", err)
			t.end(provider.ExitStatus{ExitCode: -1}, err)
			return 0, err
		}
		if typ == websocket.MessageBinary {
			t.pending = msg
			break
		}
		var m terminalMessage
		if json.Unmarshal(msg, &m) != nil {
			continue
		}
		switch m.Type {
		case "exit":
			code := -1
			if m.ExitCode != nil {
				code = *m.ExitCode
			}
			t.end(provider.ExitStatus{ExitCode: code}, nil)
			return 0, io.EOF
		case "error":
			e := &Error{Code: m.Code, Message: m.Message, RequestID: m.RequestID, Hint: m.Hint}
			e.class = classify(0, m.Code, nil)
			if e.class == errdefs.ErrInvalidArgument {
				// A refused control message; the session goes on.
				continue
			}
			t.end(provider.ExitStatus{ExitCode: -1}, e)
			return 0, io.EOF
		}
	}
	n := copy(p, t.pending)
	t.pending = t.pending[n:]
	return n, nil
}

func (t *Terminal) Write(p []byte) (int, error) {
	if err := t.c.Write(t.ctx, websocket.MessageBinary, p); err != nil {
		return 0, fmt.Errorf("stacyvm: terminal: %w", err)
	}
	return len(p), nil
}

func (t *Terminal) control(v any) error {
	b, _ := json.Marshal(v)
	if err := t.c.Write(t.ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("stacyvm: terminal: %w", err)
	}
	return nil
}

// Resize tells the terminal its new size.
func (t *Terminal) Resize(rows, cols uint16) error {
	if rows == 0 || cols == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "terminal size %dx%d: rows and cols must be positive", rows, cols)
	}
	return t.control(map[string]any{"type": "resize", "rows": rows, "cols": cols})
}

// Signal sends a signal (INT, TERM, …) to the terminal's foreground job.
func (t *Terminal) Signal(name string) error {
	if err := provider.CheckTerminalSignal(name); err != nil {
		return err
	}
	return t.control(map[string]string{"type": "signal", "signal": name})
}

// Wait returns the program's exit status once Read has returned io.EOF.
func (t *Terminal) Wait() (provider.ExitStatus, error) {
	<-t.ended
	return t.status, t.err
}

// Close hangs up; the server kills the session's processes.
func (t *Terminal) Close() error {
	err := t.c.CloseNow()
	t.cancel()
	t.end(provider.ExitStatus{ExitCode: -1}, errors.New("stacyvm: terminal closed"))
	return err
}
