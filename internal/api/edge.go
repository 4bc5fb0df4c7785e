package api

import (
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The browser edge. A server on loopback with no API key is still reachable
// from every web page the user opens, so three checks run before any
// handler, with or without a key (docs/security.md):
//
//   - Host must name this server (loopback, the address the request came
//     in on, or server.allowed_hosts): a DNS-rebinding page sends its own
//     name.
//   - A state-changing request or a WebSocket upgrade that carries an
//     Origin must come from the server's own origin or a listed one: a
//     cross-origin page cannot forge Origin, and a "simple" request (no
//     preflight) always sends it.
//   - A request body must be declared with the type its route reads: the
//     types a page may send without a preflight (text/plain, forms) are
//     never JSON here.

// edgeError is a request refused at the HTTP edge: a condition of the
// transport, not of the domain, so it lives here (like errMethodNotAllowed)
// rather than in errdefs.
type edgeError struct {
	status  int
	code    string
	message string
	hint    string
}

func (e *edgeError) Error() string { return e.message }
func (e *edgeError) Hint() string  { return e.hint }

func errMisdirected(host string) error {
	return &edgeError{http.StatusMisdirectedRequest, codeMisdirected,
		"this server does not answer to host " + strconv.Quote(host),
		"use a loopback address or the address the server listens on, or add the name to server.allowed_hosts"}
}

func errForeignOrigin(origin string) error {
	return &edgeError{http.StatusForbidden, codeForbidden,
		"requests from origin " + strconv.Quote(origin) + " are not allowed",
		"add the origin to server.cors_origins to let that web page use the API"}
}

func errMediaType(got string, want string) error {
	if got == "" {
		got = "none"
	}
	return &edgeError{http.StatusUnsupportedMediaType, codeUnsupportedMediaType,
		"request body has Content-Type " + got + "; this route takes " + want,
		"send the header Content-Type: " + want}
}

// maxHeaderBytes bounds a request's headers, names and values together. The
// http.Server refuses more than its MaxHeaderBytes (1 MiB by default) on
// its own, in plain text; below that the refusal is the JSON error body.
// Nothing legitimate comes close: the largest header a client sends is an
// API key or a request ID.
const maxHeaderBytes = 64 << 10

func errHeadersTooLarge(n int) error {
	return &edgeError{http.StatusRequestHeaderFieldsTooLarge, codeResourceLimit,
		fmt.Sprintf("request headers are %d bytes, over the limit of %d", n, maxHeaderBytes), ""}
}

func headerBytes(h http.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // ": " and CRLF
		}
	}
	return n
}

// GuardOptions configures Guard.
type GuardOptions struct {
	// AllowedHosts are the Host names (or host:port) accepted besides
	// loopback and the address a request arrives on; "*" accepts any.
	AllowedHosts []string
	// CORSOrigins are the origins (or "*") whose pages may change state;
	// the server's own origin always may.
	CORSOrigins []string
	// BodyTypes are the media types a request body may declare
	// ("application/json"); empty skips the check.
	BodyTypes []string
	// Logger receives refusals (default slog.Default()).
	Logger *slog.Logger
}

// Guard wraps a handler served next to the API on the same listener (the
// dashboard, MCP, another API) with the API's browser defences: the Host
// and Origin checks and, when opts.BodyTypes is set, the body type check.
// Refusals are the contract's JSON error body with a request ID. Handlers
// mounted inside the API's own handler are covered already.
func Guard(next http.Handler, opts GuardOptions) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &server{opts: Options{AllowedHosts: opts.AllowedHosts, CORSOrigins: opts.CORSOrigins}, log: opts.Logger}
	h := next
	if len(opts.BodyTypes) > 0 {
		types := slices.Clone(opts.BodyTypes)
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := checkBodyType(r, types...); err != nil {
				s.writeError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	return s.withRequestID(s.withEdge(h))
}

// withEdge refuses oversized headers, foreign Host names and, on
// state-changing requests and WebSocket upgrades, foreign origins. It runs for every path, before CORS
// preflights and auth.
func (s *server) withEdge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := headerBytes(r.Header); n > maxHeaderBytes {
			s.writeError(w, r, errHeadersTooLarge(n))
			return
		}
		if !s.hostAllowed(r) {
			s.writeError(w, r, errMisdirected(r.Host))
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && needsOrigin(r) && !s.originAllowed(origin) && !sameOrigin(r, origin) {
			s.writeError(w, r, errForeignOrigin(origin))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// needsOrigin reports whether r may change state: any method but the safe
// ones, and any upgrade (a WebSocket handshake is a GET that opens a
// channel able to do anything).
func needsOrigin(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return r.Header.Get("Upgrade") != ""
	}
	return true
}

// sameOrigin reports whether origin is the server's own: a page it served
// under the (already checked) Host of this request. The scheme is not
// compared: behind a TLS-terminating proxy the server sees http for an
// https page, and no other server can serve a page under this host:port.
func sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
		return false
	}
	oh, op := splitHostPort(u.Host, defaultPort(u.Scheme))
	rh, rp := splitHostPort(r.Host, defaultPort(schemeOf(r)))
	return oh == rh && op == rp
}

func schemeOf(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// splitHostPort splits a Host header or URL host into a lower-case host
// without brackets or trailing dot, and a port (def when absent).
func splitHostPort(hostport, def string) (host, port string) {
	host, port = hostport, def
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	}
	return strings.TrimSuffix(strings.ToLower(host), "."), port
}

// hostAllowed reports whether r's Host names this server: an entry of
// AllowedHosts, or, on the port the request arrived on, localhost, a
// loopback address, or the address the request arrived on (which, for a
// server listening on 0.0.0.0, is whichever of the machine's addresses the
// client used). A DNS-rebinding page can only ever send a name, and names
// other than localhost must be listed.
func (s *server) hostAllowed(r *http.Request) bool {
	if r.Host == "" {
		return false
	}
	host, port := splitHostPort(r.Host, defaultPort(schemeOf(r)))
	for _, a := range s.opts.AllowedHosts {
		if a == "*" {
			return true
		}
		ah, ap := splitHostPort(a, "")
		if ah == host && (ap == "" || ap == port) {
			return true
		}
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
	if local != nil && port != strconv.Itoa(local.Port) {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil || strings.Contains(host, "%") {
		return false
	}
	return ip.IsLoopback() || (local != nil && ip.Equal(local.IP))
}

// checkBodyType refuses a request whose body is not declared as one of
// want. A request with neither a body nor a Content-Type passes (an empty
// POST); an empty body with a declared type is checked, since an empty
// form post is how a page sends one without a preflight.
func checkBodyType(r *http.Request, want ...string) error {
	ct := r.Header.Get("Content-Type")
	hasBody := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	if ct == "" && !hasBody {
		return nil
	}
	if !hasBody && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		return nil // a header on a read is harmless
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && slices.Contains(want, mt) {
		return nil
	}
	return errMediaType(ct, strings.Join(want, " or "))
}
