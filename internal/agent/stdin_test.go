package agent

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/stacyvm/stacyvm/internal/provider"
)

// TestExecUpgradeShortCommands runs many commands that end before the
// host has sent anything (no stdin, only a signal channel) on every
// transport: the exit frame must arrive although the agent may be done
// before the host's close-stdin frame, with input left unread.
func TestExecUpgradeShortCommands(t *testing.T) {
	for _, tr := range []struct {
		name  string
		start func(testing.TB, http.Handler) Dialer
	}{{"unix", startUnix}, {"tcp", startTCP}, {"hybrid-vsock", startHybridVsock}} {
		t.Run(tr.name, func(t *testing.T) {
			g, _ := newLocalGuest(t)
			c := newClient(t, tr.start(t, NewServer(g, ServerOptions{})))
			for i := range 100 {
				sigs := make(chan string)
				st, err := c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"true"}, Signals: sigs}, nil, nil)
				if err != nil || st.ExitCode != 0 {
					t.Fatalf("run %d: %+v, %v", i, st, err)
				}
				// Input the command never reads, then an immediate end.
				var out bytes.Buffer
				st, err = c.Exec(t.Context(), provider.ExecRequest{Argv: []string{"echo", "x"}, Stdin: strings.NewReader(strings.Repeat("y", 256<<10))}, &out, nil)
				if err != nil || st.ExitCode != 0 || out.String() != "x\n" {
					t.Fatalf("run %d with unread input: %+v, %v, %q", i, st, err, out.String())
				}
			}
		})
	}
}
