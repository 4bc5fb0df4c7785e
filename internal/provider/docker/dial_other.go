//go:build !linux

package docker

import (
	"context"
	"net"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// dialUnix: the Docker provider bind-mounts host paths into containers,
// which needs a local Linux daemon.
func dialUnix(context.Context, string) (net.Conn, error) {
	return nil, errdefs.New(errdefs.ErrProviderUnavailable, "the docker provider needs Linux")
}
