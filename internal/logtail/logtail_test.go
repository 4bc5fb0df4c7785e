package logtail

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := range 20000 { // ~190 KiB: several chunks
		fmt.Fprintf(&b, "line %d\n", i)
	}
	path := filepath.Join(dir, "console.log")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		n    int
		want []string
	}{
		{1, []string{"line 19999"}},
		{3, []string{"line 19997", "line 19998", "line 19999"}},
	}
	for _, tc := range cases {
		got, err := TailFile(path, tc.n)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("TailFile(%d) = %v, %v; want %v", tc.n, got, err, tc.want)
		}
	}
	all, err := TailFile(path, 0)
	if err != nil || len(all) != 20000 || all[0] != "line 0" {
		t.Errorf("all lines: %d, %v", len(all), err)
	}
	if got, err := TailFile(filepath.Join(dir, "missing"), 5); err != nil || got == nil || len(got) != 0 {
		t.Errorf("missing file: %#v, %v", got, err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if got, err := TailFile(empty, 5); err != nil || got == nil || len(got) != 0 {
		t.Errorf("empty file: %#v, %v", got, err)
	}
}

func TestTailShapes(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content string
		n             int
		want          []string
	}{
		{"empty", "", 5, []string{}},
		{"fewer than n", "a\nb\n", 5, []string{"a", "b"}},
		{"no final newline", "a\nb", 1, []string{"b"}},
		{"crlf", "a\r\nb\r\n", 2, []string{"a", "b"}},
		{"blank lines kept", "a\n\nb\n", 3, []string{"a", "", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := TailFile(p, tt.n)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("TailFile = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestTailAcrossChunks(t *testing.T) {
	long := strings.Repeat("x", 40<<10) // longer than one read chunk
	tests := []struct {
		name    string
		content string
		n       int
		want    []string
	}{
		{"empty", "", 5, []string{}},
		{"fewer than n", "a\nb\n", 5, []string{"a", "b"}},
		{"last n", "a\nb\nc\nd\n", 2, []string{"c", "d"}},
		{"no final newline", "a\nb", 1, []string{"b"}},
		{"all", "a\nb\nc\n", 0, []string{"a", "b", "c"}},
		{"across chunks", "first\n" + long + "\nlast\n", 2, []string{long, "last"}},
		{"long tail", strings.Repeat("line\n", 20000), 3, []string{"line", "line", "line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(f, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			fh, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			got, err := Tail(fh, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") || len(got) != len(tt.want) {
				t.Errorf("tail = %d lines %.40q, want %d lines %.40q", len(got), got, len(tt.want), tt.want)
			}
		})
	}
}
