package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/membudget"
)

// Error codes of the contract, plus the extensions this server adds.
const (
	codeBadRequest           = "BAD_REQUEST"
	codeUnauthorized         = "UNAUTHORIZED"
	codeNotFound             = "NOT_FOUND"
	codeSandboxDestroyed     = "SANDBOX_DESTROYED"
	codeFileNotFound         = "FILE_NOT_FOUND"
	codeTimeout              = "TIMEOUT"
	codeConflict             = "CONFLICT"
	codeResourceLimit        = "RESOURCE_LIMIT"
	codeUnavailable          = "UNAVAILABLE"
	codeUnimplemented        = "UNIMPLEMENTED"          // extension
	codeMethodNotAllowed     = "METHOD_NOT_ALLOWED"     // extension
	codeForbidden            = "FORBIDDEN"              // extension: a foreign Origin
	codeMisdirected          = "MISDIRECTED_REQUEST"    // extension: a foreign Host
	codeUnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE" // extension: a body of the wrong type
	codeInternal             = "INTERNAL_ERROR"
)

// errMethodNotAllowed marks a request for a known path with a method the
// path does not serve. It is an HTTP-level condition, not a domain class,
// so it lives here rather than in errdefs.
type errMethodNotAllowed struct{ method, path string }

func (e *errMethodNotAllowed) Error() string {
	return e.method + " is not allowed on " + e.path
}

// errorStatus is the one place that turns an error into an HTTP status and
// a contract code. Classes come from errdefs; the only other errors it
// knows are the HTTP-level ones the API itself raises (body too large,
// method not allowed, and the edge's refusals).
func errorStatus(err error) (int, string) {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge, codeResourceLimit
	}
	if _, ok := errors.AsType[*errMethodNotAllowed](err); ok {
		return http.StatusMethodNotAllowed, codeMethodNotAllowed
	}
	if e, ok := errors.AsType[*edgeError](err); ok {
		return e.status, e.code
	}
	switch errdefs.Classify(err) {
	case errdefs.ErrInvalidArgument:
		return http.StatusBadRequest, codeBadRequest
	case errdefs.ErrUnauthorized:
		return http.StatusUnauthorized, codeUnauthorized
	case errdefs.ErrSandboxDestroyed:
		return http.StatusNotFound, codeSandboxDestroyed
	case errdefs.ErrFileNotFound:
		return http.StatusNotFound, codeFileNotFound
	case errdefs.ErrNotFound, errdefs.ErrSandboxNotFound, errdefs.ErrProviderNotFound:
		return http.StatusNotFound, codeNotFound
	case errdefs.ErrExecTimeout:
		return http.StatusRequestTimeout, codeTimeout
	case errdefs.ErrConflict:
		return http.StatusConflict, codeConflict
	case errdefs.ErrResourceLimit:
		return http.StatusTooManyRequests, codeResourceLimit
	case errdefs.ErrUnimplemented:
		return http.StatusNotImplemented, codeUnimplemented
	case errdefs.ErrProviderUnavailable:
		return http.StatusServiceUnavailable, codeUnavailable
	}
	return http.StatusInternalServerError, codeInternal
}

// errorBody is the contract's error object.
type errorBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Hint      string `json:"hint,omitempty"`
}

// genericMessages stand in for a message that must not be shown: every
// 500, and any error whose chain carries a host path.
var genericMessages = map[string]string{
	codeBadRequest:       "the request is invalid",
	codeNotFound:         "not found",
	codeSandboxDestroyed: "the sandbox was destroyed",
	codeFileNotFound:     "file not found",
	codeTimeout:          "the command ran past its timeout",
	codeConflict:         "the request conflicts with the current state",
	codeResourceLimit:    "a resource limit was reached",
	codeUnavailable:      "the provider is unavailable",
	codeUnimplemented:    "not implemented by this provider",
	codeInternal:         "internal error",
}

// describe builds the body for err and logs it at a level that matches
// who is at fault. The real error of a 500 only ever reaches the log. It is
// the only way an error reaches a client (error bodies, stream and
// WebSocket error frames), and it scrubs host paths (scrub.go).
func (s *server) describe(ctx context.Context, err error) (int, errorBody) {
	status, code := errorStatus(err)
	body := errorBody{Code: code, RequestID: requestID(ctx), Hint: s.scrub(errdefs.Hint(err))}
	switch {
	case status == http.StatusInternalServerError:
		body.Message = "internal error; quote request id " + body.RequestID + " when reporting it"
		body.Hint = ""
	case carriesHostPath(err):
		body.Message = genericMessages[code]
	default:
		// The type may be gone (a recorded error quoted in a message):
		// the text is scrubbed too.
		body.Message = s.scrub(err.Error())
	}
	level := slog.LevelDebug
	switch {
	case status >= 500 && ctx.Err() == nil:
		level = slog.LevelError
		if status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
	case status >= 500:
		// The client went away; whatever failed failed because of that.
		level = slog.LevelInfo
	}
	s.log.Log(ctx, level, "request failed", "request_id", body.RequestID, "status", status, "code", code, "err", err)
	return status, body
}

// carriesHostPath reports whether err's chain holds an error type that
// embeds a host path or socket address (an *fs.PathError from an
// os.Open on the host, a unix socket dial). Such text is never shown to a
// client; a path relative to an os.Root is fine, because it is the
// sandbox's own path.
func carriesHostPath(err error) bool {
	if pe, ok := errors.AsType[*fs.PathError](err); ok && filepath.IsAbs(pe.Path) {
		return true
	}
	if le, ok := errors.AsType[*os.LinkError](err); ok && (filepath.IsAbs(le.Old) || filepath.IsAbs(le.New)) {
		return true
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok {
		if a, ok := oe.Addr.(*net.UnixAddr); ok && a != nil {
			return true
		}
		if oe.Net == "unix" || strings.HasPrefix(oe.Net, "unix") {
			return true
		}
	}
	return false
}

// writeError sends the contract's error body for err.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := s.describe(r.Context(), err)
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		body.Message = fmt.Sprintf("request body exceeds the limit of %d bytes", mbe.Limit)
		if !strings.HasSuffix(r.URL.Path, "/files/raw") {
			body.Hint = "send large files as raw bytes with PUT /api/v1/sandboxes/{id}/files/raw"
		}
	}
	if e, ok := errors.AsType[*membudget.Exhausted](err); ok && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(e.RetryAfter.Round(time.Second), time.Second)/time.Second)))
	} else if d := errdefs.RetryAfter(err); d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(d.Round(time.Second), time.Second)/time.Second)))
	}
	if e, ok := errors.AsType[*errMethodNotAllowed](err); ok {
		if allow := s.allowedMethods(e.path); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
		}
	}
	writeJSON(w, status, body)
}
