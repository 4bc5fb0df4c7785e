package docker

import (
	"context"
	"errors"
	"fmt"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// classify maps a Docker client error to the StacyVM taxonomy by the types
// the client gives its errors (from the daemon's HTTP status), never by
// their text. The caller's own cancellation keeps its context error.
func classify(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	var class *errdefs.Class
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	case client.IsErrConnectionFailed(err), cerrdefs.IsUnavailable(err):
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "%s", msg), dockerHint)
	case cerrdefs.IsNotFound(err):
		class = errdefs.ErrNotFound
	case cerrdefs.IsConflict(err), cerrdefs.IsAlreadyExists(err):
		class = errdefs.ErrConflict
	case cerrdefs.IsInvalidArgument(err):
		class = errdefs.ErrInvalidArgument
	case cerrdefs.IsResourceExhausted(err):
		class = errdefs.ErrResourceLimit
	case cerrdefs.IsNotImplemented(err):
		class = errdefs.ErrUnimplemented
	default:
		return fmt.Errorf("%s: %w", msg, err)
	}
	return errdefs.Wrap(class, err, "%s", msg)
}

func isNotFound(err error) bool { return err != nil && cerrdefs.IsNotFound(err) }
