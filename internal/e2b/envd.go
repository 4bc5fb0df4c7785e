package e2b

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"

	"connectrpc.com/connect"

	"github.com/stacyvm/stacyvm/internal/e2b/gen/filesystem/filesystemconnect"
	"github.com/stacyvm/stacyvm/internal/e2b/gen/process/processconnect"
	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/httpbody"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// The daemon's routes, under /envd: the two Connect services, /files and
// /health. Every one needs E2b-Sandbox-Id and its X-Access-Token.
func (s *server) envdRoutes(mux *http.ServeMux) {
	opts := connect.WithInterceptors(authInterceptor{s})
	for _, svc := range []func() (string, http.Handler){
		func() (string, http.Handler) { return processconnect.NewProcessHandler(processService{s}, opts) },
		func() (string, http.Handler) { return filesystemconnect.NewFilesystemHandler(fsService{s}, opts) },
	} {
		p, h := svc()
		mux.Handle(envdPrefix+p, http.StripPrefix(envdPrefix, h))
	}
	mux.Handle("GET "+envdPrefix+"/files", s.withToken(http.HandlerFunc(s.download)))
	mux.Handle("POST "+envdPrefix+"/files", s.withToken(http.HandlerFunc(s.upload)))
	mux.Handle("GET "+envdPrefix+"/health", s.withToken(http.HandlerFunc(s.health)))
	mux.HandleFunc(envdPrefix+"/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("%s %s is not served by StacyVM's E2B facade", r.Method, r.URL.Path))
	})
}

type sandboxKey struct{}

func sandboxFrom(ctx context.Context) string {
	id, _ := ctx.Value(sandboxKey{}).(string)
	return id
}

// authorize checks a daemon request's sandbox and access token.
func (s *server) authorize(ctx context.Context, h http.Header) (context.Context, error) {
	id := h.Get("E2b-Sandbox-Id")
	if id == "" {
		return ctx, errdefs.New(errdefs.ErrUnauthorized, "missing E2b-Sandbox-Id header")
	}
	if !s.tokenValid(id, h.Get("X-Access-Token")) {
		return ctx, errdefs.New(errdefs.ErrUnauthorized, "missing or invalid X-Access-Token for sandbox %s", id)
	}
	return context.WithValue(ctx, sandboxKey{}, id), nil
}

func (s *server) withToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, err := s.authorize(r.Context(), r.Header)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// authInterceptor runs authorize for every Connect call, so that refusals
// are Connect errors (unauthenticated) in the protocol the client speaks.
type authInterceptor struct{ s *server }

func (a authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := a.s.authorize(ctx, req.Header())
		if err != nil {
			return nil, connect.NewError(connect.CodeUnauthenticated, err)
		}
		return next(ctx, req)
	}
}

func (a authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.s.authorize(ctx, conn.RequestHeader())
		if err != nil {
			return connect.NewError(connect.CodeUnauthenticated, err)
		}
		return next(ctx, conn)
	}
}

// health is 204 while the sandbox runs and 502 once it is gone: what the
// SDK reads as "the sandbox was killed" when a request breaks off.
func (s *server) health(w http.ResponseWriter, r *http.Request) {
	sb, err := s.m.Get(r.Context(), sandboxFrom(r.Context()))
	if err != nil || sb.State != string(provider.StateRunning) {
		writeError(w, http.StatusBadGateway, "sandbox is not running")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// download serves GET /files?path=: the file's raw bytes.
func (s *server) download(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), sandboxFrom(r.Context())
	p := r.URL.Query().Get("path")
	if p == "" {
		writeError(w, http.StatusBadRequest, "path is required")
		return
	}
	fi, err := s.m.StatFile(ctx, id, p)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if fi.IsDir {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("path '%s' is a directory", p))
		return
	}
	rc, err := s.m.ReadFile(ctx, id, p)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	defer rc.Close()
	// Read ahead before the 200 goes out, so that a file that fails on its
	// first read still gets a proper error.
	br := bufio.NewReaderSize(rc, 32<<10)
	if _, err := br.Peek(1); err != nil && err != io.EOF {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if fi.Size == 0 {
		w.Header().Set("Content-Length", "0")
	}
	httpbody.Send(w, br, func(err error) {
		s.log.Warn("e2b: file download failed midway", "sandbox", id, "path", p, "err", err)
	})
}

type uploadedEntry struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// upload serves POST /files: multipart parts named "file" (each to the
// path query parameter, or to its own file name), or one octet-stream
// body to path. It answers with the written entries.
func (s *server) upload(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), sandboxFrom(r.Context())
	target := r.URL.Query().Get("path")
	if s.opts.MaxUploadBytes > 0 {
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxUploadBytes)
	}
	body := io.Reader(r.Body)
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			writeError(w, http.StatusBadRequest, "body is not gzip: "+err.Error())
			return
		}
		defer zr.Close()
		body = zr
	}
	var written []uploadedEntry
	write := func(p string, rd io.Reader) error {
		if p == "" {
			return errdefs.New(errdefs.ErrInvalidArgument, "path is required")
		}
		if err := s.m.WriteFile(ctx, id, p, rd, 0); err != nil {
			return err
		}
		fi, err := s.m.StatFile(ctx, id, p)
		if err != nil {
			return err
		}
		written = append(written, uploadedEntry{Path: fi.Path, Name: path.Base(fi.Path), Type: "file"})
		return nil
	}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "multipart/form-data":
		mr, err := multipartReader(body, params)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				s.writeErr(w, errdefs.Wrap(errdefs.ErrInvalidArgument, err, "malformed multipart body"))
				return
			}
			if part.FormName() != "file" {
				continue
			}
			p := target
			if p == "" {
				// The SDK puts the whole sandbox path in the file name,
				// which Part.FileName would cut down to its base.
				_, cd, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
				p = cd["filename"]
			}
			if err := write(p, part); err != nil {
				s.writeErr(w, bodyError(err))
				return
			}
		}
		if len(written) == 0 {
			writeError(w, http.StatusBadRequest, `no multipart part named "file"`)
			return
		}
	case "application/octet-stream", "":
		if err := write(target, body); err != nil {
			s.writeErr(w, bodyError(err))
			return
		}
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Content-Type %q is not supported: send multipart/form-data or application/octet-stream", mt))
		return
	}
	writeJSON(w, http.StatusOK, written)
}

// bodyError classifies an upload over the size limit as the client's
// fault; other failures keep their class.
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errdefs.New(errdefs.ErrInvalidArgument, "upload exceeds the limit of %d bytes", mbe.Limit)
	}
	return err
}

func multipartReader(body io.Reader, params map[string]string) (*multipart.Reader, error) {
	if params["boundary"] == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "multipart body without a boundary")
	}
	return multipart.NewReader(body, params["boundary"]), nil
}
