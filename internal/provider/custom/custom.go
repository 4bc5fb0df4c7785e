// Package custom is the provider for runtimes StacyVM does not know: it
// drives sandboxes through a backend that speaks the custom provider
// protocol (docs/custom-provider-protocol.md) over HTTP. Package
// custom/backend is a reference backend that serves any provider.Provider
// with it.
//
// The client trusts the backend to be what it says, but not to be
// well-behaved: every reply is bounded in size, checked for its content
// type, and read under a deadline, so that a broken, hostile or slow
// backend produces a classified error, never a hang or a crash. There is
// no global HTTP client timeout, which would cut long command streams and
// file transfers: Options.Timeout bounds each non-streaming call, and the
// wait for the first byte of a streaming one; the caller's context bounds
// everything.
package custom

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/fence"
	"github.com/stacyvm/stacyvm/internal/httpbody"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom/wire"
)

// Options configures the custom provider.
type Options struct {
	// Name is the provider's registry name; "custom" when empty.
	Name string
	// URL is the backend's base URL (http or https); protocol routes
	// (/v1/...) are appended to its path.
	URL string
	// APIKey, when set, is sent with every request as
	// "Authorization: Bearer <key>".
	APIKey string
	// Timeout bounds every non-streaming call (status, list, file
	// metadata...), and how long a streaming call (exec, file download)
	// waits for the backend to start answering. It never cuts a stream
	// that is flowing. Default 60s.
	Timeout time.Duration
	// SpawnTimeout bounds Spawn, which may pull images or copy root file
	// systems. Default 10m.
	SpawnTimeout time.Duration
	// Transport carries the requests; nil means a transport with the
	// usual dial and TLS handshake limits and proxies from the
	// environment.
	Transport http.RoundTripper
	Logger    *slog.Logger
}

// Defaults.
const (
	DefaultName         = "custom"
	DefaultTimeout      = 60 * time.Second
	DefaultSpawnTimeout = 10 * time.Minute
	// execGrace is how long past a command's own timeout the backend has
	// to report it, before the client gives up on the stream.
	execGrace = 30 * time.Second
)

// Provider is the custom provider. It implements provider.Provider,
// provider.Inventory and provider.SnapshotLister (the last two answer
// errdefs.ErrUnimplemented when the backend does not offer them).
type Provider struct {
	name         string
	base         *url.URL
	auth         string
	timeout      time.Duration
	spawnTimeout time.Duration
	hc           *http.Client
	log          *slog.Logger

	mu        sync.RWMutex
	caps      provider.Capabilities
	capsKnown bool
}

var (
	_ provider.Provider       = (*Provider)(nil)
	_ provider.Inventory      = (*Provider)(nil)
	_ provider.SnapshotLister = (*Provider)(nil)
	_ provider.Pauser         = (*Provider)(nil)
)

// New returns a provider for the backend at opts.URL, and asks the backend
// for its capabilities (within Timeout). A backend that does not answer
// yet is not an error: until it has answered once, Capabilities reports
// nothing supported, and Health retries.
func New(opts Options) (*Provider, error) {
	if opts.URL == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "custom: the backend URL is required")
	}
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "custom: backend URL %q: want http(s)://host[:port][/path]", opts.URL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "custom: backend URL must not carry credentials, a query or a fragment; use api_key")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	p := &Provider{
		name:         opts.Name,
		base:         u,
		timeout:      opts.Timeout,
		spawnTimeout: opts.SpawnTimeout,
		log:          opts.Logger,
	}
	if opts.APIKey != "" {
		if strings.ContainsAny(opts.APIKey, "\r\n") {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "custom: the API key contains a line break")
		}
		p.auth = "Bearer " + opts.APIKey
	}
	if p.name == "" {
		p.name = DefaultName
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	if p.spawnTimeout <= 0 {
		p.spawnTimeout = DefaultSpawnTimeout
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	tr := opts.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			MaxIdleConns:          64,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
	}
	p.hc = &http.Client{
		Transport: tr,
		// A redirect would send the API key wherever the backend points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	if err := p.refreshCapabilities(ctx); err != nil {
		p.log.Warn("custom backend did not report its capabilities", "provider", p.name, "err", err)
	}
	return p, nil
}

func (p *Provider) Name() string { return p.name }

// Capabilities returns what the backend reported last.
func (p *Provider) Capabilities() provider.Capabilities {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.caps
}

func (p *Provider) refreshCapabilities(ctx context.Context) error {
	var c wire.Capabilities
	if err := p.callJSON(ctx, http.MethodGet, wire.PathCapabilities, "", nil, nil, &c); err != nil {
		return err
	}
	p.mu.Lock()
	p.caps, p.capsKnown = wire.CapabilitiesFromWire(c), true
	p.mu.Unlock()
	return nil
}

// Health asks the backend whether it and its runtime work, and refreshes
// the capabilities. Every failure is errdefs.ErrProviderUnavailable.
func (p *Provider) Health(ctx context.Context) error {
	var h wire.Health
	err := p.callJSON(ctx, http.MethodGet, wire.PathHealth, "", nil, nil, &h)
	if err == nil && h.Protocol != wire.Version {
		err = errdefs.New(errdefs.ErrProviderUnavailable, "custom: the backend speaks protocol %d, this client %d", h.Protocol, wire.Version)
	}
	if err == nil {
		err = p.refreshCapabilities(ctx)
	}
	if err != nil && !errors.Is(err, errdefs.ErrProviderUnavailable) {
		err = errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "provider %s: the backend is unhealthy", p.name)
	}
	return err
}

func (p *Provider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if spec.ID == "" {
		return provider.Info{}, errdefs.New(errdefs.ErrInvalidArgument, "custom: sandbox id is required")
	}
	var info wire.Info
	err := p.call(ctx, p.spawnTimeout, http.MethodPost, wire.PathSandboxes, "", nil, wire.SpecToWire(spec), &info)
	if err != nil {
		return provider.Info{}, err
	}
	return wire.InfoFromWire(info), nil
}

func (p *Provider) Status(ctx context.Context, id string) (provider.Info, error) {
	var info wire.Info
	if err := p.callJSON(ctx, http.MethodGet, wire.PathSandbox, id, nil, nil, &info); err != nil {
		return provider.Info{}, err
	}
	return wire.InfoFromWire(info), nil
}

func (p *Provider) Destroy(ctx context.Context, id string) error {
	return p.callJSON(ctx, http.MethodDelete, wire.PathSandbox, id, nil, nil, nil)
}

// Pause asks the backend to freeze the sandbox (POST .../pause). The
// orchestrator calls it only when the backend's capabilities say pause.
func (p *Provider) Pause(ctx context.Context, id string) error {
	return p.callJSON(ctx, http.MethodPost, wire.PathPause, id, nil, nil, nil)
}

// Resume asks the backend to thaw the sandbox (POST .../resume).
func (p *Provider) Resume(ctx context.Context, id string) error {
	return p.callJSON(ctx, http.MethodPost, wire.PathResume, id, nil, nil, nil)
}

func (p *Provider) Logs(ctx context.Context, id string, n int) ([]string, error) {
	var lines []string
	q := url.Values{"lines": {strconv.Itoa(n)}}
	if err := p.callJSON(ctx, http.MethodGet, wire.PathLogs, id, q, nil, &lines); err != nil {
		return nil, err
	}
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// List reports the backend's sandboxes (provider.Inventory).
func (p *Provider) List(ctx context.Context) ([]provider.Info, error) {
	var ws []wire.Info
	if err := p.callJSON(ctx, http.MethodGet, wire.PathSandboxes, "", nil, nil, &ws); err != nil {
		return nil, err
	}
	out := make([]provider.Info, 0, len(ws))
	for _, w := range ws {
		out = append(out, wire.InfoFromWire(w))
	}
	return out, nil
}

// Snapshots reports the backend's snapshots (provider.SnapshotLister).
func (p *Provider) Snapshots(ctx context.Context) ([]provider.Snapshot, error) {
	var ws []wire.Snapshot
	if err := p.callJSON(ctx, http.MethodGet, wire.PathSnapshots, "", nil, nil, &ws); err != nil {
		return nil, err
	}
	out := make([]provider.Snapshot, 0, len(ws))
	for _, w := range ws {
		out = append(out, provider.Snapshot{Image: w.Image, Provider: w.Provider, Created: w.Created})
	}
	return out, nil
}

// Exec runs req in the sandbox and streams its output as the backend
// sends it. A cancelled ctx closes the stream, which the protocol makes
// the backend's signal to kill the command.
func (p *Provider) Exec(ctx context.Context, id string, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrInvalidArgument, "exec: empty command")
	}
	if req.Timeout < 0 {
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrInvalidArgument, "exec: negative timeout %s", req.Timeout)
	}
	if req.Stdin != nil && !p.Capabilities().Stdin {
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrUnimplemented, "exec: backend %s does not take a standard input (capabilities: no stdin)", p.name)
	}
	if req.Signals != nil {
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrUnimplemented, "exec: the custom provider protocol cannot signal a running command")
	}
	body, err := json.Marshal(wire.ExecToWire(req))
	if err != nil {
		return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "exec: encoding the request")
	}
	if req.Timeout > 0 {
		// A backend that never ends the stream must not hold the caller
		// forever.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, req.Timeout+execGrace,
			errdefs.New(errdefs.ErrProviderUnavailable, "custom backend did not end the command %s after its timeout", execGrace))
		defer cancel()
	}
	route, q, in, ctype := wire.PathExec, url.Values(nil), io.Reader(bytes.NewReader(body)), wire.ContentJSON
	if req.Stdin != nil {
		// Full duplex: the request body is the command's input, sent as it
		// is read while the output streams back; its end closes stdin.
		route, q, in, ctype = wire.PathExecStdin, url.Values{"spec": {string(body)}}, req.Stdin, wire.ContentOctets
	}
	resp, err := p.stream(ctx, http.MethodPost, route, id, q, in, ctype, wire.ContentNDJSON)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	defer resp.Body.Close()

	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var streamErr error
	for {
		line, err := readLine(br, wire.MaxLine)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the stream ended without an exit line")
			}
			return provider.ExitStatus{}, p.readErr(ctx, err, "exec stream")
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var l wire.Line
		if err := json.Unmarshal(line, &l); err != nil {
			return provider.ExitStatus{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "custom backend sent a malformed exec stream line")
		}
		switch l.Type {
		case "":
			w := stdout
			switch l.Stream {
			case "stdout":
			case "stderr":
				w = stderr
			default:
				return provider.ExitStatus{}, errdefs.New(errdefs.ErrProviderUnavailable, "custom backend sent output for stream %q", l.Stream)
			}
			data := l.DataB64
			if data == nil {
				data = []byte(l.Data)
			}
			if w != nil && len(data) > 0 {
				if _, err := w.Write(data); err != nil {
					// Returning closes the stream, which stops the command.
					return provider.ExitStatus{}, fmt.Errorf("exec: writing %s: %w", l.Stream, err)
				}
			}
		case "error":
			streamErr = wire.FromError(wire.Error{Code: l.Code, Message: l.Message, Hint: l.Hint}, 0)
		case "exit":
			st := provider.ExitStatus{ExitCode: l.ExitCode, TimedOut: l.TimedOut, Duration: time.Duration(l.DurationNS)}
			if st.TimedOut {
				st.ExitCode = -1
				if !errors.Is(streamErr, errdefs.ErrExecTimeout) {
					streamErr = errdefs.New(errdefs.ErrExecTimeout, "the backend reports that the command timed out")
				}
			}
			return st, streamErr
		default:
			// A line type from a newer backend; ignoring it is the rule.
		}
	}
}

// readLine reads one line of at most max bytes (without the newline).
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > max+1 {
			return nil, fmt.Errorf("a stream line exceeds %d bytes", max)
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF // a partial line: the stream was cut
		default:
			return nil, err
		}
	}
}

// WriteFile streams r to path with no size limit. Reads of r happen only
// before WriteFile returns: net/http may go on reading a request body after
// the reply arrived, so the body is fenced off when the call ends.
func (p *Provider) WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error {
	mode, err := provider.NormalizeMode(mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if mode == 0 {
		mode = 0o644
	}
	body := fence.NewReader(r)
	defer body.Fence()
	q := url.Values{"path": {path}, "mode": {provider.FormatMode(mode)}}
	resp, err := p.stream(ctx, http.MethodPut, wire.PathFiles, id, q, body, wire.ContentOctets, "")
	if rerr := body.Err(); rerr != nil {
		return fmt.Errorf("write %s: reading the source: %w", path, rerr)
	}
	if err != nil {
		return err
	}
	return httpbody.Drain(resp)
}

// ReadFile opens path for streaming. The reader is valid while ctx is; a
// transfer cut short fails with errdefs.ErrProviderUnavailable instead of
// ending early with io.EOF.
func (p *Provider) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	resp, err := p.stream(ctx, http.MethodGet, wire.PathFiles, id, url.Values{"path": {path}}, nil, "", wire.ContentOctets)
	if err != nil {
		return nil, err
	}
	return &httpbody.Download{Body: resp.Body, Classify: func(err error) error {
		return p.readErr(ctx, err, "file contents")
	}}, nil
}

func (p *Provider) ListFiles(ctx context.Context, id, path string) ([]provider.FileInfo, error) {
	var ws []wire.FileInfo
	if err := p.callJSON(ctx, http.MethodGet, wire.PathFilesList, id, url.Values{"path": {path}}, nil, &ws); err != nil {
		return nil, err
	}
	out := make([]provider.FileInfo, 0, len(ws))
	for _, w := range ws {
		fi, err := wire.FileInfoFromWire(w)
		if err != nil {
			return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "custom backend listed a malformed file entry")
		}
		out = append(out, fi)
	}
	return out, nil
}

func (p *Provider) StatFile(ctx context.Context, id, path string) (provider.FileInfo, error) {
	var w wire.FileInfo
	if err := p.callJSON(ctx, http.MethodGet, wire.PathFilesStat, id, url.Values{"path": {path}}, nil, &w); err != nil {
		return provider.FileInfo{}, err
	}
	fi, err := wire.FileInfoFromWire(w)
	if err != nil {
		return provider.FileInfo{}, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "custom backend sent a malformed file entry")
	}
	return fi, nil
}

func (p *Provider) DeleteFile(ctx context.Context, id, path string, recursive bool) error {
	q := url.Values{"path": {path}, "recursive": {strconv.FormatBool(recursive)}}
	return p.callJSON(ctx, http.MethodDelete, wire.PathFiles, id, q, nil, nil)
}

func (p *Provider) MoveFile(ctx context.Context, id, oldPath, newPath string) error {
	return p.callJSON(ctx, http.MethodPost, wire.PathFilesMove, id, nil, wire.Move{OldPath: oldPath, NewPath: newPath}, nil)
}

func (p *Provider) Chmod(ctx context.Context, id, path string, mode fs.FileMode) error {
	mode, err := provider.NormalizeMode(mode)
	if err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return p.callJSON(ctx, http.MethodPost, wire.PathFilesChmod, id, nil, wire.Chmod{Path: path, Mode: provider.FormatMode(mode)}, nil)
}

func (p *Provider) Glob(ctx context.Context, id, pattern string) ([]string, error) {
	var matches []string
	if err := p.callJSON(ctx, http.MethodGet, wire.PathFilesGlob, id, url.Values{"pattern": {pattern}}, nil, &matches); err != nil {
		return nil, err
	}
	return matches, nil
}

// callJSON is a non-streaming call bounded by Options.Timeout.
func (p *Provider) callJSON(ctx context.Context, method, route, id string, q url.Values, in, out any) error {
	return p.call(ctx, p.timeout, method, route, id, q, in, out)
}

// call sends in (when not nil) as JSON and decodes the JSON reply into out
// (when not nil), all within timeout.
func (p *Provider) call(ctx context.Context, timeout time.Duration, method, route, id string, q url.Values, in, out any) error {
	ctx, cancel := context.WithTimeoutCause(ctx, timeout,
		errdefs.New(errdefs.ErrProviderUnavailable, "provider %s: the backend did not answer within %s", p.name, timeout))
	defer cancel()
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "encoding the request")
		}
		body, ctype = bytes.NewReader(b), wire.ContentJSON
	}
	want := ""
	if out != nil {
		want = wire.ContentJSON
	}
	resp, err := p.do(ctx, method, route, id, q, body, ctype, want)
	if err != nil {
		return err
	}
	if out == nil {
		return httpbody.Drain(resp)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxJSON+1))
	if err != nil {
		return p.readErr(ctx, err, "reply")
	}
	if len(data) > wire.MaxJSON {
		return errdefs.New(errdefs.ErrProviderUnavailable, "custom backend reply to %s %s exceeds %d bytes", method, route, wire.MaxJSON)
	}
	// Lenient about unknown fields, so that a newer backend may add some.
	if err := json.Unmarshal(data, out); err != nil {
		return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "custom backend sent a malformed reply to %s %s", method, route)
	}
	return nil
}

// stream starts a streaming call: only the wait for the reply's headers is
// bounded by Options.Timeout (for uploads, that wait starts once the body
// is sent); the body is the caller's to read under ctx.
func (p *Provider) stream(ctx context.Context, method, route, id string, q url.Values, body io.Reader, ctype, want string) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	ht := &headerTimer{d: p.timeout, fire: func() {
		cancel(errdefs.New(errdefs.ErrProviderUnavailable, "provider %s: the backend did not start answering within %s", p.name, p.timeout))
	}}
	if method == http.MethodPut && body != nil {
		body = &armOnEOF{r: body, arm: ht.arm}
	} else {
		ht.arm()
	}
	resp, err := p.do(ctx, method, route, id, q, body, ctype, want)
	ht.stop()
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// headerTimer fires once d has passed since arm, unless stopped first.
type headerTimer struct {
	d       time.Duration
	fire    func()
	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

func (h *headerTimer) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.stopped && h.t == nil {
		h.t = time.AfterFunc(h.d, h.fire)
	}
}

func (h *headerTimer) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopped = true
	if h.t != nil {
		h.t.Stop()
	}
}

// do sends one request and turns transport failures, error replies and
// replies of the wrong type into classified errors. On success the caller
// owns resp.Body.
func (p *Provider) do(ctx context.Context, method, route, id string, q url.Values, body io.Reader, ctype, want string) (*http.Response, error) {
	path, rawPath := route, route
	if strings.Contains(route, "{id}") {
		if id == "" {
			return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox \"\" not found")
		}
		path = strings.Replace(route, "{id}", id, 1)
		rawPath = strings.Replace(route, "{id}", url.PathEscape(id), 1)
	}
	u := *p.base
	u.Path = p.base.Path + path
	u.RawPath = p.base.EscapedPath() + rawPath
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "building the backend request")
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if want != "" {
		req.Header.Set("Accept", want)
	}
	if p.auth != "" {
		req.Header.Set("Authorization", p.auth)
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // drop the method and URL
		}
		if cerr := context.Cause(ctx); cerr != nil {
			return nil, abandoned(cerr)
		}
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "provider %s: the backend is unreachable", p.name)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, p.replyErr(ctx, resp)
	}
	if want != "" && resp.StatusCode != http.StatusNoContent {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != want {
			resp.Body.Close()
			return nil, errdefs.New(errdefs.ErrProviderUnavailable,
				"custom backend answered %s %s with content type %q, want %q", method, route, resp.Header.Get("Content-Type"), want)
		}
	}
	return resp, nil
}

// abandoned reports the end of the caller's context (or of a deadline this
// package set, whose cause is classified) so that errors.Is still finds
// context.Canceled and context.DeadlineExceeded.
func abandoned(cause error) error {
	if errdefs.Classify(cause) != nil {
		return cause
	}
	return fmt.Errorf("custom backend request abandoned: %w", cause)
}

// replyErr turns an error reply into the error the backend reported.
func (p *Provider) replyErr(ctx context.Context, resp *http.Response) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, wire.MaxErrorBody))
	if err != nil {
		if cerr := context.Cause(ctx); cerr != nil {
			return abandoned(cerr)
		}
	}
	var e wire.Error
	if json.Unmarshal(data, &e) == nil && (e.Code != "" || e.Message != "") {
		return wire.FromError(e, resp.StatusCode)
	}
	// Not a protocol error body: a proxy's page, a crashed backend, a
	// redirect (never followed)...
	if c := wire.ClassOfStatus(resp.StatusCode); c != nil {
		return errdefs.New(c, "custom backend answered %s", resp.Status)
	}
	return errdefs.New(errdefs.ErrProviderUnavailable, "custom backend answered %s without a protocol error body", resp.Status)
}

// readErr classifies a failure while reading a reply body.
func (p *Provider) readErr(ctx context.Context, err error, what string) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return abandoned(cerr)
	}
	if errdefs.Classify(err) != nil {
		return err
	}
	return errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "provider %s: reading the backend's %s", p.name, what)
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// armOnEOF calls arm once the upload has been read to its end: the reply
// to an upload can only be expected after it.
type armOnEOF struct {
	r    io.Reader
	arm  func()
	once sync.Once
}

func (a *armOnEOF) Read(b []byte) (int, error) {
	n, err := a.r.Read(b)
	if err == io.EOF {
		a.once.Do(a.arm)
	}
	return n, err
}
