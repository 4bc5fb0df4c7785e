package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// reqInfo travels in the request context. The route wrapper fills in the
// matched pattern, which the access log reads after the handler returns:
// ServeMux sets Request.Pattern on its own copy of the request, out of
// reach of the outer middleware.
type reqInfo struct {
	id      string
	pattern string
}

type ctxKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(ctxKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// requestID returns the request's ID, or "" outside a request.
func requestID(ctx context.Context) string { return infoFrom(ctx).id }

// recorder remembers the status a handler sent. It is the only
// ResponseWriter wrapper in the stack; Unwrap lets http.ResponseController
// (Flush for streams) and coder/websocket (Hijack) reach the connection.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 && (code < 100 || code > 199 || code == http.StatusSwitchingProtocols) {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	n, err := rec.ResponseWriter.Write(p)
	rec.bytes += int64(n)
	return n, err
}

func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// Flush makes the recorder an http.Flusher itself, for handlers that
// assert the interface instead of using http.ResponseController (Connect
// streams behind Guard).
func (rec *recorder) Flush() {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	_ = http.NewResponseController(rec.ResponseWriter).Flush()
}

// baseWriter digs out the server's own ResponseWriter, which
// http.MaxBytesReader needs to close the connection after an oversized
// body.
func baseWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// maxRequestIDLen bounds a client's X-Request-ID so that it cannot bloat
// every log line.
const maxRequestIDLen = 128

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range []byte(id) {
		if c < 0x21 || c > 0x7e { // printable ASCII, no spaces
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// withRequestID is the outermost layer: it adopts or mints the request
// ID and installs the recorder that the later layers share. Inside a
// request that has its ID already (a Guard-wrapped handler mounted in the
// API), it changes nothing.
func (s *server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
			next.ServeHTTP(w, r)
			return
		}
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-ID", id)
		ctx := context.WithValue(r.Context(), ctxKey{}, &reqInfo{id: id})
		next.ServeHTTP(&recorder{ResponseWriter: w}, r.WithContext(ctx))
	})
}

// withRecovery turns a panic into a 500 with the contract's body when
// nothing has been sent yet, and into an aborted connection otherwise, so
// that a client never mistakes a half-written body for a whole one.
func (s *server) withRecovery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "request_id", requestID(r.Context()),
				"method", r.Method, "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if rec, ok := w.(*recorder); ok && rec.status != 0 {
				panic(http.ErrAbortHandler)
			}
			s.writeError(w, r, fmt.Errorf("panic: %v", p))
		}()
		next.ServeHTTP(w, r)
	})
}

// withAccessLog logs every request once it is done and feeds the HTTP
// metrics.
func (s *server) withAccessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		completed := false
		defer func() {
			d := time.Since(start)
			status := http.StatusOK
			rec, _ := w.(*recorder)
			if rec != nil && rec.status != 0 {
				status = rec.status
			}
			if !completed && (rec == nil || rec.status == 0) {
				status = http.StatusInternalServerError // panicking: recovery writes a 500
			}
			ri := infoFrom(r.Context())
			route := ri.pattern
			if route == "" {
				route = "unmatched"
			}
			var size int64
			if rec != nil {
				size = rec.bytes
			}
			s.log.Info("http request", "method", r.Method, "path", r.URL.Path, "route", route,
				"status", status, "duration", d, "bytes", size, "request_id", ri.id, "remote", r.RemoteAddr)
			if s.opts.Metrics != nil {
				s.opts.Metrics.ObserveHTTP(route, status, d)
			}
		}()
		next.ServeHTTP(w, r)
		completed = true
	})
}

// CORS: preflights are answered here, before auth, because browsers never
// send credentials on them.
const (
	corsAllowMethods = "GET, POST, PUT, DELETE, OPTIONS"
	corsAllowHeaders = "Content-Type, X-API-Key, X-User-ID, X-Request-ID, Last-Event-ID, Authorization"
)

func (s *server) originAllowed(origin string) bool {
	return origin != "" && (slices.Contains(s.opts.CORSOrigins, "*") || slices.Contains(s.opts.CORSOrigins, origin))
}

func (s *server) withCORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		allowed := s.originAllowed(origin)
		h := w.Header()
		if origin != "" {
			h.Add("Vary", "Origin")
		}
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "X-Request-ID, X-Next-Cursor, Link")
		}
		if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h.Set("Access-Control-Allow-Methods", corsAllowMethods)
				h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
				h.Set("Access-Control-Max-Age", "600")
			}
			// A refused origin gets no CORS headers, which the browser
			// reads as a refusal.
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withAuth checks the API key when one is configured. Only the health
// check is open, so that load balancers can probe without the key.
// Prometheus scrapers may send the key as "Authorization: Bearer KEY",
// which they support natively.
func (s *server) withAuth(next http.Handler) http.Handler {
	if s.opts.APIKey == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.opts.APIKey))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.URL.Path == "/api/v1/health" {
			next.ServeHTTP(w, r)
			return
		}
		key := r.Header.Get("X-API-Key")
		if key == "" {
			if b, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
				key = strings.TrimSpace(b)
			}
		}
		if key == "" {
			key = keyFromSubprotocol(r) // browsers cannot set headers on a WebSocket
		}
		// Comparing digests keeps the comparison constant-time in the
		// key's length too.
		got := sha256.Sum256([]byte(key))
		if key == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.writeError(w, r, errdefs.WithHint(errdefs.New(errdefs.ErrUnauthorized, "missing or invalid API key"),
				"send the server's API key in the X-API-Key header"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bodyKind selects which configured limit bounds a route's request body.
type bodyKind int

const (
	bodyJSON   bodyKind = iota // Options.MaxBodyBytes
	bodyFile                   // Options.MaxFileBytes: JSON file writes
	bodyUpload                 // Options.MaxUploadBytes: raw uploads, 0 = unlimited
)

func (s *server) limitFor(k bodyKind) int64 {
	switch k {
	case bodyFile:
		return s.opts.MaxFileBytes
	case bodyUpload:
		return s.opts.MaxUploadBytes
	}
	return s.opts.MaxBodyBytes
}

// mediaType is the Content-Type a route's body must declare.
func (k bodyKind) mediaType() string {
	if k == bodyUpload {
		return "application/octet-stream"
	}
	return "application/json"
}

// route wraps one route's handler: it records the matched pattern for the
// access log and metrics, checks the body's declared type (on the methods
// that carry one), and bounds the request body. A declared Content-Length
// over the limit is refused before anything is read.
func (s *server) route(kind bodyKind, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infoFrom(r.Context()).pattern = r.Pattern
		switch r.Method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			if err := checkBodyType(r, kind.mediaType()); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		if err := checkQuery(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		if limit := s.limitFor(kind); limit > 0 && r.Body != nil && r.Body != http.NoBody {
			if r.ContentLength > limit {
				s.writeError(w, r, &http.MaxBytesError{Limit: limit})
				return
			}
			r.Body = http.MaxBytesReader(baseWriter(w), r.Body, limit)
		}
		h(w, r)
	})
}

// dispatch answers unknown paths and wrong methods with the contract's
// JSON error body instead of ServeMux's plain text.
func (s *server) dispatch(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		if len(s.allowedMethods(r.URL.Path)) > 0 {
			s.writeError(w, r, &errMethodNotAllowed{method: r.Method, path: r.URL.Path})
			return
		}
		s.writeError(w, r, errdefs.WithHint(errdefs.New(errdefs.ErrNotFound, "no route for %s %s", r.Method, r.URL.Path),
			"GET /api/v1/openapi.yaml lists every route"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// allowedMethods lists the methods the mux serves on path.
func (s *server) allowedMethods(path string) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: &url.URL{Path: path}, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "" {
			out = append(out, m)
		}
	}
	return out
}

// clearDeadlines lifts the server's read and/or write timeouts for one
// request. Streams, long commands and large transfers are long by design:
// a server-wide WriteTimeout sized for ordinary requests must not cut
// them off. Servers without such timeouts are unaffected.
func clearDeadlines(w http.ResponseWriter, read, write bool) {
	rc := http.NewResponseController(w)
	if read {
		_ = rc.SetReadDeadline(time.Time{})
	}
	if write {
		_ = rc.SetWriteDeadline(time.Time{})
	}
}
