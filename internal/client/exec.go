package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// ExecRequest is one command. Without Args, Command is a shell string run
// by /bin/sh -c; with Args, Command is the program and Args its arguments,
// run without a shell.
type ExecRequest struct {
	Command string
	Args    []string
	Env     map[string]string
	WorkDir string
	Timeout time.Duration // 0: the server's default
}

type execBody struct {
	Command string            `json:"command"`
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	WorkDir string            `json:"workdir,omitempty"`
	Timeout string            `json:"timeout,omitempty"`
	Stream  bool              `json:"stream,omitempty"`
}

func (r ExecRequest) body(stream bool) (execBody, error) {
	if r.Command == "" {
		return execBody{}, errdefs.New(errdefs.ErrInvalidArgument, "command is required")
	}
	if r.Timeout < 0 {
		return execBody{}, errdefs.New(errdefs.ErrInvalidArgument, "timeout must be positive, got %s", r.Timeout)
	}
	return execBody{
		Command: r.Command, Args: r.Args, Env: r.Env, WorkDir: r.WorkDir,
		Timeout: durationString(r.Timeout), Stream: stream,
	}, nil
}

// ExecResult is a finished buffered command. A non-zero ExitCode is not an
// error.
type ExecResult struct {
	ExitCode  int
	Stdout    string
	Stderr    string
	Duration  time.Duration
	TimedOut  bool
	Truncated bool // the server dropped output beyond its per-stream cap
}

type execResultBody struct {
	ExitCode  int    `json:"exit_code"`
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	Duration  string `json:"duration"`
	TimedOut  bool   `json:"timed_out"`
	Truncated bool   `json:"truncated"`
}

func (b execResultBody) result() (ExecResult, error) {
	r := ExecResult{ExitCode: b.ExitCode, Stdout: b.Stdout, Stderr: b.Stderr,
		TimedOut: b.TimedOut, Truncated: b.Truncated}
	if b.Duration != "" {
		d, err := time.ParseDuration(b.Duration)
		if err != nil {
			return r, fmt.Errorf("stacyvm: exec result: bad duration %q: %w", b.Duration, err)
		}
		r.Duration = d
	}
	return r, nil
}

// Exec runs a command and returns its buffered output. When the command
// outlives its timeout the server kills it; Exec then returns what it
// printed so far, with TimedOut set, and an *Error that matches
// errdefs.ErrExecTimeout.
func (c *Client) Exec(ctx context.Context, id string, req ExecRequest) (ExecResult, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return ExecResult{}, err
	}
	body, err := req.body(false)
	if err != nil {
		return ExecResult{}, err
	}
	var out execResultBody
	err = c.do(ctx, sandboxCall(http.MethodPost, id, "/exec", call{body: body}), &out)
	if e, ok := errors.AsType[*Error](err); ok && e.class == errdefs.ErrExecTimeout {
		// The server's 408 carries what the command printed before it
		// was killed; a body without it leaves the result empty.
		var partial execResultBody
		_ = json.Unmarshal(e.body, &partial)
		res, _ := partial.result()
		res.TimedOut = true
		return res, err
	}
	if err != nil {
		return ExecResult{}, err
	}
	return out.result()
}

// Stream names in a Chunk.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// Chunk is one piece of a streamed command's output.
type Chunk struct {
	Stream string // Stdout or Stderr
	Data   string
}

// ExitStatus ends a streamed command. A non-zero ExitCode is not an error.
type ExitStatus struct {
	ExitCode int
	TimedOut bool          // the command ran past its timeout and was killed; ExitCode is -1
	Duration time.Duration // how long the command ran, when the server says
}

// frame is one NDJSON line of a stream: an output chunk, the final exit
// frame, or an error frame from a server that failed after it had already
// sent the 200 header.
type frame struct {
	Stream    string `json:"stream"`
	Data      string `json:"data"`
	Type      string `json:"type"`
	ExitCode  *int   `json:"exit_code"`
	TimedOut  bool   `json:"timed_out"`
	Duration  string `json:"duration"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
	Hint      string `json:"hint"`
}

// ErrIncompleteStream is returned when a stream ends without its exit frame
// (the connection dropped, or the server died mid-command).
var ErrIncompleteStream = errors.New("stacyvm: exec stream ended without an exit status")

// ExecStream runs a command and calls fn with each chunk of output as it
// arrives. If fn returns an error the stream is abandoned (which makes the
// server kill the command) and ExecStream returns that error. A command
// that ran past its timeout yields ExitStatus{ExitCode: -1, TimedOut: true}
// and a nil error: the stream itself completed as the contract says.
func (c *Client) ExecStream(ctx context.Context, id string, req ExecRequest, fn func(Chunk) error) (ExitStatus, error) {
	if err := checkID("sandbox ID", id); err != nil {
		return ExitStatus{}, err
	}
	body, err := req.body(true)
	if err != nil {
		return ExitStatus{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := c.send(ctx, sandboxCall(http.MethodPost, id, "/exec", call{body: body}))
	if err != nil {
		return ExitStatus{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var f frame
		if err := dec.Decode(&f); err != nil {
			if errors.Is(err, io.EOF) {
				return ExitStatus{}, ErrIncompleteStream
			}
			if ctx.Err() != nil {
				return ExitStatus{}, fmt.Errorf("stacyvm: exec stream: %w", context.Cause(ctx))
			}
			return ExitStatus{}, fmt.Errorf("stacyvm: exec stream: %w", err)
		}
		switch {
		case f.Type == "exit":
			if f.ExitCode == nil {
				return ExitStatus{}, fmt.Errorf("stacyvm: exec stream: exit frame without exit_code")
			}
			st := ExitStatus{ExitCode: *f.ExitCode, TimedOut: f.TimedOut}
			if f.Duration != "" {
				// Informational only: a malformed one is not worth failing
				// a command that has finished.
				st.Duration, _ = time.ParseDuration(f.Duration)
			}
			return st, nil
		case f.Type == "error":
			e := &Error{Code: f.Code, Message: f.Message,
				RequestID: f.RequestID, Hint: f.Hint}
			if e.RequestID == "" {
				e.RequestID = resp.Header.Get("X-Request-ID")
			}
			e.class = classify(0, e.Code, errdefs.ErrSandboxNotFound)
			return ExitStatus{}, e
		case f.Type == "" && (f.Stream == Stdout || f.Stream == Stderr):
			if err := fn(Chunk{Stream: f.Stream, Data: f.Data}); err != nil {
				return ExitStatus{}, err
			}
		default:
			// Unknown frame kinds are extensions this client predates.
		}
	}
}

// ExecStreamTo runs a command and copies its output to stdout and stderr
// (either may be nil to discard) as it arrives.
func (c *Client) ExecStreamTo(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer) (ExitStatus, error) {
	return c.ExecStream(ctx, id, req, func(ch Chunk) error {
		w := stdout
		if ch.Stream == Stderr {
			w = stderr
		}
		if w == nil {
			return nil
		}
		_, err := io.WriteString(w, ch.Data)
		return err
	})
}
