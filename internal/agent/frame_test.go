package agent

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestFrameReader(t *testing.T) {
	two := AppendFrame(AppendFrame(nil, FrameStdout, []byte("hello")), FrameExit, []byte(`{}`))
	tests := []struct {
		name  string
		in    []byte
		max   int
		kinds []FrameKind
		err   error
	}{
		{name: "empty stream", in: nil, err: io.EOF},
		{name: "two frames", in: two, kinds: []FrameKind{FrameStdout, FrameExit}, err: io.EOF},
		{name: "empty payload", in: AppendFrame(nil, FrameStderr, nil), kinds: []FrameKind{FrameStderr}, err: io.EOF},
		{name: "unknown kind is returned, not refused", in: AppendFrame(nil, 99, []byte("x")), kinds: []FrameKind{99}, err: io.EOF},
		{name: "cut in the header", in: two[:3], err: io.ErrUnexpectedEOF},
		{name: "cut in the payload", in: two[:7], err: io.ErrUnexpectedEOF},
		{name: "cut after a frame, inside the next header", in: two[:12], kinds: []FrameKind{FrameStdout}, err: io.ErrUnexpectedEOF},
		{name: "over the limit", in: AppendFrame(nil, FrameStdout, make([]byte, 11)), max: 10, err: ErrFrameTooLarge},
		{name: "at the limit", in: AppendFrame(nil, FrameStdout, make([]byte, 10)), max: 10, kinds: []FrameKind{FrameStdout}, err: io.EOF},
		{name: "absurd length", in: []byte{1, 0xff, 0xff, 0xff, 0xff}, err: ErrFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr := NewFrameReader(bytes.NewReader(tc.in), tc.max)
			var kinds []FrameKind
			var err error
			for {
				var f Frame
				if f, err = fr.Next(); err != nil {
					break
				}
				kinds = append(kinds, f.Kind)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("final error %v, want %v", err, tc.err)
			}
			if !equalKinds(kinds, tc.kinds) {
				t.Errorf("kinds %v, want %v", kinds, tc.kinds)
			}
		})
	}
}

func equalKinds(a, b []FrameKind) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFrameWriterSplitsLargeOutput(t *testing.T) {
	rec := httptest.NewRecorder()
	fw := &frameWriter{w: rec, rc: http.NewResponseController(rec)}
	big := bytes.Repeat([]byte("z"), 2*maxOutputChunk+5)
	if n, err := fw.stream(FrameStdout).Write(big); err != nil || n != len(big) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if !rec.Flushed {
		t.Error("output frames were not flushed")
	}
	fr := NewFrameReader(rec.Body, maxOutputChunk)
	var got []byte
	frames := 0
	for {
		f, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames++
		got = append(got, f.Payload...)
	}
	if frames != 3 || !bytes.Equal(got, big) {
		t.Fatalf("%d frames carrying %d bytes", frames, len(got))
	}
	fw.close()
	if _, err := fw.stream(FrameStdout).Write([]byte("late")); err == nil {
		t.Fatal("write after close accepted")
	}
}

// FuzzFrameReader: whatever the bytes, the reader never panics or
// over-allocates, and the frames it returns re-encode to exactly the bytes
// it consumed.
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{})
	f.Add(AppendFrame(nil, FrameStdout, []byte("hello\n")))
	f.Add(AppendFrame(AppendFrame(AppendFrame(nil, FrameStderr, []byte("e")), FrameError, []byte(`{"class":"exec_timeout","message":"m"}`)), FrameExit, []byte(`{"exit_code":-1,"timed_out":true,"duration_ns":5}`)))
	f.Add([]byte{1, 0, 0, 0})
	f.Add([]byte{3, 0xff, 0xff, 0xff, 0xff, 'x'})
	f.Add([]byte{0, 0, 0, 0, 0, 7, 0, 0, 0, 1})
	const max = 1 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data), max)
		var again []byte
		for {
			fm, err := fr.Next()
			if err != nil {
				switch {
				case errors.Is(err, io.EOF):
					if len(again) != len(data) {
						t.Fatalf("clean EOF after %d of %d bytes", len(again), len(data))
					}
				case errors.Is(err, io.ErrUnexpectedEOF):
					if len(again) >= len(data) {
						t.Fatal("unexpected EOF with no partial frame left")
					}
				case errors.Is(err, ErrFrameTooLarge):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				break
			}
			if len(fm.Payload) > max {
				t.Fatalf("payload of %d bytes over the %d limit", len(fm.Payload), max)
			}
			again = AppendFrame(again, fm.Kind, fm.Payload)
			if !bytes.Equal(again, data[:len(again)]) {
				t.Fatal("re-encoded frames differ from the input")
			}
		}
		if cap(fr.buf) > max {
			t.Fatalf("reader allocated %d bytes, limit %d", cap(fr.buf), max)
		}
	})
}
