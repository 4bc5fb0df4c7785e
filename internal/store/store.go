// Package store is StacyVM's persistence contract: sandboxes (with their
// state history), templates, and environment specs and builds. Package
// store/sqlite implements it; package store/storetest is the contract suite
// every implementation must pass.
package store

import (
	"context"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Store persists sandbox and template records. Implementations classify
// errors with errdefs: a missing record is errdefs.ErrNotFound (for
// sandboxes, errdefs.ErrSandboxNotFound), a duplicate key errdefs.ErrConflict.
// Every method is safe for concurrent use.
type Store interface {
	// CreateSandbox inserts a new record and its first history entry. A
	// zero CreatedAt is set to now, a zero UpdatedAt to CreatedAt; a zero
	// ExpiresAt means the record never expires.
	CreateSandbox(ctx context.Context, sb Sandbox) error
	GetSandbox(ctx context.Context, id string) (Sandbox, error)
	// ListSandboxes returns matching records, newest first (by CreatedAt,
	// ties by ID ascending).
	ListSandboxes(ctx context.Context, f SandboxFilter) ([]Sandbox, error)
	// CreateSandboxWithin is CreateSandbox under lim: it is refused with
	// errdefs.ErrResourceLimit, and nothing is stored, when the records in
	// one of lim.Counted's states already number lim.Max, or when those of
	// sb.OwnerID (if not empty) number lim.MaxPerOwner. The count and the
	// insert are one step against every other CreateSandboxWithin, other
	// processes on the same database included, so concurrent creations
	// never overshoot a limit.
	CreateSandboxWithin(ctx context.Context, sb Sandbox, lim SandboxLimits) error
	// UpdateSandbox replaces a record's mutable fields (everything but ID and
	// CreatedAt). When the state changes a history entry is appended with
	// sb.LastError as its reason. Destroyed is final: moving a destroyed
	// record to another state is errdefs.ErrSandboxDestroyed.
	UpdateSandbox(ctx context.Context, sb Sandbox) error
	// UpdateSandboxIf is UpdateSandbox only while the stored record is in
	// state: a compare-and-set, atomic against every other writer (other
	// processes on the same database included). A record in another state
	// is errdefs.ErrConflict and is left unchanged. It is how a warm pool
	// member is claimed exactly once (pooled → running).
	UpdateSandboxIf(ctx context.Context, sb Sandbox, state string) error
	// TouchSandboxes records activity at at in the records ids that are
	// not destroyed: each one's LastActivity becomes at unless it is later
	// already. Unknown IDs are ignored. Nothing else in the record changes
	// (UpdatedAt neither), and no other method writes LastActivity.
	TouchSandboxes(ctx context.Context, at time.Time, ids ...string) error
	// History returns a sandbox's state transitions, oldest first.
	History(ctx context.Context, id string) ([]Transition, error)
	// CountSandboxes returns how many records are in each state, from one
	// aggregate query; states without records are absent.
	CountSandboxes(ctx context.Context) (map[string]int, error)
	// PurgeDestroyed deletes the records in state destroyed whose
	// UpdatedAt is before before, with their history, and returns how many.
	PurgeDestroyed(ctx context.Context, before time.Time) (int, error)
	// InstanceID returns this database's server instance id, minting it
	// on first use: every later call, after a reopen too, returns the
	// same value; two databases never share one.
	InstanceID(ctx context.Context) (string, error)

	// CreateTemplate stores t as version 1: Version is owned by the store.
	CreateTemplate(ctx context.Context, t Template) error
	GetTemplate(ctx context.Context, name string) (Template, error)
	ListTemplates(ctx context.Context) ([]Template, error)
	// UpdateTemplate replaces a template; Version is bumped by the store.
	// It returns the template as stored: CreatedAt kept, UpdatedAt moved
	// forward (to t.UpdatedAt when that is later than the stored value).
	UpdateTemplate(ctx context.Context, t Template) (Template, error)
	DeleteTemplate(ctx context.Context, name string) error

	// CreateEnvSpec stores a new environment spec; a duplicate ID, or a
	// duplicate Name for the same OwnerID, is errdefs.ErrConflict.
	CreateEnvSpec(ctx context.Context, s EnvSpec) error
	GetEnvSpec(ctx context.Context, id string) (EnvSpec, error)
	// ListEnvSpecs returns the specs of ownerID (every owner's when
	// empty), newest first (ties by ID ascending).
	ListEnvSpecs(ctx context.Context, ownerID string) ([]EnvSpec, error)
	// CreateEnvBuild stores a new build; a duplicate ID is
	// errdefs.ErrConflict.
	CreateEnvBuild(ctx context.Context, b EnvBuild) error
	GetEnvBuild(ctx context.Context, id string) (EnvBuild, error)
	// ListEnvBuilds returns matching builds, newest first (by CreatedAt,
	// ties by ID ascending).
	ListEnvBuilds(ctx context.Context, f EnvBuildFilter) ([]EnvBuild, error)
	// UpdateEnvBuild replaces a build's mutable fields (everything but ID,
	// SpecID, OwnerID and CreatedAt). With from given, the stored status
	// must be one of from, else nothing changes and the error is
	// errdefs.ErrConflict: transitions race safely.
	UpdateEnvBuild(ctx context.Context, b EnvBuild, from ...string) error
	// ClaimEnvBuild moves the oldest queued build (by CreatedAt, ties by
	// ID) to building, counts the attempt, sets StartedAt and UpdatedAt
	// to at, and returns it; none queued is errdefs.ErrNotFound. Two
	// concurrent claims never return the same build.
	ClaimEnvBuild(ctx context.Context, at time.Time) (EnvBuild, error)

	// AcquireLease takes the lease called name for holder until ttl from
	// now (by the store's clock), or renews it when holder holds it
	// already. A lease that is free, released or expired is acquired with
	// a fencing token greater than any token of any lease before it; a
	// renewal keeps its token. A lease another holder holds unexpired is
	// errdefs.ErrConflict.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	// ReleaseLease gives the lease up if holder still holds it with token;
	// otherwise it does nothing.
	ReleaseLease(ctx context.Context, name, holder string, token int64) error
	// CheckLease returns nil when the lease called name is held, unexpired,
	// with token; otherwise errdefs.ErrConflict: work fenced by that token
	// must stop.
	CheckLease(ctx context.Context, name string, token int64) error
	// GetLease returns the lease called name, expired or not;
	// errdefs.ErrNotFound when it is free (never taken, or released).
	GetLease(ctx context.Context, name string) (Lease, error)

	Close() error
}

// Lease is a named, expiring claim of one holder (a replica), for work
// that must run once across replicas sharing a store (docs/scale-out.md).
type Lease struct {
	Name   string
	Holder string
	// Token is the fencing token: it grows with every acquisition, so
	// work done under an older token can be told apart and refused.
	Token     int64
	ExpiresAt time.Time
}

// Sandbox is the durable record of one sandbox.
type Sandbox struct {
	ID       string
	Provider string
	Image    string
	State    string // provider.State values
	OwnerID  string
	Template string
	MemoryMB int
	VCPUs    int
	DiskMB   int
	Metadata map[string]string
	Env      map[string]string // applied to every exec (from the template)
	// Handle is the provider's own name for the runtime, kept so that it can
	// be found again after a restart.
	Handle    string
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
	ExpiresAt time.Time
	// IdleTimeout, when positive, is how long the sandbox may go without
	// activity before OnIdle ("pause" or "destroy") happens to it.
	IdleTimeout time.Duration
	OnIdle      string
	// LastActivity is when a replica last recorded activity in the
	// sandbox (TouchSandboxes); zero when none did.
	LastActivity time.Time
}

// SandboxLimits bound how many records hold a place at once. A record
// holds one while its state is one of Counted. A zero limit is none.
type SandboxLimits struct {
	Counted     []string
	Max         int
	MaxPerOwner int
}

// CheckLimits is the verdict of lim on one more record of owner, when
// total records (owned of them owner's) already hold places: nil, or an
// errdefs.ErrResourceLimit error naming the limit reached. Stores call it
// with the counts they made.
func CheckLimits(owner string, total, owned int, lim SandboxLimits) error {
	if lim.Max > 0 && total >= lim.Max {
		return errdefs.New(errdefs.ErrResourceLimit, "the deployment already runs its maximum of %d sandboxes", lim.Max)
	}
	if lim.MaxPerOwner > 0 && owner != "" && owned >= lim.MaxPerOwner {
		return errdefs.New(errdefs.ErrResourceLimit, "owner %q already has its maximum of %d sandboxes", owner, lim.MaxPerOwner)
	}
	return nil
}

// SandboxFilter selects sandboxes; zero fields match everything.
type SandboxFilter struct {
	OwnerID  string
	Provider string
	States   []string // any of these
	// ExcludeDestroyed drops records in state "destroyed".
	ExcludeDestroyed bool
	// ExpiredBefore, when set, keeps records whose ExpiresAt is before it
	// (a zero ExpiresAt never expires).
	ExpiredBefore time.Time
	// After, when set, keeps the records that follow it in list order
	// (CreatedAt descending, then ID ascending): the next page.
	After *Cursor
	// Limit, when positive, returns at most that many records.
	Limit int
}

// Cursor is a position in list order: the last record of a page.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Transition is one entry in a sandbox's state history.
type Transition struct {
	State  string
	Reason string
	At     time.Time
}

// Template is a named sandbox recipe.
type Template struct {
	Name        string
	Version     int
	Image       string
	Description string
	Setup       []string // shell commands run once after spawn
	Env         map[string]string
	MemoryMB    int
	CPUCores    int
	TTLSeconds  int
	PoolSize    int
	Provider    string
	// Environment names an environment spec or build (by ID): the
	// template spawns that build's image, or the spec's latest ready one.
	Environment string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// IdleTimeoutSeconds and OnIdle are the idle timeout of the
	// template's sandboxes (0: none; OnIdle "pause" or "destroy").
	IdleTimeoutSeconds int
	OnIdle             string
}
