//go:build !linux

package guestinit

import (
	"log/slog"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ProcMounted is true outside Linux: there is no guest to set up.
func ProcMounted() bool { return true }

// Setup is Linux only.
func Setup(*slog.Logger) error {
	return errdefs.New(errdefs.ErrUnimplemented, "guest init is Linux only")
}

// Refresh is Linux only.
func Refresh([]byte, time.Time) (time.Duration, error) {
	return 0, errdefs.New(errdefs.ErrUnimplemented, "guest refresh is Linux only")
}
