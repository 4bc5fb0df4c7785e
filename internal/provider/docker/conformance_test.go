package docker

import (
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// TestConformance runs the shared provider suite on every runtime with the
// busybox image, and on runc and runsc with a full Debian userland too.
func TestConformance(t *testing.T) {
	cases := []struct{ runtime, name, image string }{
		{"runc", "busybox", busyboxImage},
		{"runc", "debian", debianImage},
		{"crun", "busybox", busyboxImage},
		{"runsc", "busybox", busyboxImage},
		{"runsc", "debian", debianImage},
	}
	for _, c := range cases {
		t.Run(c.runtime+"/"+c.name, func(t *testing.T) {
			needRuntime(t, c.runtime)
			needImage(t, c.image)
			providertest.Run(t, providertest.Harness{
				Image: c.image,
				New: func(t *testing.T, stateDir string) provider.Provider {
					return newProvider(t, c.runtime, func(cfg *Config) { cfg.StateDir = stateDir })
				},
			})
		})
	}
}
