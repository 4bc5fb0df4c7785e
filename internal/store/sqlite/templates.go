package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

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
	return errors.Join(checkTime("created_at", t.CreatedAt), checkTime("updated_at", t.UpdatedAt))
}

func scanTemplate(row scanner) (store.Template, error) {
	var (
		t                store.Template
		setup, env       sql.NullString
		created, updated sql.NullInt64
	)
	if err := row.Scan(&t.Name, &t.Version, &t.Image, &t.Description, &setup, &env, &t.MemoryMB, &t.CPUCores,
		&t.TTLSeconds, &t.PoolSize, &t.Provider, &t.Environment, &created, &updated, &t.IdleTimeoutSeconds, &t.OnIdle); err != nil {
		return store.Template{}, err
	}
	if err := errors.Join(jsonFrom(setup, &t.Setup), jsonFrom(env, &t.Env)); err != nil {
		return store.Template{}, fmt.Errorf("template %q: decode: %w", t.Name, err)
	}
	t.CreatedAt, t.UpdatedAt = timeFrom(created), timeFrom(updated)
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
		return opErr(err, "create template %q", t.Name)
	}
	env, err := jsonText(t.Env, t.Env == nil)
	if err != nil {
		return opErr(err, "create template %q", t.Name)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO templates (`+templateColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			t.Name, t.Version, t.Image, t.Description, setup, env, t.MemoryMB, t.CPUCores, t.TTLSeconds,
			t.PoolSize, t.Provider, t.Environment, timeArg(t.CreatedAt), timeArg(t.UpdatedAt), t.IdleTimeoutSeconds, t.OnIdle)
		if isUniqueViolation(err) {
			return errdefs.New(errdefs.ErrConflict, "template %q already exists", t.Name)
		}
		return err
	})
	return opErr(err, "create template %q", t.Name)
}

// GetTemplate returns the template called name.
func (s *Store) GetTemplate(ctx context.Context, name string) (store.Template, error) {
	t, err := scanTemplate(s.r.QueryRowContext(ctx, `SELECT `+templateColumns+` FROM templates WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Template{}, templateNotFound(name)
	}
	return t, opErr(err, "get template %q", name)
}

// ListTemplates returns every template, ordered by name.
func (s *Store) ListTemplates(ctx context.Context) ([]store.Template, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+templateColumns+` FROM templates ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	out := []store.Template{}
	for rows.Next() {
		t, err := scanTemplate(rows)
		if err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out, nil
}

// UpdateTemplate replaces the template called t.Name and returns it as
// stored: Version is the previous one plus one, CreatedAt is kept, and
// UpdatedAt is t.UpdatedAt when that is later than the stored value, else now
// (never earlier than the stored value), so that a caller passing back a
// template it read still moves UpdatedAt forward.
func (s *Store) UpdateTemplate(ctx context.Context, t store.Template) (store.Template, error) {
	if err := checkTemplate(t); err != nil {
		return store.Template{}, err
	}
	setup, err := jsonText(t.Setup, t.Setup == nil)
	if err != nil {
		return store.Template{}, opErr(err, "update template %q", t.Name)
	}
	env, err := jsonText(t.Env, t.Env == nil)
	if err != nil {
		return store.Template{}, opErr(err, "update template %q", t.Name)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		var created, updated sql.NullInt64
		err := tx.QueryRowContext(ctx, `SELECT version, created_at, updated_at FROM templates WHERE name = ?`, t.Name).
			Scan(&t.Version, &created, &updated)
		if errors.Is(err, sql.ErrNoRows) {
			return templateNotFound(t.Name)
		}
		if err != nil {
			return err
		}
		t.Version++
		t.CreatedAt = timeFrom(created)
		t.UpdatedAt = laterUpdate(t.UpdatedAt, timeFrom(updated), s.now())
		_, err = tx.ExecContext(ctx, `UPDATE templates SET version = ?, image = ?, description = ?, setup = ?, env = ?,
			memory_mb = ?, cpu_cores = ?, ttl_seconds = ?, pool_size = ?, provider = ?, environment = ?, updated_at = ?,
			idle_timeout_seconds = ?, on_idle = ? WHERE name = ?`,
			t.Version, t.Image, t.Description, setup, env, t.MemoryMB, t.CPUCores, t.TTLSeconds, t.PoolSize,
			t.Provider, t.Environment, timeArg(t.UpdatedAt), t.IdleTimeoutSeconds, t.OnIdle, t.Name)
		return err
	})
	if err != nil {
		return store.Template{}, opErr(err, "update template %q", t.Name)
	}
	return t, nil
}

// laterUpdate picks a template's new UpdatedAt: the caller's, when it moves
// forward from the stored one, else now, else just past the stored one (the
// clock may lag a caller's or an earlier writer's).
func laterUpdate(given, stored, now time.Time) time.Time {
	switch {
	case given.After(stored):
		return time.Unix(0, given.UnixNano()).UTC()
	case now.After(stored):
		return time.Unix(0, now.UnixNano()).UTC()
	default:
		return stored.Add(time.Nanosecond)
	}
}

// DeleteTemplate removes the template called name.
func (s *Store) DeleteTemplate(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM templates WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete template %q: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("delete template %q: %w", name, err)
	}
	if n == 0 {
		return templateNotFound(name)
	}
	return nil
}
