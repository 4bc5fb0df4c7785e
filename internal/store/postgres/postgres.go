// Package postgres implements store.Store on PostgreSQL through
// github.com/jackc/pgx/v5, for deployments where several `stacyvm serve`
// replicas share one database (docs/scale-out.md).
//
// Every write that reads before it writes locks the row it reads (SELECT …
// FOR UPDATE), so replicas updating one record serialise on it the way the
// SQLite store's single writer serialises everything. Migrations are
// embedded and applied under an advisory lock, so replicas starting
// together migrate once.
package postgres

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// Config says which database to use.
type Config struct {
	// DSN is a libpq connection string or URL. It is a secret: it may hold
	// a password, so it is never printed; Describe gives a safe summary.
	DSN string
	// Schema, when set, is the schema that holds the tables (created if
	// missing), so that several deployments (or test runs) can share one
	// database. Empty means the DSN's search_path parameter (also created
	// if missing when it is one plain name), else the server's default.
	Schema string
}

// Store is a PostgreSQL-backed store.Store. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	cfg    *pgxpool.Config
	secret string // the password, scrubbed from every error
	now    func() time.Time

	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database cfg names and applies pending migrations.
// Errors never contain the DSN's password.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pc, err := parse(cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: pc, secret: pc.ConnConfig.Password, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		return nil, s.scrub(fmt.Errorf("open postgres store: %w", err))
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, s.scrub(fmt.Errorf("open postgres store: %w", err))
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, s.scrub(fmt.Errorf("open postgres store: %w", err))
	}
	return s, nil
}

func parse(cfg Config) (*pgxpool.Config, error) {
	if cfg.DSN == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "store.dsn is empty: the postgres driver needs a connection string")
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx redacts passwords from its parse errors only on a best-effort
		// basis, so none of its text is passed on.
		return nil, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "store.dsn is not a valid PostgreSQL connection string"),
			"use a URL such as postgres://user:password@host:5432/db or key=value pairs such as host=… dbname=…")
	}
	if cfg.Schema != "" {
		if !validSchema(cfg.Schema) {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "schema %q: want lower-case letters, digits and underscores", cfg.Schema)
		}
		pc.ConnConfig.RuntimeParams["search_path"] = cfg.Schema
	}
	return pc, nil
}

func validSchema(s string) bool {
	if s == "" || len(s) > 63 || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_')
	})
}

// Describe returns where dsn points, without its password, for logs and
// `stacyvm doctor`: "postgres://user@host:port/db".
func Describe(dsn string) string {
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "postgres (unparsable store.dsn)"
	}
	return fmt.Sprintf("postgres://%s@%s/%s", pc.User, hostPort(pc.Host, pc.Port), pc.Database)
}

func hostPort(host string, port uint16) string {
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("[%s]:%d", host, port) // a unix socket directory
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// scrub removes the password from err's text, keeping its chain.
func (s *Store) scrub(err error) error {
	if err == nil || s.secret == "" || !strings.Contains(err.Error(), s.secret) {
		return err
	}
	return &scrubbed{err: err, secret: s.secret}
}

type scrubbed struct {
	err    error
	secret string
}

func (e *scrubbed) Error() string { return strings.ReplaceAll(e.err.Error(), e.secret, "***") }
func (e *scrubbed) Unwrap() error { return e.err }

// Close closes the pool. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// Pool is the store's connection pool, for the other PostgreSQL-backed
// parts of a replica (the event fan-out's notifications).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// ConnConfig returns a copy of the connection settings (search_path
// included), for a dedicated connection such as a LISTEN.
func (s *Store) ConnConfig() *pgx.ConnConfig { return s.cfg.ConnConfig.Copy() }

// withTx runs fn in a transaction, committing when fn returns nil.
func (s *Store) withTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// opErr gives an unclassified (internal) error the operation it failed in;
// classified errors already say what went wrong.
func (s *Store) opErr(err error, format string, args ...any) error {
	if err == nil || errdefs.Classify(err) != nil {
		return err
	}
	return s.scrub(fmt.Errorf(format+": %w", append(args, err)...))
}

func isUniqueViolation(err error) bool {
	e, ok := errors.AsType[*pgconn.PgError](err)
	return ok && e.Code == "23505"
}

// Migrations are NNNN_description.sql files, applied in version order, each
// in its own transaction together with its schema_migrations row.
// Released migrations are never edited; a schema change is a new file.
//
//go:embed migrations/*.sql
var embedded embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		prefix, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(prefix)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql with NNNN > 0", name)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, name, v)
		}
		seen[v] = name
		body, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(body)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return a.version - b.version })
	return ms, nil
}

// migrate applies the embedded migrations on one connection that holds a
// session advisory lock (keyed by the schema), so that replicas opening
// one database together migrate it once, one after the other.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations(embedded, "migrations")
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, s.cfg.ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	schema := s.cfg.ConnConfig.RuntimeParams["search_path"]
	key := s.lockKey("migrate")
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("lock for migrations: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key) //nolint:errcheck // closing the connection unlocks too
	// A schema named by Config.Schema, or by the DSN's own search_path
	// parameter when it is one plain name, is created on first use.
	if validSchema(schema) {
		if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
			return fmt.Errorf("create schema %s: %w", schema, err)
		}
	}
	_, err = applyMigrations(ctx, conn, ms, s.now)
	return err
}

// lockKey is the key of the advisory lock called name of this store's
// schema: advisory locks are per database, and several deployments may
// share one in schemas of their own.
func (s *Store) lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("stacyvm." + name + "." + s.cfg.ConnConfig.RuntimeParams["search_path"]))
	return int64(h.Sum64())
}

func applyMigrations(ctx context.Context, conn *pgx.Conn, ms []migration, now func() time.Time) ([]int, error) {
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    bigint      NOT NULL PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	var newest *int64
	if err := conn.QueryRow(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&newest); err != nil {
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	if len(ms) > 0 && newest != nil && *newest > int64(ms[len(ms)-1].version) {
		// An older binary must not write into a schema it does not know.
		return nil, fmt.Errorf("database schema version %d is newer than this binary supports (%d); upgrade stacyvm",
			*newest, ms[len(ms)-1].version)
	}
	var applied []int
	for _, m := range ms {
		if newest != nil && int64(m.version) <= *newest {
			var exists bool
			if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.version).Scan(&exists); err != nil {
				return applied, fmt.Errorf("migration %s: %w", m.name, err)
			}
			if exists {
				continue
			}
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.version, m.name, now())
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migration %s: %w", m.name, err)
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}

// Times: NULL is the zero time; values come back in UTC.
func timeArg(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func timeFrom(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// micro truncates t to the microseconds PostgreSQL keeps.
func micro(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

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

func jsonFrom[S any](b []byte, dst *S) error {
	if b == nil {
		return nil
	}
	return json.Unmarshal(b, dst)
}
