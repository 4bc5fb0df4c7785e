package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

const envSpecColumns = `id, owner_id, name, base_image, python_packages, apt_packages, python_version, created_at`

const envBuildColumns = `id, spec_id, owner_id, status, targets, image, log, reason, attempts, artifacts,
	created_at, updated_at, started_at, finished_at`

// artifactJSON is an artifact's stored form (the same as SQLite's).
type artifactJSON struct {
	Target string `json:"target"`
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func scanEnvSpec(row pgx.Row) (store.EnvSpec, error) {
	var (
		s        store.EnvSpec
		pip, apt []byte
		created  time.Time
	)
	if err := row.Scan(&s.ID, &s.OwnerID, &s.Name, &s.BaseImage, &pip, &apt, &s.PythonVersion, &created); err != nil {
		return store.EnvSpec{}, err
	}
	if err := errors.Join(jsonFrom(pip, &s.PythonPackages), jsonFrom(apt, &s.AptPackages)); err != nil {
		return store.EnvSpec{}, fmt.Errorf("environment spec %s: decode: %w", s.ID, err)
	}
	s.CreatedAt = created.UTC()
	return s, nil
}

// CreateEnvSpec inserts spec; a zero CreatedAt becomes now.
func (s *Store) CreateEnvSpec(ctx context.Context, spec store.EnvSpec) error {
	if spec.ID == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "environment spec ID is empty")
	}
	if spec.CreatedAt.IsZero() {
		spec.CreatedAt = s.now()
	}
	pip, err := jsonText(spec.PythonPackages, spec.PythonPackages == nil)
	if err != nil {
		return s.opErr(err, "create environment spec %s", spec.ID)
	}
	apt, err := jsonText(spec.AptPackages, spec.AptPackages == nil)
	if err != nil {
		return s.opErr(err, "create environment spec %s", spec.ID)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO env_specs (`+envSpecColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		spec.ID, spec.OwnerID, spec.Name, spec.BaseImage, pip, apt, spec.PythonVersion, spec.CreatedAt)
	if isUniqueViolation(err) {
		return errdefs.New(errdefs.ErrConflict, "environment spec %q of owner %q already exists", spec.Name, spec.OwnerID)
	}
	return s.opErr(err, "create environment spec %s", spec.ID)
}

// GetEnvSpec returns the spec with the given ID.
func (s *Store) GetEnvSpec(ctx context.Context, id string) (store.EnvSpec, error) {
	spec, err := scanEnvSpec(s.pool.QueryRow(ctx, `SELECT `+envSpecColumns+` FROM env_specs WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.EnvSpec{}, errdefs.New(errdefs.ErrNotFound, "environment spec %s not found", id)
	}
	return spec, s.opErr(err, "get environment spec %s", id)
}

// ListEnvSpecs returns ownerID's specs (everyone's when empty), newest first.
func (s *Store) ListEnvSpecs(ctx context.Context, ownerID string) ([]store.EnvSpec, error) {
	q := `SELECT ` + envSpecColumns + ` FROM env_specs`
	var args []any
	if ownerID != "" {
		q += ` WHERE owner_id = $1`
		args = append(args, ownerID)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY created_at DESC, id`, args...)
	if err != nil {
		return nil, s.opErr(err, "list environment specs")
	}
	defer rows.Close()
	out := []store.EnvSpec{}
	for rows.Next() {
		spec, err := scanEnvSpec(rows)
		if err != nil {
			return nil, s.opErr(err, "list environment specs")
		}
		out = append(out, spec)
	}
	return out, s.opErr(rows.Err(), "list environment specs")
}

func scanEnvBuild(row pgx.Row) (store.EnvBuild, error) {
	var (
		b                  store.EnvBuild
		targets, artifacts []byte
		created, updated   time.Time
		started, finished  *time.Time
	)
	if err := row.Scan(&b.ID, &b.SpecID, &b.OwnerID, &b.Status, &targets, &b.Image, &b.Log, &b.Reason, &b.Attempts,
		&artifacts, &created, &updated, &started, &finished); err != nil {
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
	b.CreatedAt, b.UpdatedAt, b.StartedAt, b.FinishedAt = created.UTC(), updated.UTC(), timeFrom(started), timeFrom(finished)
	return b, nil
}

func checkEnvBuild(b store.EnvBuild) error {
	if b.ID == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "environment build ID is empty")
	}
	if b.Status == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "environment build %s has no status", b.ID)
	}
	return nil
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
		return s.opErr(err, "create environment build %s", b.ID)
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO env_builds (`+envBuildColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		b.ID, b.SpecID, b.OwnerID, b.Status, targets, b.Image, b.Log, b.Reason, b.Attempts, artifacts,
		b.CreatedAt, b.UpdatedAt, timeArg(b.StartedAt), timeArg(b.FinishedAt))
	if isUniqueViolation(err) {
		return errdefs.New(errdefs.ErrConflict, "environment build %s already exists", b.ID)
	}
	return s.opErr(err, "create environment build %s", b.ID)
}

func buildNotFound(id string) error {
	return errdefs.New(errdefs.ErrNotFound, "environment build %s not found", id)
}

// GetEnvBuild returns the build with the given ID.
func (s *Store) GetEnvBuild(ctx context.Context, id string) (store.EnvBuild, error) {
	b, err := scanEnvBuild(s.pool.QueryRow(ctx, `SELECT `+envBuildColumns+` FROM env_builds WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.EnvBuild{}, buildNotFound(id)
	}
	return b, s.opErr(err, "get environment build %s", id)
}

// ListEnvBuilds returns the builds f selects, newest first.
func (s *Store) ListEnvBuilds(ctx context.Context, f store.EnvBuildFilter) ([]store.EnvBuild, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.OwnerID != "" {
		where = append(where, `owner_id = `+arg(f.OwnerID))
	}
	if f.SpecID != "" {
		where = append(where, `spec_id = `+arg(f.SpecID))
	}
	if len(f.Statuses) > 0 {
		where = append(where, `status = ANY(`+arg(f.Statuses)+`)`)
	}
	q := `SELECT ` + envBuildColumns + ` FROM env_builds`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY created_at DESC, id`
	if f.Limit > 0 {
		q += ` LIMIT ` + arg(f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.opErr(err, "list environment builds")
	}
	defer rows.Close()
	out := []store.EnvBuild{}
	for rows.Next() {
		b, err := scanEnvBuild(rows)
		if err != nil {
			return nil, s.opErr(err, "list environment builds")
		}
		out = append(out, b)
	}
	return out, s.opErr(rows.Err(), "list environment builds")
}

// UpdateEnvBuild replaces b's mutable fields; with from given, only while
// the stored status is one of from (the row is locked while checked).
func (s *Store) UpdateEnvBuild(ctx context.Context, b store.EnvBuild, from ...string) error {
	if err := checkEnvBuild(b); err != nil {
		return err
	}
	if b.UpdatedAt.IsZero() {
		b.UpdatedAt = s.now()
	}
	targets, artifacts, err := envBuildJSON(b)
	if err != nil {
		return s.opErr(err, "update environment build %s", b.ID)
	}
	err = s.withTx(ctx, func(tx pgx.Tx) error {
		var status string
		err := tx.QueryRow(ctx, `SELECT status FROM env_builds WHERE id = $1 FOR UPDATE`, b.ID).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return buildNotFound(b.ID)
		}
		if err != nil {
			return err
		}
		if len(from) > 0 && !slices.Contains(from, status) {
			return errdefs.New(errdefs.ErrConflict, "environment build %s is %s", b.ID, status)
		}
		_, err = tx.Exec(ctx, `UPDATE env_builds SET status = $1, targets = $2, image = $3, log = $4, reason = $5,
			attempts = $6, artifacts = $7, updated_at = $8, started_at = $9, finished_at = $10 WHERE id = $11`,
			b.Status, targets, b.Image, b.Log, b.Reason, b.Attempts, artifacts,
			b.UpdatedAt, timeArg(b.StartedAt), timeArg(b.FinishedAt), b.ID)
		return err
	})
	return s.opErr(err, "update environment build %s", b.ID)
}

// ClaimEnvBuild moves the oldest queued build to building. SKIP LOCKED
// lets replicas claim different builds at once instead of queueing on one.
func (s *Store) ClaimEnvBuild(ctx context.Context, at time.Time) (store.EnvBuild, error) {
	var b store.EnvBuild
	err := s.withTx(ctx, func(tx pgx.Tx) error {
		var err error
		b, err = scanEnvBuild(tx.QueryRow(ctx, `SELECT `+envBuildColumns+` FROM env_builds
			WHERE status = $1 ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED`, store.BuildQueued))
		if errors.Is(err, pgx.ErrNoRows) {
			return errdefs.New(errdefs.ErrNotFound, "no environment build is queued")
		}
		if err != nil {
			return err
		}
		b.Status, b.Attempts = store.BuildBuilding, b.Attempts+1
		b.StartedAt, b.UpdatedAt = micro(at).UTC(), micro(at).UTC()
		_, err = tx.Exec(ctx, `UPDATE env_builds SET status = $1, attempts = $2, started_at = $3, updated_at = $4 WHERE id = $5`,
			b.Status, b.Attempts, b.StartedAt, b.UpdatedAt, b.ID)
		return err
	})
	if err != nil {
		return store.EnvBuild{}, s.opErr(err, "claim environment build")
	}
	return b, nil
}
