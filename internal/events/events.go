// Package events is the in-process event bus: the orchestrator publishes
// sandbox lifecycle events, the API streams them as server-sent events.
//
// Every event gets an increasing ID. A bounded history is kept in order so
// that a subscriber can resume after the last ID it saw. Publishing never
// blocks: a subscriber that falls behind is disconnected (its channel is
// closed) and resumes from history when it subscribes again.
package events

import (
	"sync"
	"time"
)

// Event is one thing that happened.
type Event struct {
	ID        uint64            `json:"id"`
	Type      string            `json:"type"`
	SandboxID string            `json:"sandbox_id,omitempty"`
	Time      time.Time         `json:"time"`
	Data      map[string]string `json:"data,omitempty"`
}

// Event types.
const (
	SandboxCreated   = "sandbox.created"
	SandboxRunning   = "sandbox.running"
	SandboxError     = "sandbox.error"
	SandboxDestroyed = "sandbox.destroyed"
	SandboxExpired   = "sandbox.expired"
	SandboxExtended  = "sandbox.extended"
	SandboxAdopted   = "sandbox.adopted"
	SandboxPooled    = "sandbox.pooled"
	SandboxPaused    = "sandbox.paused"
	SandboxStopped   = "sandbox.stopped"
	ExecFinished     = "exec.finished"
	TemplateCreated  = "template.created"
	TemplateUpdated  = "template.updated"
	TemplateDeleted  = "template.deleted"
)

// Bus fans events out to subscribers.
type Bus struct {
	mu      sync.Mutex
	nextID  uint64
	history []Event // ring of at most max events, oldest first
	max     int
	buffer  int
	subs    map[*sub]struct{}
	now     func() time.Time
	forward func(Event)
}

type sub struct {
	ch     chan Event
	closed bool
}

// NewBus keeps the last historySize events and gives each subscriber a
// buffer of bufferSize events before it counts as slow.
func NewBus(historySize, bufferSize int) *Bus {
	if historySize < 1 {
		historySize = 1
	}
	if bufferSize < 1 {
		bufferSize = 1
	}
	return &Bus{max: historySize, buffer: bufferSize, subs: map[*sub]struct{}{}, now: time.Now}
}

// Publish assigns e an ID and time and delivers it, and hands it to the
// forwarder, if any (see Forward). It never blocks.
func (b *Bus) Publish(e Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	e = b.deliver(e)
	if b.forward != nil {
		b.forward(e)
	}
	return e
}

// Inject delivers an event that happened elsewhere (another replica): it
// gets an ID of this bus and keeps its time; it is not forwarded again.
func (b *Bus) Inject(e Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.deliver(e)
}

// Forward makes f receive every event Publish delivers, in order, under
// the bus's lock: f must not block (it queues or drops). It is how events
// reach other replicas; nil stops forwarding.
func (b *Bus) Forward(f func(Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forward = f
}

func (b *Bus) deliver(e Event) Event {
	b.nextID++
	e.ID = b.nextID
	if e.Time.IsZero() {
		e.Time = b.now().UTC()
	}
	if len(b.history) == b.max {
		copy(b.history, b.history[1:])
		b.history = b.history[:len(b.history)-1]
	}
	b.history = append(b.history, e)
	for s := range b.subs {
		select {
		case s.ch <- e:
		default:
			b.drop(s)
		}
	}
	return e
}

func (b *Bus) drop(s *sub) {
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
	delete(b.subs, s)
}

// Subscribe returns a channel that first yields the kept events with an ID
// greater than after (0: none of the history, only new events; use
// History for a full replay), then live events. The channel is closed when
// cancel is called or when the subscriber falls behind.
func (b *Bus) Subscribe(after uint64) (<-chan Event, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var backlog []Event
	if after > 0 {
		for _, e := range b.history {
			if e.ID > after {
				backlog = append(backlog, e)
			}
		}
	}
	s := &sub{ch: make(chan Event, b.buffer+len(backlog))}
	for _, e := range backlog {
		s.ch <- e
	}
	b.subs[s] = struct{}{}
	return s.ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.drop(s)
	}
}

// History returns the kept events, oldest first.
func (b *Bus) History() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Event(nil), b.history...)
}

// LastID is the ID of the newest event, 0 before the first.
func (b *Bus) LastID() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nextID
}
