// Package membudget bounds the memory that requests hold at once: the
// buffered output of commands and JSON file bodies. A request reserves
// bytes before it holds them; when the budget is spent it waits a little
// for others to finish, then fails with a retryable resource-limit error
// instead of letting the server run out of memory.
package membudget

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// DefaultWait is how long a reservation waits for memory by default.
const DefaultWait = 5 * time.Second

// Budget is a number of bytes shared by concurrent requests. A nil Budget
// is unlimited: every reservation succeeds at once.
type Budget struct {
	sem   *semaphore.Weighted
	size  int64
	wait  time.Duration
	inUse atomic.Int64
}

// New returns a budget of size bytes whose reservations wait at most wait
// (DefaultWait when wait <= 0). size <= 0 returns nil: no limit.
func New(size int64, wait time.Duration) *Budget {
	if size <= 0 {
		return nil
	}
	if wait <= 0 {
		wait = DefaultWait
	}
	return &Budget{sem: semaphore.NewWeighted(size), size: size, wait: wait}
}

// Exhausted is the error of a reservation that could not be had. Its
// class is errdefs.ErrResourceLimit; RetryAfter is a hint for clients.
type Exhausted struct {
	Want, Size int64
	RetryAfter time.Duration
	// Never: the reservation is larger than the whole budget.
	Never bool
}

func (e *Exhausted) Error() string {
	if e.Never {
		return "the request needs more memory than the server's whole budget (server.memory_budget_bytes)"
	}
	return "the server's memory budget for buffered output and file bodies is in use by other requests; retry shortly"
}

// Is makes Exhausted match errdefs.ErrResourceLimit.
func (e *Exhausted) Is(target error) bool { return target == errdefs.ErrResourceLimit }

// Acquire reserves n bytes, waiting up to the budget's wait (or until ctx
// ends) for them. It fails with *Exhausted, or with ctx's error.
func (b *Budget) Acquire(ctx context.Context, n int64) error {
	if b == nil || n <= 0 {
		return nil
	}
	if n > b.size {
		return &Exhausted{Want: n, Size: b.size, Never: true}
	}
	if b.sem.TryAcquire(n) {
		b.inUse.Add(n)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, b.wait)
	defer cancel()
	if err := b.sem.Acquire(wctx, n); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return context.Cause(ctx)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return &Exhausted{Want: n, Size: b.size, RetryAfter: time.Second}
		}
		return err
	}
	b.inUse.Add(n)
	return nil
}

// Release returns n bytes reserved with Acquire.
func (b *Budget) Release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.inUse.Add(-n)
	b.sem.Release(n)
}

// InUse is how many bytes are reserved now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.inUse.Load()
}

// Size is the budget's total, 0 for an unlimited one.
func (b *Budget) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// Hint tells a client what to do about it.
func (e *Exhausted) Hint() string {
	if e.Never {
		return "ask for less at once (a smaller file, or stream the command's output with \"stream\": true)"
	}
	return "retry after the Retry-After delay, or stream large output instead of buffering it"
}
