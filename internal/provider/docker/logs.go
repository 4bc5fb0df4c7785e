package docker

import (
	"bytes"
	"context"
	"strconv"
	"strings"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// maxLogBytes bounds how much of a container's log Logs reads.
const maxLogBytes = 4 << 20

// Logs returns up to the last n lines the container's PID 1 (the agent)
// wrote to its stdout and stderr, interleaved; n <= 0 means all of them.
func (p *Provider) Logs(ctx context.Context, id string, n int) ([]string, error) {
	if checkID(id) != nil {
		return nil, errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %q not found", id)
	}
	ctr, err := p.inspect(ctx, id)
	if err != nil {
		return nil, err
	}
	tail := "all"
	if n > 0 {
		tail = strconv.Itoa(n)
	}
	rc, err := p.cli.ContainerLogs(ctx, ctr.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		if isNotFound(err) {
			return nil, p.missing(id)
		}
		return nil, classify(err, "docker: logs of sandbox %s", id)
	}
	defer rc.Close()
	var buf bytes.Buffer
	w := &tailBuffer{buf: &buf, max: maxLogBytes}
	// Without a TTY dockerd multiplexes both streams into one with frame
	// headers; both go to the same buffer, in the order written.
	if _, err := stdcopy.StdCopy(w, w, rc); err != nil && ctx.Err() != nil {
		return nil, classify(err, "docker: logs of sandbox %s", id)
	}
	text := strings.TrimRight(buf.String(), "\n")
	if text == "" {
		return []string{}, nil
	}
	lines := strings.Split(text, "\n")
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, nil
}

// tailBuffer keeps at least the last max bytes written, and at most 2*max.
type tailBuffer struct {
	buf *bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if t.buf.Len() > 2*t.max {
		t.buf.Next(t.buf.Len() - t.max)
	}
	return len(p), nil
}
