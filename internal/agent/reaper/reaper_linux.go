package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// Config describes the child Supervise runs.
type Config struct {
	// Path and Args (Args[0] included) of the child program.
	Path string
	Args []string
	// Env of the child; nil means this process's environment.
	Env []string
	// Files are the child's stdin, stdout and stderr; nil means ours, which
	// a stdio-mode agent needs.
	Files []*os.File
	// Forward lists the signals passed on to the child; nil means SIGTERM
	// and SIGINT.
	Forward []os.Signal
	// OnReap, if set, is called for every process reaped other than the
	// child (orphans that were reparented to this process).
	OnReap func(pid int, status unix.WaitStatus)
	// Logger receives forwarding and reaping events; nil discards them.
	Logger *slog.Logger
}

// Supervise starts the child, forwards signals to it, and reaps every
// process that exits until the child does. It returns the child's exit
// code, or 128+signal when a signal killed it, as a shell reports it. When
// ctx ends the child is sent SIGTERM and still waited for.
//
// The calling process must not run other children that something else
// waits for: Supervise collects any of them. It is meant for a process
// that is PID 1 or a subreaper (PR_SET_CHILD_SUBREAPER), so that orphans
// come to it.
func Supervise(ctx context.Context, cfg Config) (int, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	forward := cfg.Forward
	if forward == nil {
		forward = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	files := cfg.Files
	if files == nil {
		files = []*os.File{os.Stdin, os.Stdout, os.Stderr}
	}
	env := cfg.Env
	if env == nil {
		env = os.Environ()
	}

	// Subscribe before the child exists so that no signal sent right after
	// the start is lost.
	sigc := make(chan os.Signal, 8)
	signal.Notify(sigc, forward...)
	defer signal.Stop(sigc)

	proc, err := os.StartProcess(cfg.Path, cfg.Args, &os.ProcAttr{Env: env, Files: files})
	if err != nil {
		return 0, fmt.Errorf("reaper: starting %s: %w", cfg.Path, err)
	}
	// proc is never Wait()ed: the loop below reaps it with wait4 like
	// every other process, and os.Process keeps a pidfd, so forwarding a
	// signal can never hit a recycled PID.
	child := proc.Pid
	log.Debug("supervising", "child", child)

	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				// ECHILD: the child is gone and nobody saw it exit,
				// which only happens if something else reaped it.
				done <- result{-1, fmt.Errorf("reaper: wait4: %w", err)}
				return
			}
			if pid == child {
				done <- result{ExitCode(ws), nil}
				return
			}
			log.Debug("reaped orphan", "pid", pid, "status", ExitCode(ws))
			if cfg.OnReap != nil {
				cfg.OnReap(pid, ws)
			}
		}
	}()

	ctxDone := ctx.Done()
	for {
		select {
		case r := <-done:
			return r.code, r.err
		case s := <-sigc:
			log.Debug("forwarding signal", "signal", s, "child", child)
			if err := proc.Signal(s); err != nil && !errors.Is(err, os.ErrProcessDone) {
				log.Warn("forwarding signal failed", "signal", s, "err", err)
			}
		case <-ctxDone:
			ctxDone = nil
			_ = proc.Signal(syscall.SIGTERM)
		}
	}
}

// ExitCode is the status a shell would report for ws: the exit code, or
// 128 plus the number of the signal that killed the process.
func ExitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return -1
}
