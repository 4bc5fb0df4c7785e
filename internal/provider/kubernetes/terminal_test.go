package kubernetes

import (
	"bytes"
	"context"
	"testing"
	"time"

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
			if _, err := p.Spawn(t.Context(), provider.Spec{ID: id, Image: busyboxImage}); err != nil {
				t.Fatalf("Spawn: %v", err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := p.Destroy(ctx, id); err != nil {
					t.Errorf("Destroy: %v", err)
				}
			})
			terminaltest.Run(t, terminaltest.Config{
				Open: func(ctx context.Context, req provider.TerminalRequest) (provider.Terminal, error) {
					return p.OpenTerminal(ctx, id, req)
				},
				Running: terminaltest.RunningByExec(func(ctx context.Context, script string) (string, error) {
					var out bytes.Buffer
					_, err := p.Exec(ctx, id, provider.ExecRequest{Argv: []string{"/bin/sh", "-c", script}}, &out, nil)
					return out.String(), err
				}),
				FullScreen: []string{"top"},
				Editor:     []string{"vi"},
			})
		})
	}
}
