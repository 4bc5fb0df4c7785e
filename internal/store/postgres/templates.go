package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

const templateColumns = `name, version, image, description, setup, env, memory_mb, cpu_cores, ttl_seconds,
	pool_size, provider, environment, created_at, updated_at, idle_timeout_seconds, on_idle`

func templateNotFound(name string) error {
	return errdefs.New(errdefs.ErrNotFound, "template %q not found", name)
}

func checkTemplate(t store.Template) error {
	if t.Name == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "template name is empty")
	}
	return nil
}

func scanTemplate(row pgx.Row) (store.Template, error) {
	var (
		t                store.Template
		setup, env       []byte
		created, updated time.Time
	)
	if err := row.Scan(&t.Name, &t.Version, &t.Image, &t.Description, &setup, &env, &t.MemoryMB, &t.CPUCores,
		&t.TTLSeconds, &t.PoolSize, &t.Provider, &t.Environment, &created, &updated, &t.IdleTimeoutSeconds, &t.OnIdle); err != nil {
		return store.Template{}, err
	}
	if err := errors.Join(jsonFrom(setup, &t.Setup), jsonFrom(env, &t.Env)); err != nil {
		return store.Template{}, fmt.Errorf("template %q: decode: %w", t.Name, err)
	}
	t.CreatedAt, t.UpdatedAt = created.UTC(), updated.UTC()
	return t, nil
}

// CreateTemplate inserts t as version 1, whatever t.Version says. A zero
// CreatedAt becomes now and a zero UpdatedAt becomes CreatedAt.
func (s *Store) CreateTemplate(ctx context.Context, t store.Template) error {
	if err := checkTemplate(t); err != nil {
		return err
	}
	t.Version = 1
	if t.CreatedAt.IsZero() {
		t.CreatedAt = s.now()
	}
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = t.CreatedAt
	}
	setup, err := jsonText(t.Setup, t.Setup == nil)
	if err != nil {
		return s.opErr(err, "create template %q", t.Name)
	}
	env, err := jsonText(t.Env, t.Env == nil)
	if err != nil {
		return s.opErr(err, "create template %q", t.Name)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO templates (`+templateColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		t.Name, t.Version, t.Image, t.Description, setup, env, t.MemoryMB, t.CPUCores, t.TTLSeconds,
		t.PoolSize, t.Provider, t.Environment, t.CreatedAt, t.UpdatedAt, t.IdleTimeoutSeconds, t.OnIdle)
	if isUniqueViolation(err) {
		return errdefs.New(errdefs.ErrConflict, "template %q already exists", t.Name)
	}
	return s.opErr(err, "create template %q", t.Name)
}

// GetTemplate returns the template called name.
func (s *Store) GetTemplate(ctx context.Context, name string) (store.Template, error) {
	t, err := scanTemplate(s.pool.QueryRow(ctx, `SELECT `+templateColumns+` FROM templates WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Template{}, templateNotFound(name)
	}
	return t, s.opErr(err, "get template %q", name)
}

// ListTemplates returns every template, ordered by name (bytewise).
func (s *Store) ListTemplates(ctx context.Context) ([]store.Template, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+templateColumns+` FROM templates ORDER BY name`)
	if err != nil {
		return nil, s.opErr(err, "list templates")
	}
	defer rows.Close()
	out := []store.Template{}
	for rows.Next() {
		t, err := scanTemplate(rows)
		if err != nil {
			return nil, s.opErr(err, "list templates")
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, s.opErr(err, "list templates")
	}
	return out, nil
}

// UpdateTemplate replaces the template called t.Name and returns it as
// stored: Version is the previous one plus one, CreatedAt is kept, and
// UpdatedAt is t.UpdatedAt when that is later than the stored value, else now
// (never earlier than the stored value).
func (s *Store) UpdateTemplate(ctx context.Context, t store.Template) (store.Template, error) {
	if err := checkTemplate(t); err != nil {
		return store.Template{}, err
	}
	setup, err := jsonText(t.Setup, t.Setup == nil)
	if err != nil {
		return store.Template{}, s.opErr(err, "update template %q", t.Name)
	}
	env, err := jsonText(t.Env, t.Env == nil)
	if err != nil {
		return store.Template{}, s.opErr(err, "update template %q", t.Name)
	}
	err = s.withTx(ctx, func(tx pgx.Tx) error {
		var created, updated time.Time
		err := tx.QueryRow(ctx, `SELECT version, created_at, updated_at FROM templates WHERE name = $1 FOR UPDATE`, t.Name).
			Scan(&t.Version, &created, &updated)
		if errors.Is(err, pgx.ErrNoRows) {
			return templateNotFound(t.Name)
		}
		if err != nil {
			return err
		}
		t.Version++
		t.CreatedAt = created.UTC()
		t.UpdatedAt = laterUpdate(t.UpdatedAt, updated.UTC(), s.now())
		_, err = tx.Exec(ctx, `UPDATE templates SET version = $1, image = $2, description = $3, setup = $4, env = $5,
			memory_mb = $6, cpu_cores = $7, ttl_seconds = $8, pool_size = $9, provider = $10, environment = $11,
			updated_at = $12, idle_timeout_seconds = $13, on_idle = $14 WHERE name = $15`,
			t.Version, t.Image, t.Description, setup, env, t.MemoryMB, t.CPUCores, t.TTLSeconds, t.PoolSize,
			t.Provider, t.Environment, t.UpdatedAt, t.IdleTimeoutSeconds, t.OnIdle, t.Name)
		return err
	})
	if err != nil {
		return store.Template{}, s.opErr(err, "update template %q", t.Name)
	}
	return t, nil
}

// laterUpdate picks a template's new UpdatedAt, at the microsecond
// precision PostgreSQL keeps: the caller's, when it moves forward from the
// stored one, else now, else just past the stored one (the clock may lag a
// caller's or an earlier writer's).
func laterUpdate(given, stored, now time.Time) time.Time {
	given, now = micro(given).UTC(), micro(now).UTC()
	switch {
	case given.After(stored):
		return given
	case now.After(stored):
		return now
	default:
		return stored.Add(time.Microsecond)
	}
}

// DeleteTemplate removes the template called name.
func (s *Store) DeleteTemplate(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM templates WHERE name = $1`, name)
	if err != nil {
		return s.opErr(err, "delete template %q", name)
	}
	if tag.RowsAffected() == 0 {
		return templateNotFound(name)
	}
	return nil
}
