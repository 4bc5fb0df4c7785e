package errdefs

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
	"time"
)

func TestClassesRefineTheirParents(t *testing.T) {
	cases := []struct {
		class  *Class
		parent *Class
	}{
		{ErrSandboxNotFound, ErrNotFound},
		{ErrSandboxDestroyed, ErrNotFound},
		{ErrProviderNotFound, ErrNotFound},
		{ErrFileNotFound, ErrNotFound},
	}
	for _, tc := range cases {
		err := New(tc.class, "x")
		if !errors.Is(err, tc.class) || !errors.Is(err, tc.parent) {
			t.Errorf("%v: Is(class)=%v Is(parent)=%v", tc.class, errors.Is(err, tc.class), errors.Is(err, tc.parent))
		}
		if errors.Is(New(tc.parent, "x"), tc.class) {
			t.Errorf("a %v error must not be a %v", tc.parent, tc.class)
		}
	}
	if errors.Is(ErrSandboxNotFound, ErrSandboxDestroyed) {
		t.Error("siblings must not match")
	}
}

func TestClassifyPicksMostSpecific(t *testing.T) {
	for _, c := range Classes() {
		err := fmt.Errorf("outer: %w", New(c, "inner"))
		if got := Classify(err); got != c {
			t.Errorf("Classify(%v) = %v", c, got)
		}
	}
	if Classify(errors.New("plain")) != nil || Classify(nil) != nil {
		t.Error("unclassified errors must classify as nil")
	}
}

func TestNewAndWrapMessages(t *testing.T) {
	if got := New(ErrSandboxNotFound, "sandbox %s not found", "sb-1").Error(); got != "sandbox sb-1 not found" {
		t.Errorf("New message = %q", got)
	}
	err := Wrap(ErrFileNotFound, fs.ErrNotExist, "read %s", "/a")
	if got := err.Error(); got != "read /a: file does not exist" {
		t.Errorf("Wrap message = %q", got)
	}
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrFileNotFound) || !errors.Is(err, ErrNotFound) {
		t.Error("Wrap must keep both the class and the cause")
	}
	if Wrap(ErrConflict, nil, "x") != nil {
		t.Error("Wrap(nil) must be nil")
	}
}

func TestHints(t *testing.T) {
	err := fmt.Errorf("ctx: %w", WithHint(New(ErrResourceLimit, "full"), "retry later"))
	if Hint(err) != "retry later" {
		t.Errorf("Hint = %q", Hint(err))
	}
	if !errors.Is(err, ErrResourceLimit) {
		t.Error("hint hides the class")
	}
	if Hint(New(ErrConflict, "x")) != "" || WithHint(nil, "h") != nil {
		t.Error("no hint expected")
	}
}

// TestCodes pins every class's wire code: the agent and custom provider
// protocols carry them, so a change here breaks deployed peers.
func TestCodes(t *testing.T) {
	want := map[*Class]string{
		ErrSandboxNotFound:     "sandbox_not_found",
		ErrSandboxDestroyed:    "sandbox_destroyed",
		ErrProviderNotFound:    "provider_not_found",
		ErrFileNotFound:        "file_not_found",
		ErrNotFound:            "not_found",
		ErrConflict:            "conflict",
		ErrInvalidArgument:     "invalid_argument",
		ErrUnauthorized:        "unauthorized",
		ErrUnimplemented:       "unimplemented",
		ErrResourceLimit:       "resource_limit",
		ErrProviderUnavailable: "provider_unavailable",
		ErrExecTimeout:         "exec_timeout",
	}
	if len(Classes()) != len(want) {
		t.Errorf("%d classes, %d pinned codes: pin the new class's code here", len(Classes()), len(want))
	}
	for _, c := range Classes() {
		code, ok := want[c]
		if !ok {
			t.Errorf("class %v has no pinned code", c)
			continue
		}
		if c.Code() != code {
			t.Errorf("%v.Code() = %q, want %q", c, c.Code(), code)
		}
		if got := ClassByCode(code); got != c {
			t.Errorf("ClassByCode(%q) = %v, want %v", code, got, c)
		}
		if got := CodeOf(fmt.Errorf("outer: %w", New(c, "inner"))); got != code {
			t.Errorf("CodeOf(wrapped %v) = %q, want %q", c, got, code)
		}
	}
	for _, code := range []string{CodeInternal, "", "quota_exceeded", "Not_Found", "not found"} {
		if c := ClassByCode(code); c != nil {
			t.Errorf("ClassByCode(%q) = %v, want nil", code, c)
		}
	}
	if got := CodeOf(errors.New("plain")); got != CodeInternal {
		t.Errorf("CodeOf(unclassified) = %q", got)
	}
}

func TestCodeAndStatus(t *testing.T) {
	table := map[*Class]int{ErrFileNotFound: 404, ErrConflict: 409}
	cases := []struct {
		err    error
		code   string
		status int
	}{
		{New(ErrFileNotFound, "x"), "file_not_found", 404},
		{fmt.Errorf("wrapped: %w", New(ErrConflict, "x")), "conflict", 409},
		{New(ErrExecTimeout, "x"), "exec_timeout", 500}, // not in the table
		{errors.New("plain"), CodeInternal, 500},
	}
	for _, tc := range cases {
		if code, status := CodeAndStatus(tc.err, table); code != tc.code || status != tc.status {
			t.Errorf("CodeAndStatus(%v) = %s %d, want %s %d", tc.err, code, status, tc.code, tc.status)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	base := New(ErrResourceLimit, "pool empty")
	err := fmt.Errorf("spawn: %w", WithHint(WithRetryAfter(base, 3*time.Second), "retry"))
	if got := RetryAfter(err); got != 3*time.Second {
		t.Errorf("RetryAfter = %s, want 3s", got)
	}
	if !errors.Is(err, ErrResourceLimit) || Hint(err) != "retry" {
		t.Errorf("class or hint lost: %v, %q", Classify(err), Hint(err))
	}
	if RetryAfter(base) != 0 || WithRetryAfter(nil, time.Second) != nil {
		t.Error("RetryAfter without a delay, or WithRetryAfter(nil), is not zero")
	}
}
