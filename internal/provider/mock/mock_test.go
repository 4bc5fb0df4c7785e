package mock_test

import (
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

func newMock(t *testing.T, dir string) *mock.Provider {
	t.Helper()
	p, err := mock.New(mock.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		New:   func(t *testing.T, dir string) provider.Provider { return newMock(t, dir) },
		Image: "stacyvm/mock-image:test",
	})
}

// BenchmarkPauseResume reports p50/p95/p99 of Pause and Resume:
//
//	go test -run '^$' -bench PauseResume -benchtime 50x ./internal/provider/mock/
func BenchmarkPauseResume(b *testing.B) {
	p, err := mock.New(mock.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	providertest.BenchPauseResume(b, p, "stacyvm/mock-image:test")
}
