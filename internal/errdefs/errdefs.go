// Package errdefs is StacyVM's error taxonomy. Every failure is classified
// once, where it happens, by wrapping one of the classes below; callers test
// the class with errors.Is and the API maps it to one HTTP status. Nothing in
// StacyVM classifies an error by its text.
package errdefs

import (
	"errors"
	"fmt"
	"time"
)

// Class is an error class. A class may refine a broader one (a missing sandbox
// is also "not found"), so errors.Is matches both the class and its parents.
type Class struct {
	name   string
	code   string
	parent *Class
}

func (c *Class) Error() string { return c.name }

// Code is the class's stable machine-readable name, in snake_case
// ("sandbox_not_found"). StacyVM's wire protocols carry it so that the far
// side rebuilds an error of the same class; changing one breaks every peer.
func (c *Class) Code() string { return c.code }

// Is reports whether target is one of c's broader classes. errors.Is already
// handles c == target.
func (c *Class) Is(target error) bool {
	for p := c.parent; p != nil; p = p.parent {
		if p == target {
			return true
		}
	}
	return false
}

func newClass(name, code string, parent *Class) *Class {
	return &Class{name: name, code: code, parent: parent}
}

// The classes. Broad ones first; the refinements name their parent.
var (
	ErrNotFound            = newClass("not found", "not_found", nil)
	ErrConflict            = newClass("conflict", "conflict", nil)
	ErrInvalidArgument     = newClass("invalid argument", "invalid_argument", nil)
	ErrUnauthorized        = newClass("unauthorized", "unauthorized", nil)
	ErrUnimplemented       = newClass("unimplemented", "unimplemented", nil)
	ErrResourceLimit       = newClass("resource limit", "resource_limit", nil)
	ErrProviderUnavailable = newClass("provider unavailable", "provider_unavailable", nil)
	ErrExecTimeout         = newClass("exec timeout", "exec_timeout", nil)

	ErrSandboxNotFound  = newClass("sandbox not found", "sandbox_not_found", ErrNotFound)
	ErrSandboxDestroyed = newClass("sandbox destroyed", "sandbox_destroyed", ErrNotFound)
	ErrProviderNotFound = newClass("provider not found", "provider_not_found", ErrNotFound)
	ErrFileNotFound     = newClass("file not found", "file_not_found", ErrNotFound)
)

// classes lists every class, most specific first, for Classify.
var classes = []*Class{
	ErrSandboxNotFound, ErrSandboxDestroyed, ErrProviderNotFound, ErrFileNotFound,
	ErrNotFound, ErrConflict, ErrInvalidArgument, ErrUnauthorized, ErrUnimplemented,
	ErrResourceLimit, ErrProviderUnavailable, ErrExecTimeout,
}

// Classes returns every class, most specific first.
func Classes() []*Class { return append([]*Class(nil), classes...) }

// Classify returns the most specific class err belongs to, or nil when err
// is unclassified (an internal error).
func Classify(err error) *Class {
	if err == nil {
		return nil
	}
	for _, c := range classes {
		if errors.Is(err, c) {
			return c
		}
	}
	return nil
}

// CodeInternal is the wire code of an error that belongs to no class. No
// class has it.
const CodeInternal = "internal"

// CodeOf returns the code of err's most specific class, or CodeInternal
// when err is unclassified.
func CodeOf(err error) string {
	if c := Classify(err); c != nil {
		return c.code
	}
	return CodeInternal
}

// ClassByCode returns the class whose Code is code, or nil for
// CodeInternal and for codes this build does not know (a newer peer's):
// callers decide what an unknown code means, nothing here guesses.
func ClassByCode(code string) *Class {
	for _, c := range classes {
		if c.code == code {
			return c
		}
	}
	return nil
}

// classified is an error with its own message that belongs to a class and
// optionally wraps a cause.
type classified struct {
	class *Class
	msg   string
	cause error
}

func (e *classified) Error() string {
	if e.cause != nil {
		return e.msg + ": " + e.cause.Error()
	}
	return e.msg
}

func (e *classified) Unwrap() []error {
	if e.cause != nil {
		return []error{e.class, e.cause}
	}
	return []error{e.class}
}

// New returns an error of class c whose message is the formatted text alone
// (no class prefix), so messages read naturally: "sandbox sb-1 not found".
func New(c *Class, format string, args ...any) error {
	return &classified{class: c, msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies cause as c, prefixing its message with the formatted
// text. errors.Is matches both c and anything in cause's chain. Wrap of a nil
// cause returns nil.
func Wrap(c *Class, cause error, format string, args ...any) error {
	if cause == nil {
		return nil
	}
	return &classified{class: c, msg: fmt.Sprintf(format, args...), cause: cause}
}

// Hinted is implemented by errors that carry advice for the caller (an AI
// agent, mostly) on what to do next.
type Hinted interface {
	error
	Hint() string
}

type hinted struct {
	error
	hint string
}

func (h *hinted) Unwrap() error { return h.error }
func (h *hinted) Hint() string  { return h.hint }

// WithHint attaches advice to err; Hint finds it again anywhere in the chain.
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &hinted{error: err, hint: hint}
}

// Hint returns the first hint in err's chain, or "".
func Hint(err error) string {
	if h, ok := errors.AsType[Hinted](err); ok {
		return h.Hint()
	}
	return ""
}

// CodeAndStatus returns err's wire code and the status a protocol gives its
// class in statuses; an unclassified error, or a class the table leaves
// out, gets 500. Each protocol keeps its own table (the agent and custom
// protocols choose different statuses for some classes).
func CodeAndStatus(err error, statuses map[*Class]int) (code string, status int) {
	c := Classify(err)
	if c == nil {
		return CodeInternal, 500
	}
	if status, ok := statuses[c]; ok {
		return c.Code(), status
	}
	return c.Code(), 500
}

type retryAfter struct {
	error
	after time.Duration
}

func (r *retryAfter) Unwrap() error { return r.error }

// WithRetryAfter attaches to err how long a caller should wait before
// retrying (HTTP's Retry-After); RetryAfter finds it again in the chain.
func WithRetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryAfter{error: err, after: d}
}

// RetryAfter returns the first retry delay in err's chain, or 0.
func RetryAfter(err error) time.Duration {
	if r, ok := errors.AsType[*retryAfter](err); ok {
		return r.after
	}
	return 0
}
