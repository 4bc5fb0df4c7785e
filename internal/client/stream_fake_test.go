package client

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Stream endings the real server produces only when it breaks (a crash
// mid-command, a newer frame kind) are fed to the client by a fake.
func TestExecStreamEndings(t *testing.T) {
	tests := []struct {
		name     string
		lines    string
		wantOut  string
		wantExit ExitStatus
		check    func(t *testing.T, err error)
	}{
		{
			name:     "exit frame ends the stream; unknown frames are skipped",
			lines:    `{"stream":"stdout","data":"a"}` + "\n" + `{"type":"progress","pct":50}` + "\n" + `{"stream":"stdout","data":"b"}` + "\n" + `{"type":"exit","exit_code":3,"duration":"1.5s"}` + "\n",
			wantOut:  "ab",
			wantExit: ExitStatus{ExitCode: 3, Duration: 1500 * time.Millisecond},
		},
		{
			name:    "a stream cut off before its exit frame is an error",
			lines:   `{"stream":"stdout","data":"partial"}` + "\n",
			wantOut: "partial",
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrIncompleteStream) {
					t.Errorf("err = %v, want ErrIncompleteStream", err)
				}
			},
		},
		{
			name:    "an error frame becomes a classified *Error",
			lines:   `{"stream":"stderr","data":"x"}` + "\n" + `{"type":"error","code":"UNAVAILABLE","message":"docker died","request_id":"r7"}` + "\n",
			wantOut: "x",
			check: func(t *testing.T, err error) {
				e, ok := errors.AsType[*Error](err)
				if !ok || e.RequestID != "r7" || e.Message != "docker died" || !errors.Is(err, errdefs.ErrProviderUnavailable) {
					t.Errorf("err = %#v", err)
				}
			},
		},
		{
			name:  "an exit frame without exit_code is malformed",
			lines: `{"type":"exit"}` + "\n",
			check: func(t *testing.T, err error) {
				if err == nil {
					t.Error("err = nil")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
				var b execBody
				if err := json.NewDecoder(r.Body).Decode(&b); err != nil || !b.Stream {
					t.Errorf("body %+v, err %v: want stream:true", b, err)
				}
				w.Header().Set("Content-Type", "application/x-ndjson")
				_, _ = w.Write([]byte(tt.lines))
			})
			var out strings.Builder
			st, err := c.ExecStreamTo(t.Context(), "sb-1", ExecRequest{Command: "x"}, &out, &out)
			if out.String() != tt.wantOut {
				t.Errorf("output = %q, want %q", out.String(), tt.wantOut)
			}
			if tt.check != nil {
				tt.check(t, err)
				return
			}
			if err != nil || st != tt.wantExit {
				t.Errorf("got %+v, %v; want %+v", st, err, tt.wantExit)
			}
		})
	}
}

func TestExecStreamCallbackErrorStops(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"stream":"stdout","data":"1"}` + "\n" + `{"stream":"stdout","data":"2"}` + "\n" + `{"type":"exit","exit_code":0}` + "\n"))
	})
	stop := errors.New("enough")
	n := 0
	_, err := c.ExecStream(t.Context(), "sb-1", ExecRequest{Command: "x"}, func(Chunk) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("err = %v after %d chunks, want the callback's error after 1", err, n)
	}
}

func TestModes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want fs.FileMode
		out  string
	}{
		{"0644", 0o644, "0644"},
		{"755", 0o755, "0755"},
		{"0", 0, "0000"},
		{"4755", 0o755 | fs.ModeSetuid, "4755"},
		{"1777", 0o777 | fs.ModeSticky, "1777"},
	} {
		got, err := ParseMode(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if s := FormatMode(got); s != tt.out {
			t.Errorf("FormatMode(%v) = %q, want %q", got, s, tt.out)
		}
	}
	for _, bad := range []string{"", "rw-r--r--", "0888", "17777", "-1"} {
		if _, err := ParseMode(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ParseMode(%q) = %v, want invalid argument", bad, err)
		}
	}
}

func TestFileInfoWireForm(t *testing.T) {
	var list []FileInfo
	in := `[{"path":"/d","size":4096,"mode":"0755","is_dir":true,"mod_time":"2026-01-02T03:04:05Z"},
	        {"path":"/l","size":1,"mode":"0777","is_dir":false,"mod_time":"","is_symlink":true}]`
	if err := json.Unmarshal([]byte(in), &list); err != nil {
		t.Fatal(err)
	}
	want := []FileInfo{
		{Path: "/d", Size: 4096, Mode: fs.ModeDir | 0o755, IsDir: true, ModTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Path: "/l", Size: 1, Mode: fs.ModeSymlink | 0o777},
	}
	for i := range want {
		if !list[i].ModTime.Equal(want[i].ModTime) || list[i].Path != want[i].Path || list[i].Mode != want[i].Mode ||
			list[i].IsDir != want[i].IsDir || list[i].Size != want[i].Size {
			t.Errorf("[%d] = %+v, want %+v", i, list[i], want[i])
		}
	}
	b, err := json.Marshal(list[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"mode":"0755"`) || !strings.Contains(string(b), `"is_dir":true`) {
		t.Errorf("marshalled %s: want the wire form", b)
	}
}
