// Package logtail reads the last lines of a console log, which providers
// keep per sandbox and serve through Provider.Logs.
package logtail

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
)

const (
	chunk = 32 << 10
	// maxRead bounds memory however long the lines are: a log of one
	// endless line yields its last 8 MiB.
	maxRead = 8 << 20
)

// Tail returns the last n lines of f (all of them when n <= 0, up to the
// read bound), reading backwards in chunks so that a long log costs only
// what is returned. An empty file gives an empty, non-nil slice.
func Tail(f *os.File, n int) ([]string, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	end := fi.Size()
	var buf []byte
	for end > 0 && len(buf) < maxRead {
		if n > 0 && bytes.Count(bytes.TrimSuffix(buf, []byte{'\n'}), []byte{'\n'}) >= n {
			break
		}
		start := max(end-chunk, 0)
		part := make([]byte, end-start)
		if _, err := f.ReadAt(part, start); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		buf = append(part, buf...)
		end = start
	}
	text := strings.TrimSuffix(string(buf), "\n")
	if text == "" {
		return []string{}, nil
	}
	lines := strings.Split(text, "\n")
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r") // serial consoles end lines with CRLF
	}
	return lines, nil
}

// TailFile is Tail of the file at path; a missing file is an empty log.
func TailFile(path string, n int) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Tail(f, n)
}
