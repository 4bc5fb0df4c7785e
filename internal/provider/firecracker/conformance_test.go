//go:build linux

package firecracker

import (
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// TestConformanceFakeVMM runs the whole provider conformance suite through
// the FAKE VMM: the provider's real code (image build, VMM API, vsock,
// snapshots, adoption) against a stand-in for Firecracker that runs the
// real agent. Every API request and reply is checked against
// Firecracker's description by the fake and, afterwards, here.
func TestConformanceFakeVMM(t *testing.T) {
	needEnv(t)
	entries := journal(t)
	providertest.Run(t, providertest.Harness{
		New: func(t *testing.T, stateDir string) provider.Provider {
			p, _ := newFake(t, stateDir)
			return p
		},
		Image: testEnv.image,
	})
	checkJournal(t, entries())
}

// checkJournal fails t for any request or reply the fake found off-spec.
func checkJournal(t *testing.T, lines []journalLine) {
	t.Helper()
	if len(lines) == 0 {
		t.Fatal("the fake VMM journaled no request")
	}
	for _, l := range lines {
		if l.Invalid != "" {
			t.Errorf("%s %s %s: request violates Firecracker's API description: %s", l.VMM, l.Method, l.Path, l.Invalid)
		}
		if l.BadReply != "" {
			t.Errorf("%s %s %s: the fake's reply violates the API description: %s", l.VMM, l.Method, l.Path, l.BadReply)
		}
		if l.Status/100 != 2 {
			t.Errorf("%s %s %s %s: status %d", l.VMM, l.Method, l.Path, l.Body, l.Status)
		}
	}
}
