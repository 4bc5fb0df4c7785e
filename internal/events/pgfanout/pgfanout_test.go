package pgfanout

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/store/postgres"
	"github.com/stacyvm/stacyvm/internal/store/postgres/pgtest"
)

func start(t *testing.T, st *postgres.Store, instance, origin string) *events.Bus {
	t.Helper()
	bus := events.NewBus(100, 100)
	f, err := Start(t.Context(), st.Pool(), st.ConnConfig(), bus, instance, origin, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(f.Close)
	return bus
}

func next(t *testing.T, ch <-chan events.Event) events.Event {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
		return events.Event{}
	}
}

// TestReplicasSeeEachOthersEvents: an event published on replica A
// reaches B's subscribers once, in order, with A's time; A's subscribers
// see it once (not echoed back); another deployment on the same database
// sees nothing.
func TestReplicasSeeEachOthersEvents(t *testing.T) {
	dsn := pgtest.DSN(t)
	st, err := postgres.Open(t.Context(), postgres.Config{DSN: dsn, Schema: pgtest.Schema(t, dsn, t.Name())})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, b, other := start(t, st, "inst-1", "a"), start(t, st, "inst-1", "b"), start(t, st, "inst-2", "c")
	subA, stopA := a.Subscribe(0)
	defer stopA()
	subB, stopB := b.Subscribe(0)
	defer stopB()
	subC, stopC := other.Subscribe(0)
	defer stopC()

	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	first := a.Publish(events.Event{Type: events.SandboxCreated, SandboxID: "sb-1", Time: at, Data: map[string]string{"image": "x"}})
	a.Publish(events.Event{Type: events.SandboxRunning, SandboxID: "sb-1"})
	b.Publish(events.Event{Type: events.SandboxDestroyed, SandboxID: "sb-2"})

	got := []events.Event{next(t, subB), next(t, subB), next(t, subB)}
	var fromA []events.Event
	for _, e := range got {
		if e.SandboxID == "sb-1" {
			fromA = append(fromA, e)
		}
	}
	if len(fromA) != 2 || fromA[0].Type != events.SandboxCreated || fromA[1].Type != events.SandboxRunning {
		t.Fatalf("B saw %+v, want A's created then running", got)
	}
	if !fromA[0].Time.Equal(first.Time) || fromA[0].Data["image"] != "x" {
		t.Errorf("B's copy %+v lost A's time or data (%+v)", fromA[0], first)
	}
	// A sees its own two and B's one: three, no echo.
	seen := map[string]int{}
	for range 3 {
		e := next(t, subA)
		seen[e.SandboxID+" "+e.Type]++
	}
	if seen["sb-1 "+events.SandboxCreated] != 1 || seen["sb-2 "+events.SandboxDestroyed] != 1 {
		t.Errorf("A saw %v", seen)
	}
	select {
	case e := <-subA:
		t.Errorf("A saw an extra event (an echo?): %+v", e)
	case e := <-subC:
		t.Errorf("another deployment saw %+v", e)
	case <-time.After(500 * time.Millisecond):
	}

	// An event too large for a notification still arrives, without data.
	a.Publish(events.Event{Type: events.SandboxError, SandboxID: "sb-3", Data: map[string]string{"error": strings.Repeat("x", 10000)}})
	if e := next(t, subB); e.SandboxID != "sb-3" || !strings.Contains(e.Data["truncated"], "too large") {
		t.Errorf("B saw %+v, want sb-3 with its data dropped", e)
	}
}
