package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// decodeJSON decodes exactly one JSON value from r into v: at most limit
// bytes, no unknown fields, nothing but whitespace after the value.
// Unknown fields are rejected rather than ignored because an old agent that
// silently dropped a new field (say, stdin) would run a different command
// than the one asked for. Reading r to its end also matters to net/http:
// the server starts watching for a client disconnect only once the request
// body has been consumed.
func decodeJSON(r io.Reader, limit int64, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "reading request body")
	}
	if int64(len(data)) > limit {
		return errdefs.New(errdefs.ErrResourceLimit, "request body exceeds %d bytes", limit)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errdefs.Wrap(errdefs.ErrInvalidArgument, err, "malformed JSON body")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errdefs.New(errdefs.ErrInvalidArgument, "malformed JSON body: data after the JSON value")
	}
	return nil
}

// DecodeExecRequest decodes and validates the body of POST /v1/exec, reading
// at most limit bytes (MaxJSONBytes when limit <= 0). Every failure is
// errdefs.ErrInvalidArgument, or errdefs.ErrResourceLimit for an oversized
// body.
func DecodeExecRequest(r io.Reader, limit int64) (provider.ExecRequest, error) {
	if limit <= 0 {
		limit = MaxJSONBytes
	}
	var w wireExecRequest
	if err := decodeJSON(r, limit, &w); err != nil {
		return provider.ExecRequest{}, err
	}
	if err := validateExec(w); err != nil {
		return provider.ExecRequest{}, err
	}
	req := provider.ExecRequest{
		Argv:    w.Argv,
		Env:     w.Env,
		WorkDir: w.WorkDir,
		Timeout: time.Duration(w.TimeoutMS) * time.Millisecond,
	}
	return req, nil
}

// validateExec rejects what no exec(2) could run. NUL bytes are checked
// here because the kernel would otherwise see a truncated string.
func validateExec(w wireExecRequest) error {
	invalid := func(format string, args ...any) error {
		return errdefs.New(errdefs.ErrInvalidArgument, format, args...)
	}
	if len(w.Argv) == 0 || w.Argv[0] == "" {
		return invalid("argv must name a program")
	}
	for i, a := range w.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return invalid("argv[%d] contains a NUL byte", i)
		}
	}
	for k, v := range w.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalid("env name %q is empty or contains '=' or NUL", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid("env %s contains a NUL byte", k)
		}
	}
	if strings.IndexByte(w.WorkDir, 0) >= 0 {
		return invalid("workdir contains a NUL byte")
	}
	if w.TimeoutMS < 0 || w.TimeoutMS > maxTimeoutMS {
		return invalid("timeout_ms must be between 0 and %d", maxTimeoutMS)
	}
	return nil
}
