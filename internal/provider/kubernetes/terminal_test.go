package kubernetes

import (
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
	"github.com/stacyvm/stacyvm/internal/provider/terminaltest"
)

// TestTerminal runs the terminal suite in a pod on the cluster, on each
// runtime it offers: the agent's terminal protocol over the API server's
// exec stream.
func TestTerminal(t *testing.T) {
	for _, rc := range runtimeClasses() {
		t.Run(rcName(rc), func(t *testing.T) {
			p := newProvider(t, func(c *Config) { c.RuntimeClass = rc })
			if !p.Capabilities().Terminal {
				t.Fatal("the provider does not declare terminals")
			}
			id := providertest.NewID()
			providertest.Spawn(t, p, provider.Spec{ID: id, Image: busyboxImage})
			terminaltest.Run(t, terminaltest.ForSandbox(p, id))
		})
	}
}
