package proot

import (
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/proot/prootest"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

func TestTerminal(t *testing.T) {
	prootest.Require(t, prootest.Busybox)
	p := newProvider(t, prootest.StateDir(t))
	id := spawn(t, p, provider.Spec{})
	terminaltest.Run(t, terminaltest.ForSandbox(p, id))
}
