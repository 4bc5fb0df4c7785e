package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

func checkLeaseArgs(name, holder string, ttl time.Duration) error {
	switch {
	case name == "":
		return errdefs.New(errdefs.ErrInvalidArgument, "lease name is empty")
	case holder == "":
		return errdefs.New(errdefs.ErrInvalidArgument, "lease %s: holder is empty", name)
	case ttl <= 0:
		return errdefs.New(errdefs.ErrInvalidArgument, "lease %s: ttl must be positive", name)
	}
	return nil
}

// AcquireLease takes or renews the lease in one write transaction; the
// single writer (and IMMEDIATE transactions across processes) makes the
// read and the write one step.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	if err := checkLeaseArgs(name, holder, ttl); err != nil {
		return store.Lease{}, err
	}
	var l store.Lease
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		now := s.now()
		var (
			cur     store.Lease
			expires int64
		)
		err := tx.QueryRowContext(ctx, `SELECT holder, token, expires_at FROM leases WHERE name = ?`, name).
			Scan(&cur.Holder, &cur.Token, &expires)
		live := err == nil && expires > now.UnixNano()
		switch {
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		case live && cur.Holder != holder:
			return errdefs.New(errdefs.ErrConflict, "lease %s is held by %s", name, cur.Holder)
		case live:
			l = store.Lease{Name: name, Holder: holder, Token: cur.Token}
		default:
			var next string
			if err := tx.QueryRowContext(ctx, `INSERT INTO meta (key, value) VALUES ('lease_token', '1')
				ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) RETURNING value`).Scan(&next); err != nil {
				return err
			}
			tok, err := strconv.ParseInt(next, 10, 64)
			if err != nil {
				return err
			}
			l = store.Lease{Name: name, Holder: holder, Token: tok}
		}
		l.ExpiresAt = time.Unix(0, now.Add(ttl).UnixNano()).UTC()
		_, err = tx.ExecContext(ctx, `INSERT INTO leases (name, holder, token, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at`,
			name, holder, l.Token, l.ExpiresAt.UnixNano())
		return err
	})
	if err != nil {
		return store.Lease{}, opErr(err, "acquire lease %s", name)
	}
	return l, nil
}

// ReleaseLease deletes the lease if holder holds it with token.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string, token int64) error {
	_, err := s.w.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND holder = ? AND token = ?`, name, holder, token)
	return opErr(err, "release lease %s", name)
}

// CheckLease reports whether the lease is still held with token.
func (s *Store) CheckLease(ctx context.Context, name string, token int64) error {
	var ok bool
	err := s.r.QueryRowContext(ctx, `SELECT token = ? AND expires_at > ? FROM leases WHERE name = ?`,
		token, s.now().UnixNano(), name).Scan(&ok)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return opErr(err, "check lease %s", name)
	}
	if !ok {
		return errdefs.New(errdefs.ErrConflict, "lease %s with token %d is lost", name, token)
	}
	return nil
}

// GetLease returns the lease, expired or not.
func (s *Store) GetLease(ctx context.Context, name string) (store.Lease, error) {
	l := store.Lease{Name: name}
	var expires int64
	err := s.r.QueryRowContext(ctx, `SELECT holder, token, expires_at FROM leases WHERE name = ?`, name).
		Scan(&l.Holder, &l.Token, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Lease{}, errdefs.New(errdefs.ErrNotFound, "lease %s is free", name)
	}
	if err != nil {
		return store.Lease{}, opErr(err, "get lease %s", name)
	}
	l.ExpiresAt = time.Unix(0, expires).UTC()
	return l, nil
}
