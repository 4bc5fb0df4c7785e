package e2b

import (
	"errors"
	"io"
	"sync"
)

// maxPendingInput bounds the stdin a command has not read yet. SendInput
// past it fails (ResourceExhausted) instead of holding the caller or
// growing without end.
const maxPendingInput = 4 << 20

var (
	errInputClosed = errors.New("stdin is closed")
	errInputFull   = errors.New("the command has not read its pending stdin (4 MiB)")
)

// inputQueue is a command's standard input as SendInput feeds it: writes
// never wait for the command to read, and Read blocks until there is
// input, it is closed (EOF) or the command has ended (abort).
type inputQueue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	closed  bool
	aborted bool
}

func newInputQueue() *inputQueue {
	q := &inputQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *inputQueue) Write(p []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed || q.aborted:
		return errInputClosed
	case len(q.buf)+len(p) > maxPendingInput:
		return errInputFull
	}
	q.buf = append(q.buf, p...)
	q.cond.Broadcast()
	return nil
}

// Close ends the input: the command reads EOF once it has read the rest.
func (q *inputQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

// abort drops pending input and ends a Read in progress: the command has
// ended, nobody will read any more.
func (q *inputQueue) abort() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.aborted, q.buf = true, nil
	q.cond.Broadcast()
}

func (q *inputQueue) Read(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.buf) == 0 && !q.closed && !q.aborted {
		q.cond.Wait()
	}
	if q.aborted {
		return 0, io.ErrClosedPipe
	}
	if len(q.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, q.buf)
	q.buf = q.buf[n:]
	if len(q.buf) == 0 {
		q.buf = nil // let the backing array go
	}
	return n, nil
}
