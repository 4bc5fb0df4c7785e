package orchestrator

import (
	"context"
	"sync"
)

// idLocks holds one lock per sandbox ID that someone holds or awaits, and
// forgets it when nobody does. A lock per ID, rather than a fixed set of
// stripes, means a destroy stuck on one sandbox never delays another.
type idLocks struct {
	mu sync.Mutex
	m  map[string]*idLock
}

type idLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

// lock waits until id is free or ctx ends, and returns the unlock.
func (l *idLocks) lock(ctx context.Context, id string) (func(), error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*idLock{}
	}
	lk := l.m[id]
	if lk == nil {
		lk = &idLock{ch: make(chan struct{}, 1)}
		l.m[id] = lk
	}
	lk.refs++
	l.mu.Unlock()

	select {
	case lk.ch <- struct{}{}:
		return func() {
			<-lk.ch
			l.release(id, lk)
		}, nil
	case <-ctx.Done():
		l.release(id, lk)
		return nil, context.Cause(ctx)
	}
}

func (l *idLocks) release(id string, lk *idLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk.refs--
	if lk.refs == 0 {
		delete(l.m, id)
	}
}

// held reports how many IDs have a holder or waiter, for tests.
func (l *idLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
