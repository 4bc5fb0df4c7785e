package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

func TestEveryClassHasAStableCode(t *testing.T) {
	seen := map[string]*errdefs.Class{}
	for _, c := range errdefs.Classes() {
		code := ClassCode(errdefs.New(c, "x"))
		if code == classInternal {
			t.Errorf("class %v has no wire code", c)
			continue
		}
		if other, dup := seen[code]; dup {
			t.Errorf("classes %v and %v share code %q", c, other, code)
		}
		seen[code] = c
		if _, status := errdefs.CodeAndStatus(errdefs.New(c, "x"), classStatus); classStatus[c] == 0 || status != classStatus[c] {
			t.Errorf("class %v has no HTTP status of its own (answers %d)", c, status)
		}
		back := errorFromWire(wireError{Class: code, Message: "m"})
		if errdefs.Classify(back) != c || back.Error() != "m" {
			t.Errorf("code %q comes back as %v (%q)", code, errdefs.Classify(back), back)
		}
	}
	if got := ClassCode(errors.New("plain")); got != classInternal {
		t.Errorf("unclassified error has code %q", got)
	}
	// A wrapped error keeps its class's code.
	wrapped := errdefs.Wrap(errdefs.ErrFileNotFound, io.EOF, "reading")
	if got := ClassCode(wrapped); got != "file_not_found" {
		t.Errorf("wrapped: %q", got)
	}
	// Codes a newer agent might send are not guessed at.
	if back := errorFromWire(wireError{Class: "quota_exceeded", Message: "m"}); errdefs.Classify(back) != nil {
		t.Errorf("unknown code classified as %v", errdefs.Classify(back))
	}
}

func TestModes(t *testing.T) {
	tests := []struct {
		mode fs.FileMode
		text string
	}{
		{0, "0000"},
		{0o644, "0644"},
		{0o777, "0777"},
		{0o755 | fs.ModeSetuid, "4755"},
		{fs.ModeSetgid | 0o775, "2775"},
		{0o777 | fs.ModeSticky, "1777"},
		{fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky | 0o777, "7777"},
	}
	for _, tc := range tests {
		if got := FormatMode(tc.mode); got != tc.text {
			t.Errorf("FormatMode(%v) = %q, want %q", tc.mode, got, tc.text)
		}
		got, err := ParseMode(tc.text)
		if err != nil || got != tc.mode {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", tc.text, got, err, tc.mode)
		}
	}
	// Type bits are not permission bits.
	if got := FormatMode(fs.ModeDir | 0o755); got != "0755" {
		t.Errorf("dir mode formats as %q", got)
	}
	if m, err := ParseMode("644"); err != nil || m != 0o644 {
		t.Errorf("ParseMode without leading zero: %v, %v", m, err)
	}
	for _, bad := range []string{"", "8", "0o", "-1", "+644", "10000", "0x1ff", "64 4", "rwx"} {
		if _, err := ParseMode(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseMode(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestFileInfoWire(t *testing.T) {
	mt := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, mode := range []fs.FileMode{
		0o644,
		fs.ModeDir | 0o755,
		fs.ModeSymlink | 0o777,
		fs.ModeNamedPipe | 0o600,
		fs.ModeSocket | 0o666,
		fs.ModeDevice | 0o660,
		fs.ModeDevice | fs.ModeCharDevice | 0o620,
		fs.ModeIrregular | 0o400,
		fs.ModeSetuid | 0o755,
	} {
		fi := provider.FileInfo{Path: "/p", Size: 42, Mode: mode, IsDir: mode.IsDir(), ModTime: mt}
		b, err := json.Marshal(fileInfoToWire(fi))
		if err != nil {
			t.Fatal(err)
		}
		var w wireFileInfo
		if err := json.Unmarshal(b, &w); err != nil {
			t.Fatal(err)
		}
		back, err := fileInfoFromWire(w)
		if err != nil || back != fi {
			t.Errorf("%v: round trip gave %+v, %v (wire %s)", mode, back, err, b)
		}
	}
	// An unknown type from a newer agent reads as "not a regular file".
	fi, err := fileInfoFromWire(wireFileInfo{Mode: "0644", Type: "whiteout"})
	if err != nil || fi.Mode.Type() != fs.ModeIrregular {
		t.Errorf("unknown type: %v, %v", fi.Mode, err)
	}
	if _, err := fileInfoFromWire(wireFileInfo{Mode: "garbage", Type: "file"}); err == nil {
		t.Error("bad mode accepted")
	}
}

func TestExecTimeoutOnTheWire(t *testing.T) {
	tests := []struct {
		in   time.Duration
		ms   int64
		back time.Duration
	}{
		{0, 0, 0},
		{time.Nanosecond, 1, time.Millisecond}, // never rounds down to "no timeout"
		{1500 * time.Microsecond, 2, 2 * time.Millisecond},
		{time.Minute, 60000, time.Minute},
	}
	for _, tc := range tests {
		w := execRequestToWire(provider.ExecRequest{Argv: []string{"x"}, Timeout: tc.in})
		if w.TimeoutMS != tc.ms {
			t.Errorf("%v → %d ms, want %d", tc.in, w.TimeoutMS, tc.ms)
		}
		b, _ := json.Marshal(w)
		req, err := DecodeExecRequest(bytes.NewReader(b), 0)
		if err != nil || req.Timeout != tc.back {
			t.Errorf("%v decodes as %v, %v; want %v", tc.in, req.Timeout, err, tc.back)
		}
	}
}

func TestDecodeExecRequest(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		want  provider.ExecRequest
		class *errdefs.Class
	}{
		{name: "minimal", body: `{"argv":["true"]}`, want: provider.ExecRequest{Argv: []string{"true"}}},
		{name: "full", body: `{"argv":["sh","-c","x"],"env":{"A":"1"},"workdir":"/w","timeout_ms":1500}`,
			want: provider.ExecRequest{Argv: []string{"sh", "-c", "x"}, Env: map[string]string{"A": "1"}, WorkDir: "/w", Timeout: 1500 * time.Millisecond}},
		{name: "whitespace after the value", body: "{\"argv\":[\"true\"]}\n\t ", want: provider.ExecRequest{Argv: []string{"true"}}},
		{name: "empty body", body: ``, class: errdefs.ErrInvalidArgument},
		{name: "null", body: `null`, class: errdefs.ErrInvalidArgument},
		{name: "array", body: `[]`, class: errdefs.ErrInvalidArgument},
		{name: "no argv", body: `{}`, class: errdefs.ErrInvalidArgument},
		{name: "empty program", body: `{"argv":[""]}`, class: errdefs.ErrInvalidArgument},
		{name: "NUL in argv", body: `{"argv":["a\u0000b"]}`, class: errdefs.ErrInvalidArgument},
		{name: "NUL in env", body: `{"argv":["a"],"env":{"A":"\u0000"}}`, class: errdefs.ErrInvalidArgument},
		{name: "= in env name", body: `{"argv":["a"],"env":{"A=B":"c"}}`, class: errdefs.ErrInvalidArgument},
		{name: "empty env name", body: `{"argv":["a"],"env":{"":"c"}}`, class: errdefs.ErrInvalidArgument},
		{name: "NUL in workdir", body: `{"argv":["a"],"workdir":"/\u0000"}`, class: errdefs.ErrInvalidArgument},
		{name: "negative timeout", body: `{"argv":["a"],"timeout_ms":-5}`, class: errdefs.ErrInvalidArgument},
		{name: "timeout overflows a Duration", body: `{"argv":["a"],"timeout_ms":9223372036854775}`, class: errdefs.ErrInvalidArgument},
		{name: "fractional timeout", body: `{"argv":["a"],"timeout_ms":1.5}`, class: errdefs.ErrInvalidArgument},
		{name: "unknown field", body: `{"argv":["a"],"stdin":"x"}`, class: errdefs.ErrInvalidArgument},
		{name: "wrong type", body: `{"argv":"true"}`, class: errdefs.ErrInvalidArgument},
		{name: "second value", body: `{"argv":["a"]}{"argv":["b"]}`, class: errdefs.ErrInvalidArgument},
		{name: "truncated", body: `{"argv":["a"]`, class: errdefs.ErrInvalidArgument},
		{name: "too large", body: `{"argv":["` + strings.Repeat("a", 2000) + `"]}`, class: errdefs.ErrResourceLimit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeExecRequest(strings.NewReader(tc.body), 1024)
			if tc.class != nil {
				if !errors.Is(err, tc.class) {
					t.Fatalf("err = %v, want %v", err, tc.class)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b1, _ := json.Marshal(got)
			b2, _ := json.Marshal(tc.want)
			if !bytes.Equal(b1, b2) {
				t.Fatalf("got %s, want %s", b1, b2)
			}
		})
	}
}

func FuzzDecodeExecRequest(f *testing.F) {
	for _, seed := range []string{
		`{"argv":["true"]}`,
		`{"argv":["sh","-c","echo hi"],"env":{"A":"1","B":""},"workdir":"/workspace","timeout_ms":1000}`,
		`{"argv":["a\u0000"]}`,
		`{"argv":["x"],"env":{"=":"y"}}`,
		`{"argv":["x"],"timeout_ms":9223372036854775807}`,
		`{"argv":["x"],"timeout_ms":-1}`,
		`{"argv":["x"],"ARGV":["y"]}`,
		`{"argv":["x"]} trailing`,
		`{"argv":null}`,
		`null`,
		``,
		`{`,
		`{"argv":["\ud800"]}`,
	} {
		f.Add([]byte(seed))
	}
	const limit = 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeExecRequest(bytes.NewReader(data), limit)
		if err != nil {
			if c := errdefs.Classify(err); c != errdefs.ErrInvalidArgument && c != errdefs.ErrResourceLimit {
				t.Fatalf("error of class %v: %v", c, err)
			}
			return
		}
		if len(data) > limit {
			t.Fatalf("accepted %d bytes over a %d-byte limit", len(data), limit)
		}
		// What was accepted is runnable...
		if len(req.Argv) == 0 || req.Argv[0] == "" || req.Timeout < 0 {
			t.Fatalf("accepted an unrunnable request %+v", req)
		}
		for _, a := range req.Argv {
			if strings.IndexByte(a, 0) >= 0 {
				t.Fatalf("accepted NUL in argv %q", a)
			}
		}
		for k, v := range req.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("accepted env %q=%q", k, v)
			}
		}
		// ...and is exactly what the client would send for it.
		b, err := json.Marshal(execRequestToWire(req))
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeExecRequest(bytes.NewReader(b), 1<<20)
		if err != nil {
			t.Fatalf("re-encoded request %s rejected: %v", b, err)
		}
		b2, _ := json.Marshal(execRequestToWire(again))
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed the request: %s → %s", b, b2)
		}
	})
}
