package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

const envSpecColumns = `id, owner_id, name, base_image, python_packages, apt_packages, python_version, created_at`

const envBuildColumns = `id, spec_id, owner_id, status, targets, image, log, reason, attempts, artifacts,
	created_at, updated_at, started_at, finished_at`

// artifactJSON is an artifact's stored form.
type artifactJSON struct {
	Target string `json:"target"`
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func scanEnvSpec(row scanner) (store.EnvSpec, error) {
	var (
		s         store.EnvSpec
		pip, apt  sql.NullString
		createdAt sql.NullInt64
	)
	if err := row.Scan(&s.ID, &s.OwnerID, &s.Name, &s.BaseImage, &pip, &apt, &s.PythonVersion, &createdAt); err != nil {
		return store.EnvSpec{}, err
	}
	if err := errors.Join(jsonFrom(pip, &s.PythonPackages), jsonFrom(apt, &s.AptPackages)); err != nil {
		return store.EnvSpec{}, fmt.Errorf("environment spec %s: decode: %w", s.ID, err)
	}
	s.CreatedAt = timeFrom(createdAt)
	return s, nil
}

// CreateEnvSpec inserts s; a zero CreatedAt becomes now.
func (s *Store) CreateEnvSpec(ctx context.Context, spec store.EnvSpec) error {
	if spec.ID == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "environment spec ID is empty")
	}
	if err := checkTime("created_at", spec.CreatedAt); err != nil {
		return err
	}
	if spec.CreatedAt.IsZero() {
		spec.CreatedAt = s.now()
	}
	pip, err := jsonText(spec.PythonPackages, spec.PythonPackages == nil)
	if err != nil {
		return opErr(err, "create environment spec %s", spec.ID)
	}
	apt, err := jsonText(spec.AptPackages, spec.AptPackages == nil)
	if err != nil {
		return opErr(err, "create environment spec %s", spec.ID)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO env_specs (`+envSpecColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			spec.ID, spec.OwnerID, spec.Name, spec.BaseImage, pip, apt, spec.PythonVersion, timeArg(spec.CreatedAt))
		if isUniqueViolation(err) {
			return errdefs.New(errdefs.ErrConflict, "environment spec %q of owner %q already exists", spec.Name, spec.OwnerID)
		}
		return err
	})
	return opErr(err, "create environment spec %s", spec.ID)
}

// GetEnvSpec returns the spec with the given ID.
func (s *Store) GetEnvSpec(ctx context.Context, id string) (store.EnvSpec, error) {
	spec, err := scanEnvSpec(s.r.QueryRowContext(ctx, `SELECT `+envSpecColumns+` FROM env_specs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.EnvSpec{}, errdefs.New(errdefs.ErrNotFound, "environment spec %s not found", id)
	}
	return spec, opErr(err, "get environment spec %s", id)
}

// ListEnvSpecs returns ownerID's specs (everyone's when empty), newest first.
func (s *Store) ListEnvSpecs(ctx context.Context, ownerID string) ([]store.EnvSpec, error) {
	q := `SELECT ` + envSpecColumns + ` FROM env_specs`
	var args []any
	if ownerID != "" {
		q += ` WHERE owner_id = ?`
		args = append(args, ownerID)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list environment specs: %w", err)
	}
	defer rows.Close()
	out := []store.EnvSpec{}
	for rows.Next() {
		spec, err := scanEnvSpec(rows)
		if err != nil {
			return nil, fmt.Errorf("list environment specs: %w", err)
		}
		out = append(out, spec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list environment specs: %w", err)
	}
	return out, nil
}

func scanEnvBuild(row scanner) (store.EnvBuild, error) {
	var (
		b                          store.EnvBuild
		targets, artifacts         sql.NullString
		created, updated, st, fins sql.NullInt64
	)
	if err := row.Scan(&b.ID, &b.SpecID, &b.OwnerID, &b.Status, &targets, &b.Image, &b.Log, &b.Reason, &b.Attempts,
		&artifacts, &created, &updated, &st, &fins); err != nil {
		return store.EnvBuild{}, err
	}
	var arts []artifactJSON
	if err := errors.Join(jsonFrom(targets, &b.Targets), jsonFrom(artifacts, &arts)); err != nil {
		return store.EnvBuild{}, fmt.Errorf("environment build %s: decode: %w", b.ID, err)
	}
	if arts != nil {
		b.Artifacts = make([]store.EnvArtifact, len(arts))
		for i, a := range arts {
			b.Artifacts[i] = store.EnvArtifact(a)
		}
	}
	b.CreatedAt, b.UpdatedAt, b.StartedAt, b.FinishedAt = timeFrom(created), timeFrom(updated), timeFrom(st), timeFrom(fins)
	return b, nil
}

func checkEnvBuild(b store.EnvBuild) error {
	if b.ID == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "environment build ID is empty")
	}
	if b.Status == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "environment build %s has no status", b.ID)
	}
	return errors.Join(checkTime("created_at", b.CreatedAt), checkTime("updated_at", b.UpdatedAt),
		checkTime("started_at", b.StartedAt), checkTime("finished_at", b.FinishedAt))
}

func envBuildJSON(b store.EnvBuild) (targets, artifacts any, err error) {
	if targets, err = jsonText(b.Targets, b.Targets == nil); err != nil {
		return nil, nil, err
	}
	var arts []artifactJSON
	if b.Artifacts != nil {
		arts = make([]artifactJSON, len(b.Artifacts))
		for i, a := range b.Artifacts {
			arts[i] = artifactJSON(a)
		}
	}
	artifacts, err = jsonText(arts, arts == nil)
	return targets, artifacts, err
}

// CreateEnvBuild inserts b. A zero CreatedAt becomes now and a zero
// UpdatedAt becomes CreatedAt.
func (s *Store) CreateEnvBuild(ctx context.Context, b store.EnvBuild) error {
	if err := checkEnvBuild(b); err != nil {
		return err
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = s.now()
	}
	if b.UpdatedAt.IsZero() {
		b.UpdatedAt = b.CreatedAt
	}
	targets, artifacts, err := envBuildJSON(b)
	if err != nil {
		return opErr(err, "create environment build %s", b.ID)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO env_builds (`+envBuildColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			b.ID, b.SpecID, b.OwnerID, b.Status, targets, b.Image, b.Log, b.Reason, b.Attempts, artifacts,
			timeArg(b.CreatedAt), timeArg(b.UpdatedAt), timeArg(b.StartedAt), timeArg(b.FinishedAt))
		if isUniqueViolation(err) {
			return errdefs.New(errdefs.ErrConflict, "environment build %s already exists", b.ID)
		}
		return err
	})
	return opErr(err, "create environment build %s", b.ID)
}

func buildNotFound(id string) error {
	return errdefs.New(errdefs.ErrNotFound, "environment build %s not found", id)
}

// GetEnvBuild returns the build with the given ID.
func (s *Store) GetEnvBuild(ctx context.Context, id string) (store.EnvBuild, error) {
	b, err := scanEnvBuild(s.r.QueryRowContext(ctx, `SELECT `+envBuildColumns+` FROM env_builds WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.EnvBuild{}, buildNotFound(id)
	}
	return b, opErr(err, "get environment build %s", id)
}

// ListEnvBuilds returns the builds f selects, newest first.
func (s *Store) ListEnvBuilds(ctx context.Context, f store.EnvBuildFilter) ([]store.EnvBuild, error) {
	var (
		where []string
		args  []any
	)
	if f.OwnerID != "" {
		where, args = append(where, `owner_id = ?`), append(args, f.OwnerID)
	}
	if f.SpecID != "" {
		where, args = append(where, `spec_id = ?`), append(args, f.SpecID)
	}
	if len(f.Statuses) > 0 {
		where = append(where, `status IN (?`+strings.Repeat(`, ?`, len(f.Statuses)-1)+`)`)
		for _, st := range f.Statuses {
			args = append(args, st)
		}
	}
	q := `SELECT ` + envBuildColumns + ` FROM env_builds`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY created_at DESC, id`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list environment builds: %w", err)
	}
	defer rows.Close()
	out := []store.EnvBuild{}
	for rows.Next() {
		b, err := scanEnvBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("list environment builds: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list environment builds: %w", err)
	}
	return out, nil
}

// UpdateEnvBuild replaces b's mutable fields; with from given, only while
// the stored status is one of from.
func (s *Store) UpdateEnvBuild(ctx context.Context, b store.EnvBuild, from ...string) error {
	if err := checkEnvBuild(b); err != nil {
		return err
	}
	if b.UpdatedAt.IsZero() {
		b.UpdatedAt = s.now()
	}
	targets, artifacts, err := envBuildJSON(b)
	if err != nil {
		return opErr(err, "update environment build %s", b.ID)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, `SELECT status FROM env_builds WHERE id = ?`, b.ID).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return buildNotFound(b.ID)
		}
		if err != nil {
			return err
		}
		if len(from) > 0 && !slices.Contains(from, status) {
			return errdefs.New(errdefs.ErrConflict, "environment build %s is %s", b.ID, status)
		}
		_, err = tx.ExecContext(ctx, `UPDATE env_builds SET status = ?, targets = ?, image = ?, log = ?, reason = ?,
			attempts = ?, artifacts = ?, updated_at = ?, started_at = ?, finished_at = ? WHERE id = ?`,
			b.Status, targets, b.Image, b.Log, b.Reason, b.Attempts, artifacts,
			timeArg(b.UpdatedAt), timeArg(b.StartedAt), timeArg(b.FinishedAt), b.ID)
		return err
	})
	return opErr(err, "update environment build %s", b.ID)
}

// ClaimEnvBuild moves the oldest queued build to building.
func (s *Store) ClaimEnvBuild(ctx context.Context, at time.Time) (store.EnvBuild, error) {
	if err := checkTime("at", at); err != nil {
		return store.EnvBuild{}, err
	}
	var b store.EnvBuild
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		b, err = scanEnvBuild(tx.QueryRowContext(ctx, `SELECT `+envBuildColumns+` FROM env_builds
			WHERE status = ? ORDER BY created_at, id LIMIT 1`, store.BuildQueued))
		if errors.Is(err, sql.ErrNoRows) {
			return errdefs.New(errdefs.ErrNotFound, "no environment build is queued")
		}
		if err != nil {
			return err
		}
		b.Status, b.Attempts = store.BuildBuilding, b.Attempts+1
		b.StartedAt, b.UpdatedAt = time.Unix(0, at.UnixNano()).UTC(), time.Unix(0, at.UnixNano()).UTC()
		_, err = tx.ExecContext(ctx, `UPDATE env_builds SET status = ?, attempts = ?, started_at = ?, updated_at = ? WHERE id = ?`,
			b.Status, b.Attempts, timeArg(b.StartedAt), timeArg(b.UpdatedAt), b.ID)
		return err
	})
	if err != nil {
		return store.EnvBuild{}, opErr(err, "claim environment build")
	}
	return b, nil
}
