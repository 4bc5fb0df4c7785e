package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// FileInfo describes one file in a sandbox.
type FileInfo struct {
	Path    string
	Size    int64
	Mode    fs.FileMode // permission bits, plus fs.ModeDir or fs.ModeSymlink
	IsDir   bool
	ModTime time.Time
}

type fileInfoBody struct {
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	Mode      string    `json:"mode"`
	IsDir     bool      `json:"is_dir"`
	ModTime   time.Time `json:"mod_time"`
	IsSymlink bool      `json:"is_symlink,omitempty"`
}

// UnmarshalJSON reads the wire form, whose mode is an octal string.
func (fi *FileInfo) UnmarshalJSON(b []byte) error {
	var w struct {
		fileInfoBody
		ModTime optTime `json:"mod_time"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	var mode fs.FileMode
	if w.Mode != "" {
		m, err := ParseMode(w.Mode)
		if err != nil {
			return fmt.Errorf("file %q: %w", w.Path, err)
		}
		mode = m
	}
	switch {
	case w.IsDir:
		mode |= fs.ModeDir
	case w.IsSymlink:
		mode |= fs.ModeSymlink
	}
	*fi = FileInfo{Path: w.Path, Size: w.Size, Mode: mode, IsDir: w.IsDir, ModTime: time.Time(w.ModTime)}
	return nil
}

// MarshalJSON writes the wire form, so that a FileInfo printed as JSON
// reads like the API's.
func (fi FileInfo) MarshalJSON() ([]byte, error) {
	return json.Marshal(fileInfoBody{Path: fi.Path, Size: fi.Size, Mode: FormatMode(fi.Mode),
		IsDir: fi.IsDir, ModTime: fi.ModTime, IsSymlink: fi.Mode&fs.ModeSymlink != 0})
}

// ParseMode parses an octal mode such as "0644" or "4755"; FormatMode
// renders one the API's way.
var (
	ParseMode  = provider.ParseMode
	FormatMode = provider.FormatMode
)

func pathQuery(path string) (url.Values, error) {
	if path == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "path is required")
	}
	return url.Values{"path": {path}}, nil
}

// WriteFile streams r into the file at path, creating parent directories.
// mode 0 takes the server's default (0644). Nothing is buffered: the body
// is sent chunked as r produces it, so a file of any size can be written.
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error {
	if err := checkID("sandbox ID", id); err != nil {
		return err
	}
	q, err := pathQuery(path)
	if err != nil {
		return err
	}
	if mode != 0 {
		q.Set("mode", FormatMode(mode))
	}
	// net/http closes a request body that is an io.Closer, but r belongs
	// to the caller (os.Stdin, a file it still uses): hide its Close.
	return c.do(ctx, sandboxCall(http.MethodPut, id, "/files/raw", call{query: q,
		body: io.NopCloser(r)}), nil)
}

// ReadFile opens the file at path for streaming; the caller closes it.
// A transfer that fails part way fails the read (the server aborts the
// connection) rather than looking like a shorter file.
func (c *Client) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return nil, err
	}
	q, err := pathQuery(path)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, sandboxCall(http.MethodGet, id, "/files", call{query: q}))
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ListFiles lists the directory at path ("" means "/").
func (c *Client) ListFiles(ctx context.Context, id, path string) ([]FileInfo, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return nil, err
	}
	if path == "" {
		path = "/"
	}
	var out []FileInfo
	err := c.do(ctx, sandboxCall(http.MethodGet, id, "/files/list", call{query: url.Values{"path": {path}}}), &out)
	return out, err
}

// StatFile describes the file at path.
func (c *Client) StatFile(ctx context.Context, id, path string) (FileInfo, error) {
	var fi FileInfo
	if err := checkID("sandbox ID", id); err != nil {
		return fi, err
	}
	q, err := pathQuery(path)
	if err != nil {
		return fi, err
	}
	err = c.do(ctx, sandboxCall(http.MethodGet, id, "/files/stat", call{query: q}), &fi)
	return fi, err
}

// DeleteFile removes the file at path; a non-empty directory needs
// recursive.
func (c *Client) DeleteFile(ctx context.Context, id, path string, recursive bool) error {
	if err := checkID("sandbox ID", id); err != nil {
		return err
	}
	q, err := pathQuery(path)
	if err != nil {
		return err
	}
	if recursive {
		q.Set("recursive", "true")
	}
	return c.do(ctx, sandboxCall(http.MethodDelete, id, "/files", call{query: q}), nil)
}

// MoveFile renames oldPath to newPath.
func (c *Client) MoveFile(ctx context.Context, id, oldPath, newPath string) error {
	if err := checkID("sandbox ID", id); err != nil {
		return err
	}
	if oldPath == "" || newPath == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "both paths are required")
	}
	body := struct {
		OldPath string `json:"old_path"`
		NewPath string `json:"new_path"`
	}{oldPath, newPath}
	return c.do(ctx, sandboxCall(http.MethodPost, id, "/files/move", call{body: body}), nil)
}

// Chmod sets the permission bits of the file at path.
func (c *Client) Chmod(ctx context.Context, id, path string, mode fs.FileMode) error {
	if err := checkID("sandbox ID", id); err != nil {
		return err
	}
	if path == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "path is required")
	}
	body := struct {
		Path string `json:"path"`
		Mode string `json:"mode"`
	}{path, FormatMode(mode)}
	return c.do(ctx, sandboxCall(http.MethodPost, id, "/files/chmod", call{body: body}), nil)
}

// Glob returns the sandbox paths matching pattern.
func (c *Client) Glob(ctx context.Context, id, pattern string) ([]string, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return nil, err
	}
	if pattern == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "pattern is required")
	}
	var out []string
	err := c.do(ctx, sandboxCall(http.MethodGet, id, "/files/glob", call{query: url.Values{"pattern": {pattern}}}), &out)
	return out, err
}
