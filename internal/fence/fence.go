// Package fence keeps an upload body from being read after the call that
// sent it returned. net/http may go on reading a request body after the
// reply arrived (or after a failed request), while the caller already
// reuses or closes its reader; a fenced Reader stops passing reads through
// the moment it is fenced.
package fence

import (
	"errors"
	"io"
	"sync"
)

// ErrFenced is what Read returns once the reader is fenced.
var ErrFenced = errors.New("upload ended: the call that sent it has returned")

// Reader passes reads through to the wrapped reader until Fence, and
// remembers the first error other than io.EOF the wrapped reader returned,
// so the caller can report its own reader's failure rather than the broken
// request it caused.
type Reader struct {
	mu     sync.Mutex
	r      io.Reader
	err    error
	fenced bool
}

// NewReader wraps r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

func (f *Reader) Read(p []byte) (int, error) {
	// The lock is held across the wrapped Read so that once Fence
	// returns, no read of r is still in flight.
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fenced {
		return 0, ErrFenced
	}
	n, err := f.r.Read(p)
	if err != nil && err != io.EOF && f.err == nil {
		f.err = err
	}
	return n, err
}

// Fence ends all reads of the wrapped reader; it waits for one in flight.
func (f *Reader) Fence() {
	f.mu.Lock()
	f.fenced = true
	f.mu.Unlock()
}

// Err returns the first error other than io.EOF the wrapped reader
// returned, or nil.
func (f *Reader) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
