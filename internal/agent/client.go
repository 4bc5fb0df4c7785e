package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/fence"
	"github.com/stacyvm/stacyvm/internal/httpbody"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// Dialer opens a new connection to an agent. The client calls it whenever
// its pool has no idle connection; ctx bounds the dial.
type Dialer func(ctx context.Context) (net.Conn, error)

// Client talks to one agent. It implements provider.Guest and is safe for
// concurrent use; connections are pooled and reused, which is what keeps a
// round trip near a millisecond. Deadlines come only from the contexts
// passed to each call.
type Client struct {
	hc   *http.Client
	tr   *http.Transport
	auth string // Authorization header value; "" when no token
}

// ClientOption configures NewClient.
type ClientOption func(*Client)

// WithToken sends token with every request, for agents started with one
// (ServerOptions.Token).
func WithToken(token string) ClientOption {
	return func(c *Client) {
		if token != "" {
			c.auth = "Bearer " + token
		}
	}
}

var _ provider.Guest = (*Client)(nil)

// The host part of request URLs is never resolved: the dialer decides where
// connections go.
const baseURL = "http://stacyvm-agent"

// NewClient returns a client whose connections come from dial.
func NewClient(dial Dialer, opts ...ClientOption) *Client {
	tr := &http.Transport{
		Proxy: nil, // never route agent traffic through an HTTP proxy from the environment
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	c := &Client{
		tr: tr,
		hc: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Close releases idle connections. In-flight calls are not interrupted; the
// client stays usable and dials again if called.
func (c *Client) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

// Health asks the agent for its version. It fails with
// errdefs.ErrProviderUnavailable when the agent cannot be reached.
func (c *Client) Health(ctx context.Context) (Version, error) {
	var v Version
	err := c.callJSON(ctx, http.MethodGet, pathHealth, nil, nil, &v)
	return v, err
}

// WaitReady polls Health until the agent answers, for providers right after
// they spawn a sandbox. It fails with errdefs.ErrProviderUnavailable
// (wrapping the last failure and ctx's error) once ctx is done, at once if
// the agent speaks another protocol version, and at once with the agent's
// own error if it answers but refuses (a wrong token).
func (c *Client) WaitReady(ctx context.Context) error {
	delay := 2 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := c.Health(actx)
		cancel()
		if err == nil {
			if v.Protocol != ProtocolVersion {
				return errdefs.New(errdefs.ErrProviderUnavailable,
					"agent %s speaks protocol %d, this client speaks %d", v.Version, v.Protocol, ProtocolVersion)
			}
			return nil
		}
		if class := errdefs.Classify(err); class != nil && class != errdefs.ErrProviderUnavailable {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return errdefs.Wrap(errdefs.ErrProviderUnavailable, errors.Join(err, context.Cause(ctx)), "agent did not become ready")
		case <-t.C:
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// Exec runs req in the sandbox, streaming its output into stdout and
// stderr as it arrives. The writers are called from this goroutine only.
// If a writer fails, or ctx ends, the connection is dropped, which makes
// the agent kill the command's process group.
func (c *Client) Exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	body, err := json.Marshal(execRequestToWire(req))
	if err != nil {
		return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "encoding exec request")
	}
	resp, err := c.do(ctx, http.MethodPost, pathExec, nil, bytes.NewReader(body), contentTypeJSON)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	defer resp.Body.Close()

	fr := NewFrameReader(resp.Body, MaxFramePayload)
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
			// Drain the chunked terminator so the connection returns to
			// the pool instead of being closed.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
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

// WriteFile streams r to path in the sandbox with no size limit. Only
// reads of r that happen before WriteFile returns are made: net/http may
// keep reading a request body after the response arrived, so the body is
// fenced off when the call ends.
func (c *Client) WriteFile(ctx context.Context, path string, r io.Reader, mode fs.FileMode) error {
	mode, err := provider.NormalizeMode(mode)
	if err != nil {
		return fmt.Errorf("agent write %s: %w", path, err)
	}
	body := fence.NewReader(r)
	defer body.Fence()
	q := url.Values{"path": {path}, "mode": {FormatMode(mode)}}
	resp, err := c.do(ctx, http.MethodPut, pathFiles, q, body, contentTypeOctets)
	if rerr := body.Err(); rerr != nil {
		// The caller's reader failed; that, not the broken request, is
		// the cause worth reporting.
		return fmt.Errorf("agent write %s: reading source: %w", path, rerr)
	}
	if err != nil {
		return err
	}
	return httpbody.Drain(resp)
}

// ReadFile opens path in the sandbox for streaming. The reader stays valid
// while ctx does; the caller must Close it. A transfer cut short fails with
// errdefs.ErrProviderUnavailable rather than ending early with io.EOF.
func (c *Client) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, pathFiles, url.Values{"path": {path}}, nil, "")
	if err != nil {
		return nil, err
	}
	return &httpbody.Download{Body: resp.Body, Classify: func(err error) error {
		return c.streamErr(ctx, err, "file contents")
	}}, nil
}

func (c *Client) ListFiles(ctx context.Context, path string) ([]provider.FileInfo, error) {
	var ws []wireFileInfo
	if err := c.callJSON(ctx, http.MethodGet, pathFilesList, url.Values{"path": {path}}, nil, &ws); err != nil {
		return nil, err
	}
	out := make([]provider.FileInfo, 0, len(ws))
	for _, w := range ws {
		fi, err := fileInfoFromWire(w)
		if err != nil {
			return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent listed a malformed file entry")
		}
		out = append(out, fi)
	}
	return out, nil
}

func (c *Client) StatFile(ctx context.Context, path string) (provider.FileInfo, error) {
	var w wireFileInfo
	if err := c.callJSON(ctx, http.MethodGet, pathFilesStat, url.Values{"path": {path}}, nil, &w); err != nil {
		return provider.FileInfo{}, err
	}
	fi, err := fileInfoFromWire(w)
	if err != nil {
		return provider.FileInfo{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent sent a malformed file entry")
	}
	return fi, nil
}

func (c *Client) DeleteFile(ctx context.Context, path string, recursive bool) error {
	q := url.Values{"path": {path}, "recursive": {strconv.FormatBool(recursive)}}
	return c.callJSON(ctx, http.MethodDelete, pathFiles, q, nil, nil)
}

func (c *Client) MoveFile(ctx context.Context, oldPath, newPath string) error {
	return c.callJSON(ctx, http.MethodPost, pathFilesMove, nil, wireMove{OldPath: oldPath, NewPath: newPath}, nil)
}

// Chmod sets the mode of path in the sandbox. mode is anything
// provider.NormalizeMode accepts; the rest is refused here, before the
// wire, whose mode string has room for nothing else.
func (c *Client) Chmod(ctx context.Context, path string, mode fs.FileMode) error {
	mode, err := provider.NormalizeMode(mode)
	if err != nil {
		return fmt.Errorf("agent chmod %s: %w", path, err)
	}
	return c.callJSON(ctx, http.MethodPost, pathFilesMod, nil, wireChmod{Path: path, Mode: FormatMode(mode)}, nil)
}

// Refresh gives a guest restored from a snapshot fresh entropy and the
// host's wall-clock time (POST /v1/guest/refresh): the agent mixes entropy
// into the guest kernel's pool with credit, forces its CRNG to reseed, and
// corrects the guest's clock. Only an agent that manages its guest (a
// microVM's init) does this; any other answers errdefs.ErrUnimplemented, as
// does an agent that predates the route. Fewer than MinRefreshEntropy
// bytes is errdefs.ErrInvalidArgument.
func (c *Client) Refresh(ctx context.Context, entropy []byte, now time.Time) error {
	return c.callJSON(ctx, http.MethodPost, pathRefresh, nil, wireRefresh{Entropy: entropy, UnixNanos: now.UnixNano()}, nil)
}

func (c *Client) Glob(ctx context.Context, pattern string) ([]string, error) {
	var matches []string
	if err := c.callJSON(ctx, http.MethodGet, pathFilesGlob, url.Values{"pattern": {pattern}}, nil, &matches); err != nil {
		return nil, err
	}
	return matches, nil
}

// callJSON sends in (when non-nil) as JSON and decodes the reply into out
// (when non-nil).
func (c *Client) callJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "encoding request")
		}
		body, ctype = bytes.NewReader(b), contentTypeJSON
	}
	resp, err := c.do(ctx, method, path, q, body, ctype)
	if err != nil {
		return err
	}
	if out == nil {
		return httpbody.Drain(resp)
	}
	defer resp.Body.Close()
	// Responses are decoded leniently (unknown fields ignored) so that a
	// newer agent may add fields.
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return c.streamErr(ctx, err, "reply to "+path)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	return nil
}

// do sends one request and turns transport failures and error replies into
// classified errors. On success the caller owns resp.Body.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string) (*http.Response, error) {
	u := baseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "building agent request")
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportErr(ctx, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, c.replyErr(ctx, resp)
	}
	return resp, nil
}

// transportErr classifies a failure to exchange a request: the caller's
// own cancellation stays recognisable with errors.Is(err, context.Canceled)
// and friends; anything else means the agent is unreachable.
func (c *Client) transportErr(ctx context.Context, err error) error {
	// url.Error repeats the method and the meaningless URL.
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	if cerr := context.Cause(ctx); cerr != nil {
		return fmt.Errorf("agent request abandoned: %w", cerr)
	}
	if errdefs.Classify(err) != nil {
		return err // a dialer already classified it
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent unreachable")
}

// streamErr classifies a failure while reading a reply body.
func (c *Client) streamErr(ctx context.Context, err error, what string) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return fmt.Errorf("agent %s abandoned: %w", what, cerr)
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent connection broke reading %s", what)
}

func (c *Client) replyErr(ctx context.Context, resp *http.Response) error {
	var we wireError
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&we); err != nil || we.Class == "" {
		if cerr := context.Cause(ctx); cerr != nil {
			return fmt.Errorf("agent request abandoned: %w", cerr)
		}
		// Whatever answered is not an agent speaking this protocol.
		return errdefs.New(errdefs.ErrProviderUnavailable, "agent answered %s without a protocol error body", resp.Status)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	return errorFromWire(we)
}
