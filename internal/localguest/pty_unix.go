//go:build unix

package localguest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// closeWait bounds how long Close waits for the killed session's leader to
// be reaped.
const closeWait = 5 * time.Second

// OpenTerminal starts req on a new pseudo-terminal, as the leader of a new
// session whose controlling terminal it is. Closing the Terminal kills
// every process of that session; so does the leader's exit (a closed
// terminal window hangs up its jobs too).
func (g *Guest) OpenTerminal(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, a := range req.Argv {
		if strings.ContainsRune(a, 0) {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "terminal: argument contains a NUL byte")
		}
	}
	extra := map[string]string{"TERM": "xterm-256color"}
	for k, v := range req.Env {
		extra[k] = v
	}
	env, err := mergeEnv(g.env, extra)
	if err != nil {
		return nil, err
	}
	dir, err := g.workDir(req.WorkDir)
	if err != nil {
		return nil, err
	}
	argv := req.Argv
	if len(argv) == 0 {
		argv = []string{"/bin/sh", "-l"}
		if _, code, _ := lookPath("bash", envValue(env, "PATH"), dir); code == 0 {
			argv = []string{"bash", "-l"}
		}
	}
	if argv[0] == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "terminal: empty command")
	}
	prog, code, msg := lookPath(argv[0], envValue(env, "PATH"), dir)
	if code != 0 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "terminal: %s: %s", argv[0], msg)
	}
	cmd := exec.Command(prog)
	cmd.Args = slices.Clone(argv)
	cmd.Env = env
	cmd.Dir = dir
	t, err := StartPTY(cmd, req.Rows, req.Cols, nil, killSession, g.start)
	if err != nil {
		if code, msg, ok := startFailure(err); ok {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "terminal: %s: %s (exit %d)", argv[0], msg, code)
		}
		return nil, err
	}
	go func() {
		<-t.done
		g.finished(t.Pid())
	}()
	return t, nil
}

// PTY is a provider.Terminal over a process started on a pseudo-terminal
// by StartPTY. The PRoot provider uses it too.
type PTY struct {
	master  *os.File
	cmd     *exec.Cmd
	kill    func(pid int)
	started time.Time

	done   chan struct{}
	status provider.ExitStatus
	err    error

	closeOnce sync.Once
}

var _ provider.Terminal = (*PTY)(nil)

// StartPTY starts cmd on a new pseudo-terminal of rows×cols (24×80 when 0)
// as a session leader with the terminal as its controlling terminal and
// standard streams. cred, when set, is the process's identity (the
// terminal is given to that user). kill(pid of the leader) must kill
// every process of the session; it runs on Close and once the leader has exited. start, when
// set, starts cmd in place of cmd.Start (localguest records the process
// group with it).
func StartPTY(cmd *exec.Cmd, rows, cols uint16, cred *syscall.Credential, kill func(pid int), start func(*exec.Cmd) error) (*PTY, error) {
	if rows == 0 || cols == 0 {
		rows, cols = provider.DefaultTerminalRows, provider.DefaultTerminalCols
	}
	master, tty, err := openPTY()
	if err != nil {
		return nil, errdefs.Wrap(errdefs.ErrProviderUnavailable, err, "terminal: opening a pseudo-terminal")
	}
	defer tty.Close() // the child has its own copy once started
	if err := setSize(master, rows, cols); err != nil {
		master.Close()
		return nil, fmt.Errorf("terminal: setting its size: %w", err)
	}
	if cred != nil {
		if err := tty.Chown(int(cred.Uid), -1); err != nil {
			master.Close()
			return nil, fmt.Errorf("terminal: giving it to uid %d: %w", cred.Uid, err)
		}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// Setctty with Ctty 0 makes the child's standard input, the terminal,
	// its controlling terminal; Setsid gives it a session of its own, so
	// job control (Ctrl-C to the foreground job only) works.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Credential: cred}
	if start == nil {
		start = (*exec.Cmd).Start
	}
	t := &PTY{master: master, cmd: cmd, kill: kill, started: time.Now(), done: make(chan struct{})}
	if err := start(cmd); err != nil {
		master.Close()
		return nil, err
	}
	go t.wait()
	return t, nil
}

// Pid is the session leader's process ID (also its session and process
// group ID).
func (t *PTY) Pid() int { return t.cmd.Process.Pid }

func (t *PTY) wait() {
	err := t.cmd.Wait()
	st := provider.ExitStatus{ExitCode: -1, Duration: time.Since(t.started)}
	if t.cmd.ProcessState != nil {
		st.ExitCode = exitCode(t.cmd.ProcessState)
	}
	if err != nil {
		if _, ok := errors.AsType[*exec.ExitError](err); ok {
			err = nil
		}
	}
	t.status, t.err = st, err
	// The leader is gone: hang up on the rest of its session, which also
	// lets Read reach the end once the terminal's buffer is drained.
	t.kill(t.Pid())
	close(t.done)
}

// Read returns the terminal's output; io.EOF once nothing holds the
// terminal any more and its output has been read.
func (t *PTY) Read(p []byte) (int, error) {
	n, err := t.master.Read(p)
	if err != nil && (errors.Is(err, syscall.EIO) || errors.Is(err, os.ErrClosed)) {
		err = io.EOF
	}
	return n, err
}

func (t *PTY) Write(p []byte) (int, error) { return t.master.Write(p) }

func (t *PTY) Resize(rows, cols uint16) error {
	if rows == 0 || cols == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "terminal: size %dx%d: rows and cols must be positive", rows, cols)
	}
	if err := setSize(t.master, rows, cols); err != nil {
		return fmt.Errorf("terminal: resize: %w", err)
	}
	return nil
}

// Signal sends the signal to the terminal's foreground process group, as
// the terminal driver does for Ctrl-C, or to the leader's group when the
// terminal cannot tell.
func (t *PTY) Signal(name string) error {
	if err := provider.CheckTerminalSignal(name); err != nil {
		return err
	}
	sig := unix.SignalNum("SIG" + name)
	if sig == 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "terminal: signal %s does not exist here", name)
	}
	// SyscallConn, not Fd: Fd would put the terminal in blocking mode, and
	// Close could then no longer interrupt a Read.
	rc, cerr := t.master.SyscallConn()
	// Where the line discipline makes signals from keys, type the key:
	// the driver then signals the foreground job exactly as for a person
	// at the keyboard. gVisor cannot tell the foreground group through
	// TIOCGPGRP, so this is also the path that works everywhere.
	if cerr == nil {
		var key byte
		_ = rc.Control(func(fd uintptr) { key = signalKey(int(fd), sig) })
		if key != 0 {
			if _, err := t.master.Write([]byte{key}); err != nil {
				return fmt.Errorf("terminal: signal %s: %w", name, err)
			}
			return nil
		}
	}
	pgrp, err := 0, error(nil)
	if cerr == nil {
		_ = rc.Control(func(fd uintptr) { pgrp, err = unix.IoctlGetInt(int(fd), unix.TIOCGPGRP) })
	}
	if err != nil || pgrp <= 0 {
		pgrp = t.Pid()
	}
	if err := syscall.Kill(-pgrp, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("terminal: signal %s: %w", name, err)
	}
	return nil
}

// Wait returns the leader's exit status once it has exited.
func (t *PTY) Wait() (provider.ExitStatus, error) {
	<-t.done
	return t.status, t.err
}

// Close kills the session and releases the terminal.
func (t *PTY) Close() error {
	t.closeOnce.Do(func() {
		t.kill(t.Pid())
		timer := time.NewTimer(closeWait)
		defer timer.Stop()
		select {
		case <-t.done:
		case <-timer.C:
		}
		t.master.Close()
	})
	return nil
}

// openPTY opens a terminal pair whose master end is non-blocking, so that
// Close interrupts a Read in progress (pty.Open's is blocking).
func openPTY() (master, tty *os.File, err error) {
	m, tty, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	fd, err := unix.Dup(int(m.Fd()))
	if err != nil {
		tty.Close()
		return nil, nil, err
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		tty.Close()
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), m.Name()), tty, nil
}

func setSize(master *os.File, rows, cols uint16) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ierr
}
