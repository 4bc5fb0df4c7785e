package client

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Error is a failure the server reported: a non-2xx status with the
// contract's error body, or an error frame inside an exec stream (Status
// 0, since the stream's 200 had already been sent). It unwraps to the
// errdefs class its status and code stand for, so that
// errors.Is(err, errdefs.ErrNotFound) works.
type Error struct {
	Status    int    // HTTP status
	Code      string // e.g. "NOT_FOUND"; "" when the body was not an API error
	Message   string
	RequestID string
	Hint      string // advice for the caller, when the server gave one

	class *errdefs.Class
	body  []byte // the raw error body, for routes that extend it
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("stacyvm: ")
	if e.Code != "" {
		b.WriteString(e.Code)
	} else {
		fmt.Fprintf(&b, "HTTP %d", e.Status)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request ")
		b.WriteString(e.RequestID)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the errdefs class, or nil for an internal error.
func (e *Error) Unwrap() error {
	if e.class == nil {
		return nil
	}
	return e.class
}

// Class returns the errdefs class the error belongs to, or nil when the
// server reported an internal (unclassified) error.
func (e *Error) Class() *errdefs.Class { return e.class }

// maxErrorBody bounds how much of an error response is read: an error body
// is small, and a misbehaving proxy must not make the client buffer a page.
const maxErrorBody = 64 << 10

type errorBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Hint      string `json:"hint"`
}

// parseError turns a non-2xx response into an *Error. A body that is not
// the contract's JSON (a proxy's HTML page, say) still yields an Error
// classified by status, with a short excerpt of the body as its message.
func parseError(resp *http.Response, notFound *errdefs.Class) *Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode, body: raw}
	var body errorBody
	if json.Unmarshal(raw, &body) == nil && (body.Code != "" || body.Message != "") {
		e.Code, e.Message, e.RequestID, e.Hint = body.Code, body.Message, body.RequestID, body.Hint
	} else {
		e.Message = excerpt(raw)
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-ID")
	}
	e.class = classify(e.Status, e.Code, notFound)
	return e
}

// excerpt returns the start of a non-JSON body as one printable line.
func excerpt(raw []byte) string {
	const max = 200
	if !utf8.Valid(raw) {
		return ""
	}
	s := strings.Join(strings.Fields(string(raw)), " ")
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

// codeClasses maps the contract's codes (and the specific ones a server may
// use in their place) to classes. NOT_FOUND is absent: its meaning depends
// on the route.
var codeClasses = map[string]*errdefs.Class{
	"BAD_REQUEST":          errdefs.ErrInvalidArgument,
	"INVALID_ARGUMENT":     errdefs.ErrInvalidArgument,
	"UNAUTHORIZED":         errdefs.ErrUnauthorized,
	"SANDBOX_NOT_FOUND":    errdefs.ErrSandboxNotFound,
	"SANDBOX_DESTROYED":    errdefs.ErrSandboxDestroyed,
	"PROVIDER_NOT_FOUND":   errdefs.ErrProviderNotFound,
	"FILE_NOT_FOUND":       errdefs.ErrFileNotFound,
	"TIMEOUT":              errdefs.ErrExecTimeout,
	"EXEC_TIMEOUT":         errdefs.ErrExecTimeout,
	"CONFLICT":             errdefs.ErrConflict,
	"RESOURCE_LIMIT":       errdefs.ErrResourceLimit,
	"UNAVAILABLE":          errdefs.ErrProviderUnavailable,
	"PROVIDER_UNAVAILABLE": errdefs.ErrProviderUnavailable,
	"UNIMPLEMENTED":        errdefs.ErrUnimplemented,
	"NOT_IMPLEMENTED":      errdefs.ErrUnimplemented,
	// The server's refusals at the HTTP edge: a client that sends these
	// is misconfigured (a body of the wrong type, a foreign Origin, a
	// Host name the server does not answer to).
	"UNSUPPORTED_MEDIA_TYPE": errdefs.ErrInvalidArgument,
	"MISDIRECTED_REQUEST":    errdefs.ErrInvalidArgument,
	"FORBIDDEN":              errdefs.ErrUnauthorized,
}

// classify maps a status and code to a class: a known code wins, then the
// status. notFound is what a bare 404 means on the route that was called
// (for GET /sandboxes/{id}, a missing sandbox). nil means internal.
func classify(status int, code string, notFound *errdefs.Class) *errdefs.Class {
	if code == "INTERNAL_ERROR" {
		return nil
	}
	if c, ok := codeClasses[code]; ok {
		return c
	}
	switch status {
	case http.StatusNotFound:
		if notFound != nil {
			return notFound
		}
		return errdefs.ErrNotFound
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType,
		http.StatusMisdirectedRequest, http.StatusUnprocessableEntity:
		return errdefs.ErrInvalidArgument
	case http.StatusUnauthorized, http.StatusForbidden:
		return errdefs.ErrUnauthorized
	case http.StatusRequestTimeout:
		return errdefs.ErrExecTimeout
	case http.StatusConflict:
		return errdefs.ErrConflict
	case http.StatusTooManyRequests, http.StatusRequestEntityTooLarge:
		return errdefs.ErrResourceLimit
	case http.StatusNotImplemented:
		return errdefs.ErrUnimplemented
	case http.StatusServiceUnavailable:
		return errdefs.ErrProviderUnavailable
	}
	return nil
}
