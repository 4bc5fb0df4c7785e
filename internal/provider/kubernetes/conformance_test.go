package kubernetes

import (
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// TestConformance runs the shared provider suite on the cluster's default
// runtime (runc), and on the RuntimeClass the cluster offers (gVisor in
// scripts/test) when there is one.
func TestConformance(t *testing.T) {
	for _, rc := range runtimeClasses() {
		t.Run(rcName(rc), func(t *testing.T) {
			needCluster(t)
			providertest.Run(t, providertest.Harness{
				Image: busyboxImage,
				New: func(t *testing.T, _ string) provider.Provider {
					return newProvider(t, func(c *Config) { c.RuntimeClass = rc })
				},
			})
		})
	}
}
