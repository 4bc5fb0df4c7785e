package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/coder/websocket"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Terminal WebSocket subprotocols. A client offers TerminalProtocol, and
// may offer its API key as KeyProtocolPrefix + base64url(key) (no
// padding): browsers cannot set headers on a WebSocket handshake. The
// server only ever selects TerminalProtocol, so the key is never echoed.
const (
	TerminalProtocol  = "stacyvm.terminal.v1"
	KeyProtocolPrefix = "stacyvm.key."
)

// keyFromSubprotocol returns the API key a WebSocket handshake offers as a
// subprotocol, or "".
func keyFromSubprotocol(r *http.Request) string {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		return ""
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if enc, ok := strings.CutPrefix(strings.TrimSpace(p), KeyProtocolPrefix); ok {
				if b, err := base64.RawURLEncoding.DecodeString(enc); err == nil {
					return string(b)
				}
			}
		}
	}
	return ""
}

// terminalControl is a text message on the terminal WebSocket: resize or
// signal from the client; exit or error from the server.
type terminalControl struct {
	Type     string `json:"type"`
	Rows     uint16 `json:"rows,omitempty"`
	Cols     uint16 `json:"cols,omitempty"`
	Signal   string `json:"signal,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
}

// terminal serves an interactive session over a WebSocket: binary
// messages carry the terminal's bytes both ways, text messages carry JSON
// control messages. The session starts before the upgrade, so a sandbox
// that is missing or has no terminals gets an ordinary error response.
// The socket's end (either side) kills the session's processes.
func (s *server) terminal(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		s.writeError(w, r, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "this route takes a WebSocket upgrade"),
			"connect with a WebSocket client offering the subprotocol "+TerminalProtocol+", or use `stacyvm shell`"))
		return
	}
	q := r.URL.Query()
	req := orchestrator.TerminalRequest{Command: q.Get("command"), WorkDir: q.Get("workdir")}
	for _, f := range []struct {
		name string
		dst  *uint16
	}{{"rows", &req.Rows}, {"cols", &req.Cols}} {
		if !q.Has(f.name) {
			continue
		}
		n, err := strconv.ParseUint(q.Get(f.name), 10, 16)
		if err != nil || n == 0 || n > 1000 {
			s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "%s=%q: want a number from 1 to 1000", f.name, q.Get(f.name)))
			return
		}
		*f.dst = uint16(n)
	}
	term, err := s.m.OpenTerminal(r.Context(), id, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer term.Close()
	opts := s.wsOptions()
	opts.Subprotocols = []string{TerminalProtocol}
	c, err := websocket.Accept(w, r, opts)
	if err != nil {
		s.log.Debug("websocket handshake failed", "request_id", requestID(r.Context()), "err", err)
		return
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(s.opts.MaxBodyBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	// A client that stops reading for StreamWriteTimeout is cut off, as
	// on every stream: its session ends instead of blocking forever.
	write := func(typ websocket.MessageType, b []byte) error {
		wctx, cancel := context.WithTimeout(ctx, s.opts.StreamWriteTimeout)
		defer cancel()
		return c.Write(wctx, typ, b)
	}
	sendControl := func(v any) error {
		b, _ := json.Marshal(v)
		return write(websocket.MessageText, b)
	}
	// The client's messages: keystrokes and control. Its going away ends
	// the session.
	go func() {
		// The client's leaving is marked before the terminal closes, so
		// that the reader below takes the closed terminal for the client
		// gone rather than for a broken session.
		defer term.Close()
		defer cancel()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				if _, err := term.Write(msg); err != nil {
					return
				}
				continue
			}
			if err := s.terminalControl(term, msg); err != nil {
				_, body := s.describe(ctx, err)
				_ = sendControl(errorFrame{Type: "error", errorBody: body})
			}
		}
	}()

	buf := make([]byte, 32<<10)
	for {
		n, rerr := term.Read(buf)
		if n > 0 {
			if err := write(websocket.MessageBinary, buf[:n]); err != nil {
				return
			}
		}
		if rerr != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return // the client left; nobody to tell
	}
	st, err := term.Wait()
	if err != nil {
		status, body := s.describe(ctx, err)
		_ = sendControl(errorFrame{Type: "error", errorBody: body})
		_ = c.Close(websocket.StatusCode(4000+status), body.Code)
		return
	}
	_ = sendControl(terminalControl{Type: "exit", ExitCode: &st.ExitCode})
	_ = c.Close(websocket.StatusNormalClosure, "")
}

func (s *server) terminalControl(term provider.Terminal, msg []byte) error {
	var ctl terminalControl
	if err := json.Unmarshal(msg, &ctl); err != nil {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "terminal control message is not JSON")
	}
	switch ctl.Type {
	case "resize":
		if ctl.Rows == 0 || ctl.Cols == 0 || ctl.Rows > 1000 || ctl.Cols > 1000 {
			return errdefs.New(errdefs.ErrInvalidArgument, "resize to %dx%d: rows and cols must be 1 to 1000", ctl.Rows, ctl.Cols)
		}
		return term.Resize(ctl.Rows, ctl.Cols)
	case "signal":
		return term.Signal(ctl.Signal)
	}
	return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "unknown terminal control message type %q", ctl.Type),
		`send {"type":"resize","rows":R,"cols":C} or {"type":"signal","signal":"INT"}`)
}
