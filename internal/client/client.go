// Package client is a typed Go client of the StacyVM REST API v1
// (docs/api.md, docs/openapi.yaml). Every method takes a context and honours
// it; the client sets no overall timeout of its own because exec streams and
// file transfers may legitimately run for a long time.
//
// Failures reported by the server come back as *Error, which also matches
// the errdefs classes with errors.Is, so that code written against the
// orchestrator reads the same against a remote server:
//
//	if errors.Is(err, errdefs.ErrSandboxNotFound) { … }
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// APIPrefix is the path every v1 route lives under.
const APIPrefix = "/api/v1"

// Client talks to one StacyVM server. It is safe for concurrent use.
type Client struct {
	base      *url.URL // scheme://host[/prefix], without the trailing /api/v1
	apiKey    string
	userID    string
	userAgent string
	hc        *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the client use hc, for custom transports or TLS. A
// Timeout set on hc applies to whole streams too; prefer contexts.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithUserID sends X-User-ID, which names the owner of sandboxes the
// client creates when a request does not name one itself.
func WithUserID(id string) Option { return func(c *Client) { c.userID = id } }

// WithUserAgent overrides the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// New returns a client of the server at baseURL (for example
// "http://127.0.0.1:7423"); the client adds /api/v1 itself. apiKey may be
// empty when the server requires none.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "server URL %q", baseURL)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "server URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "server URL %q has no host", baseURL)
	}
	// Accept a URL that already names the API prefix, a common copy-paste.
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), APIPrefix)
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	c := &Client{base: u, apiKey: apiKey, userAgent: "stacyvm-go-client", hc: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL returns the server URL the client talks to, without /api/v1.
func (c *Client) BaseURL() string { return c.base.String() }

type requestIDKey struct{}

// WithRequestID returns a context whose requests carry X-Request-ID id, so
// that a caller can find its calls in the server's logs.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request ID ctx carries, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// call describes one API request.
type call struct {
	method string
	path   string // below /api/v1, already escaped
	query  url.Values
	// body is JSON-encoded, unless it is an io.Reader, which is sent as is
	// (streamed, chunked when its length is unknown).
	body any
	// notFound is what a bare NOT_FOUND means on this route; nil means the
	// generic errdefs.ErrNotFound.
	notFound *errdefs.Class
}

// send performs c and returns the response when its status is 2xx; the
// caller closes its body. Any other status is turned into an *Error.
func (cl *Client) send(ctx context.Context, c call) (*http.Response, error) {
	u := *cl.base
	// c.path holds escaped segments (an ID may contain "/" or "%"), so
	// it is set as RawPath, with Path its decoded twin as net/url wants.
	u.RawPath = cl.base.EscapedPath() + APIPrefix + c.path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return nil, fmt.Errorf("stacyvm: bad request path %q: %w", u.RawPath, err)
	}
	u.Path = p
	if len(c.query) > 0 {
		u.RawQuery = c.query.Encode()
	}
	var body io.Reader
	var contentType string
	switch b := c.body.(type) {
	case nil:
	case io.Reader:
		body = b
		contentType = "application/octet-stream"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("stacyvm: encode %s %s request: %w", c.method, c.path, err)
		}
		body = bytes.NewReader(buf)
		contentType = "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, c.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("stacyvm: build %s %s request: %w", c.method, c.path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", cl.userAgent)
	if cl.apiKey != "" {
		req.Header.Set("X-API-Key", cl.apiKey)
	}
	if cl.userID != "" {
		req.Header.Set("X-User-ID", cl.userID)
	}
	if id := RequestID(ctx); id != "" {
		req.Header.Set("X-Request-ID", id)
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		// *url.Error repeats the method and URL in a form that reads
		// badly; its cause (a refused dial, the context's error) stays
		// visible to errors.Is.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("stacyvm: %s %s: %w", c.method, u.Redacted(), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, parseError(resp, c.notFound)
	}
	return resp, nil
}

// do performs c and decodes a JSON response into out (when out is not nil).
func (cl *Client) do(ctx context.Context, c call, out any) error {
	resp, err := cl.send(ctx, c)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("stacyvm: decode %s %s response: %w", c.method, c.path, err)
	}
	return nil
}

// seg escapes one path segment (an ID or a name).
func seg(s string) string { return url.PathEscape(s) }

// checkID guards methods against an empty ID, which would otherwise address
// the collection route (DELETE /sandboxes prunes everything expired).
func checkID(kind, id string) error {
	if id == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s is required", kind)
	}
	return nil
}

// sandboxCall addresses a route of sandbox id. On these routes a bare
// NOT_FOUND means the sandbox is missing: the server reports a missing file
// as FILE_NOT_FOUND and a destroyed sandbox as SANDBOX_DESTROYED.
func sandboxCall(method, id, suffix string, c call) call {
	c.method = method
	c.path = "/sandboxes/" + seg(id) + suffix
	c.notFound = errdefs.ErrSandboxNotFound
	return c
}

// optTime is a timestamp on the wire that may be absent: the server sends
// "" or null for a time it does not have.
type optTime time.Time

func (t *optTime) UnmarshalJSON(b []byte) error {
	var s *string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == nil || *s == "" {
		*t = optTime{}
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, *s)
	if err != nil {
		return err
	}
	*t = optTime(v)
	return nil
}
