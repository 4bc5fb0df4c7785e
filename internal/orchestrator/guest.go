package orchestrator

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/events"
	"github.com/stacyvm/stacyvm/internal/membudget"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/store"
)

// ExecRequest is one command as the API receives it. With Args the
// Command is the program and runs without a shell; without Args the
// Command is a shell string run by /bin/sh -c.
type ExecRequest struct {
	Command string
	Args    []string
	Env     map[string]string
	WorkDir string
	Timeout time.Duration // 0: the configured default
	// Stdin, when set, is the command's standard input, on providers whose
	// capabilities list stdin (provider.ExecRequest.Stdin says how it is
	// read); elsewhere the exec is refused as unimplemented.
	Stdin io.Reader
	// Signals, when set, carries signal names for the running command's
	// process group, on providers whose capabilities list signals
	// (provider.ExecRequest.Signals says how it is received).
	Signals <-chan string
}

// ExecResult is a finished buffered command.
type ExecResult struct {
	ExitCode  int
	Stdout    string
	Stderr    string
	Duration  time.Duration
	TimedOut  bool
	Truncated bool // output beyond MaxOutputBytes per stream was dropped
}

func (m *Manager) guest(ctx context.Context, id, op string) (store.Sandbox, provider.Provider, error) {
	sb, err := m.running(ctx, id, op)
	if err != nil {
		return store.Sandbox{}, nil, err
	}
	m.recordActivity(ctx, sb)
	p, err := m.reg.Get(sb.Provider)
	if err != nil {
		return store.Sandbox{}, nil, err
	}
	return sb, p, nil
}

func (m *Manager) providerRequest(sb store.Sandbox, p provider.Provider, req ExecRequest) (provider.ExecRequest, error) {
	if req.Command == "" {
		return provider.ExecRequest{}, errdefs.New(errdefs.ErrInvalidArgument, "command is required")
	}
	if req.Stdin != nil && !p.Capabilities().Stdin {
		return provider.ExecRequest{}, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented, "provider %s cannot give commands a standard input", p.Name()),
			"run the command without stdin, or spawn the sandbox on a provider whose capabilities list stdin")
	}
	if req.Signals != nil && !p.Capabilities().Signals {
		return provider.ExecRequest{}, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented, "provider %s cannot signal a running command", p.Name()),
			"end the command by cancelling it, or spawn the sandbox on a provider whose capabilities list signals")
	}
	if req.Timeout < 0 {
		return provider.ExecRequest{}, errdefs.New(errdefs.ErrInvalidArgument, "timeout must be positive")
	}
	if req.Timeout > m.cfg.MaxExecTimeout {
		return provider.ExecRequest{}, errdefs.New(errdefs.ErrInvalidArgument,
			"timeout %s exceeds the maximum of %s", req.Timeout, m.cfg.MaxExecTimeout)
	}
	if req.Timeout == 0 {
		req.Timeout = m.cfg.DefaultExecTimeout
	}
	argv := provider.ShellArgv(req.Command)
	if len(req.Args) > 0 {
		argv = append([]string{req.Command}, req.Args...)
	}
	env := maps.Clone(sb.Env)
	if len(req.Env) > 0 {
		if env == nil {
			env = map[string]string{}
		}
		maps.Copy(env, req.Env)
	}
	return provider.ExecRequest{Argv: argv, Env: env, WorkDir: req.WorkDir, Timeout: req.Timeout, Stdin: req.Stdin, Signals: req.Signals}, nil
}

// Exec runs a command and returns its buffered output. A non-zero exit is
// not an error. A command that outlives its timeout is killed; Exec then
// returns what it printed so far together with an errdefs.ErrExecTimeout
// error.
func (m *Manager) Exec(ctx context.Context, id string, req ExecRequest) (ExecResult, error) {
	defer m.active(id)()
	sb, p, err := m.guest(ctx, id, "exec")
	if err != nil {
		return ExecResult{}, err
	}
	return m.execOn(ctx, p, sb, req)
}

func (m *Manager) execOn(ctx context.Context, p provider.Provider, sb store.Sandbox, req ExecRequest) (ExecResult, error) {
	stdout := &capped{max: m.cfg.MaxOutputBytes, ctx: ctx, budget: m.cfg.MemoryBudget}
	stderr := &capped{max: m.cfg.MaxOutputBytes, ctx: ctx, budget: m.cfg.MemoryBudget}
	defer stdout.release()
	defer stderr.release()
	st, err := m.stream(ctx, p, sb, req, stdout, stderr)
	if berr := cmp.Or(stdout.err, stderr.err); berr != nil {
		// The output could not be held: that, not the writer failure the
		// provider reports, is what the caller must hear.
		return ExecResult{}, fmt.Errorf("buffering the command's output: %w", berr)
	}
	res := ExecResult{
		ExitCode:  st.ExitCode,
		Stdout:    stdout.String(),
		Stderr:    stderr.String(),
		Duration:  st.Duration,
		TimedOut:  st.TimedOut,
		Truncated: stdout.truncated || stderr.truncated,
	}
	return res, err
}

// ExecStream runs a command and writes its output as it is produced. The
// writers are never called concurrently. Cancelling ctx kills the command.
func (m *Manager) ExecStream(ctx context.Context, id string, req ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	defer m.active(id)()
	sb, p, err := m.guest(ctx, id, "exec")
	if err != nil {
		return provider.ExitStatus{}, err
	}
	return m.stream(ctx, p, sb, req, stdout, stderr)
}

func (m *Manager) stream(ctx context.Context, p provider.Provider, sb store.Sandbox, req ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	preq, err := m.providerRequest(sb, p, req)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	m.execs.Add(1)
	start := time.Now()
	st, err := p.Exec(ctx, sb.ID, preq, stdout, stderr)
	d := time.Since(start)
	m.cfg.Observer.Op(sb.Provider, "exec", d, err)
	if err == nil || errdefs.Classify(err) == errdefs.ErrExecTimeout {
		m.publish(events.ExecFinished, sb.ID, map[string]string{
			"exit_code": strconv.Itoa(st.ExitCode),
			"duration":  st.Duration.String(),
			"timed_out": strconv.FormatBool(st.TimedOut),
		})
	}
	return st, err
}

// capped keeps the first max bytes written to it and counts the rest as
// dropped, so a chatty command is not killed by a full buffer. What it
// keeps is reserved from budget as the buffer grows (doubling, from 64
// KiB); a write fails, which stops the command, only when the budget
// has no room even after a wait.
type capped struct {
	mu        sync.Mutex
	buf       []byte
	max       int
	truncated bool

	ctx      context.Context
	budget   *membudget.Budget
	reserved int64
	err      error
}

// minReservation is the first reservation of a buffer that gets output.
const minReservation = 64 << 10

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	take := min(len(p), max(c.max-len(c.buf), 0))
	if take < len(p) {
		c.truncated = true
	}
	if take == 0 {
		return len(p), nil
	}
	if need := int64(len(c.buf) + take); need > c.reserved {
		target := max(need, min(max(2*c.reserved, minReservation), int64(c.max)))
		if err := c.budget.Acquire(c.ctx, target-c.reserved); err != nil {
			c.err = err
			return 0, err
		}
		c.reserved = target
		// The buffer's capacity is what was reserved, no more.
		c.buf = slices.Grow(c.buf, int(target)-len(c.buf))
	}
	c.buf = append(c.buf, p[:take]...)
	return len(p), nil
}

// release returns the buffer's reservation.
func (c *capped) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.budget.Release(c.reserved)
	c.reserved = 0
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// observed runs one guest operation and reports it to the Observer.
func observed[T any](m *Manager, ctx context.Context, id, op string, f func(p provider.Provider) (T, error)) (T, error) {
	defer m.active(id)()
	_, p, err := m.guest(ctx, id, opVerb(op))
	if err != nil {
		var zero T
		return zero, err
	}
	start := time.Now()
	v, err := f(p)
	m.cfg.Observer.Op(p.Name(), op, time.Since(start), err)
	return v, err
}

// WriteFile streams r into path, creating parents; mode 0 means 0644.
func (m *Manager) WriteFile(ctx context.Context, id, path string, r io.Reader, mode fs.FileMode) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if mode == 0 {
		mode = 0o644
	}
	if err := checkMode(mode); err != nil {
		return err
	}
	_, err := observed(m, ctx, id, "file_write", func(p provider.Provider) (struct{}, error) {
		return struct{}{}, p.WriteFile(ctx, id, path, r, mode)
	})
	return err
}

// ReadFile opens path for streaming; the caller closes it.
func (m *Manager) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	return observed(m, ctx, id, "file_read", func(p provider.Provider) (io.ReadCloser, error) {
		return p.ReadFile(ctx, id, path)
	})
}

// ListFiles lists a directory ("" means "/").
func (m *Manager) ListFiles(ctx context.Context, id, path string) ([]provider.FileInfo, error) {
	if path == "" {
		path = "/"
	}
	return observed(m, ctx, id, "file_list", func(p provider.Provider) ([]provider.FileInfo, error) {
		return p.ListFiles(ctx, id, path)
	})
}

// StatFile describes one file.
func (m *Manager) StatFile(ctx context.Context, id, path string) (provider.FileInfo, error) {
	if err := checkPath(path); err != nil {
		return provider.FileInfo{}, err
	}
	return observed(m, ctx, id, "file_stat", func(p provider.Provider) (provider.FileInfo, error) {
		return p.StatFile(ctx, id, path)
	})
}

// DeleteFile removes a file, or a directory tree with recursive.
func (m *Manager) DeleteFile(ctx context.Context, id, path string, recursive bool) error {
	if err := checkPath(path); err != nil {
		return err
	}
	_, err := observed(m, ctx, id, "file_delete", func(p provider.Provider) (struct{}, error) {
		return struct{}{}, p.DeleteFile(ctx, id, path, recursive)
	})
	return err
}

// MoveFile renames oldPath to newPath.
func (m *Manager) MoveFile(ctx context.Context, id, oldPath, newPath string) error {
	if oldPath == "" || newPath == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "old_path and new_path are required")
	}
	_, err := observed(m, ctx, id, "file_move", func(p provider.Provider) (struct{}, error) {
		return struct{}{}, p.MoveFile(ctx, id, oldPath, newPath)
	})
	return err
}

// Chmod sets a file's permission bits.
func (m *Manager) Chmod(ctx context.Context, id, path string, mode fs.FileMode) error {
	if err := checkPath(path); err != nil {
		return err
	}
	if err := checkMode(mode); err != nil {
		return err
	}
	_, err := observed(m, ctx, id, "file_chmod", func(p provider.Provider) (struct{}, error) {
		return struct{}{}, p.Chmod(ctx, id, path, mode)
	})
	return err
}

// Glob returns the sandbox paths matching pattern.
func (m *Manager) Glob(ctx context.Context, id, pattern string) ([]string, error) {
	if pattern == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "pattern is required")
	}
	return observed(m, ctx, id, "file_glob", func(p provider.Provider) ([]string, error) {
		return p.Glob(ctx, id, pattern)
	})
}

// Logs returns up to the last n lines of a sandbox's console log.
func (m *Manager) Logs(ctx context.Context, id string, n int) ([]string, error) {
	if n <= 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "lines must be positive")
	}
	sb, err := m.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	p, err := m.reg.Get(sb.Provider)
	if err != nil {
		return nil, err
	}
	return p.Logs(ctx, id, n)
}

func checkPath(p string) error {
	if p == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "path is required")
	}
	return nil
}

// checkMode admits what provider.NormalizeMode does: permission bits with
// the setuid, setgid and sticky bits in either spelling (04755, or
// fs.ModeSetuid|0755). Providers normalise the mode themselves.
func checkMode(mode fs.FileMode) error {
	_, err := provider.NormalizeMode(mode)
	return err
}

// opVerbs name file operations in conflict messages: "sandbox sb-1 is
// paused; cannot write a file".
var opVerbs = map[string]string{
	"file_write": "write a file", "file_read": "read a file", "file_list": "list files",
	"file_stat": "stat a file", "file_delete": "delete a file", "file_move": "move a file",
	"file_chmod": "change a file's mode", "file_glob": "glob files",
}

func opVerb(op string) string { return cmp.Or(opVerbs[op], op) }
