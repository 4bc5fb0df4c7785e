package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// pathTerminal starts a terminal session; see docs/agent-protocol.md.
const pathTerminal = "/v1/terminal"

// upgradeTerminal is the protocol a terminal request upgrades the
// connection to: frames both ways.
const upgradeTerminal = "stacyvm-terminal"

// Frame kinds the host sends on a terminal connection. The agent sends
// FrameStdout (terminal output), then at most one FrameError and the
// FrameExit, as exec does.
const (
	FrameStdin  FrameKind = 5 // payload: raw bytes typed into the terminal
	FrameResize FrameKind = 6 // payload: JSON {rows, cols}
	FrameSignal FrameKind = 7 // payload: JSON {signal}: a name such as "INT"
)

// wireTerminalRequest is the JSON in the "spec" query parameter of
// GET /v1/terminal.
type wireTerminalRequest struct {
	Argv    []string          `json:"argv,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	WorkDir string            `json:"workdir,omitempty"`
	Rows    uint16            `json:"rows,omitempty"`
	Cols    uint16            `json:"cols,omitempty"`
}

type wireResize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

type wireSignal struct {
	Signal string `json:"signal"`
}

// terminal starts the session, then upgrades the connection. A request
// that cannot start is answered with an ordinary error reply.
func (s *server) terminal(w http.ResponseWriter, r *http.Request) {
	tg, ok := s.g.(provider.TerminalGuest)
	if !ok {
		s.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "this agent has no terminals"))
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), upgradeTerminal) {
		s.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "terminal: send Upgrade: %s", upgradeTerminal))
		return
	}
	var wr wireTerminalRequest
	if err := decodeJSON(strings.NewReader(r.URL.Query().Get("spec")), s.maxJSON, &wr); err != nil {
		s.fail(w, r, err)
		return
	}
	term, err := tg.OpenTerminal(r.Context(), provider.TerminalRequest{
		Argv: wr.Argv, Env: wr.Env, WorkDir: wr.WorkDir, Rows: wr.Rows, Cols: wr.Cols,
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer term.Close()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.fail(w, r, fmt.Errorf("terminal: taking over the connection: %w", err))
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeTerminal + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}

	// The host's frames: input, resizes, signals. The connection's end
	// (the host hung up) ends the session.
	go func() {
		defer term.Close()
		fr := NewFrameReader(brw.Reader, MaxFramePayload)
		for {
			f, err := fr.Next()
			if err != nil {
				return
			}
			switch f.Kind {
			case FrameStdin:
				if _, err := term.Write(f.Payload); err != nil {
					return
				}
			case FrameResize:
				var rs wireResize
				if json.Unmarshal(f.Payload, &rs) == nil {
					if err := term.Resize(rs.Rows, rs.Cols); err != nil {
						s.log.Debug("terminal resize failed", "err", err)
					}
				}
			case FrameSignal:
				var sg wireSignal
				if json.Unmarshal(f.Payload, &sg) == nil {
					if err := term.Signal(sg.Signal); err != nil {
						s.log.Debug("terminal signal failed", "err", err)
					}
				}
			}
		}
	}()

	fw := &frameWriter{w: conn}
	buf := make([]byte, maxOutputChunk)
	for {
		n, rerr := term.Read(buf)
		if n > 0 {
			if fw.writeRaw(FrameStdout, buf[:n]) != nil {
				return
			}
		}
		if rerr != nil {
			break
		}
	}
	st, err := term.Wait()
	if err != nil {
		payload, _ := json.Marshal(toWireError(err))
		_ = fw.writeRaw(FrameError, payload)
	}
	payload, _ := json.Marshal(wireExit{ExitCode: st.ExitCode, TimedOut: st.TimedOut, DurationNS: int64(st.Duration)})
	_ = fw.writeRaw(FrameExit, payload)
}

// writeRaw writes one frame unbuffered, for a hijacked connection that has
// no response to flush.
func (fw *frameWriter) writeRaw(kind FrameKind, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.buf = AppendFrame(fw.buf[:0], kind, payload)
	_, err := fw.w.Write(fw.buf)
	return err
}

// OpenTerminal starts a terminal session in the sandbox. ctx bounds the
// start; the session lasts until it ends or Close is called, which kills
// every process of it.
func (c *Client) OpenTerminal(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
	spec, err := json.Marshal(wireTerminalRequest{Argv: req.Argv, Env: req.Env, WorkDir: req.WorkDir, Rows: req.Rows, Cols: req.Cols})
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "encoding terminal request")
	}
	// The connection outlives ctx: only the handshake is bounded by it.
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	hreq, err := http.NewRequestWithContext(lctx, http.MethodGet, baseURL+pathTerminal+"?"+url.Values{"spec": {string(spec)}}.Encode(), nil)
	if err != nil {
		cancel()
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "building agent request")
	}
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", upgradeTerminal)
	if c.auth != "" {
		hreq.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(hreq)
	if !stop() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, fmt.Errorf("agent terminal abandoned: %w", context.Cause(ctx))
	}
	if err != nil {
		cancel()
		return nil, c.transportErr(ctx, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		cancel()
		if resp.StatusCode/100 == 2 {
			return nil, errdefs.New(errdefs.ErrProviderUnavailable, "agent answered a terminal request with %s (too old for terminals?)", resp.Status)
		}
		return nil, c.replyErr(ctx, resp)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		cancel()
		return nil, errdefs.New(errdefs.ErrProviderUnavailable, "agent terminal: the upgraded connection is not writable")
	}
	return &remoteTerminal{rw: rw, fr: NewFrameReader(rw, MaxFramePayload), cancel: cancel, exited: make(chan struct{})}, nil
}

// remoteTerminal is a provider.Terminal over an agent connection.
type remoteTerminal struct {
	rw     io.ReadWriteCloser
	fr     *FrameReader
	cancel context.CancelFunc

	pending []byte // output of a frame larger than the caller's buffer

	wmu  sync.Mutex
	wbuf []byte

	exitOnce sync.Once
	exited   chan struct{}
	status   provider.ExitStatus
	err      error
}

func (t *remoteTerminal) end(st provider.ExitStatus, err error) {
	t.exitOnce.Do(func() {
		t.status, t.err = st, err
		close(t.exited)
	})
}

func (t *remoteTerminal) Read(p []byte) (int, error) {
	if len(t.pending) > 0 {
		n := copy(p, t.pending)
		t.pending = t.pending[n:]
		return n, nil
	}
	var execErr error
	for {
		f, err := t.fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			err = errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent terminal connection broke")
			t.end(provider.ExitStatus{ExitCode: -1}, err)
			return 0, err
		}
		switch f.Kind {
		case FrameStdout:
			n := copy(p, f.Payload)
			t.pending = append(t.pending[:0], f.Payload[n:]...)
			return n, nil
		case FrameError:
			var we wireError
			if json.Unmarshal(f.Payload, &we) == nil {
				execErr = errorFromWire(we)
			}
		case FrameExit:
			var we wireExit
			if err := json.Unmarshal(f.Payload, &we); err != nil {
				err = errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent sent a malformed exit frame")
				t.end(provider.ExitStatus{ExitCode: -1}, err)
				return 0, err
			}
			t.end(provider.ExitStatus{ExitCode: we.ExitCode, TimedOut: we.TimedOut, Duration: time.Duration(we.DurationNS)}, execErr)
			return 0, io.EOF
		}
	}
}

func (t *remoteTerminal) send(kind FrameKind, payload []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.wbuf = AppendFrame(t.wbuf[:0], kind, payload)
	if _, err := t.rw.Write(t.wbuf); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent terminal connection broke")
	}
	return nil
}

func (t *remoteTerminal) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += maxOutputChunk {
		if err := t.send(FrameStdin, p[off:min(len(p), off+maxOutputChunk)]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func (t *remoteTerminal) Resize(rows, cols uint16) error {
	if rows == 0 || cols == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "terminal: size %dx%d: rows and cols must be positive", rows, cols)
	}
	b, _ := json.Marshal(wireResize{Rows: rows, Cols: cols})
	return t.send(FrameResize, b)
}

func (t *remoteTerminal) Signal(name string) error {
	if err := provider.CheckTerminalSignal(name); err != nil {
		return err
	}
	b, _ := json.Marshal(wireSignal{Signal: name})
	return t.send(FrameSignal, b)
}

func (t *remoteTerminal) Wait() (provider.ExitStatus, error) {
	<-t.exited
	return t.status, t.err
}

// Close hangs up, which makes the agent kill the session.
func (t *remoteTerminal) Close() error {
	err := t.rw.Close()
	t.cancel()
	t.end(provider.ExitStatus{ExitCode: -1}, errdefs.New(errdefs.ErrConflict, "terminal closed before it ended"))
	return err
}

var _ provider.TerminalGuest = (*Client)(nil)
