// Package e2b serves E2B's published wire contract on top of the
// orchestrator, so that code written for the unchanged `e2b` SDK runs
// against a StacyVM server: the control plane (create, connect, get, list,
// timeout, kill) and the in-sandbox daemon ("envd": the Connect-RPC
// Process and Filesystem services, /files and /health).
//
// One handler serves every sandbox: the SDK sends E2b-Sandbox-Id on each
// daemon request, and the per-sandbox access token minted at create (an
// HMAC of the sandbox ID under a per-server secret) is checked on each.
// Everything goes through orchestrator.Manager, so the facade runs on
// whatever provider the orchestrator runs; it holds no provider code.
// docs/e2b.md says what is and is not supported.
package e2b

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

// EnvdVersion is the daemon version the facade reports. The SDK gates
// features on it: 0.5.7 and later upload files as octet streams and can
// close stdin. Keep it at the version whose behaviour the facade follows.
const EnvdVersion = "0.5.7"

// Prefixes under which the server mounts the facade: point E2B_API_URL at
// http://HOST:PORT/e2b and E2B_SANDBOX_URL at http://HOST:PORT/e2b/envd.
const (
	Prefix     = "/e2b"
	envdPrefix = "/envd"
)

// Options configures the facade.
type Options struct {
	// APIKey, when set, is required in X-API-Key on the control plane (the
	// server's own API key; E2B_API_KEY on the SDK's side).
	APIKey string
	// DefaultTimeout is a sandbox's TTL when the create request gives none
	// (E2B's default is 300 s).
	DefaultTimeout time.Duration
	// MaxUploadBytes bounds one /files upload; 0 means no limit.
	MaxUploadBytes int64
	// StreamWriteTimeout bounds each write of a response (each frame of a
	// stream): a client that stops reading is dropped, and the command it
	// watched goes on without it (default 30s).
	StreamWriteTimeout time.Duration
	// Scrub removes the server's host paths from messages that leave it
	// (the server passes api.Scrubber); nil leaves them as they are.
	Scrub  func(string) string
	Logger *slog.Logger
}

type server struct {
	m      *orchestrator.Manager
	opts   Options
	log    *slog.Logger
	secret []byte
	procs  *processes

	watchMu  sync.Mutex
	watchers map[string]*watcher // by ID
}

// New returns the facade's handler. Mount it with its paths stripped of
// Prefix, behind the API's browser edge (the server does: api.Guard checks
// the Host header and the Origin of state-changing requests).
func New(m *orchestrator.Manager, opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 300 * time.Second
	}
	if opts.StreamWriteTimeout <= 0 {
		opts.StreamWriteTimeout = 30 * time.Second
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails on supported platforms
	s := &server{m: m, opts: opts, log: opts.Logger, secret: secret, procs: newProcesses(), watchers: map[string]*watcher{}}

	mux := http.NewServeMux()
	s.controlRoutes(mux)
	s.envdRoutes(mux)
	return s.withAccessLog(mux)
}

// withAccessLog logs every request once it is done, as the API does for
// its own routes, and bounds each write by StreamWriteTimeout.
func (s *server) withAccessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.opts.StreamWriteTimeout}
		next.ServeHTTP(rec, r)
		// The connection may carry another request: lift the deadline.
		_ = rec.rc.SetWriteDeadline(time.Time{})
		s.log.Info("e2b request", "method", r.Method, "path", Prefix+r.URL.Path, "status", cmp.Or(rec.status, http.StatusOK),
			"duration", time.Since(start), "sandbox", r.Header.Get("E2b-Sandbox-Id"), "request_id", w.Header().Get("X-Request-ID"))
	})
}

// statusRecorder remembers the status and puts every write under a
// deadline. It is an http.Flusher because Connect's streams need one.
type statusRecorder struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	status  int
}

func (rec *statusRecorder) WriteHeader(code int) {
	if rec.status == 0 && code >= 200 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *statusRecorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if err := rec.rc.SetWriteDeadline(time.Now().Add(rec.timeout)); err != nil {
		return 0, err
	}
	return rec.ResponseWriter.Write(p)
}

func (rec *statusRecorder) Flush() {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.rc.SetWriteDeadline(time.Now().Add(rec.timeout)) == nil {
		_ = rec.rc.Flush()
	}
}

func (rec *statusRecorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

func (s *server) scrub(msg string) string {
	if s.opts.Scrub == nil {
		return msg
	}
	return s.opts.Scrub(msg)
}

// token is the sandbox's daemon access token: derived, so that it needs
// no storage and connect can hand it out again. It changes when the
// server restarts; Sandbox.connect fetches the new one.
func (s *server) token(sandboxID string) string {
	h := hmac.New(sha256.New, s.secret)
	h.Write([]byte(sandboxID))
	return hex.EncodeToString(h.Sum(nil))
}

// tokenValid compares in constant time.
func (s *server) tokenValid(sandboxID, got string) bool {
	want := s.token(sandboxID)
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// apiKeyValid compares digests, so that the time taken says nothing about
// the key's length either.
func (s *server) apiKeyValid(got string) bool {
	if s.opts.APIKey == "" {
		return true
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.opts.APIKey))
	return got != "" && subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// statusOf maps an orchestrator error to the HTTP status E2B's clients
// expect. Destroyed sandboxes are 404: the SDK's kill reads that as false.
func statusOf(err error) int {
	switch errdefs.Classify(err) {
	case errdefs.ErrInvalidArgument:
		return http.StatusBadRequest
	case errdefs.ErrUnauthorized:
		return http.StatusUnauthorized
	case errdefs.ErrNotFound, errdefs.ErrSandboxNotFound, errdefs.ErrSandboxDestroyed,
		errdefs.ErrFileNotFound, errdefs.ErrProviderNotFound:
		return http.StatusNotFound
	case errdefs.ErrConflict:
		return http.StatusConflict
	case errdefs.ErrResourceLimit:
		return http.StatusTooManyRequests
	case errdefs.ErrUnimplemented:
		return http.StatusNotImplemented
	case errdefs.ErrProviderUnavailable:
		return http.StatusServiceUnavailable
	case errdefs.ErrExecTimeout:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
