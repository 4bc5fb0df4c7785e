package orchestrator

import (
	"context"
	"fmt"
	"maps"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// The sandbox lifecycle, stated once: what each state means to the rest of
// the Manager (lifecycle) and which state may follow which (transitions).
// transition is the only code that changes a record's state; the limits,
// List, the reaper, the guest operations and reconcile read the
// properties below instead of naming states. docs/lifecycle.md draws it.

// stateProps is what a state means to the rest of the Manager.
type stateProps struct {
	// Counts: a record in this state holds (or may hold) a runtime, so it
	// keeps its place under max_sandboxes and max_per_owner and stays in
	// the Manager's live set.
	Counts bool
	// Listed: List shows it without a state filter. Pool members belong
	// to no user yet; destroyed records only to an explicit filter.
	Listed bool
	// Reapable: the TTL reaper destroys it once it has expired.
	Reapable bool
	// Guest: exec, file and terminal operations run in it.
	Guest bool
	// Extendable: its TTL may be extended or set.
	Extendable bool
	// SpawnOwned: the spawn that created the record owns it until the
	// spawn returns. Nobody else writes it meanwhile; reconcile finding
	// one that no spawn of this process owns is an interrupted spawn.
	SpawnOwned bool
	// Transient: an operation that holds the sandbox's lock is under way.
	// Anyone else who takes the lock sees it only when that operation was
	// interrupted (the server stopped, or a destroy failed), and
	// reconcile settles it.
	Transient bool
	// Runtime is the runtime state a record in this state expects, ""
	// when it expects none in particular. Reconcile moves a record whose
	// runtime reports another state to the state that matches the
	// runtime (recordStateFor).
	Runtime provider.State
	// Event is published on entering the state; transient states publish
	// nothing, since the operation's outcome follows at once.
	Event string
}

// lifecycle holds every state. The API reports these strings.
var lifecycle = map[provider.State]stateProps{
	provider.StateCreating: {Counts: true, Listed: true, SpawnOwned: true},
	provider.StatePooled: {Counts: true, Runtime: provider.StateRunning,
		Event: events.SandboxPooled},
	provider.StateRunning: {Counts: true, Listed: true, Reapable: true, Guest: true, Extendable: true,
		Runtime: provider.StateRunning, Event: events.SandboxRunning},
	provider.StatePausing: {Counts: true, Listed: true, Transient: true},
	provider.StatePaused: {Counts: true, Listed: true, Reapable: true, Extendable: true,
		Runtime: provider.StatePaused, Event: events.SandboxPaused},
	provider.StateResuming: {Counts: true, Listed: true, Transient: true},
	provider.StateStopped: {Counts: true, Listed: true, Reapable: true,
		Runtime: provider.StateStopped, Event: events.SandboxStopped},
	// Counted because reconcile marks a sandbox error when it cannot
	// reach its runtime, which may still exist; the failed spawn's error
	// (the edge from creating) holds none and releases its place.
	provider.StateError: {Counts: true, Listed: true, Reapable: true, Event: events.SandboxError},
	// Reapable: a destroy that failed leaves it here, and the reaper (or
	// reconcile) finishes it.
	provider.StateDestroying: {Counts: true, Listed: true, Reapable: true, Transient: true},
	provider.StateDestroyed:  {Event: events.SandboxDestroyed},
}

// edge is one allowed transition.
type edge struct{ from, to provider.State }

// edgeProps says why an edge exists and what it does beyond the states.
type edgeProps struct {
	why string
	// releases: the record leaves its place under the limits although
	// its new state counts, because no runtime is left behind it.
	releases bool
}

// transitions is every allowed transition; anything else is a conflict.
// Records are born (CreateSandbox) in creating by a spawn, or by reconcile
// adopting a runtime in the state the runtime reports (adoptedState).
var transitions = map[edge]edgeProps{
	{provider.StateCreating, provider.StateRunning}:   {why: "spawn finished"},
	{provider.StateCreating, provider.StatePooled}:    {why: "pool member ready"},
	{provider.StateCreating, provider.StateError}:     {why: "spawn failed; the runtime is removed", releases: true},
	{provider.StateCreating, provider.StateDestroyed}: {why: "reconcile: spawn interrupted by a stop of the server"},

	{provider.StatePooled, provider.StateRunning}:    {why: "claimed from its pool"},
	{provider.StatePooled, provider.StateDestroying}: {why: "pool shrinks or replaces the member"},
	{provider.StatePooled, provider.StateDestroyed}:  {why: "reconcile: runtime gone or not running"},

	{provider.StateRunning, provider.StatePausing}:    {why: "pause requested"},
	{provider.StateRunning, provider.StateDestroying}: {why: "destroy requested, TTL expired or idle"},
	{provider.StateRunning, provider.StatePaused}:     {why: "reconcile: the runtime is paused"},
	{provider.StateRunning, provider.StateStopped}:    {why: "reconcile: the runtime stopped"},
	{provider.StateRunning, provider.StateError}:      {why: "reconcile: runtime unreachable or broken"},
	{provider.StateRunning, provider.StateDestroyed}:  {why: "reconcile: runtime gone"},

	{provider.StatePausing, provider.StatePaused}:     {why: "pause done"},
	{provider.StatePausing, provider.StateRunning}:    {why: "pause failed, or interrupted with the runtime still running"},
	{provider.StatePausing, provider.StateStopped}:    {why: "reconcile: the runtime stopped"},
	{provider.StatePausing, provider.StateError}:      {why: "reconcile: runtime unreachable or broken"},
	{provider.StatePausing, provider.StateDestroying}: {why: "destroy of an interrupted pause"},
	{provider.StatePausing, provider.StateDestroyed}:  {why: "reconcile: runtime gone"},

	{provider.StatePaused, provider.StateResuming}:   {why: "resume requested, or a guest operation resumes it"},
	{provider.StatePaused, provider.StateDestroying}: {why: "destroy requested or TTL expired"},
	{provider.StatePaused, provider.StateRunning}:    {why: "reconcile: the runtime runs"},
	{provider.StatePaused, provider.StateStopped}:    {why: "reconcile: the runtime stopped"},
	{provider.StatePaused, provider.StateError}:      {why: "reconcile: runtime unreachable or broken"},
	{provider.StatePaused, provider.StateDestroyed}:  {why: "reconcile: runtime gone"},

	{provider.StateResuming, provider.StateRunning}:    {why: "resume done"},
	{provider.StateResuming, provider.StatePaused}:     {why: "resume failed, or interrupted with the runtime still paused"},
	{provider.StateResuming, provider.StateStopped}:    {why: "reconcile: the runtime stopped"},
	{provider.StateResuming, provider.StateError}:      {why: "reconcile: runtime unreachable or broken"},
	{provider.StateResuming, provider.StateDestroying}: {why: "destroy of an interrupted resume"},
	{provider.StateResuming, provider.StateDestroyed}:  {why: "reconcile: runtime gone"},

	{provider.StateStopped, provider.StateRunning}:    {why: "reconcile: the runtime runs again"},
	{provider.StateStopped, provider.StatePaused}:     {why: "reconcile: the runtime is paused"},
	{provider.StateStopped, provider.StateError}:      {why: "reconcile: runtime unreachable or broken"},
	{provider.StateStopped, provider.StateDestroying}: {why: "destroy requested or TTL expired"},
	{provider.StateStopped, provider.StateDestroyed}:  {why: "reconcile: runtime gone"},

	{provider.StateError, provider.StateRunning}:    {why: "reconcile: the runtime answers again"},
	{provider.StateError, provider.StatePaused}:     {why: "reconcile: the runtime answers again, paused"},
	{provider.StateError, provider.StateStopped}:    {why: "reconcile: the runtime answers again, stopped"},
	{provider.StateError, provider.StateDestroying}: {why: "destroy requested or TTL expired"},
	{provider.StateError, provider.StateDestroyed}:  {why: "reconcile: runtime gone"},

	{provider.StateDestroying, provider.StateDestroyed}: {why: "runtime removed"},
}

// States returns every lifecycle state, in the order of the diagram.
func States() []provider.State {
	return []provider.State{
		provider.StateCreating, provider.StatePooled, provider.StateRunning,
		provider.StatePausing, provider.StatePaused, provider.StateResuming,
		provider.StateStopped, provider.StateError, provider.StateDestroying,
		provider.StateDestroyed,
	}
}

func propsOf(s string) stateProps { return lifecycle[provider.State(s)] }

func validState(s string) bool {
	_, ok := lifecycle[provider.State(s)]
	return ok
}

// canTransition reports whether a record may move from one state to another.
func canTransition(from, to provider.State) bool {
	_, ok := transitions[edge{from, to}]
	return ok
}

// listedStates are the states List shows without a state filter.
func listedStates() []string {
	var out []string
	for _, s := range States() {
		if lifecycle[s].Listed {
			out = append(out, string(s))
		}
	}
	return out
}

// recordStateFor is the record state that matches what a runtime reports,
// for a record currently in state cur: the runtime's own state for a
// user's sandbox, while a pool member stays pooled as long as its runtime
// runs. ok is false when no record state matches (a runtime still being
// created, destroyed or broken).
func recordStateFor(cur string, runtime provider.State) (provider.State, bool) {
	if propsOf(cur).Runtime == runtime {
		return provider.State(cur), true
	}
	for _, s := range States() {
		if p := lifecycle[s]; p.Runtime == runtime && p.Listed {
			return s, true
		}
	}
	return "", false
}

// notAllowed is the conflict a sandbox in a state answers to an operation
// that state does not allow, e.g. "sandbox sb-1 is paused; cannot extend".
func notAllowed(sb store.Sandbox, op string) error {
	err := errdefs.New(errdefs.ErrConflict, "sandbox %s is %s; cannot %s", sb.ID, sb.State, op)
	switch provider.State(sb.State) {
	case provider.StateError:
		if sb.LastError != "" {
			err = errdefs.New(errdefs.ErrConflict, "sandbox %s is %s (%s); cannot %s", sb.ID, sb.State, sb.LastError, op)
		}
		return errdefs.WithHint(err, "destroy it and spawn a new one")
	case provider.StateCreating:
		return errdefs.WithHint(err, "retry once the spawn has returned")
	case provider.StatePaused:
		return errdefs.WithHint(err, "resume it first (POST /api/v1/sandboxes/"+sb.ID+"/resume)")
	case provider.StatePausing, provider.StateResuming, provider.StateDestroying:
		return errdefs.WithHint(err, "retry once the current operation has finished")
	}
	return err
}

// change is one transition as its caller asks for it.
type change struct {
	to provider.State
	// reason is kept in the record's history (and LastError).
	reason string
	// event replaces the state's own event ("sandbox.expired" for a
	// destroy by the reaper); data is added to the event's.
	event string
	data  map[string]string
	// ifUnchanged makes the write a compare-and-set
	// (Store.UpdateSandboxIf): it happens only while the stored record is
	// still in the state sb was read in, across processes and replicas
	// too. A warm pool member's claim needs it.
	ifUnchanged bool
}

// transition moves sb to c.to: it checks that the lifecycle allows the
// move (a conflict naming both states if not), persists the record with
// c.reason in its history, updates the live set, counts the transition and
// publishes the new state's event. It returns the record as stored.
//
// The caller holds what the lifecycle says guards the record: the spawn's
// claim for a creating record, the sandbox's ID lock for every other, and
// has read the record under it. The write survives the end of ctx: once a
// runtime changed, its record must say so.
func (m *Manager) transition(ctx context.Context, sb store.Sandbox, c change) (store.Sandbox, error) {
	from := provider.State(sb.State)
	e, ok := transitions[edge{from, c.to}]
	if !ok {
		return sb, errdefs.New(errdefs.ErrConflict, "sandbox %s is %s; it cannot become %s", sb.ID, from, c.to)
	}
	prev := sb
	sb.State = string(c.to)
	sb.LastError = c.reason
	sb.UpdatedAt = m.now()
	write := m.store.UpdateSandbox
	if c.ifUnchanged {
		write = func(ctx context.Context, sb store.Sandbox) error {
			return m.store.UpdateSandboxIf(ctx, sb, string(from))
		}
	}
	if err := write(context.WithoutCancel(ctx), sb); err != nil {
		return prev, fmt.Errorf("record sandbox %s as %s: %w", sb.ID, c.to, err)
	}
	if lifecycle[c.to].Counts && !e.releases {
		m.remember(sb)
	} else {
		m.forget(sb.ID)
	}
	m.cfg.Observer.Transition(string(from), string(c.to))
	typ := lifecycle[c.to].Event
	if c.event != "" {
		typ = c.event
	}
	if typ != "" {
		data := map[string]string{"from": string(from)}
		if c.reason != "" {
			data["reason"] = c.reason
		}
		maps.Copy(data, c.data)
		m.publish(typ, sb.ID, data)
	}
	return sb, nil
}

// checkOp returns nil when a sandbox in its current state may start the
// transition to `to` that operation op begins, or the conflict naming
// the state and the operation.
func checkOp(sb store.Sandbox, op string, to provider.State) error {
	if canTransition(provider.State(sb.State), to) {
		return nil
	}
	return notAllowed(sb, op)
}
