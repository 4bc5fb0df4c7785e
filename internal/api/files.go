package api

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/httpbody"
	"github.com/stacyvm/stacyvm/internal/provider"
)

type writeFileBody struct {
	Path    string   `json:"path"`
	Content *string  `json:"content"`
	Mode    fileMode `json:"mode"`
	// Extension: "base64" for binary content; "" or "utf-8" for text.
	Encoding string `json:"encoding"`
}

func (s *server) writeFile(w http.ResponseWriter, r *http.Request) {
	// The body is held whole, once as read and once as the content
	// string; a body of unknown length may be as large as the limit.
	hold := r.ContentLength
	if hold < 0 || hold > s.opts.MaxFileBytes {
		hold = s.opts.MaxFileBytes
	}
	hold *= 2
	if err := s.opts.MemoryBudget.Acquire(r.Context(), hold); err != nil {
		s.writeError(w, r, err)
		return
	}
	defer s.opts.MemoryBudget.Release(hold)
	var b writeFileBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if b.Content == nil {
		s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "content is required (send \"\" for an empty file)"))
		return
	}
	var content io.Reader
	switch strings.ToLower(b.Encoding) {
	case "", "utf-8", "utf8", "text":
		content = strings.NewReader(*b.Content)
	case "base64":
		// Checked in full first, so that bad input never leaves half a
		// file behind; decoding again as the provider reads keeps one copy
		// of the file in memory (the JSON string), not two.
		if _, err := io.Copy(io.Discard, base64.NewDecoder(base64.StdEncoding, strings.NewReader(*b.Content))); err != nil {
			s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "content is not valid base64: %v", err))
			return
		}
		content = base64.NewDecoder(base64.StdEncoding, strings.NewReader(*b.Content))
	default:
		s.writeError(w, r, errdefs.New(errdefs.ErrInvalidArgument, "encoding must be \"utf-8\" or \"base64\", not %q", b.Encoding))
		return
	}
	src := &watchedReader{r: content}
	if err := s.m.WriteFile(r.Context(), r.PathValue("id"), b.Path, src, b.Mode.mode); err != nil {
		s.writeError(w, r, src.cause(err))
		return
	}
	writeJSON(w, http.StatusOK, statusJSON{Status: "written"})
}

// watchedReader remembers the error its source failed with, so that a
// request body over its limit, or bad base64, is reported as such even
// when the provider does not wrap the read error it got.
type watchedReader struct {
	r   io.Reader
	n   int64
	err error
}

func (w *watchedReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		w.err = err
	}
	return n, err
}

func (w *watchedReader) cause(err error) error {
	if w.err == nil {
		return err
	}
	if mbe, ok := errors.AsType[*http.MaxBytesError](w.err); ok {
		return mbe
	}
	return err
}

// uploadFile streams a raw request body into a file, so that large and
// binary files never pass through JSON.
func (s *server) uploadFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var mode fileMode
	if v := q.Get("mode"); v != "" {
		m, err := provider.ParseMode(v)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		mode.mode = m
	}
	clearDeadlines(w, true, true)
	src := &watchedReader{r: r.Body}
	if err := s.m.WriteFile(r.Context(), r.PathValue("id"), q.Get("path"), src, mode.mode); err != nil {
		s.writeError(w, r, src.cause(err))
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
		Size   int64  `json:"size"` // extension: bytes written
	}{"written", src.n})
}

func (s *server) readFile(w http.ResponseWriter, r *http.Request) {
	rc, err := s.m.ReadFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	clearDeadlines(w, false, true)
	// Read ahead before the 200 goes out, so that a file that fails on its
	// first read still gets a proper error body.
	br := bufio.NewReaderSize(rc, 32<<10)
	if _, err := br.Peek(1); err != nil && err != io.EOF {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	httpbody.Send(w, br, func(err error) {
		if r.Context().Err() == nil {
			s.log.Warn("file read failed mid-stream", "request_id", requestID(r.Context()), "err", err)
		}
	})
}

func (s *server) deleteFile(w http.ResponseWriter, r *http.Request) {
	recursive, err := queryBool(r, "recursive")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.m.DeleteFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"), recursive); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statusJSON{Status: "deleted"})
}

func (s *server) listFiles(w http.ResponseWriter, r *http.Request) {
	list, err := s.m.ListFiles(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]fileInfoJSON, 0, len(list))
	for _, fi := range list {
		out = append(out, fileInfoOut(fi))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) statFile(w http.ResponseWriter, r *http.Request) {
	fi, err := s.m.StatFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, fileInfoOut(fi))
}

func (s *server) globFiles(w http.ResponseWriter, r *http.Request) {
	paths, err := s.m.Glob(r.Context(), r.PathValue("id"), r.URL.Query().Get("pattern"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if paths == nil {
		paths = []string{}
	}
	writeJSON(w, http.StatusOK, paths)
}

type moveBody struct {
	OldPath string `json:"old_path"`
	NewPath string `json:"new_path"`
}

func (s *server) moveFile(w http.ResponseWriter, r *http.Request) {
	var b moveBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.m.MoveFile(r.Context(), r.PathValue("id"), b.OldPath, b.NewPath); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statusJSON{Status: "moved"})
}

type chmodBody struct {
	Path string   `json:"path"`
	Mode fileMode `json:"mode"`
}

func (s *server) chmodFile(w http.ResponseWriter, r *http.Request) {
	var b chmodBody
	if err := decodeJSON(r.Body, &b, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !b.Mode.set {
		s.writeError(w, r, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "mode is required"),
			`send the mode as an octal string such as "0755"`))
		return
	}
	if err := s.m.Chmod(r.Context(), r.PathValue("id"), b.Path, b.Mode.mode); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, statusJSON{Status: "chmod applied"})
}
