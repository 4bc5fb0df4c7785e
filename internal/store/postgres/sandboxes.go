package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	return nil
}

func scanSandbox(row pgx.Row) (store.Sandbox, error) {
	var (
		sb                        store.Sandbox
		md, env                   []byte
		created, updated, expires *time.Time
		active                    *time.Time
		idleMS                    int64
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

// CreateSandboxWithin implements store.Store. The count and the insert
// are one transaction holding a transaction-scoped advisory lock of the
// schema's limits: creations under limits queue on it, and each counts
// after the previous one committed (a statement of a READ COMMITTED
// transaction sees every commit made before it started).
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
	md, err := jsonText(sb.Metadata, sb.Metadata == nil)
	if err != nil {
		return s.opErr(err, "create sandbox %s", sb.ID)
	}
	env, err := jsonText(sb.Env, sb.Env == nil)
	if err != nil {
		return s.opErr(err, "create sandbox %s", sb.ID)
	}
	err = s.withTx(ctx, func(tx pgx.Tx) error {
		if lim != nil {
			if err := s.checkLimits(ctx, tx, sb, *lim); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO sandboxes (`+sandboxColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			sb.ID, sb.Provider, sb.Image, sb.State, sb.OwnerID, sb.Template, sb.MemoryMB, sb.VCPUs, sb.DiskMB,
			md, env, sb.Handle, sb.LastError, timeArg(sb.CreatedAt), timeArg(sb.UpdatedAt), timeArg(sb.ExpiresAt),
			sb.IdleTimeout.Milliseconds(), sb.OnIdle)
		if isUniqueViolation(err) {
			return errdefs.New(errdefs.ErrConflict, "sandbox %s already exists", sb.ID)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO sandbox_history (sandbox_id, state, reason, at) VALUES ($1, $2, $3, $4)`,
			sb.ID, sb.State, sb.LastError, sb.CreatedAt)
		return err
	})
	return s.opErr(err, "create sandbox %s", sb.ID)
}

// checkLimits takes the limits' lock for the rest of tx, then counts the
// records that hold places.
func (s *Store) checkLimits(ctx context.Context, tx pgx.Tx, sb store.Sandbox, lim store.SandboxLimits) error {
	if len(lim.Counted) == 0 || (lim.Max <= 0 && (lim.MaxPerOwner <= 0 || sb.OwnerID == "")) {
		return nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, s.lockKey("limits")); err != nil {
		return err
	}
	var total, owned int
	if err := tx.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE owner_id = $1) FROM sandboxes
		WHERE state = ANY ($2)`, sb.OwnerID, lim.Counted).Scan(&total, &owned); err != nil {
		return err
	}
	return store.CheckLimits(sb.OwnerID, total, owned, lim)
}

// GetSandbox returns the record of sandbox id, in state destroyed too.
func (s *Store) GetSandbox(ctx context.Context, id string) (store.Sandbox, error) {
	sb, err := scanSandbox(s.pool.QueryRow(ctx, selectSandbox+` FROM sandboxes WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Sandbox{}, sandboxNotFound(id)
	}
	return sb, s.opErr(err, "get sandbox %s", id)
}

// ListSandboxes returns the records f selects, newest first; records created
// at the same instant are ordered by ID.
func (s *Store) ListSandboxes(ctx context.Context, f store.SandboxFilter) ([]store.Sandbox, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.OwnerID != "" {
		where = append(where, "owner_id = "+arg(f.OwnerID))
	}
	if f.Provider != "" {
		where = append(where, "provider = "+arg(f.Provider))
	}
	if len(f.States) > 0 {
		where = append(where, "state = ANY ("+arg(f.States)+")")
	}
	if f.ExcludeDestroyed {
		where = append(where, "state <> "+arg(stateDestroyed))
	}
	if !f.ExpiredBefore.IsZero() {
		where = append(where, "expires_at < "+arg(f.ExpiredBefore))
	}
	if c := f.After; c != nil {
		at, id := arg(c.CreatedAt), arg(c.ID)
		where = append(where, "(created_at < "+at+" OR (created_at = "+at+" AND id > "+id+"))")
	}
	q := selectSandbox + ` FROM sandboxes`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id`
	if f.Limit > 0 {
		q += ` LIMIT ` + arg(f.Limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.opErr(err, "list sandboxes")
	}
	defer rows.Close()
	out := []store.Sandbox{}
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, s.opErr(err, "list sandboxes")
		}
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, s.opErr(err, "list sandboxes")
	}
	return out, nil
}

// UpdateSandbox replaces every field of the record but ID and CreatedAt. A
// zero UpdatedAt becomes now. When the state changes, a history entry is
// appended with sb.LastError as its reason, at sb.UpdatedAt. The record is
// locked while it is read and written, so that concurrent updates from
// several replicas each see the state the previous one left.
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
// stored state is expect. The row is locked (FOR UPDATE) from the read to
// the commit, so concurrent writers, other replicas included, queue and
// the second sees the first's state.
func (s *Store) updateSandbox(ctx context.Context, sb store.Sandbox, expect string) error {
	if err := checkSandbox(sb); err != nil {
		return err
	}
	if sb.UpdatedAt.IsZero() {
		sb.UpdatedAt = s.now()
	}
	md, err := jsonText(sb.Metadata, sb.Metadata == nil)
	if err != nil {
		return s.opErr(err, "update sandbox %s", sb.ID)
	}
	env, err := jsonText(sb.Env, sb.Env == nil)
	if err != nil {
		return s.opErr(err, "update sandbox %s", sb.ID)
	}
	err = s.withTx(ctx, func(tx pgx.Tx) error {
		var old string
		err := tx.QueryRow(ctx, `SELECT state FROM sandboxes WHERE id = $1 FOR UPDATE`, sb.ID).Scan(&old)
		if errors.Is(err, pgx.ErrNoRows) {
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
		if _, err := tx.Exec(ctx, `UPDATE sandboxes SET provider = $1, image = $2, state = $3, owner_id = $4,
			template = $5, memory_mb = $6, vcpus = $7, disk_mb = $8, metadata = $9, env = $10, handle = $11,
			last_error = $12, updated_at = $13, expires_at = $14, idle_timeout_ms = $15, on_idle = $16 WHERE id = $17`,
			sb.Provider, sb.Image, sb.State, sb.OwnerID, sb.Template, sb.MemoryMB, sb.VCPUs, sb.DiskMB, md, env,
			sb.Handle, sb.LastError, sb.UpdatedAt, timeArg(sb.ExpiresAt), sb.IdleTimeout.Milliseconds(), sb.OnIdle,
			sb.ID); err != nil {
			return err
		}
		if old == sb.State {
			return nil
		}
		_, err = tx.Exec(ctx, `INSERT INTO sandbox_history (sandbox_id, state, reason, at) VALUES ($1, $2, $3, $4)`,
			sb.ID, sb.State, sb.LastError, sb.UpdatedAt)
		return err
	})
	return s.opErr(err, "update sandbox %s", sb.ID)
}

// TouchSandboxes implements store.Store, in one statement for every ID.
func (s *Store) TouchSandboxes(ctx context.Context, at time.Time, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `UPDATE sandboxes SET last_activity = $1
		WHERE id = ANY ($2) AND state <> $3 AND (last_activity IS NULL OR last_activity < $1)`,
		at, ids, stateDestroyed)
	return s.opErr(err, "record activity")
}

// History returns the state transitions of sandbox id, oldest first.
func (s *Store) History(ctx context.Context, id string) ([]store.Transition, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, reason, at FROM sandbox_history WHERE sandbox_id = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, s.opErr(err, "history of sandbox %s", id)
	}
	defer rows.Close()
	out := []store.Transition{}
	for rows.Next() {
		var tr store.Transition
		if err := rows.Scan(&tr.State, &tr.Reason, &tr.At); err != nil {
			return nil, s.opErr(err, "history of sandbox %s", id)
		}
		tr.At = tr.At.UTC()
		out = append(out, tr)
	}
	if err := rows.Err(); err != nil {
		return nil, s.opErr(err, "history of sandbox %s", id)
	}
	if len(out) == 0 {
		// Every record has a history from its creation on; none means no record.
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sandboxes WHERE id = $1)`, id).Scan(&exists); err != nil {
			return nil, s.opErr(err, "history of sandbox %s", id)
		}
		if !exists {
			return nil, sandboxNotFound(id)
		}
	}
	return out, nil
}

// CountSandboxes counts records by state in one aggregate query.
func (s *Store) CountSandboxes(ctx context.Context) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, count(*) FROM sandboxes GROUP BY state`)
	if err != nil {
		return nil, s.opErr(err, "count sandboxes")
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			state string
			n     int
		)
		if err := rows.Scan(&state, &n); err != nil {
			return nil, s.opErr(err, "count sandboxes")
		}
		out[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, s.opErr(err, "count sandboxes")
	}
	return out, nil
}

// PurgeDestroyed deletes destroyed records last updated before before;
// their history goes with them (the foreign key cascades).
func (s *Store) PurgeDestroyed(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM sandboxes WHERE state = $1 AND updated_at < $2`, stateDestroyed, before)
	if err != nil {
		return 0, s.opErr(err, "purge destroyed sandboxes")
	}
	return int(tag.RowsAffected()), nil
}

// InstanceID mints the instance id on first use and keeps it in meta. Every
// replica on this database reads the same one: the deployment's identity.
func (s *Store) InstanceID(ctx context.Context) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	// Two statements, not one: a statement's snapshot would not see the
	// row a concurrent first call commits while this insert waits on it.
	if _, err := s.pool.Exec(ctx, `INSERT INTO meta (key, value) VALUES ('instance_id', $1) ON CONFLICT (key) DO NOTHING`,
		"inst-"+hex.EncodeToString(b[:])); err != nil {
		return "", s.opErr(err, "instance id")
	}
	var id string
	err := s.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&id)
	if err != nil {
		return "", s.opErr(err, "instance id")
	}
	return id, nil
}
