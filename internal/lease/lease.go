// Package lease runs work once across the replicas sharing a store. A
// Runner takes a named lease in the store (store.Store.AcquireLease), keeps
// renewing it while the work runs, and ends the work's context as soon as
// the lease is lost: a renewal fails, or the time the last renewal
// guaranteed runs out by this process's own clock.
//
// A lost lease can still race one step of work already under way (a
// replica paused by the kernel or a debugger wakes up mid-step), so work
// calls Check before each step that acts on the world: Check asks the
// store whether the lease is still held with the fencing token the work
// started with. A newer holder has a greater token, so the stale replica's
// step is refused.
package lease

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Store is what a Runner needs of a store.
type Store interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error)
	ReleaseLease(ctx context.Context, name, holder string, token int64) error
	CheckLease(ctx context.Context, name string, token int64) error
	GetLease(ctx context.Context, name string) (store.Lease, error)
}

// DefaultTTL is how long a lease lasts without renewal: how long work
// stalls after its replica dies before another replica takes over.
const DefaultTTL = 15 * time.Second

// Runner takes leases for one holder (a replica). It is safe for
// concurrent use.
type Runner struct {
	st     Store
	holder string
	ttl    time.Duration
	log    *slog.Logger
}

// New returns a Runner taking leases in st as holder, each lasting ttl
// (DefaultTTL when zero) and renewed every ttl/3.
func New(st Store, holder string, ttl time.Duration, log *slog.Logger) *Runner {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{st: st, holder: holder, ttl: ttl, log: log}
}

// NewHolder returns a name for this process as a lease holder, unique
// among replicas: host, PID and a random suffix (a restarted process is
// another holder).
func NewHolder() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// Holder is the name this Runner holds leases under.
func (r *Runner) Holder() string { return r.holder }

// TTL is how long each lease lasts without renewal.
func (r *Runner) TTL() time.Duration { return r.ttl }

// Store is the store the Runner takes leases in.
func (r *Runner) Store() Store { return r.st }

// Do runs fn if this holder can take the lease called name, and returns
// whether it ran it. Another holder's lease is not an error: the work is
// theirs, and Do returns false. fn's context ends when the lease is lost;
// fn calls Check before each step that acts on the world. The lease is
// released when fn returns.
func (r *Runner) Do(ctx context.Context, name string, fn func(ctx context.Context) error) (bool, error) {
	held, release, err := r.Hold(ctx, name)
	if errors.Is(err, errdefs.ErrConflict) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer release()
	return true, fn(held)
}

// Hold takes the lease called name and keeps renewing it until release is
// called (which also gives the lease up) or the lease is lost. The
// returned context carries the fence (see Check) and ends when ctx does or
// the lease is lost. A lease another holder holds is errdefs.ErrConflict.
func (r *Runner) Hold(ctx context.Context, name string) (context.Context, func(), error) {
	start := time.Now()
	l, err := r.st.AcquireLease(ctx, name, r.holder, r.ttl)
	if err != nil {
		return nil, nil, err
	}
	held, lose := context.WithCancelCause(context.WithValue(ctx, fenceKey{}, &fence{st: r.st, name: name, token: l.Token}))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { r.keep(held, lose, stop, name, l.Token, start) })
	var once sync.Once
	release := func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
			lose(context.Canceled)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := r.st.ReleaseLease(rctx, name, r.holder, l.Token); err != nil {
				r.log.Warn("release lease", "lease", name, "err", err) // it expires by itself
			}
		})
	}
	return held, release, nil
}

// keep renews the lease every ttl/3 and ends held when a renewal fails or
// when the lease may have expired: the store starts a lease's ttl no
// earlier than the request was sent, so sent+ttl is a safe local bound,
// less a margin for the step a worker may be in.
func (r *Runner) keep(held context.Context, lose context.CancelCauseFunc, stop <-chan struct{}, name string, token int64, sent time.Time) {
	margin := r.ttl / 10
	expiry := time.NewTimer(time.Until(sent.Add(r.ttl - margin)))
	defer expiry.Stop()
	renew := time.NewTicker(r.ttl / 3)
	defer renew.Stop()
	for {
		select {
		case <-stop:
			return
		case <-held.Done():
			return
		case <-expiry.C:
			r.log.Warn("lease expired before it could be renewed; stopping its work", "lease", name, "token", token)
			lose(lostError(name, token))
			return
		case <-renew.C:
			at := time.Now()
			l, err := r.st.AcquireLease(held, name, r.holder, r.ttl)
			switch {
			case err == nil && l.Token == token:
				expiry.Reset(time.Until(at.Add(r.ttl - margin)))
			case err == nil:
				// Expired and taken again by this holder: the work that
				// started under the old token must not go on under it.
				r.log.Warn("lease lapsed between renewals; stopping its work", "lease", name, "token", token)
				lose(lostError(name, token))
				return
			case held.Err() != nil:
				return
			default:
				// The lease holds until the expiry timer says otherwise:
				// one failed renewal (a database hiccup) is retried.
				r.log.Warn("renew lease", "lease", name, "err", err)
			}
		}
	}
}

func lostError(name string, token int64) error {
	return errdefs.New(errdefs.ErrConflict, "lease %s (token %d) lost", name, token)
}

type fenceKey struct{}

type fence struct {
	st    Store
	name  string
	token int64
}

// Check returns nil when ctx carries no lease (work running without one,
// as in a single process) or when its lease is still held with the token
// the work started with; otherwise an errdefs.ErrConflict error: the lease
// was lost and the step must not happen.
func Check(ctx context.Context) error {
	f, ok := ctx.Value(fenceKey{}).(*fence)
	if !ok {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil {
		if errdefs.Classify(cause) != nil {
			return cause
		}
		return errdefs.Wrap(errdefs.ErrConflict, cause, "lease %s (token %d) no longer held", f.name, f.token)
	}
	return f.st.CheckLease(ctx, f.name, f.token)
}

// Token returns the lease ctx carries: its name and fencing token.
func Token(ctx context.Context) (name string, token int64, ok bool) {
	f, ok := ctx.Value(fenceKey{}).(*fence)
	if !ok {
		return "", 0, false
	}
	return f.name, f.token, true
}

// Held reports whether someone holds the lease called name now, by the
// store's clock.
func Held(ctx context.Context, st Store, name string) (bool, error) {
	l, err := st.GetLease(ctx, name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	err = st.CheckLease(ctx, name, l.Token)
	if errors.Is(err, errdefs.ErrConflict) {
		return false, nil
	}
	return err == nil, err
}
