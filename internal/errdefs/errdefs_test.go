package errdefs

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
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
