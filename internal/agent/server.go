package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/httpbody"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// ServerOptions configures NewServer. The zero value is usable.
type ServerOptions struct {
	// Version is reported by /v1/health; "" reports "dev".
	Version string
	// Logger receives request failures; nil discards them.
	Logger *slog.Logger
	// MaxJSONBytes bounds JSON request bodies; 0 means MaxJSONBytes.
	MaxJSONBytes int64
	// Token, when set, must accompany every request as
	// "Authorization: Bearer <token>". Transports reachable by more than
	// the host (TCP on a shared network) need it.
	Token string
	// Refresh serves POST /v1/guest/refresh: reseed the guest kernel's
	// random state with entropy and set its clock to now. Only an agent
	// that manages its guest (a microVM's init) sets it; nil answers
	// errdefs.ErrUnimplemented. The server has checked entropy's length
	// (MinRefreshEntropy..MaxRefreshEntropy) and that now is after 1970.
	Refresh func(ctx context.Context, entropy []byte, now time.Time) error
}

type server struct {
	g       provider.Guest
	refresh func(ctx context.Context, entropy []byte, now time.Time) error
	log     *slog.Logger
	version string
	maxJSON int64
	auth    []byte // the whole expected Authorization header; nil when no token
	mux     *http.ServeMux
}

// NewServer returns the agent's HTTP handler, serving g. It holds no
// state besides g, so any number of requests run at once and one handler
// can serve several listeners.
func NewServer(g provider.Guest, opts ServerOptions) http.Handler {
	s := &server{g: g, refresh: opts.Refresh, log: opts.Logger, version: opts.Version, maxJSON: opts.MaxJSONBytes}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.version == "" {
		s.version = "dev"
	}
	if s.maxJSON <= 0 {
		s.maxJSON = MaxJSONBytes
	}
	if opts.Token != "" {
		s.auth = []byte("Bearer " + opts.Token)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathHealth, s.health)
	mux.HandleFunc("POST "+pathExec, s.exec)
	mux.HandleFunc("PUT "+pathFiles, s.writeFile)
	mux.HandleFunc("GET "+pathFiles, s.readFile)
	mux.HandleFunc("DELETE "+pathFiles, s.deleteFile)
	mux.HandleFunc("GET "+pathFilesList, s.listFiles)
	mux.HandleFunc("GET "+pathFilesStat, s.statFile)
	mux.HandleFunc("POST "+pathFilesMove, s.moveFile)
	mux.HandleFunc("POST "+pathFilesMod, s.chmod)
	mux.HandleFunc("GET "+pathFilesGlob, s.glob)
	mux.HandleFunc("POST "+pathRefresh, s.refreshGuest)
	mux.HandleFunc("GET "+pathTerminal, s.terminal)
	mux.HandleFunc("GET "+pathExecStdin, s.execStdin)
	s.mux = mux
	return s
}

// ServeHTTP answers unknown routes and methods with a JSON error, like
// every other failure, instead of ServeMux's plain-text 404/405: a newer
// client talking to an older agent then gets a classified "unimplemented".
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.auth != nil && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), s.auth) != 1 {
		s.fail(w, r, errdefs.New(errdefs.ErrUnauthorized, "missing or wrong agent token"))
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.fail(w, r, errdefs.New(errdefs.ErrUnimplemented, "the agent has no route %s %s", r.Method, r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, status := errdefs.CodeAndStatus(err, classStatus)
	level := slog.LevelDebug
	if code == classInternal {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "agent request failed",
		"method", r.Method, "path", r.URL.Path, "class", code, "err", err)
	body, _ := json.Marshal(wireError{Class: code, Message: err.Error()})
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *server) reply(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only reachable with a Guest returning unmarshalable values.
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

func (s *server) done(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

func (s *server) health(w http.ResponseWriter, _ *http.Request) {
	s.reply(w, Version{Status: "ok", Version: s.version, Protocol: ProtocolVersion, OS: runtime.GOOS, Arch: runtime.GOARCH})
}

// exec runs the command with the request's context: when the client goes
// away (or cancels), net/http cancels it and the Guest kills the command's
// process group. Once the command has been handed to the Guest the status
// is 200 and everything, including errors, travels as frames.
func (s *server) exec(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeExecRequest(r.Body, s.maxJSON)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", contentTypeFrames)
	fw := &frameWriter{w: w, rc: http.NewResponseController(w)}
	st, err := s.g.Exec(r.Context(), req, fw.stream(FrameStdout), fw.stream(FrameStderr))
	if err != nil {
		code, _ := errdefs.CodeAndStatus(err, classStatus)
		s.log.Debug("exec failed", "argv0", req.Argv[0], "class", code, "err", err)
		payload, _ := json.Marshal(toWireError(err))
		fw.write(FrameError, payload, false)
	}
	payload, _ := json.Marshal(wireExit{ExitCode: st.ExitCode, TimedOut: st.TimedOut, DurationNS: int64(st.Duration)})
	// The handler's return flushes the exit frame together with the
	// chunked terminator, saving a write for the common short command.
	fw.write(FrameExit, payload, false)
	fw.close()
}

// frameWriter serialises frames onto the response. Output is flushed per
// frame so the client sees it as it is produced.
type frameWriter struct {
	mu     sync.Mutex
	w      io.Writer
	rc     *http.ResponseController
	buf    []byte
	err    error
	closed bool
}

func (fw *frameWriter) write(kind FrameKind, payload []byte, flush bool) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		return errors.New("agent: write after the command ended")
	}
	if fw.err != nil {
		return fw.err
	}
	for first := true; first || len(payload) > 0; first = false {
		chunk := payload[:min(len(payload), maxOutputChunk)]
		payload = payload[len(chunk):]
		fw.buf = AppendFrame(fw.buf[:0], kind, chunk)
		if _, err := fw.w.Write(fw.buf); err != nil {
			fw.err = err
			return err
		}
	}
	if flush && fw.rc != nil { // a hijacked connection has nothing to flush
		if err := fw.rc.Flush(); err != nil {
			fw.err = err
			return err
		}
	}
	return nil
}

func (fw *frameWriter) close() {
	fw.mu.Lock()
	fw.closed = true
	fw.mu.Unlock()
}

func (fw *frameWriter) stream(kind FrameKind) io.Writer { return streamWriter{fw, kind} }

type streamWriter struct {
	fw   *frameWriter
	kind FrameKind
}

func (sw streamWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := sw.fw.write(sw.kind, p, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *server) writeFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mode, err := ParseMode(q.Get("mode"))
	if !q.Has("mode") {
		mode, err = 0o644, nil
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The body goes to the Guest as it arrives: no size cap, no buffering.
	if err := s.g.WriteFile(r.Context(), q.Get("path"), r.Body, mode); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w)
}

func (s *server) readFile(w http.ResponseWriter, r *http.Request) {
	rc, err := s.g.ReadFile(r.Context(), r.URL.Query().Get("path"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", contentTypeOctets)
	httpbody.Send(w, rc, func(err error) { s.log.Warn("reading file failed mid-stream", "err", err) })
}

func (s *server) deleteFile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	recursive := false
	if q.Has("recursive") {
		b, err := strconv.ParseBool(q.Get("recursive"))
		if err != nil {
			s.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "recursive=%q is not a boolean", q.Get("recursive")))
			return
		}
		recursive = b
	}
	if err := s.g.DeleteFile(r.Context(), q.Get("path"), recursive); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w)
}

func (s *server) listFiles(w http.ResponseWriter, r *http.Request) {
	infos, err := s.g.ListFiles(r.Context(), r.URL.Query().Get("path"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wireFileInfo, 0, len(infos))
	for _, fi := range infos {
		out = append(out, fileInfoToWire(fi))
	}
	s.reply(w, out)
}

func (s *server) statFile(w http.ResponseWriter, r *http.Request) {
	fi, err := s.g.StatFile(r.Context(), r.URL.Query().Get("path"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.reply(w, fileInfoToWire(fi))
}

func (s *server) moveFile(w http.ResponseWriter, r *http.Request) {
	var m wireMove
	if err := decodeJSON(r.Body, s.maxJSON, &m); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.g.MoveFile(r.Context(), m.OldPath, m.NewPath); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w)
}

func (s *server) chmod(w http.ResponseWriter, r *http.Request) {
	var c wireChmod
	if err := decodeJSON(r.Body, s.maxJSON, &c); err != nil {
		s.fail(w, r, err)
		return
	}
	mode, err := ParseMode(c.Mode)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.g.Chmod(r.Context(), c.Path, mode); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w)
}

func (s *server) glob(w http.ResponseWriter, r *http.Request) {
	matches, err := s.g.Glob(r.Context(), r.URL.Query().Get("pattern"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if matches == nil {
		matches = []string{}
	}
	s.reply(w, matches)
}

// refreshGuest checks the request fully before asking whether this agent
// may act, so that a malformed request is reported as such everywhere.
func (s *server) refreshGuest(w http.ResponseWriter, r *http.Request) {
	var rf wireRefresh
	if err := decodeJSON(r.Body, s.maxJSON, &rf); err != nil {
		s.fail(w, r, err)
		return
	}
	if n := len(rf.Entropy); n < MinRefreshEntropy || n > MaxRefreshEntropy {
		s.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument,
			"refresh: %d bytes of entropy, want %d to %d", n, MinRefreshEntropy, MaxRefreshEntropy))
		return
	}
	if rf.UnixNanos <= 0 {
		s.fail(w, r, errdefs.New(errdefs.ErrInvalidArgument, "refresh: unix_nanos must be a time after 1970"))
		return
	}
	if s.refresh == nil {
		s.fail(w, r, errdefs.WithHint(
			errdefs.New(errdefs.ErrUnimplemented, "refresh: this agent does not manage its guest"),
			"only an agent running as the guest's init (PID 1, or started with --manage-guest) reseeds the kernel and sets the clock"))
		return
	}
	if err := s.refresh(r.Context(), rf.Entropy, time.Unix(0, rf.UnixNanos)); err != nil {
		s.fail(w, r, err)
		return
	}
	s.done(w)
}
