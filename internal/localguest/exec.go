package localguest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// pipeGrace is how long Exec keeps reading output after the command has
// exited, for background children that still hold stdout or stderr. They
// keep running; their later output is dropped.
const pipeGrace = time.Second

// Exec runs req.Argv directly (no shell) in its own process group and
// streams its output to stdout and stderr as it is produced; the two writers
// are never called at once. A program that cannot be found exits 127 (one
// that cannot be executed, 126) with a message on stderr, as a shell would.
// On req.Timeout the whole process group is killed and Exec returns
// ExitStatus{ExitCode: -1, TimedOut: true} with an errdefs.ErrExecTimeout
// error; when ctx ends the group is killed and ctx's error returned.
func (g *Guest) Exec(ctx context.Context, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrInvalidArgument, "exec: empty command")
	}
	for _, a := range req.Argv {
		if strings.ContainsRune(a, 0) {
			return provider.ExitStatus{}, errdefs.New(errdefs.ErrInvalidArgument, "exec: argument contains a NUL byte")
		}
	}
	if req.Timeout < 0 {
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrInvalidArgument, "exec: negative timeout %s", req.Timeout)
	}
	env, err := mergeEnv(g.env, req.Env)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	dir, err := g.workDir(req.WorkDir)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	var cmd *exec.Cmd
	// When the caller's writer fails nobody is listening any more: stop the
	// command rather than let it run unobserved.
	sink := &outputSink{onFail: func() { killGroup(cmd.Process.Pid) }}
	// A nil writer stays nil so that the stream goes to the null device
	// instead of through a pipe.
	outW, errW := provider.SerialWriters(orDiscard(stdout), orDiscard(stderr))
	if stdout != nil {
		stdout = sink.wrap(outW)
	}
	if stderr != nil {
		stderr = sink.wrap(errW)
	}
	msgs := errW // where "command not found" goes, even when discarded

	start := time.Now()
	prog, code, msg := lookPath(req.Argv[0], envValue(env, "PATH"), dir)
	if code != 0 {
		fmt.Fprintf(msgs, "stacyvm: %s: %s\n", req.Argv[0], msg)
		return provider.ExitStatus{ExitCode: code, Duration: time.Since(start)}, nil
	}

	cmd = exec.CommandContext(ctx, prog)
	cmd.Args = slices.Clone(req.Argv)
	cmd.Env = env
	cmd.Dir = dir
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = pipeGrace
	// Stdin is copied by a goroutine of our own rather than by os/exec,
	// whose Wait would wait for a Read that only the caller can end.
	var stdin io.WriteCloser
	if req.Stdin != nil {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return provider.ExitStatus{}, fmt.Errorf("exec: stdin: %w", err)
		}
	}

	if err := g.start(cmd); err != nil {
		if code, msg, ok := startFailure(err); ok {
			fmt.Fprintf(msgs, "stacyvm: %s: %s\n", req.Argv[0], msg)
			return provider.ExitStatus{ExitCode: code, Duration: time.Since(start)}, nil
		}
		return provider.ExitStatus{}, err
	}
	if req.Signals != nil {
		pgid := cmd.Process.Pid
		exited := make(chan struct{})
		defer close(exited)
		go func() {
			for {
				select {
				case name := <-req.Signals:
					if provider.CheckTerminalSignal(name) == nil {
						_ = signalGroup(pgid, name)
					}
				case <-exited:
					return
				}
			}
		}()
	}
	if stdin != nil {
		go func() {
			_, _ = io.Copy(stdin, req.Stdin)
			stdin.Close() // EOF for the command; Wait has closed it already if it exited
		}()
	}
	// The command's own clock starts once it runs: a start slowed down by
	// the host (memory pressure) does not eat into it.
	var timedOut atomic.Bool
	stopTimer := func() bool { return false }
	if req.Timeout > 0 {
		pid := cmd.Process.Pid
		stopTimer = time.AfterFunc(req.Timeout, func() {
			timedOut.Store(true)
			killGroup(pid)
		}).Stop
	}
	werr := cmd.Wait()
	stopTimer()
	g.finished(cmd.Process.Pid)
	st := provider.ExitStatus{Duration: time.Since(start), ExitCode: -1}
	if cmd.ProcessState != nil {
		st.ExitCode = exitCode(cmd.ProcessState)
	}

	switch {
	case ctx.Err() != nil:
		st.ExitCode = -1
		return st, ctx.Err()
	case timedOut.Load():
		st.ExitCode, st.TimedOut = -1, true
		return st, errdefs.New(errdefs.ErrExecTimeout, "command timed out after %s", req.Timeout)
	}
	if err := sink.failure(); err != nil {
		return st, fmt.Errorf("exec: delivering output: %w", err)
	}
	if werr != nil {
		if _, ok := errors.AsType[*exec.ExitError](werr); !ok && !errors.Is(werr, exec.ErrWaitDelay) {
			return st, fmt.Errorf("exec: %w", werr)
		}
	}
	return st, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// outputSink remembers the first error of the caller's writers.
type outputSink struct {
	mu     sync.Mutex
	err    error
	onFail func()
}

func (s *outputSink) wrap(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		n, err := w.Write(p)
		if err != nil {
			s.mu.Lock()
			first := s.err == nil
			if first {
				s.err = err
			}
			s.mu.Unlock()
			if first {
				s.onFail()
			}
		}
		return n, err
	})
}

func (s *outputSink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// start starts cmd and records its process group, unless the guest is
// closed. The lock is not held across the fork itself, so that one slow
// start (memory pressure) does not hold up every other command of the
// sandbox while their timeouts run.
func (g *Guest) start(cmd *exec.Cmd) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return errdefs.New(errdefs.ErrProviderUnavailable, "exec: the sandbox is shutting down")
	}
	// Forget groups that have emptied, so the set only holds live ones.
	for pgid := range g.groups {
		if !groupAlive(pgid) {
			delete(g.groups, pgid)
		}
	}
	g.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		// Close ran while we forked and could not see this group: kill it
		// here; the caller's Wait reaps it.
		killGroup(cmd.Process.Pid)
		return nil
	}
	g.groups[cmd.Process.Pid] = struct{}{}
	return nil
}

// finished drops the group of a command whose leader has exited unless
// background members remain; those are killed by Close.
func (g *Guest) finished(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.groups != nil && !groupAlive(pgid) {
		delete(g.groups, pgid)
	}
}

// workDir maps a sandbox working directory to the directory the process
// starts in, and checks that it exists.
func (g *Guest) workDir(wd string) (string, error) {
	if wd == "" {
		wd = provider.DefaultWorkDir
	}
	sp, err := SandboxPath(wd)
	if err != nil {
		return "", err
	}
	rel, err := g.resolve(sp, true)
	if err != nil {
		return "", err
	}
	fi, err := g.root.Stat(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return "", errdefs.New(errdefs.ErrInvalidArgument, "exec: working directory %s does not exist", sp)
		}
		return "", classify("exec: working directory", sp, err)
	}
	if !fi.IsDir() {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "exec: working directory %s is not a directory", sp)
	}
	if g.mapExec {
		return filepath.Join(g.hostDir, filepath.FromSlash(rel)), nil
	}
	return sp, nil
}

// mergeEnv returns base overridden by extra, with extra's keys sorted so
// the result does not depend on map order.
func mergeEnv(base []string, extra map[string]string) ([]string, error) {
	keys := make([]string, 0, len(extra))
	for k, v := range extra {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "exec: invalid environment variable %q", k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, 0, len(base)+len(keys))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := extra[k]; !ok {
			out = append(out, kv)
		}
	}
	for _, k := range keys {
		out = append(out, k+"="+extra[k])
	}
	return out, nil
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// lookPath finds the program as a shell would, using the command's PATH
// (not ours) and its working directory. A non-zero code is the exit status
// a shell reports when the program is missing (127) or not executable (126).
func lookPath(name, pathEnv, dir string) (prog string, code int, msg string) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", 127, "no such file or directory"
			}
			return "", 126, "permission denied"
		}
		return p, 0, ""
	}
	denied := false
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, name)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		err := executable(p)
		if err == nil {
			return p, 0, ""
		}
		if !errors.Is(err, fs.ErrNotExist) {
			denied = true
		}
	}
	if denied {
		return "", 126, "permission denied"
	}
	return "", 127, "command not found"
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}

// startFailure turns an exec failure of a program that was found (a bad
// interpreter line, a binary for another machine) into a shell's exit code.
func startFailure(err error) (code int, msg string, ok bool) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 127, "no such file or directory", true
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.ETXTBSY):
		return 126, "cannot execute: " + unwrapPathErr(err).Error(), true
	}
	return 0, "", false
}
