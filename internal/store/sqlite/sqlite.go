// Package sqlite implements store.Store on an SQLite database file through
// the pure-Go driver modernc.org/sqlite.
//
// The database runs in WAL mode so readers never block the writer. All writes
// go through a pool of exactly one connection: writers queue in Go instead of
// contending for SQLite's lock (and failing with SQLITE_BUSY), and
// transactions begin IMMEDIATE so that another process sharing the file waits
// on the busy timeout instead of failing a lock upgrade. Reads use a separate
// small pool of query-only connections.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// BusyTimeout is how long a connection waits for a lock held by another
// process before failing with SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Store is an SQLite-backed store.Store. It is safe for concurrent use.
type Store struct {
	w   *sql.DB // exactly one connection; every write
	r   *sql.DB // query-only connections; every read outside a write
	now func() time.Time

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open opens the database at path, creating it (mode 0600) and its parent
// directory (0750) if needed, and applies pending migrations.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		// Two pools need one shared file; an in-memory or URI name would
		// give each connection its own database or bypass our pragmas.
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "store path %q must name a database file", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "store path %q", path)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	// SQLite would create the file world-readable; create it first so that
	// it (and the -wal and -shm files, which copy its mode) stays private.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open database file: %w", err)
	}

	s := &Store{now: time.Now}
	s.w, err = sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	err = enableWAL(ctx, s.w)
	if err == nil {
		var ms []migration
		if ms, err = loadMigrations(embedded, "migrations"); err == nil {
			_, err = migrate(ctx, s.w, ms, s.now)
		}
	}
	if err != nil {
		return nil, errors.Join(err, s.w.Close())
	}

	// Readers open after migrating: by then the file is in WAL mode, which
	// a query-only connection could not switch it to.
	s.r, err = sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open database: %w", err), s.w.Close())
	}
	n := readPoolSize()
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	if err := s.r.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("open database: %w", err), s.r.Close(), s.w.Close())
	}
	return s, nil
}

func readPoolSize() int { return max(4, runtime.GOMAXPROCS(0)) }

// dsn builds a file: URI whose driver parameters are applied to every new
// connection of the pool, so each connection is configured alike.
func dsn(abs string, writer bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	q.Set("_foreign_keys", "on")
	q.Set("_synchronous", "NORMAL") // durable across crashes in WAL mode; may lose the last commits on power loss
	if writer {
		q.Set("_txlock", "immediate")
	} else {
		q.Set("_query_only", "on")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// enableWAL switches the file to WAL mode (a persistent setting of the
// file, so readers need not). It is not a DSN parameter because SQLite
// answers SQLITE_BUSY at once, without waiting on the busy timeout, when two
// connections switch a fresh file together; here that is retried.
func enableWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(BusyTimeout)
	for {
		var mode string
		err := db.QueryRowContext(ctx, `PRAGMA journal_mode = WAL`).Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("open database: journal mode is %q, WAL is required", mode)
			}
			return nil
		}
		if e, ok := errors.AsType[*sqlite.Error](err); !ok || e.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return fmt.Errorf("open database: enable WAL: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close closes both pools. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// Recommended before closing a long-lived connection: refreshes the
		// planner's statistics where they have gone stale. Best effort.
		_, _ = s.w.ExecContext(ctx, `PRAGMA optimize`)
		s.closeErr = errors.Join(s.r.Close(), s.w.Close())
	})
	return s.closeErr
}

// withTx runs fn in a write transaction, committing when fn returns nil.
func (s *Store) withTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, ignoreDone(tx.Rollback()))
	}
	return tx.Commit()
}

// isUniqueViolation reports whether err is a primary-key or UNIQUE
// constraint failure, judged by SQLite's extended result code.
func isUniqueViolation(err error) bool {
	e, ok := errors.AsType[*sqlite.Error](err)
	if !ok {
		return false
	}
	switch e.Code() {
	case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
		return true
	}
	return false
}

// Times are unix nanoseconds; nil (NULL) is the zero time. time.UnixNano is
// only defined for years 1678 to 2262, so times outside it are refused rather
// than silently corrupted.
var (
	minTime = time.Unix(0, -1<<63).Add(time.Second)
	maxTime = time.Unix(0, 1<<63-1).Add(-time.Second)
)

func checkTime(field string, t time.Time) error {
	if !t.IsZero() && (t.Before(minTime) || t.After(maxTime)) {
		return errdefs.New(errdefs.ErrInvalidArgument, "%s %s is outside the storable range (years 1678 to 2262)", field, t.UTC().Format(time.RFC3339))
	}
	return nil
}

// clampNanos converts a bound (not a stored value) to unix nanoseconds,
// clamped to the storable range: every stored time lies inside it.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return minTime.UnixNano()
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func timeFrom(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// jsonText encodes v, keeping nil apart from empty: a nil map or slice is
// NULL, an empty one '{}' or '[]'.
func jsonText(v any, isNil bool) (any, error) {
	if isNil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

func jsonFrom[S any](s sql.NullString, dst *S) error {
	if !s.Valid {
		return nil
	}
	return json.Unmarshal([]byte(s.String), dst)
}
