package orchestrator

import (
	"context"
	"maps"
	"sync"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// TerminalRequest is an interactive session as the API receives it.
type TerminalRequest struct {
	// Command is a shell string; "" starts the sandbox's login shell.
	Command    string
	Env        map[string]string
	WorkDir    string
	Rows, Cols uint16
}

// OpenTerminal starts an interactive session on a pseudo-terminal in a
// running sandbox. ctx bounds the start only. Reading from and writing to
// the terminal counts as activity (Touch), and an open terminal keeps its
// sandbox busy: the idle sweeper never freezes a session under its user.
// Closing it kills the session's processes.
func (m *Manager) OpenTerminal(ctx context.Context, id string, req TerminalRequest) (_ provider.Terminal, err error) {
	done := m.active(id)
	defer func() {
		if err != nil {
			done()
		}
	}()
	sb, p, err := m.guest(ctx, id, "open a terminal")
	if err != nil {
		return nil, err
	}
	tp, ok := p.(provider.Terminals)
	if !ok || !p.Capabilities().Terminal {
		return nil, errdefs.WithHint(errdefs.New(errdefs.ErrUnimplemented, "provider %s has no interactive terminals", p.Name()),
			"use exec, or spawn the sandbox on a provider whose capabilities list terminal")
	}
	preq := provider.TerminalRequest{WorkDir: req.WorkDir, Rows: req.Rows, Cols: req.Cols}
	if req.Command != "" {
		preq.Argv = provider.ShellArgv(req.Command)
	}
	preq.Env = maps.Clone(sb.Env)
	if len(req.Env) > 0 {
		if preq.Env == nil {
			preq.Env = map[string]string{}
		}
		maps.Copy(preq.Env, req.Env)
	}
	start := time.Now()
	term, err := tp.OpenTerminal(ctx, id, preq)
	m.cfg.Observer.Op(p.Name(), "terminal", time.Since(start), err)
	if err != nil {
		return nil, err
	}
	m.Touch(id)
	return &activeTerminal{Terminal: term, touch: func() { m.Touch(id) }, done: sync.OnceFunc(done)}, nil
}

// Touch records activity in a sandbox now. Terminals call it on every
// read and write, so that a session someone is typing into counts as use
// (idle timeouts read LastActivity).
func (m *Manager) Touch(id string) { m.activity.Store(id, m.now()) }

// LastActivity returns when Touch was last called for the sandbox.
func (m *Manager) LastActivity(id string) (time.Time, bool) {
	v, ok := m.activity.Load(id)
	if !ok {
		return time.Time{}, false
	}
	return v.(time.Time), true
}

// activeTerminal touches its sandbox on every read and write.
type activeTerminal struct {
	provider.Terminal
	touch func()
	done  func() // ends the session's activity; once
}

func (t *activeTerminal) Close() error {
	defer t.done()
	return t.Terminal.Close()
}

func (t *activeTerminal) Read(p []byte) (int, error) {
	n, err := t.Terminal.Read(p)
	if n > 0 {
		t.touch()
	}
	return n, err
}

func (t *activeTerminal) Write(p []byte) (int, error) {
	t.touch()
	return t.Terminal.Write(p)
}
