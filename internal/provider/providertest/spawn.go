package providertest

import (
	"context"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// Spawn spawns spec on p and destroys it when t ends.
func Spawn(t *testing.T, p provider.Provider, spec provider.Spec) provider.Info {
	t.Helper()
	info, err := p.Spawn(t.Context(), spec)
	if err != nil {
		t.Fatalf("Spawn: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Destroy(ctx, spec.ID); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return info
}
