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

// pathExecStdin runs a command with an open standard input and signals;
// see docs/agent-protocol.md. A plain exec (neither) stays POST /v1/exec,
// which costs one request and no upgrade.
const pathExecStdin = "/v1/exec/stdin"

// upgradeExec is the protocol an exec with stdin upgrades the connection
// to: frames both ways.
const upgradeExec = "stacyvm-exec"

// FrameStdinClose, from the host, closes the command's standard input (its
// payload is empty). The host sends FrameStdin with the input's bytes
// before it.
const FrameStdinClose FrameKind = 8

// execStdin starts the command on an upgraded connection: the host's
// FrameStdin frames are its input and FrameStdinClose ends it; the agent
// sends output, error and exit frames as on POST /v1/exec. The host
// hanging up kills the command.
func (s *server) execStdin(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), upgradeExec) {
		s.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "exec with stdin: send Upgrade: %s", upgradeExec))
		return
	}
	req, err := DecodeExecRequest(strings.NewReader(r.URL.Query().Get("spec")), s.maxJSON)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.fail(w, r, fmt.Errorf("exec with stdin: taking over the connection: %w", err))
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeExec + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	pr, pw := io.Pipe()
	// Once the command has ended nobody reads the pipe: a write blocked in
	// it returns, and so does the frame reader below.
	defer pr.Close()
	sigs := make(chan string)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		fr := NewFrameReader(brw.Reader, MaxFramePayload)
		for {
			f, err := fr.Next()
			if err != nil {
				// The host hung up (or the command ended and the
				// connection closed): the command, if any, is killed.
				pw.CloseWithError(io.ErrUnexpectedEOF)
				cancel()
				return
			}
			switch f.Kind {
			case FrameStdin:
				if _, err := pw.Write(f.Payload); err != nil {
					// The command stopped reading: drop the rest, but keep
					// watching the connection.
					continue
				}
			case FrameStdinClose:
				pw.Close()
			case FrameSignal:
				var sg wireSignal
				if json.Unmarshal(f.Payload, &sg) == nil && provider.CheckTerminalSignal(sg.Signal) == nil {
					select {
					case sigs <- sg.Signal:
					case <-ctx.Done(): // the command has ended
					}
				}
			}
		}
	}()

	req.Stdin, req.Signals = pr, sigs
	fw := &frameWriter{w: conn}
	st, err := s.g.Exec(ctx, req, fw.stream(FrameStdout), fw.stream(FrameStderr))
	cancel()   // a signal frame waiting for the command gives up
	pr.Close() // and so does input the command will never read
	if err != nil {
		code, _ := errdefs.CodeAndStatus(err, classStatus)
		s.log.Debug("exec with stdin failed", "argv0", req.Argv[0], "class", code, "err", err)
		payload, _ := json.Marshal(toWireError(err))
		_ = fw.writeRaw(FrameError, payload)
	}
	payload, _ := json.Marshal(wireExit{ExitCode: st.ExitCode, TimedOut: st.TimedOut, DurationNS: int64(st.Duration)})
	_ = fw.writeRaw(FrameExit, payload)
	fw.close()
	// Closing while the host's frames (input it sent after the command
	// ended) are unread could reset the connection before the host has
	// read the exit frame: half-close, and let the host hang up first.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	select {
	case <-readerDone:
	case <-time.After(5 * time.Second):
	}
}

// execStdin is Exec for a request with Stdin or Signals: an upgraded
// connection that carries the input and the signals as frames while the
// output comes back. Without Stdin the input is closed at once (the null
// device's EOF).
func (c *Client) execStdin(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	spec, err := json.Marshal(execRequestToWire(req))
	if err != nil {
		return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "encoding exec request")
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+pathExecStdin+"?"+url.Values{"spec": {string(spec)}}.Encode(), nil)
	if err != nil {
		return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "building agent request")
	}
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", upgradeExec)
	if c.auth != "" {
		hreq.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		return provider.ExitStatus{}, c.transportErr(ctx, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return provider.ExitStatus{}, errdefs.New(errdefs.ErrProviderUnavailable, "agent answered an exec with stdin with %s", resp.Status)
		}
		return provider.ExitStatus{}, c.replyErr(ctx, resp)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrProviderUnavailable, "agent exec: the upgraded connection is not writable")
	}
	defer rw.Close()
	// The caller giving up (or the host's timeout) hangs up, which makes
	// the agent kill the command.
	stop := context.AfterFunc(ctx, func() { rw.Close() })
	defer stop()

	done := make(chan struct{})
	defer close(done)
	var wmu sync.Mutex
	var wbuf []byte
	send := func(kind FrameKind, payload []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		wbuf = AppendFrame(wbuf[:0], kind, payload)
		_, err := rw.Write(wbuf)
		return err
	}
	if req.Signals != nil {
		go func() {
			for {
				select {
				case name := <-req.Signals:
					b, _ := json.Marshal(wireSignal{Signal: name})
					if send(FrameSignal, b) != nil {
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	if req.Stdin == nil {
		// A command that is already over may have closed the connection
		// for writing; its frames are still there to read.
		_ = send(FrameStdinClose, nil)
		return c.readExecFrames(ctx, NewFrameReader(rw, MaxFramePayload), stdout, stderr, func() {})
	}
	go func() {
		buf := make([]byte, maxOutputChunk)
		for {
			n, rerr := req.Stdin.Read(buf)
			select {
			case <-done:
				return
			default:
			}
			if n > 0 && send(FrameStdin, buf[:n]) != nil {
				return
			}
			if rerr != nil {
				_ = send(FrameStdinClose, nil)
				return
			}
		}
	}()
	return c.readExecFrames(ctx, NewFrameReader(rw, MaxFramePayload), stdout, stderr, func() {})
}

// readExecFrames delivers an exec's output frames until its exit frame.
// drained runs after the exit frame, before returning.
func (c *Client) readExecFrames(ctx context.Context, fr *FrameReader, stdout, stderr io.Writer, drained func()) (provider.ExitStatus, error) {
	var execErr error
	for {
		f, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the exit frame never came
			}
			return provider.ExitStatus{}, c.streamErr(ctx, err, "exec output")
		}
		switch f.Kind {
		case FrameStdout, FrameStderr:
			w := stdout
			if f.Kind == FrameStderr {
				w = stderr
			}
			if w == nil {
				continue
			}
			if _, err := w.Write(f.Payload); err != nil {
				return provider.ExitStatus{}, fmt.Errorf("agent exec: writing %s: %w", f.Kind, err)
			}
		case FrameError:
			var we wireError
			if err := json.Unmarshal(f.Payload, &we); err != nil {
				return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent sent a malformed error frame")
			}
			execErr = errorFromWire(we)
		case FrameExit:
			var we wireExit
			if err := json.Unmarshal(f.Payload, &we); err != nil {
				return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent sent a malformed exit frame")
			}
			drained()
			return provider.ExitStatus{
				ExitCode: we.ExitCode,
				TimedOut: we.TimedOut,
				Duration: time.Duration(we.DurationNS),
			}, execErr
		default:
			// A frame kind from a newer agent; ignoring it is the rule.
		}
	}
}
