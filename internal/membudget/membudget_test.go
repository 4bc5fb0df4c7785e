package membudget

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

func TestBudget(t *testing.T) {
	b := New(100, 50*time.Millisecond)
	ctx := context.Background()
	if err := b.Acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	if b.InUse() != 60 {
		t.Fatalf("InUse = %d", b.InUse())
	}

	// Too much for what is left: waits, then a retryable resource limit.
	start := time.Now()
	err := b.Acquire(ctx, 50)
	var ex *Exhausted
	if !errors.As(err, &ex) || ex.Never || ex.RetryAfter <= 0 || errdefs.Classify(err) != errdefs.ErrResourceLimit {
		t.Fatalf("Acquire over budget = %v", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("gave up after %s, before its wait", waited)
	}
	if errdefs.Hint(err) == "" {
		t.Error("no hint")
	}

	b.Release(60)
	if b.InUse() != 0 {
		t.Fatalf("InUse after release = %d", b.InUse())
	}
	if err := New(0, 0).Acquire(ctx, 1<<62); err != nil {
		t.Fatalf("an unlimited budget refused: %v", err)
	}
	// Room that frees up while waiting is taken.
	b2 := New(100, time.Second)
	_ = b2.Acquire(ctx, 100)
	go func() { time.Sleep(10 * time.Millisecond); b2.Release(100) }()
	if err := b2.Acquire(ctx, 100); err != nil {
		t.Fatalf("room freed during the wait was not taken: %v", err)
	}

	// More than the whole budget never waits.
	start = time.Now()
	if err := b.Acquire(ctx, 101); !errors.As(err, &ex) || !ex.Never || time.Since(start) > 40*time.Millisecond {
		t.Fatalf("Acquire beyond the size = %v after %s", err, time.Since(start))
	}

	// The caller leaving ends the wait with its own error.
	if err := b.Acquire(ctx, 100); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Acquire(cctx, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire on a cancelled context = %v", err)
	}
}
