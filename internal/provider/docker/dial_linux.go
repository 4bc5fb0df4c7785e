package docker

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// dialUnix dials the agent socket at path, which lives in a directory the
// sandbox can write to. Code in the sandbox could replace the socket with
// a symbolic link to any socket of the host (dockerd's, say), so the path
// is opened without following links, must be a socket, and is dialled
// through /proc/self/fd: the connection reaches exactly the inode checked.
// That also keeps the address short whatever the state directory's depth.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent socket")
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "agent socket")
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, errdefs.New(errdefs.ErrProviderUnavailable,
			"the sandbox's agent socket was replaced by something that is not a socket (mode %#o)", st.Mode)
	}
	return agent.UnixDialer(fmt.Sprintf("/proc/self/fd/%d", fd))(ctx)
}
