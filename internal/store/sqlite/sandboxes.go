package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/store"
)

// stateDestroyed is provider.StateDestroyed; the store may not import the
// provider package.
const stateDestroyed = "destroyed"

const sandboxColumns = `id, provider, image, state, owner_id, template, memory_mb, vcpus, disk_mb,
	metadata, env, handle, last_error, created_at, updated_at, expires_at, idle_timeout_ms, on_idle`

// selectSandbox reads sandboxColumns and, last, last_activity, which only
// TouchSandboxes writes.
const selectSandbox = `SELECT ` + sandboxColumns + `, last_activity`

func sandboxNotFound(id string) error {
	return errdefs.New(errdefs.ErrSandboxNotFound, "sandbox %s not found", id)
}

// opErr gives an unclassified (internal) error the operation it failed in;
// classified errors already say what went wrong.
func opErr(err error, format string, args ...any) error {
	if err == nil || errdefs.Classify(err) != nil {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// destroyedIsFinal refuses to move a destroyed record to another state: a
// writer that read the record before someone else destroyed it must not
// revive it by writing back what it read.
func destroyedIsFinal(id string) error {
	return errdefs.New(errdefs.ErrSandboxDestroyed, "sandbox %s was destroyed", id)
}

func checkSandbox(sb store.Sandbox) error {
	if sb.ID == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "sandbox ID is empty")
	}
	if sb.State == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "sandbox %s has no state", sb.ID)
	}
	return errors.Join(checkTime("created_at", sb.CreatedAt), checkTime("updated_at", sb.UpdatedAt),
		checkTime("expires_at", sb.ExpiresAt))
}

// sandboxArgs returns the values of every column after id, in
// sandboxColumns order.
func sandboxArgs(sb store.Sandbox) ([]any, error) {
	md, err := jsonText(sb.Metadata, sb.Metadata == nil)
	if err != nil {
		return nil, err
	}
	env, err := jsonText(sb.Env, sb.Env == nil)
	if err != nil {
		return nil, err
	}
	return []any{sb.Provider, sb.Image, sb.State, sb.OwnerID, sb.Template, sb.MemoryMB, sb.VCPUs, sb.DiskMB,
		md, env, sb.Handle, sb.LastError, timeArg(sb.CreatedAt), timeArg(sb.UpdatedAt), timeArg(sb.ExpiresAt),
		sb.IdleTimeout.Milliseconds(), sb.OnIdle}, nil
}

type scanner interface{ Scan(dst ...any) error }

func scanSandbox(row scanner) (store.Sandbox, error) {
	var (
		sb               store.Sandbox
		md, env          sql.NullString
		created, updated sql.NullInt64
		expires, active  sql.NullInt64
		idleMS           int64
	)
	if err := row.Scan(&sb.ID, &sb.Provider, &sb.Image, &sb.State, &sb.OwnerID, &sb.Template, &sb.MemoryMB,
		&sb.VCPUs, &sb.DiskMB, &md, &env, &sb.Handle, &sb.LastError, &created, &updated, &expires,
		&idleMS, &sb.OnIdle, &active); err != nil {
		return store.Sandbox{}, err
	}
	sb.IdleTimeout = time.Duration(idleMS) * time.Millisecond
	if err := errors.Join(jsonFrom(md, &sb.Metadata), jsonFrom(env, &sb.Env)); err != nil {
		return store.Sandbox{}, fmt.Errorf("sandbox %s: decode: %w", sb.ID, err)
	}
	sb.CreatedAt, sb.UpdatedAt, sb.ExpiresAt = timeFrom(created), timeFrom(updated), timeFrom(expires)
	sb.LastActivity = timeFrom(active)
	return sb, nil
}

// CreateSandbox inserts sb and its first history entry (sb.State, with
// sb.LastError as the reason, at sb.CreatedAt). A zero CreatedAt becomes now
// and a zero UpdatedAt becomes CreatedAt.
func (s *Store) CreateSandbox(ctx context.Context, sb store.Sandbox) error {
	return s.createSandbox(ctx, sb, nil)
}

// CreateSandboxWithin implements store.Store: the count and the insert
// are one transaction on the one writer connection.
func (s *Store) CreateSandboxWithin(ctx context.Context, sb store.Sandbox, lim store.SandboxLimits) error {
	return s.createSandbox(ctx, sb, &lim)
}

func (s *Store) createSandbox(ctx context.Context, sb store.Sandbox, lim *store.SandboxLimits) error {
	if err := checkSandbox(sb); err != nil {
		return err
	}
	if sb.CreatedAt.IsZero() {
		sb.CreatedAt = s.now()
	}
	if sb.UpdatedAt.IsZero() {
		sb.UpdatedAt = sb.CreatedAt
	}
	args, err := sandboxArgs(sb)
	if err != nil {
		return opErr(err, "create sandbox %s", sb.ID)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		if lim != nil {
			if err := checkLimits(ctx, tx, sb, *lim); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sandboxes (`+sandboxColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, append([]any{sb.ID}, args...)...)
		if isUniqueViolation(err) {
			return errdefs.New(errdefs.ErrConflict, "sandbox %s already exists", sb.ID)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sandbox_history (sandbox_id, state, reason, at) VALUES (?, ?, ?, ?)`,
			sb.ID, sb.State, sb.LastError, timeArg(sb.CreatedAt))
		return err
	})
	return opErr(err, "create sandbox %s", sb.ID)
}

// checkLimits counts the records that hold places, in tx.
func checkLimits(ctx context.Context, tx *sql.Tx, sb store.Sandbox, lim store.SandboxLimits) error {
	if len(lim.Counted) == 0 || (lim.Max <= 0 && (lim.MaxPerOwner <= 0 || sb.OwnerID == "")) {
		return nil
	}
	args := []any{sb.OwnerID}
	for _, st := range lim.Counted {
		args = append(args, st)
	}
	var total, owned int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(owner_id = ?), 0) FROM sandboxes
		WHERE state IN (?`+strings.Repeat(", ?", len(lim.Counted)-1)+`)`, args...).Scan(&total, &owned); err != nil {
		return err
	}
	return store.CheckLimits(sb.OwnerID, total, owned, lim)
}

// GetSandbox returns the record of sandbox id, in state destroyed too.
func (s *Store) GetSandbox(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := scanSandbox(s.r.QueryRowContext(ctx, selectSandbox+` FROM sandboxes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Sandbox{}, sandboxNotFound(id)
	}
	return sb, opErr(err, "get sandbox %s", id)
}

// ListSandboxes returns the records f selects, newest first; records created
// at the same instant are ordered by ID.
func (s *Store) ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]store.Sandbox, error) {
	var (
		where []string
		args  []any
	)
	if f.OwnerID != "" {
		where, args = append(where, "owner_id = ?"), append(args, f.OwnerID)
	}
	if f.Provider != "" {
		where, args = append(where, "provider = ?"), append(args, f.Provider)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(", ?", len(f.States)-1)+")")
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	if f.ExcludeDestroyed {
		where, args = append(where, "state <> ?"), append(args, stateDestroyed)
	}
	if !f.ExpiredBefore.IsZero() {
		where, args = append(where, "expires_at < ?"), append(args, clampNanos(f.ExpiredBefore))
	}
	if c := f.After; c != nil {
		at := clampNanos(c.CreatedAt)
		where = append(where, "(created_at < ? OR (created_at = ? AND id > ?))")
		args = append(args, at, at, c.ID)
	}
	q := selectSandbox + ` FROM sandboxes`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id`
	if f.Limit > 0 {
		q, args = q+` LIMIT ?`, append(args, f.Limit)
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	out := []store.Sandbox{}
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	return out, nil
}

// UpdateSandbox replaces every field of the record but ID and CreatedAt. A
// zero UpdatedAt becomes now. When the state changes, a history entry is
// appended with sb.LastError as its reason, at sb.UpdatedAt.
func (s *Store) UpdateSandbox(ctx context.Context, sb store.Sandbox) error {
	return s.updateSandbox(ctx, sb, "")
}

// UpdateSandboxIf implements store.Store.
func (s *Store) UpdateSandboxIf(ctx context.Context, sb store.Sandbox, state string) error {
	if state == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "update sandbox %s: the expected state is empty", sb.ID)
	}
	return s.updateSandbox(ctx, sb, state)
}

// updateSandbox replaces sb's record; when expect is set, only if the
// stored state is expect (read and written in one transaction on the one
// writer connection, so nothing slips between).
func (s *Store) updateSandbox(ctx context.Context, sb store.Sandbox, expect string) error {
	if err := checkSandbox(sb); err != nil {
		return err
	}
	if sb.UpdatedAt.IsZero() {
		sb.UpdatedAt = s.now()
	}
	md, err := jsonText(sb.Metadata, sb.Metadata == nil)
	if err != nil {
		return opErr(err, "update sandbox %s", sb.ID)
	}
	env, err := jsonText(sb.Env, sb.Env == nil)
	if err != nil {
		return opErr(err, "update sandbox %s", sb.ID)
	}
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		var old string
		err := tx.QueryRowContext(ctx, `SELECT state FROM sandboxes WHERE id = ?`, sb.ID).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			return sandboxNotFound(sb.ID)
		}
		if err != nil {
			return err
		}
		if expect != "" && old != expect {
			return errdefs.New(errdefs.ErrConflict, "sandbox %s is %s, not %s", sb.ID, old, expect)
		}
		if old == stateDestroyed && sb.State != stateDestroyed {
			return destroyedIsFinal(sb.ID)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sandboxes SET provider = ?, image = ?, state = ?, owner_id = ?,
			template = ?, memory_mb = ?, vcpus = ?, disk_mb = ?, metadata = ?, env = ?, handle = ?, last_error = ?,
			updated_at = ?, expires_at = ?, idle_timeout_ms = ?, on_idle = ? WHERE id = ?`,
			sb.Provider, sb.Image, sb.State, sb.OwnerID, sb.Template, sb.MemoryMB, sb.VCPUs, sb.DiskMB, md, env,
			sb.Handle, sb.LastError, timeArg(sb.UpdatedAt), timeArg(sb.ExpiresAt), sb.IdleTimeout.Milliseconds(), sb.OnIdle,
			sb.ID); err != nil {
			return err
		}
		if old == sb.State {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO sandbox_history (sandbox_id, state, reason, at) VALUES (?, ?, ?, ?)`,
			sb.ID, sb.State, sb.LastError, timeArg(sb.UpdatedAt))
		return err
	})
	return opErr(err, "update sandbox %s", sb.ID)
}

// TouchSandboxes implements store.Store.
func (s *Store) TouchSandboxes(ctx context.Context, at time.Time, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := checkTime("at", at); err != nil {
		return err
	}
	args := []any{clampNanos(at), stateDestroyed, clampNanos(at)}
	for _, id := range ids {
		args = append(args, id)
	}
	_, err := s.w.ExecContext(ctx, `UPDATE sandboxes SET last_activity = ?
		WHERE state <> ? AND (last_activity IS NULL OR last_activity < ?)
		AND id IN (?`+strings.Repeat(", ?", len(ids)-1)+`)`, args...)
	return opErr(err, "record activity")
}

// History returns the state transitions of sandbox id, oldest first.
func (s *Store) History(ctx context.Context, id string) ([]store.Transition, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, reason, at FROM sandbox_history WHERE sandbox_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, fmt.Errorf("history of sandbox %s: %w", id, err)
	}
	defer rows.Close()
	out := []store.Transition{}
	for rows.Next() {
		var (
			tr store.Transition
			at sql.NullInt64
		)
		if err := rows.Scan(&tr.State, &tr.Reason, &at); err != nil {
			return nil, fmt.Errorf("history of sandbox %s: %w", id, err)
		}
		tr.At = timeFrom(at)
		out = append(out, tr)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("history of sandbox %s: %w", id, err)
	}
	if len(out) == 0 {
		// Every record has a history from its creation on; none means no record.
		var exists bool
		if err := s.r.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sandboxes WHERE id = ?)`, id).Scan(&exists); err != nil {
			return nil, fmt.Errorf("history of sandbox %s: %w", id, err)
		}
		if !exists {
			return nil, sandboxNotFound(id)
		}
	}
	return out, nil
}

// CountSandboxes counts records by state in one aggregate query.
func (s *Store) CountSandboxes(ctx context.Context) (map[string]int, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT state, COUNT(*) FROM sandboxes GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count sandboxes: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			state string
			n     int
		)
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("count sandboxes: %w", err)
		}
		out[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count sandboxes: %w", err)
	}
	return out, nil
}

// PurgeDestroyed deletes destroyed records last updated before before;
// their history goes with them.
func (s *Store) PurgeDestroyed(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		cut := clampNanos(before)
		// Explicitly, not only by the foreign key's cascade: the history
		// goes with its record whatever the connection's pragmas.
		if _, err := tx.ExecContext(ctx, `DELETE FROM sandbox_history WHERE sandbox_id IN
			(SELECT id FROM sandboxes WHERE state = ? AND updated_at < ?)`, stateDestroyed, cut); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sandboxes WHERE state = ? AND updated_at < ?`, stateDestroyed, cut)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("purge destroyed sandboxes: %w", err)
	}
	return int(n), nil
}

// InstanceID mints the instance id on first use and keeps it in meta.
func (s *Store) InstanceID(ctx context.Context) (string, error) {
	var id string
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails on supported platforms
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('instance_id', ?) ON CONFLICT (key) DO NOTHING`,
			"inst-"+hex.EncodeToString(b[:])); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("instance id: %w", err)
	}
	return id, nil
}
