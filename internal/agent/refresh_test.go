package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
)

// modeGuest records the modes that reach the Guest behind the agent.
type modeGuest struct {
	provider.Guest
	mu    sync.Mutex
	modes []fs.FileMode
}

func (g *modeGuest) record(m fs.FileMode) {
	g.mu.Lock()
	g.modes = append(g.modes, m)
	g.mu.Unlock()
}

func (g *modeGuest) WriteFile(_ context.Context, _ string, r io.Reader, mode fs.FileMode) error {
	io.Copy(io.Discard, r)
	g.record(mode)
	return nil
}

func (g *modeGuest) Chmod(_ context.Context, _ string, mode fs.FileMode) error {
	g.record(mode)
	return nil
}

func (g *modeGuest) take() []fs.FileMode {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.modes
	g.modes = nil
	return m
}

// TestClientModes: both spellings of the set-ID and sticky bits reach the
// Guest intact, and a mode the wire cannot carry is refused by the client
// instead of being sent without its extra bits.
func TestClientModes(t *testing.T) {
	t.Parallel()
	g := &modeGuest{}
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{})))
	ops := map[string]func(fs.FileMode) error{
		"chmod": func(m fs.FileMode) error { return c.Chmod(t.Context(), "/f", m) },
		"write": func(m fs.FileMode) error { return c.WriteFile(t.Context(), "/f", strings.NewReader("x"), m) },
	}
	for name, op := range ops {
		for _, tt := range []struct{ in, want fs.FileMode }{
			{0o640, 0o640},
			{0o4755, fs.ModeSetuid | 0o755},
			{0o3770, fs.ModeSetgid | fs.ModeSticky | 0o770},
			{fs.ModeSetuid | 0o700, fs.ModeSetuid | 0o700},
		} {
			if err := op(tt.in); err != nil {
				t.Errorf("%s(%#o): %v", name, uint32(tt.in), err)
				continue
			}
			if got := g.take(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("%s(%#o): the guest got %v, want %v", name, uint32(tt.in), got, tt.want)
			}
		}
		for _, bad := range []fs.FileMode{0o10000, fs.ModeDir | 0o755, fs.ModeAppend | 0o644} {
			if err := op(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("%s(%#o) = %v, want invalid argument", name, uint32(bad), err)
			}
			if got := g.take(); len(got) != 0 {
				t.Errorf("%s(%#o) reached the guest as %v", name, uint32(bad), got)
			}
		}
	}
}

type refreshCall struct {
	entropy []byte
	now     time.Time
}

// refreshRecorder is a ServerOptions.Refresh that records its calls and
// fails with err.
type refreshRecorder struct {
	mu    sync.Mutex
	calls []refreshCall
	err   error
}

func (r *refreshRecorder) refresh(_ context.Context, entropy []byte, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, refreshCall{bytes.Clone(entropy), now})
	return r.err
}

func (r *refreshRecorder) take() []refreshCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func TestRefresh(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	rec := &refreshRecorder{}
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{Refresh: rec.refresh, MaxJSONBytes: 16 << 10})))

	entropy := make([]byte, 64)
	rand.Read(entropy)
	now := time.Now()
	if err := c.Refresh(t.Context(), entropy, now); err != nil {
		t.Fatal(err)
	}
	calls := rec.take()
	if len(calls) != 1 || !bytes.Equal(calls[0].entropy, entropy) || calls[0].now.UnixNano() != now.UnixNano() {
		t.Fatalf("the refresher got %+v, want the 64 bytes sent and %v", calls, now)
	}

	for _, n := range []int{0, 31, MaxRefreshEntropy + 1} {
		if err := c.Refresh(t.Context(), make([]byte, n), now); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Refresh with %d bytes: %v, want invalid argument", n, err)
		}
	}
	if err := c.Refresh(t.Context(), entropy[:MinRefreshEntropy], time.Unix(0, 0)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Refresh to 1970: %v, want invalid argument", err)
	}
	for _, body := range []string{
		`{"entropy":"!!not base64!!","unix_nanos":1}`,
		`{"entropy":"` + strings.Repeat("A", 44) + `"}`,
		`{"entropy":"` + strings.Repeat("A", 44) + `","unix_nanos":1,"extra":true}`,
		`[]`,
	} {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, baseURL+pathRefresh, strings.NewReader(body))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		err = c.replyErr(t.Context(), resp)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("body %s: %s, %v; want 400 invalid argument", body, resp.Status, err)
		}
	}
	if calls := rec.take(); len(calls) != 0 {
		t.Errorf("invalid requests reached the refresher: %+v", calls)
	}

	// The refresher's own failure travels with its class.
	rec.err = errdefs.New(errdefs.ErrResourceLimit, "no")
	if err := c.Refresh(t.Context(), entropy, now); !errors.Is(err, errdefs.ErrResourceLimit) {
		t.Errorf("failing refresher: %v", err)
	}
}

// TestRefreshUnimplemented: an agent that does not manage its guest, like
// one that predates the route, answers unimplemented.
func TestRefreshUnimplemented(t *testing.T) {
	t.Parallel()
	g, _ := newLocalGuest(t)
	c := newClient(t, startUnix(t, NewServer(g, ServerOptions{})))
	if err := c.Refresh(t.Context(), make([]byte, 64), time.Now()); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("Refresh = %v, want unimplemented", err)
	}
}
