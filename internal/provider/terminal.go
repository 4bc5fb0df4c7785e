package provider

import (
	"context"
	"slices"

	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// TerminalRequest starts an interactive session on a pseudo-terminal.
type TerminalRequest struct {
	// Argv is the program; empty means the sandbox's shell (bash when it
	// has one, else sh), started as a login shell.
	Argv    []string
	Env     map[string]string
	WorkDir string // sandbox path; "" means DefaultWorkDir
	// Rows and Cols are the terminal's first size; 0 means 24×80.
	Rows, Cols uint16
}

// Terminal is one running session. Read returns what the program writes
// to the terminal (io.EOF once it has exited and its output is drained),
// Write types into it. Close ends the session: every process of it is
// killed. A Terminal is safe for one reader and one writer at once, and
// Resize, Signal and Close may be called at any time.
type Terminal interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Resize(rows, cols uint16) error
	// Signal sends a signal (a name of TerminalSignals) to the terminal's
	// foreground process group, as the terminal driver does for Ctrl-C.
	Signal(name string) error
	// Wait returns once the session's program has exited, with its status.
	// Call it after Read has returned io.EOF.
	Wait() (ExitStatus, error)
	Close() error
}

// TerminalGuest is a Guest that runs terminals.
type TerminalGuest interface {
	OpenTerminal(ctx context.Context, req TerminalRequest) (Terminal, error)
}

// Terminals is implemented by providers whose Capabilities say Terminal.
// ctx bounds the start only; the session lives until it ends or is closed.
type Terminals interface {
	OpenTerminal(ctx context.Context, id string, req TerminalRequest) (Terminal, error)
}

// TerminalSignals are the signals a terminal session can be sent, by name.
var TerminalSignals = []string{"INT", "QUIT", "TERM", "KILL", "HUP", "TSTP", "CONT", "USR1", "USR2", "WINCH"}

// CheckTerminalSignal rejects a signal name outside TerminalSignals.
func CheckTerminalSignal(name string) error {
	if !slices.Contains(TerminalSignals, name) {
		return errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "unknown signal %q", name),
			"send one of INT, QUIT, TERM, KILL, HUP, TSTP, CONT, USR1, USR2, WINCH")
	}
	return nil
}

// DefaultTerminalSize is the size of a terminal whose request gives none.
const (
	DefaultTerminalRows = 24
	DefaultTerminalCols = 80
)

// OpenTerminal opens a terminal in the sandbox's Guest, for providers that
// embed GuestRouter and whose guests implement TerminalGuest.
func (r GuestRouter) OpenTerminal(ctx context.Context, id string, req TerminalRequest) (Terminal, error) {
	g, err := r.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	tg, ok := g.(TerminalGuest)
	if !ok {
		return nil, errdefs.New(errdefs.ErrUnimplemented, "this sandbox's guest has no terminals")
	}
	return tg.OpenTerminal(ctx, req)
}
