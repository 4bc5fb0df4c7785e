package events

import (
	"sync"
	"testing"
	"time"
)

func TestPublishAssignsIncreasingIDsAndKeepsOrder(t *testing.T) {
	b := NewBus(3, 8)
	for i := 0; i < 5; i++ {
		b.Publish(Event{Type: "t"})
	}
	h := b.History()
	if len(h) != 3 {
		t.Fatalf("history len = %d, want 3", len(h))
	}
	for i, want := range []uint64{3, 4, 5} {
		if h[i].ID != want {
			t.Errorf("history[%d].ID = %d, want %d", i, h[i].ID, want)
		}
		if h[i].Time.IsZero() {
			t.Errorf("history[%d] has no time", i)
		}
	}
	if b.LastID() != 5 {
		t.Errorf("LastID = %d", b.LastID())
	}
}

func TestSubscribeResumesAfterID(t *testing.T) {
	b := NewBus(10, 8)
	for i := 0; i < 4; i++ {
		b.Publish(Event{Type: "old"})
	}
	ch, cancel := b.Subscribe(2)
	t.Cleanup(cancel)
	b.Publish(Event{Type: "new"})
	var got []uint64
	for len(got) < 3 {
		select {
		case e := <-ch:
			got = append(got, e.ID)
		case <-time.After(time.Second):
			t.Fatalf("timed out; got %v", got)
		}
	}
	want := []uint64{3, 4, 5}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestSlowSubscriberIsDroppedAndPublisherNeverBlocks(t *testing.T) {
	b := NewBus(100, 2)
	slow, cancelSlow := b.Subscribe(0)
	t.Cleanup(cancelSlow)
	fast, cancelFast := b.Subscribe(0)
	t.Cleanup(cancelFast)

	var wg sync.WaitGroup
	var fastGot int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range fast {
			fastGot++
			if fastGot == 50 {
				return
			}
		}
	}()
	done := make(chan struct{})
	go func() {
		for i := 0; i < 50; i++ {
			b.Publish(Event{Type: "t"})
			time.Sleep(time.Millisecond) // let the fast reader keep up
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publisher blocked on a slow subscriber")
	}
	wg.Wait()
	if fastGot != 50 {
		t.Errorf("fast subscriber got %d events, want 50", fastGot)
	}
	n := 0
	for range slow { // must be closed after its buffer drained
		n++
	}
	if n != 2 {
		t.Errorf("slow subscriber got %d buffered events before close, want 2", n)
	}
}

func TestCancelClosesChannelOnce(t *testing.T) {
	b := NewBus(1, 1)
	ch, cancel := b.Subscribe(0)
	cancel()
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("channel still open after cancel")
	}
	b.Publish(Event{Type: "after"}) // must not panic on a closed channel
}

func TestForwardAndInject(t *testing.T) {
	b := NewBus(10, 10)
	var forwarded []Event
	b.Forward(func(e Event) { forwarded = append(forwarded, e) })
	ch, cancel := b.Subscribe(0)
	defer cancel()
	b.Publish(Event{Type: SandboxCreated, SandboxID: "local"})
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	in := b.Inject(Event{ID: 99, Type: SandboxRunning, SandboxID: "remote", Time: at})
	if in.ID != 2 || !in.Time.Equal(at) {
		t.Errorf("injected event = %+v, want this bus's ID 2 and its own time", in)
	}
	if len(forwarded) != 1 || forwarded[0].SandboxID != "local" {
		t.Errorf("forwarded %+v, want only the published event", forwarded)
	}
	for _, want := range []string{"local", "remote"} {
		if e := <-ch; e.SandboxID != want {
			t.Errorf("subscriber got %+v, want %s", e, want)
		}
	}
	b.Forward(nil)
	b.Publish(Event{Type: SandboxDestroyed})
	if len(forwarded) != 1 {
		t.Error("forwarding went on after Forward(nil)")
	}
}
