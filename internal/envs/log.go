package envs

import (
	"fmt"
	"sync"
)

// buildLog is a build's output: the last max bytes of it, with a note
// of what was dropped in front. Followers read by absolute offset, so a
// follower that falls behind the bound learns how much it missed.
type buildLog struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	start   int64 // absolute offset of buf[0]
	changed chan struct{}
}

func newBuildLog(max int, initial string) *buildLog {
	l := &buildLog{max: max, changed: make(chan struct{})}
	l.Write([]byte(initial))
	return l
}

// Write appends p, dropping the oldest output past the bound. It never
// fails: a build's output must not stop the build.
func (l *buildLog) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - l.max; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
		l.start += int64(over)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// String is the log as stored and returned: what is kept, after a line
// saying how much earlier output was dropped.
func (l *buildLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.start == 0 {
		return string(l.buf)
	}
	return fmt.Sprintf("[stacyvm: %d bytes of earlier output dropped]\n", l.start) + string(l.buf)
}

// ReadFrom returns what follows the absolute offset off, how many bytes
// before it were lost to the bound, the new offset, and a channel closed
// at the next write.
func (l *buildLog) ReadFrom(off int64) (data string, skipped, next int64, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off < l.start {
		skipped, off = l.start-off, l.start
	}
	end := l.start + int64(len(l.buf))
	if off > end {
		off = end
	}
	return string(l.buf[off-l.start:]), skipped, end, l.changed
}
