package mock

import (
	"context"
	"maps"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// OpenTerminal runs a terminal session on the host (the mock isolates
// nothing) with the sandbox's environment, in its directory.
func (g *sandboxGuest) OpenTerminal(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
	if len(g.sb.st.Env) > 0 {
		env := maps.Clone(g.sb.st.Env)
		maps.Copy(env, req.Env)
		req.Env = env
	}
	g.sb.logf("terminal started: %q", req.Argv)
	t, err := g.sb.guest.OpenTerminal(ctx, req)
	return t, g.fix(err)
}
