package fence

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestReadPassesThroughUntilFenced(t *testing.T) {
	f := NewReader(strings.NewReader("hello world"))
	buf := make([]byte, 5)
	if n, err := f.Read(buf); n != 5 || err != nil || string(buf) != "hello" {
		t.Fatalf("Read = %d, %v, %q", n, err, buf[:n])
	}
	f.Fence()
	if n, err := f.Read(buf); n != 0 || !errors.Is(err, ErrFenced) {
		t.Errorf("Read after Fence = %d, %v; want 0, ErrFenced", n, err)
	}
	if f.Err() != nil {
		t.Errorf("Err = %v; fencing is not the source's failure", f.Err())
	}
}

func TestErrRemembersTheFirstSourceError(t *testing.T) {
	first := errors.New("disk gone")
	f := NewReader(io.MultiReader(strings.NewReader("ab"), iotest.ErrReader(first)))
	if _, err := io.ReadAll(f); !errors.Is(err, first) {
		t.Fatalf("ReadAll error = %v", err)
	}
	f.r = iotest.ErrReader(errors.New("later"))
	_, _ = f.Read(make([]byte, 1))
	if !errors.Is(f.Err(), first) {
		t.Errorf("Err = %v, want the first error", f.Err())
	}
}

func TestEOFIsNotAnError(t *testing.T) {
	f := NewReader(strings.NewReader("x"))
	if b, err := io.ReadAll(f); err != nil || string(b) != "x" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
	if f.Err() != nil {
		t.Errorf("Err after a clean EOF = %v", f.Err())
	}
}

// TestFenceWaitsForAReadInFlight: once Fence returns the source is never
// touched again, even when a read was running when Fence was called.
func TestFenceWaitsForAReadInFlight(t *testing.T) {
	src := &blockingReader{started: make(chan struct{}), release: make(chan struct{})}
	f := NewReader(src)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = f.Read(make([]byte, 1))
	}()
	<-src.started
	fenced := make(chan struct{})
	go func() {
		f.Fence()
		close(fenced)
	}()
	select {
	case <-fenced:
		t.Fatal("Fence returned while a read of the source was in flight")
	case <-done:
		t.Fatal("read returned before the source did")
	case <-time.After(50 * time.Millisecond):
		// Fence is still waiting, as it must.
	}
	close(src.release)
	<-done
	<-fenced
	if _, err := f.Read(make([]byte, 1)); !errors.Is(err, ErrFenced) {
		t.Errorf("Read after Fence = %v", err)
	}
	if src.reads != 1 {
		t.Errorf("source read %d times, want 1", src.reads)
	}
}

type blockingReader struct {
	started, release chan struct{}
	reads            int
}

func (b *blockingReader) Read(p []byte) (int, error) {
	b.reads++
	close(b.started)
	<-b.release
	return 0, io.EOF
}
