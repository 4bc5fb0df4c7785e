//go:build linux

package firecracker

import "testing"

// FakeForTest returns the configuration of a provider on the FAKE VMM and
// the busybox image directory, for tests outside the package (the server
// stack).
func FakeForTest(t testing.TB, stateDir string) (Config, string) {
	cfg, _ := fakeConfig(t, stateDir)
	return cfg, testEnv.image
}

// SandboxDirForTest is the state directory of sandbox id under p.
func SandboxDirForTest(p *Provider, id string) string {
	return p.sbDir + "/" + handleFor(id)
}
