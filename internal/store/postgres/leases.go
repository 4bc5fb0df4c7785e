package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

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

// AcquireLease takes or renews the lease in one statement: the upsert
// locks the row, so of replicas racing for a free lease exactly one wins,
// and expiry is judged by the database's clock.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (store.Lease, error) {
	if err := checkLeaseArgs(name, holder, ttl); err != nil {
		return store.Lease{}, err
	}
	l := store.Lease{Name: name}
	err := s.pool.QueryRow(ctx, `INSERT INTO leases AS l (name, holder, token, expires_at)
		VALUES ($1, $2, nextval('lease_tokens'), clock_timestamp() + $3 * interval '1 microsecond')
		ON CONFLICT (name) DO UPDATE SET
			holder = excluded.holder,
			token = CASE WHEN l.holder = excluded.holder AND l.expires_at > clock_timestamp() THEN l.token ELSE excluded.token END,
			expires_at = excluded.expires_at
		WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()
		RETURNING holder, token, expires_at`, name, holder, ttl.Microseconds()).Scan(&l.Holder, &l.Token, &l.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.GetLease(ctx, name)
		if gerr != nil {
			return store.Lease{}, errdefs.New(errdefs.ErrConflict, "lease %s is held by another replica", name)
		}
		return store.Lease{}, errdefs.New(errdefs.ErrConflict, "lease %s is held by %s", name, cur.Holder)
	}
	if err != nil {
		return store.Lease{}, s.opErr(err, "acquire lease %s", name)
	}
	l.ExpiresAt = l.ExpiresAt.UTC()
	return l, nil
}

// ReleaseLease deletes the lease if holder holds it with token.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string, token int64) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2 AND token = $3`, name, holder, token)
	return s.opErr(err, "release lease %s", name)
}

// CheckLease reports whether the lease is still held with token.
func (s *Store) CheckLease(ctx context.Context, name string, token int64) error {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT token = $2 AND expires_at > clock_timestamp() FROM leases WHERE name = $1`,
		name, token).Scan(&ok)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return s.opErr(err, "check lease %s", name)
	}
	if !ok {
		return errdefs.New(errdefs.ErrConflict, "lease %s with token %d is lost", name, token)
	}
	return nil
}

// GetLease returns the lease, expired or not.
func (s *Store) GetLease(ctx context.Context, name string) (store.Lease, error) {
	l := store.Lease{Name: name}
	err := s.pool.QueryRow(ctx, `SELECT holder, token, expires_at FROM leases WHERE name = $1`, name).
		Scan(&l.Holder, &l.Token, &l.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Lease{}, errdefs.New(errdefs.ErrNotFound, "lease %s is free", name)
	}
	if err != nil {
		return store.Lease{}, s.opErr(err, "get lease %s", name)
	}
	l.ExpiresAt = l.ExpiresAt.UTC()
	return l, nil
}
