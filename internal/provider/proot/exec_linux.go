package proot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/localguest"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// runner is the script every command runs under: PRoot starts it as the
// command's parent inside the sandbox. Its arguments are the environment
// (NAME=VALUE words), "--", the working directory and the argv. It exports
// the environment inside the sandbox (so nothing the request sets, such as
// LD_PRELOAD, reaches the proot binary that runs on the host), enters the
// working directory, runs the argv with exec in a subshell (so argv[0] is
// always a program looked up in PATH, never a shell builtin), and reports
// on descriptor 3 either "nowd" or "exit N" (N as a shell reports it:
// 128+signal for a killed command, 127 for a missing program). Descriptor 3
// is closed for the command, so background children do not hold it. The
// loaders' host paths (loader_linux.go) are PRoot's business, not the
// command's.
const runner = `unset PROOT_LOADER PROOT_LOADER_32
while [ "$1" != -- ]; do export "$1" || exit 125; shift; done; shift
cd -- "$1" 2>/dev/null || { echo nowd >&3; exit 126; }; shift
( exec "$@" ) 3>&-
echo "exit $?" >&3`

// outputGrace is how long Exec keeps delivering output after the command
// has exited, for background children that still hold its stdout or
// stderr. They keep running (in the sandbox, until Destroy); later output
// is dropped.
const outputGrace = time.Second

// BaseEnv is the environment every command starts with; the sandbox's and
// the request's variables override it.
var BaseEnv = map[string]string{
	"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME": "/root",
	"LANG": "C.UTF-8",
}

// envName is what a shell can export. Names outside it cannot pass through
// the runner.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkEnv(env map[string]string) error {
	for k, v := range env {
		if !envName.MatchString(k) {
			return errdefs.New(errdefs.ErrInvalidArgument,
				"environment variable name %q: the PRoot provider takes letters, digits and _ (not starting with a digit)", k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return errdefs.New(errdefs.ErrInvalidArgument, "environment variable %s contains a NUL byte", k)
		}
	}
	return nil
}

// prootArgs are PRoot's options for a sandbox: the private root file
// system, the host's kernel file systems and devices, and a private
// /dev/shm. findTracers recognises a sandbox's PRoot processes by the first
// three.
func prootArgs(rootfs string) []string {
	return []string{
		"-0", "-r", rootfs, // the sandbox's user appears as root and owns every file of its copy
		"-b", "/proc", "-b", "/dev", "-b", "/sys",
		"-b", filepath.Join(rootfs, "dev", "shm") + ":/dev/shm", // private, unlike the host's
		"-w", "/",
		"-v", "-1",
	}
}

// Exec runs req in the sandbox: a PRoot process of its own runs the runner
// script, which runs the command. Output streams to stdout and stderr as it
// is produced; the two writers are never called at once, nor after Exec
// returns. A timeout, a cancelled ctx or a failing writer kills the
// command's whole process tree: every process its PRoot traces, including
// children that left its process group or session.
//
// Why a PRoot per command rather than one agent running under PRoot: PRoot
// 5.1 (the version distributions ship) corrupts processes that a
// multi-threaded program starts concurrently with vfork, which is how Go's
// os/exec (and so the agent) starts every process; measured here, 2-20% of
// concurrent commands died of SIGSEGV. A PRoot started from outside, per
// command, is unaffected, and costs a few milliseconds.
func (p *Provider) Exec(ctx context.Context, id string, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	if err := checkExec(req); err != nil {
		return provider.ExitStatus{}, err
	}
	if req.Signals != nil {
		// Signalling the traced command but not the runner that reports
		// its status is not possible from outside PRoot.
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrUnimplemented, "exec: PRoot cannot signal a running command")
	}
	wd := req.WorkDir
	if wd == "" {
		wd = provider.DefaultWorkDir
	}
	wd, err := localguest.SandboxPath(wd)
	if err != nil {
		return provider.ExitStatus{}, fmt.Errorf("exec: working directory: %w", err)
	}
	sb, err := p.running(id)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	env := maps.Clone(sb.st.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, req.Env)
	args := append(prootArgs(sb.rootfs), "/bin/sh", "-c", runner, "sh")
	for _, k := range slices.Sorted(maps.Keys(env)) {
		args = append(args, k+"="+env[k])
	}
	args = append(append(args, "--", wd), req.Argv...)

	r, err := p.startCommand(sb, args, req.Stdin)
	if err != nil {
		return provider.ExitStatus{}, err
	}
	out := newSink(stdout, stderr)
	r.deliver(out)

	var timeout <-chan time.Time
	if req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var line string
	select {
	case line = <-r.status:
	case <-timeout:
		r.kill(p)
		r.finish(out, 0)
		sb.logf("exec %s: timed out after %s", req.Argv[0], req.Timeout)
		return provider.ExitStatus{ExitCode: -1, TimedOut: true, Duration: time.Since(r.started)},
			errdefs.New(errdefs.ErrExecTimeout, "command timed out after %s", req.Timeout)
	case <-ctx.Done():
		r.kill(p)
		r.finish(out, 0)
		sb.logf("exec %s: cancelled", req.Argv[0])
		return provider.ExitStatus{ExitCode: -1, Duration: time.Since(r.started)}, context.Cause(ctx)
	case <-out.failed:
		r.kill(p)
		r.finish(out, 0)
		return provider.ExitStatus{ExitCode: -1, Duration: time.Since(r.started)}, fmt.Errorf("exec: delivering output: %w", out.failure())
	}

	code, ok := 0, false
	switch {
	case line == "nowd":
		r.finish(out, outputGrace)
		return provider.ExitStatus{}, errdefs.New(errdefs.ErrInvalidArgument, "exec: working directory %s does not exist or is not a directory", wd)
	case strings.HasPrefix(line, "exit "):
		code, err = strconv.Atoi(strings.TrimPrefix(line, "exit "))
		ok = err == nil
	case line == "":
		// The runner died before it could report, which only a command
		// killing its parent, or PRoot failing to start it, does. PRoot
		// exits with the runner's status once nothing else runs.
		select {
		case <-r.exited:
			code, ok = exitCode(r.cmd.ProcessState), true
		case <-time.After(outputGrace):
		}
	}
	r.finish(out, outputGrace)
	st := provider.ExitStatus{ExitCode: code, Duration: time.Since(r.started)}
	if line == "" {
		// Destroy kills commands too: then that, not their end, is news.
		if err := p.gone(id, errdefs.New(errdefs.ErrProviderUnavailable, "exec in sandbox %s: the command was killed", id)); errors.Is(err, errdefs.ErrNotFound) {
			return provider.ExitStatus{ExitCode: -1, Duration: st.Duration}, err
		}
	}
	if !ok {
		return provider.ExitStatus{ExitCode: -1, Duration: st.Duration},
			errdefs.New(errdefs.ErrProviderUnavailable, "exec in sandbox %s: the command's runner ended without an exit status (%q)", id, line)
	}
	if err := out.failure(); err != nil {
		return st, fmt.Errorf("exec: delivering output: %w", err)
	}
	sb.logf("exec %s: exit %d in %s", req.Argv[0], code, st.Duration.Round(time.Millisecond))
	return st, nil
}

// checkExec rejects what no exec(2) could run.
func checkExec(req provider.ExecRequest) error {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return errdefs.New(errdefs.ErrInvalidArgument, "exec: empty command")
	}
	for i, a := range req.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return errdefs.New(errdefs.ErrInvalidArgument, "exec: argv[%d] contains a NUL byte", i)
		}
	}
	if req.Timeout < 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "exec: negative timeout %s", req.Timeout)
	}
	return checkEnv(req.Env)
}

// command is one command's PRoot process and its pipes.
type command struct {
	cmd            *exec.Cmd
	tracer         proc
	started        time.Time
	stdout, stderr *os.File // read ends
	status         chan string
	exited         chan struct{}
	copied         chan struct{}
}

// startCommand starts PRoot with args in its own process group, as the
// sandbox's uid, with the runner's status on descriptor 3. stdin, when
// set, is copied to the command's standard input (else the null device).
func (p *Provider) startCommand(sb *sandbox, args []string, stdin io.Reader) (*command, error) {
	var files []*os.File // every end, closed on failure
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	fail := func(err error) (*command, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, unwrapPath(err), "exec: starting proot")
	}
	outR, outW, err := pipe()
	if err != nil {
		return fail(err)
	}
	errR, errW, err := pipe()
	if err != nil {
		return fail(err)
	}
	stR, stW, err := pipe()
	if err != nil {
		return fail(err)
	}
	var inR, inW *os.File
	if stdin != nil {
		if inR, inW, err = pipe(); err != nil {
			return fail(err)
		}
	}
	cmd := exec.Command(p.prootPath, args...)
	if inR != nil {
		cmd.Stdin = inR
	}
	cmd.Dir = "/"
	cmd.Env = p.prootEnv()
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.ExtraFiles = []*os.File{stW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if sb.st.UID >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(sb.st.UID), Gid: uint32(sb.st.UID), Groups: []uint32{}}
	}
	r := &command{cmd: cmd, started: time.Now(), stdout: outR, stderr: errR,
		status: make(chan string, 1), exited: make(chan struct{}), copied: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	// Only the child holds the write ends now, so they read EOF when every
	// process that inherited them is gone.
	outW.Close()
	errW.Close()
	stW.Close()
	if inW != nil {
		inR.Close()
		go func() {
			_, _ = io.Copy(inW, stdin)
			inW.Close() // EOF for the command
		}()
	}
	r.tracer, err = identify(cmd.Process.Pid)
	if err != nil {
		// Exited and reaped already: no /proc entry. Nothing to kill.
		r.tracer = proc{}
	}
	sb.track(r.tracer)
	go func() {
		cmd.Wait()
		sb.untrack(r.tracer)
		close(r.exited)
		if inW != nil {
			inW.Close() // a copy blocked on a full pipe returns
		}
	}()
	go func() {
		defer stR.Close()
		r.status <- readLine(stR, 64)
	}()
	return r, nil
}

// prootEnv is the environment of the proot process itself: fixed, so that
// no request can change how the host runs it. Commands inherit it, under
// what the runner exports.
func (p *Provider) prootEnv() []string {
	var env []string
	for _, k := range slices.Sorted(maps.Keys(BaseEnv)) {
		env = append(env, k+"="+BaseEnv[k])
	}
	return append(env, p.loaderEnv...)
}

// deliver copies the command's output to out until the pipes close.
func (r *command) deliver(out *sink) {
	var wg sync.WaitGroup
	wg.Go(func() { out.copy(r.stdout, false) })
	wg.Go(func() { out.copy(r.stderr, true) })
	go func() {
		wg.Wait()
		close(r.copied)
	}()
}

// finish waits up to grace for the output to drain, then stops delivering
// it: after finish no writer is called.
func (r *command) finish(out *sink, grace time.Duration) {
	t := time.NewTimer(max(grace, 100*time.Millisecond))
	defer t.Stop()
	select {
	case <-r.copied:
	case <-t.C:
	}
	out.close()
	r.stdout.Close()
	r.stderr.Close()
}

// kill kills the command's whole process tree: every process its PRoot
// traces, then PRoot.
func (r *command) kill(p *Provider) {
	if !r.tracer.valid() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := killProcs(ctx, []proc{r.tracer}, -1); err != nil {
		p.log.Warn("cannot kill a command's processes", "err", err)
	}
}

// readLine reads up to max bytes, until a newline or EOF, and returns them
// without the newline.
func readLine(f io.Reader, max int) string {
	var b []byte
	buf := make([]byte, 1)
	for len(b) < max {
		n, err := f.Read(buf)
		if n > 0 {
			if buf[0] == '\n' {
				break
			}
			b = append(b, buf[0])
		}
		if err != nil {
			break
		}
	}
	return string(b)
}

// exitCode reports a process as a shell does: 128 + the signal that killed
// it.
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// sink delivers output to the caller's writers: one write at a time across
// both, none after close, and the first write error remembered (and
// signalled on failed) so the command can be stopped.
type sink struct {
	mu       sync.Mutex
	stdout   io.Writer
	stderr   io.Writer
	closed   bool
	err      error
	failed   chan struct{}
	failOnce sync.Once
}

var errSinkClosed = errors.New("output no longer delivered")

func newSink(stdout, stderr io.Writer) *sink {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	return &sink{stdout: stdout, stderr: stderr, failed: make(chan struct{})}
}

func (s *sink) write(p []byte, toStderr bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errSinkClosed
	}
	if s.err != nil {
		return s.err
	}
	w := s.stdout
	if toStderr {
		w = s.stderr
	}
	if _, err := w.Write(p); err != nil {
		s.err = err
		s.failOnce.Do(func() { close(s.failed) })
		return err
	}
	return nil
}

func (s *sink) copy(r io.Reader, toStderr bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if s.write(buf[:n], toStderr) != nil {
				// Keep draining so the command does not block on a full
				// pipe while it is being killed.
				_, _ = io.Copy(io.Discard, r)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *sink) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *sink) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}
