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
// round trip near a millisecond.
//
// The client is the host's guard against the code in the sandbox, which
// can replace the agent with anything: it never trusts the agent to end a
// command, to answer, or to answer briefly. Every exec ends within its
// timeout plus Limits.ExecGrace, every other call within
// Limits.CallTimeout (file transfers excepted: they last as long as the
// caller's context), and no reply is held in memory beyond the Limits.
type Client struct {
	hc   *http.Client
	tr   *http.Transport
	auth string // Authorization header value; "" when no token
	lim  Limits
}

// Limits bound what a client accepts from an agent. Zero fields take the
// defaults in DefaultLimits.
type Limits struct {
	// ExecGrace is how long past a command's timeout the client waits for
	// the agent to report it before it drops the connection and reports
	// the timeout itself.
	ExecGrace time.Duration
	// CallTimeout bounds every call but exec and file transfers: health,
	// stat, list, glob, delete, move, chmod, refresh.
	CallTimeout time.Duration
	// MaxReplyBytes bounds one JSON reply (a listing, a stat, glob
	// matches); an error body is bounded by the smaller of it and 64 KiB.
	MaxReplyBytes int64
	// MaxEntries bounds the entries of one listing and the matches of one
	// glob.
	MaxEntries int
}

// DefaultLimits are the limits of a client made without WithLimits.
func DefaultLimits() Limits {
	return Limits{
		ExecGrace:     5 * time.Second,
		CallTimeout:   5 * time.Minute,
		MaxReplyBytes: 32 << 20,
		MaxEntries:    100_000,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.ExecGrace <= 0 {
		l.ExecGrace = d.ExecGrace
	}
	if l.CallTimeout <= 0 {
		l.CallTimeout = d.CallTimeout
	}
	if l.MaxReplyBytes <= 0 {
		l.MaxReplyBytes = d.MaxReplyBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	return l
}

// WithLimits sets the client's limits; zero fields keep their defaults.
func WithLimits(l Limits) ClientOption {
	return func(c *Client) { c.lim = l.withDefaults() }
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
		lim: DefaultLimits(),
		tr:  tr,
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
//
// The host enforces a positive timeout itself: if the agent has not ended
// the command ExecGrace after it, whatever the agent is doing (silent,
// streaming forever), the connection is dropped and Exec reports the
// timeout as the agent would have: ExitCode -1, TimedOut, and an
// errdefs.ErrExecTimeout error.
func (c *Client) Exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if req.Timeout <= 0 {
		return c.exec(ctx, req, stdout, stderr)
	}
	start := time.Now()
	late := errdefs.New(errdefs.ErrExecTimeout,
		"command timed out after %s and the agent had not ended it %s later; the host dropped it", req.Timeout, c.lim.ExecGrace)
	hctx, cancel := context.WithTimeoutCause(ctx, req.Timeout+c.lim.ExecGrace, late)
	defer cancel()
	st, err := c.exec(hctx, req, stdout, stderr)
	if err != nil && ctx.Err() == nil && context.Cause(hctx) == late {
		return provider.ExitStatus{ExitCode: -1, TimedOut: true, Duration: time.Since(start)}, late
	}
	return st, err
}

func (c *Client) exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if req.Stdin != nil || req.Signals != nil {
		return c.execStdin(ctx, req, stdout, stderr)
	}
	body, err := json.Marshal(execRequestToWire(req))
	if err != nil {
		return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "encoding exec request")
	}
	resp, err := c.do(ctx, http.MethodPost, pathExec, nil, bytes.NewReader(body), contentTypeJSON)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	defer resp.Body.Close()
	// After the exit frame, drain the chunked terminator so the connection
	// returns to the pool instead of being closed.
	return c.readExecFrames(ctx, NewFrameReader(resp.Body, MaxFramePayload), stdout, stderr, func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	})
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
//
// The agent must start its answer within CallTimeout; the transfer itself
// lasts as long as ctx.
func (c *Client) ReadFile(ctx context.Context, path string) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	silent := time.AfterFunc(c.lim.CallTimeout, func() {
		cancel(errdefs.New(errdefs.ErrProviderUnavailable, "agent did not start sending %s within %s", path, c.lim.CallTimeout))
	})
	resp, err := c.do(ctx, http.MethodGet, pathFiles, url.Values{"path": {path}}, nil, "")
	if !silent.Stop() && err == nil {
		// The timer fired as the answer arrived: its body is cut already.
		err = c.streamErr(ctx, context.Cause(ctx), "file contents")
		resp.Body.Close()
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	return &httpbody.Download{Body: closeFunc{resp.Body, func() { cancel(nil) }}, Classify: func(err error) error {
		return c.streamErr(ctx, err, "file contents")
	}}, nil
}

// closeFunc runs done after closing its body.
type closeFunc struct {
	io.ReadCloser
	done func()
}

func (c closeFunc) Close() error {
	err := c.ReadCloser.Close()
	c.done()
	return err
}

func (c *Client) ListFiles(ctx context.Context, path string) ([]provider.FileInfo, error) {
	out := []provider.FileInfo{}
	err := c.call(ctx, http.MethodGet, pathFilesList, url.Values{"path": {path}}, nil, func(dec *json.Decoder) error {
		return decodeArray(dec, c.lim.MaxEntries, "entries", func(w wireFileInfo) error {
			fi, err := fileInfoFromWire(w)
			if err != nil {
				return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent listed a malformed file entry")
			}
			out = append(out, fi)
			return nil
		})
	})
	if err != nil {
		return nil, err
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
	err := c.call(ctx, http.MethodGet, pathFilesGlob, url.Values{"pattern": {pattern}}, nil, func(dec *json.Decoder) error {
		return decodeArray(dec, c.lim.MaxEntries, "matches", func(m string) error {
			matches = append(matches, m)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return matches, nil
}

// callJSON sends in (when non-nil) as JSON and decodes the reply into out
// (when non-nil).
func (c *Client) callJSON(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var decode func(*json.Decoder) error
	if out != nil {
		decode = func(dec *json.Decoder) error { return dec.Decode(out) }
	}
	return c.call(ctx, method, path, q, in, decode)
}

// errReplyTooLarge is what a capped reply body returns past its cap.
var errReplyTooLarge = errors.New("reply too large")

// capReader passes at most n bytes of r, then fails with errReplyTooLarge.
type capReader struct {
	r io.Reader
	n int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, errReplyTooLarge
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

// decodeArray decodes a JSON array (or null) element by element, so that
// no more than max elements are ever decoded.
func decodeArray[T any](dec *json.Decoder, max int, what string, each func(T) error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null: nothing
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return errdefs.New(errdefs.ErrProviderUnavailable, "agent sent %v where a JSON array belongs", tok)
	}
	for n := 0; dec.More(); n++ {
		if n == max {
			return errdefs.WithHint(errdefs.New(errdefs.ErrResourceLimit, "the agent's reply holds more than %d %s", max, what),
				"narrow the request (a deeper directory, a more specific pattern)")
		}
		var v T
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if err := each(v); err != nil {
			return err
		}
	}
	_, err = dec.Token() // ']'
	return err
}

// call sends in (when non-nil) as JSON and hands the reply to decode (when
// non-nil), reading at most MaxReplyBytes of it. The whole call, reply
// included, must end within CallTimeout.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in any, decode func(*json.Decoder) error) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.lim.CallTimeout,
		errdefs.New(errdefs.ErrProviderUnavailable, "agent did not answer %s within %s", path, c.lim.CallTimeout))
	defer cancel()
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
	if decode == nil {
		return httpbody.Drain(resp)
	}
	defer resp.Body.Close()
	// Responses are decoded leniently (unknown fields ignored) so that a
	// newer agent may add fields.
	if err := decode(json.NewDecoder(&capReader{r: resp.Body, n: c.lim.MaxReplyBytes})); err != nil {
		switch {
		case errors.Is(err, errReplyTooLarge):
			return errdefs.WithHint(errdefs.New(errdefs.ErrResourceLimit, "the agent's reply to %s exceeds %d bytes", path, c.lim.MaxReplyBytes),
				"narrow the request (a deeper directory, a more specific pattern)")
		case errdefs.Classify(err) != nil:
			return err
		}
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
	if err := json.NewDecoder(io.LimitReader(resp.Body, min(64<<10, c.lim.MaxReplyBytes))).Decode(&we); err != nil || we.Class == "" {
		if cerr := context.Cause(ctx); cerr != nil {
			return fmt.Errorf("agent request abandoned: %w", cerr)
		}
		// Whatever answered is not an agent speaking this protocol.
		return errdefs.New(errdefs.ErrProviderUnavailable, "agent answered %s without a protocol error body", resp.Status)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	return errorFromWire(we)
}
