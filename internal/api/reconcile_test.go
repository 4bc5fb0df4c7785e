package api

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/orchestrator"
)

// TestErrorSandboxRecoversWhileServing: through the real stack, a sandbox
// whose provider fell ill is in state error, keeps its place under
// max_sandboxes, and is running again once the provider recovers, with no
// restart.
func TestErrorSandboxRecoversWhileServing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *orchestrator.Config) {
		c.MaxSandboxes = 1
		c.ReaperInterval = 20 * time.Millisecond
		c.ReconcileInterval = time.Hour // only the recovery triggers it
	}))
	sb := e.spawn(nil)
	e.mock.SetHealth(errors.New("runtime is down"))
	if _, err := e.m.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	var got sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, &got)
	if got.State != "error" {
		t.Fatalf("state after the provider fell ill: %s", got.State)
	}

	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.m.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	time.Sleep(60 * time.Millisecond) // probes see it down
	e.mock.SetHealth(nil)
	// Before the recovery is noticed or after, the error sandbox holds the
	// only place: a second spawn is refused, never a 201.
	resp := e.call("POST", "/api/v1/sandboxes", nil)
	if resp.StatusCode == http.StatusCreated {
		t.Fatal("a sandbox in state error did not count toward max_sandboxes")
	}
	readAll(t, resp)
	e.waitFor("the sandbox to be running again", func() bool {
		var cur sandboxJSON
		e.expectJSON(e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil), http.StatusOK, &cur)
		return cur.State == "running"
	})
	var res struct {
		ExitCode int `json:"exit_code"`
	}
	e.expectJSON(e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", map[string]string{"command": "true"}), http.StatusOK, &res)
}
