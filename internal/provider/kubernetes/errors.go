package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"net"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// apiHint is advice for an operator whose cluster cannot be reached or
// refuses the provider.
const apiHint = "check kubernetes.kubeconfig (or the in-cluster service account), that the API server " +
	"answers, and that the provider's account may manage pods, pods/exec, pods/log and networkpolicies " +
	"in its namespace (docs/kubernetes.md)"

// classify maps a client-go error to the StacyVM taxonomy by the API
// server's status reason, never by its text. The caller's own
// cancellation keeps its context error.
func classify(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	var class *errdefs.Class
	var netErr net.Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", msg, err)
	case apierrors.IsNotFound(err):
		class = errdefs.ErrNotFound
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
		class = errdefs.ErrConflict
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		class = errdefs.ErrInvalidArgument
	case apierrors.IsTooManyRequests(err):
		class = errdefs.ErrResourceLimit
	case apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "%s", msg), apiHint)
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsServiceUnavailable(err),
		apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err), errors.As(err, &netErr):
		return errdefs.WithHint(errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "%s", msg), apiHint)
	default:
		return fmt.Errorf("%s: %w", msg, err)
	}
	return errdefs.Wrap(class, err, "%s", msg)
}

func notRunning(id, state string) error {
	return errdefs.WithHint(errdefs.New(errdefs.ErrConflict, "sandbox %s is not running (pod %s)", id, state),
		"destroy it and spawn a new one")
}
