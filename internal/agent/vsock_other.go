//go:build !linux

package agent

import (
	"net"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ListenVsock is only available on Linux.
func ListenVsock(port uint32) (net.Listener, error) {
	return nil, errdefs.New(errdefs.ErrUnimplemented, "vsock:%d: vsock is only supported on Linux", port)
}
