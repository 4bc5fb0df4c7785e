// Package backend is the reference backend of the custom provider
// protocol (docs/custom-provider-protocol.md): an http.Handler that serves
// any provider.Provider to StacyVM's custom provider over HTTP. `stacyvm
// serve-backend --provider proot` runs it, so that a StacyVM server on one
// machine can drive sandboxes on another; it is also the executable
// specification that a backend written in another language can be
// checked against.
package backend

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/httpbody"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/custom/wire"
)

// MaxRequestJSON bounds every JSON request body.
const MaxRequestJSON = 1 << 20

type handler struct {
	p   provider.Provider
	key [32]byte // SHA-256 of the API key
	// open: no API key configured, every request is served.
	open bool
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewHandler returns the protocol handler serving p. When apiKey is not
// empty every request except GET /v1/health must carry it, as
// "Authorization: Bearer <key>" or "X-API-Key: <key>"; it is compared in
// constant time. With an empty key the handler serves anyone who can reach
// it: listen on loopback or a private network only. Failures are logged
// with slog's default logger.
func NewHandler(p provider.Provider, apiKey string) http.Handler {
	h := &handler{p: p, key: sha256.Sum256([]byte(apiKey)), open: apiKey == "", log: slog.Default().With("component", "custom-backend")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathHealth, h.health)
	mux.HandleFunc("GET "+wire.PathCapabilities, h.capabilities)
	mux.HandleFunc("GET "+wire.PathSnapshots, h.snapshots)
	mux.HandleFunc("POST "+wire.PathSandboxes, h.spawn)
	mux.HandleFunc("GET "+wire.PathSandboxes, h.list)
	mux.HandleFunc("GET "+wire.PathSandbox, h.status)
	mux.HandleFunc("DELETE "+wire.PathSandbox, h.destroy)
	mux.HandleFunc("POST "+wire.PathPause, h.pause)
	mux.HandleFunc("POST "+wire.PathResume, h.resume)
	mux.HandleFunc("GET "+wire.PathLogs, h.logs)
	mux.HandleFunc("POST "+wire.PathExec, h.exec)
	mux.HandleFunc("POST "+wire.PathExecStdin, h.exec)
	mux.HandleFunc("PUT "+wire.PathFiles, h.writeFile)
	mux.HandleFunc("GET "+wire.PathFiles, h.readFile)
	mux.HandleFunc("DELETE "+wire.PathFiles, h.deleteFile)
	mux.HandleFunc("GET "+wire.PathFilesList, h.listFiles)
	mux.HandleFunc("GET "+wire.PathFilesStat, h.statFile)
	mux.HandleFunc("POST "+wire.PathFilesMove, h.moveFile)
	mux.HandleFunc("POST "+wire.PathFilesChmod, h.chmod)
	mux.HandleFunc("GET "+wire.PathFilesGlob, h.glob)
	h.mux = mux
	return h
}

// NewServer returns an http.Server for h with the timeouts a backend
// needs: bounded request headers and idle connections, and no read or
// write timeout, since command output and file transfers stream for as
// long as they take.
func NewServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !(r.Method == http.MethodGet && r.URL.Path == wire.PathHealth) && !h.authorized(r) {
		h.fail(w, r, errdefs.New(errdefs.ErrUnauthorized, "missing or wrong API key"))
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		h.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "this backend has no route %s %s", r.Method, r.URL.Path))
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *handler) authorized(r *http.Request) bool {
	if h.open {
		return true
	}
	got := r.Header.Get("X-API-Key")
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = bearer
	}
	if got == "" {
		return false
	}
	// Hashing first makes the comparison constant-time in the key's
	// length too.
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], h.key[:]) == 1
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, status := wire.Classify(err)
	level := slog.LevelDebug
	if code == wire.CodeInternal {
		level = slog.LevelWarn
	}
	h.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
	body, _ := json.Marshal(wire.ToError(err))
	w.Header().Set("Content-Type", wire.ContentJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (h *handler) reply(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", wire.ContentJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func done(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// decode reads exactly one JSON value of at most MaxRequestJSON bytes, with
// no unknown fields: a backend that silently dropped a field it does not
// know would do something other than what was asked.
func decode(r *http.Request, v any) error {
	return decodeJSON(r.Body, v)
}

func decodeJSON(body io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(body, MaxRequestJSON+1))
	if err != nil {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "reading the request body")
	}
	if len(data) > MaxRequestJSON {
		return errdefs.New(errdefs.ErrResourceLimit, "request body exceeds %d bytes", MaxRequestJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "malformed JSON body")
	}
	if dec.More() {
		return errdefs.New(errdefs.ErrInvalidArgument, "malformed JSON body: data after the JSON value")
	}
	return nil
}

func (h *handler) health(w http.ResponseWriter, r *http.Request) {
	if err := h.p.Health(r.Context()); err != nil {
		h.fail(w, r, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "provider %s", h.p.Name()))
		return
	}
	h.reply(w, http.StatusOK, wire.Health{Status: "ok", Name: h.p.Name(), Protocol: wire.Version})
}

func (h *handler) capabilities(w http.ResponseWriter, r *http.Request) {
	c := h.p.Capabilities()
	if _, ok := h.p.(provider.Inventory); !ok {
		c.Adoption = false
	}
	if _, ok := h.p.(provider.SnapshotLister); !ok {
		c.Snapshots = false
	}
	if _, ok := h.p.(provider.Pauser); !ok {
		c.Pause = false
	}
	h.reply(w, http.StatusOK, wire.CapabilitiesToWire(c))
}

func (h *handler) snapshots(w http.ResponseWriter, r *http.Request) {
	sl, ok := h.p.(provider.SnapshotLister)
	if !ok {
		h.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "provider %s keeps no snapshots", h.p.Name()))
		return
	}
	snaps, err := sl.Snapshots(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]wire.Snapshot, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, wire.Snapshot{Image: s.Image, Provider: s.Provider, Created: s.Created})
	}
	h.reply(w, http.StatusOK, out)
}

func (h *handler) spawn(w http.ResponseWriter, r *http.Request) {
	var spec wire.Spec
	if err := decode(r, &spec); err != nil {
		h.fail(w, r, err)
		return
	}
	if spec.ID == "" || spec.Image == "" {
		h.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "id and image are required"))
		return
	}
	info, err := h.p.Spawn(r.Context(), wire.SpecFromWire(spec))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.reply(w, http.StatusCreated, wire.InfoToWire(info))
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	inv, ok := h.p.(provider.Inventory)
	if !ok {
		h.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "provider %s cannot list its sandboxes", h.p.Name()))
		return
	}
	infos, err := inv.List(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]wire.Info, 0, len(infos))
	for _, i := range infos {
		out = append(out, wire.InfoToWire(i))
	}
	h.reply(w, http.StatusOK, out)
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	info, err := h.p.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.reply(w, http.StatusOK, wire.InfoToWire(info))
}

func (h *handler) destroy(w http.ResponseWriter, r *http.Request) {
	if err := h.p.Destroy(r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	done(w)
}

func (h *handler) pause(w http.ResponseWriter, r *http.Request) {
	h.freeze(w, r, provider.Pauser.Pause)
}

func (h *handler) resume(w http.ResponseWriter, r *http.Request) {
	h.freeze(w, r, provider.Pauser.Resume)
}

func (h *handler) freeze(w http.ResponseWriter, r *http.Request, op func(provider.Pauser, context.Context, string) error) {
	pz, ok := h.p.(provider.Pauser)
	if !ok || !h.p.Capabilities().Pause {
		h.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "provider %s cannot pause sandboxes", h.p.Name()))
		return
	}
	if err := op(pz, r.Context(), r.PathValue("id")); err != nil {
		h.fail(w, r, err)
		return
	}
	done(w)
}

func (h *handler) logs(w http.ResponseWriter, r *http.Request) {
	n := 100
	if s := r.URL.Query().Get("lines"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			h.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "lines=%q is not a number", s))
			return
		}
		n = v
	}
	lines, err := h.p.Logs(r.Context(), r.PathValue("id"), n)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if lines == nil {
		lines = []string{}
	}
	h.reply(w, http.StatusOK, lines)
}

// exec streams the command's output as NDJSON, flushed line by line. The
// command runs under the request's context: when the client goes away
// (which is how it cancels), the provider kills it. Failures known before
// the command starts are HTTP errors; later ones are an error line before
// the exit line.
func (h *handler) exec(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var wr wire.ExecRequest
	// With stdin the request is in the spec parameter and the body is the
	// command's input, read while the output streams back.
	withStdin := strings.HasSuffix(r.URL.Path, "/exec/stdin")
	var err error
	if withStdin {
		err = decodeJSON(strings.NewReader(r.URL.Query().Get("spec")), &wr)
	} else {
		err = decode(r, &wr)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	req, err := wire.ExecFromWire(wr)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if withStdin {
		if !h.p.Capabilities().Stdin {
			h.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "provider %s cannot give commands a standard input", h.p.Name()))
			return
		}
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			h.fail(w, r, fmt.Errorf("exec with stdin: %w", err))
			return
		}
		req.Stdin = r.Body
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		h.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "argv must name a program"))
		return
	}
	// Answer an unknown or destroyed sandbox with its status code, before
	// the stream commits to 200.
	if _, err := h.p.Status(r.Context(), id); err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", wire.ContentNDJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	lw := &lineWriter{w: w, rc: http.NewResponseController(w)}
	_ = lw.rc.Flush()
	st, err := h.p.Exec(r.Context(), id, req, lw.stream("stdout"), lw.stream("stderr"))
	if err != nil {
		code, _ := wire.Classify(err)
		h.log.Debug("exec failed", "id", id, "code", code, "err", err)
		e := wire.ToError(err)
		lw.write(wire.Line{Type: "error", Code: e.Code, Message: e.Message, Hint: e.Hint})
	}
	lw.write(wire.Line{Type: "exit", ExitCode: st.ExitCode, TimedOut: st.TimedOut, DurationNS: int64(st.Duration)})
	lw.close()
}

// lineWriter encodes output as stream lines, one writer at a time.
type lineWriter struct {
	mu     sync.Mutex
	w      io.Writer
	rc     *http.ResponseController
	err    error
	closed bool
}

func (lw *lineWriter) write(l wire.Line) error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return errors.New("backend: output after the command ended")
	}
	if lw.err != nil {
		return lw.err
	}
	b, err := json.Marshal(l)
	if err != nil {
		lw.err = err
		return err
	}
	if _, err := lw.w.Write(append(b, '\n')); err != nil {
		lw.err = err
		return err
	}
	if err := lw.rc.Flush(); err != nil {
		lw.err = err
		return err
	}
	return nil
}

func (lw *lineWriter) close() {
	lw.mu.Lock()
	lw.closed = true
	lw.mu.Unlock()
}

func (lw *lineWriter) stream(name string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		n := len(p)
		for len(p) > 0 {
			chunk := p[:min(len(p), wire.MaxChunk)]
			p = p[len(chunk):]
			l := wire.Line{Stream: name}
			if utf8.Valid(chunk) {
				l.Data = string(chunk)
			} else {
				l.DataB64 = chunk
			}
			if err := lw.write(l); err != nil {
				return 0, err
			}
		}
		return n, nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (h *handler) writeFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mode := fs.FileMode(0o644)
	if q.Has("mode") {
		m, err := provider.ParseMode(q.Get("mode"))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		mode = m
	}
	// The body goes to the provider as it arrives: no size cap and no
	// buffering here; the provider's storage is the limit.
	if err := h.p.WriteFile(r.Context(), r.PathValue("id"), q.Get("path"), r.Body, mode); err != nil {
		h.fail(w, r, err)
		return
	}
	done(w)
}

func (h *handler) readFile(w http.ResponseWriter, r *http.Request) {
	rc, err := h.p.ReadFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", wire.ContentOctets)
	httpbody.Send(w, rc, func(err error) { h.log.Warn("reading a file failed mid-stream", "err", err) })
}

func (h *handler) deleteFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	recursive := false
	if q.Has("recursive") {
		b, err := strconv.ParseBool(q.Get("recursive"))
		if err != nil {
			h.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "recursive=%q is not a boolean", q.Get("recursive")))
			return
		}
		recursive = b
	}
	if err := h.p.DeleteFile(r.Context(), r.PathValue("id"), q.Get("path"), recursive); err != nil {
		h.fail(w, r, err)
		return
	}
	done(w)
}

func (h *handler) listFiles(w http.ResponseWriter, r *http.Request) {
	infos, err := h.p.ListFiles(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]wire.FileInfo, 0, len(infos))
	for _, fi := range infos {
		out = append(out, wire.FileInfoToWire(fi))
	}
	h.reply(w, http.StatusOK, out)
}

func (h *handler) statFile(w http.ResponseWriter, r *http.Request) {
	fi, err := h.p.StatFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.reply(w, http.StatusOK, wire.FileInfoToWire(fi))
}

func (h *handler) moveFile(w http.ResponseWriter, r *http.Request) {
	var m wire.Move
	if err := decode(r, &m); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.p.MoveFile(r.Context(), r.PathValue("id"), m.OldPath, m.NewPath); err != nil {
		h.fail(w, r, err)
		return
	}
	done(w)
}

func (h *handler) chmod(w http.ResponseWriter, r *http.Request) {
	var c wire.Chmod
	if err := decode(r, &c); err != nil {
		h.fail(w, r, err)
		return
	}
	mode, err := provider.ParseMode(c.Mode)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.p.Chmod(r.Context(), r.PathValue("id"), c.Path, mode); err != nil {
		h.fail(w, r, err)
		return
	}
	done(w)
}

func (h *handler) glob(w http.ResponseWriter, r *http.Request) {
	matches, err := h.p.Glob(r.Context(), r.PathValue("id"), r.URL.Query().Get("pattern"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if matches == nil {
		matches = []string{}
	}
	h.reply(w, http.StatusOK, matches)
}

// Serve serves h on srv until ctx ends, then shuts down, giving requests in
// flight grace to finish before their connections close (which cancels
// the commands they run).
func Serve(ctx context.Context, srv *http.Server, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
