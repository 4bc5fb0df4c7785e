package lease

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
	"github.com/stacyvm/stacyvm/internal/store/sqlite"
)

// stores runs fn on SQLite, and on PostgreSQL when a test database is
// configured.
func stores(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.DSN(t)
		st, err := postgres.Open(t.Context(), postgres.Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st)
	})
}

func TestDoRunsOnceAcrossHolders(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		a, b := New(st, "a", time.Minute, nil), New(st, "b", time.Minute, nil)
		ranB := false
		ran, err := a.Do(t.Context(), "reaper", func(ctx context.Context) error {
			if err := Check(ctx); err != nil {
				t.Errorf("Check inside the holder's work: %v", err)
			}
			// While a holds it, b's turn is skipped, not failed.
			ok, err := b.Do(t.Context(), "reaper", func(context.Context) error { ranB = true; return nil })
			if ok || err != nil || ranB {
				t.Errorf("b.Do while a holds the lease = %v, %v (ran %v); want skipped", ok, err, ranB)
			}
			return errors.New("work failed")
		})
		if !ran || err == nil || err.Error() != "work failed" {
			t.Errorf("a.Do = %v, %v; want ran, with fn's error", ran, err)
		}
		// Released when fn returned: b takes it at once.
		ran, err = b.Do(t.Context(), "reaper", func(context.Context) error { return nil })
		if !ran || err != nil {
			t.Errorf("b.Do after a's turn = %v, %v; want ran", ran, err)
		}
	})
}

// TestHoldRenews: a lease held longer than its ttl stays held while
// renewed, and another holder cannot take it.
func TestHoldRenews(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		const ttl = 600 * time.Millisecond
		a := New(st, "a", ttl, nil)
		held, release, err := a.Hold(t.Context(), "refill")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		time.Sleep(3 * ttl)
		if err := Check(held); err != nil {
			t.Fatalf("Check after three ttls of renewals: %v", err)
		}
		if _, err := st.AcquireLease(t.Context(), "refill", "b", time.Minute); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("b took a renewed lease: err = %v", err)
		}
	})
}

// failingRenewals makes every AcquireLease after the first fail, as a
// database this replica can no longer reach would.
type failingRenewals struct {
	Store
	calls atomic.Int32
}

func (f *failingRenewals) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	if f.calls.Add(1) > 1 {
		return store.Lease{}, errdefs.New(errdefs.ErrProviderUnavailable, "database unreachable")
	}
	return f.Store.AcquireLease(ctx, name, holder, ttl)
}

// TestLostLeaseEndsWork: when renewals fail, the work's context ends
// before the lease can have expired in the store, and Check refuses.
func TestLostLeaseEndsWork(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		const ttl = 500 * time.Millisecond
		a := New(&failingRenewals{Store: st}, "a", ttl, nil)
		start := time.Now()
		held, release, err := a.Hold(t.Context(), "builds")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		select {
		case <-held.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("the work's context outlived its unrenewed lease")
		}
		if d := time.Since(start); d >= ttl {
			t.Errorf("work stopped %s after the lease was taken, not before its ttl %s", d, ttl)
		}
		if err := Check(held); !errors.Is(err, errdefs.ErrConflict) {
			t.Errorf("Check after the lease was lost: %v, want conflict", err)
		}
	})
}

// TestStaleTokenFenced: a replica that was paused past its lease's expiry
// (its timers have not fired yet) is refused by Check, because another
// holder took the lease with a greater token.
func TestStaleTokenFenced(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		l, err := st.AcquireLease(t.Context(), "reconcile", "a", 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		// The paused replica's view: a context fenced by its token.
		paused := context.WithValue(t.Context(), fenceKey{}, &fence{st: st, name: "reconcile", token: l.Token})
		if err := Check(paused); err != nil {
			t.Fatalf("Check before expiry: %v", err)
		}
		b := New(st, "b", time.Minute, nil)
		var took store.Lease
		deadline := time.Now().Add(30 * time.Second)
		for {
			ran, err := b.Do(t.Context(), "reconcile", func(ctx context.Context) error {
				_, took.Token, _ = Token(ctx)
				// While b holds it, the paused replica's step is refused.
				if err := Check(paused); !errors.Is(err, errdefs.ErrConflict) {
					t.Errorf("Check with the stale token while b holds the lease: %v, want conflict", err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if ran {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("b never took the expired lease")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if took.Token <= l.Token {
			t.Errorf("b's token %d is not greater than the stale %d", took.Token, l.Token)
		}
		if held, err := Held(t.Context(), st, "reconcile"); err != nil || held {
			t.Errorf("Held after b released = %v, %v; want false", held, err)
		}
	})
}

func TestCheckWithoutLease(t *testing.T) {
	if err := Check(t.Context()); err != nil {
		t.Errorf("Check outside any lease = %v, want nil", err)
	}
	if _, _, ok := Token(t.Context()); ok {
		t.Error("Token outside any lease reported one")
	}
}
