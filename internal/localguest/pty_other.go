//go:build !unix

package localguest

import (
	"context"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// OpenTerminal is unimplemented without Unix pseudo-terminals.
func (g *Guest) OpenTerminal(context.Context, provider.TerminalRequest) (provider.Terminal, error) {
	return nil, errdefs.New(errdefs.ErrUnimplemented, "terminals need a Unix host")
}
