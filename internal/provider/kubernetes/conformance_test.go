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
	classes := []string{""}
	if env.RuntimeClass != "" {
		classes = append(classes, env.RuntimeClass)
	}
	for _, rc := range classes {
		name := "default"
		if rc != "" {
			name = rc
		}
		t.Run(name, func(t *testing.T) {
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
