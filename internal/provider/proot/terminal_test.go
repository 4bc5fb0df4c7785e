package proot

import (
	"bytes"
	"context"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/proot/prootest"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

func TestTerminal(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	id := spawn(t, p, provider.Spec{})
	terminaltest.Run(t, terminaltest.Config{
		Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
			return p.OpenTerminal(ctx, id, req)
		},
		Running: terminaltest.RunningByExec(func(ctx context.Context, script string) (string, error) {
			var out bytes.Buffer
			_, err := p.Exec(ctx, id, provider.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}, &out, nil)
			return out.String(), err
		}),
		FullScreen: []string{"top"},
		Editor:     []string{"vi"},
	})
}
