package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/errdefs"
	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/mock"
)

func TestScrubText(t *testing.T) {
	t.Parallel()
	sc := newScrubber([]string{"/srv/stacyvm/data", "/srv/stacyvm/db.sqlite", "/tmp", "relative/dir", "/"})
	for _, tc := range []struct{ in, want string }{
		{"mkdir /srv/stacyvm/data/sb-1/rootfs: permission denied", "mkdir [host path]: permission denied"},
		{`open "/srv/stacyvm/data/x y"`, `open "[host path] y"`},
		{"/srv/stacyvm/data", "[host path]"},
		{"a /srv/stacyvm/db.sqlite-wal b", "a [host path] b"},
		{"dial unix /var/run/docker.sock: connect: refused", "dial unix [host path]: connect: refused"},
		{"Error response from daemon: /var/lib/docker/overlay2/abc/merged: busy", "Error response from daemon: [host path]: busy"},
		{"two: /srv/stacyvm/data/a, /srv/stacyvm/data/b", "two: [host path], [host path]"},
		// Sandbox paths, and directories too broad to list, stay.
		{"open /workspace/x: no such file", "open /workspace/x: no such file"},
		{"/tmp/foo and /srv/other", "/tmp/foo and /srv/other"},
		{"", ""},
	} {
		if got := sc.text(tc.in); got != tc.want {
			t.Errorf("text(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// leakyProvider fails the way real providers fail: spawn with a host path
// in a typed error and in plain text; exec mid-stream with a host path in
// plain text (the type lost on the way, as over a wire).
type leakyProvider struct {
	*mock.Provider
	dir string
}

func (p leakyProvider) Spawn(ctx context.Context, spec provider.Spec) (provider.Info, error) {
	if spec.Image == "typed" {
		return provider.Info{}, fmt.Errorf("prepare rootfs: %w",
			&fs.PathError{Op: "mkdir", Path: filepath.Join(p.dir, spec.ID, "rootfs"), Err: syscall.EACCES})
	}
	if spec.Image == "text" {
		return provider.Info{}, errors.New("prepare rootfs: mkdir " + filepath.Join(p.dir, spec.ID, "rootfs") + ": permission denied")
	}
	return p.Provider.Spawn(ctx, spec)
}

func (p leakyProvider) Exec(ctx context.Context, id string, req provider.ExecRequest, stdout, stderr io.Writer) (provider.ExitStatus, error) {
	st, err := p.Provider.Exec(ctx, id, req, stdout, stderr)
	if err != nil {
		return st, err
	}
	return st, errdefs.New(errdefs.ErrProviderUnavailable, "agent: read %s: connection reset", filepath.Join(p.dir, id, "agent.sock"))
}

// TestNoHostPathReachesClients: through the real server, every message a
// client sees (error bodies, last_error of a failed sandbox, the conflict
// that quotes it, stream error frames, WebSocket frames, event data,
// provider problems) is free of the server's host paths, and says where
// one was.
func TestNoHostPathReachesClients(t *testing.T) {
	t.Parallel()
	var leaky leakyProvider
	e := newEnv(t, func(s *envSetup) {
		dir := filepath.Join(s.dir, "leaky")
		mp, err := mock.New(mock.Options{Dir: dir, Name: "leaky"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = mp.Close() })
		leaky = leakyProvider{mp, dir}
		s.reg.Register(leaky)
	})
	leaked := func(what string, b []byte) {
		t.Helper()
		if strings.Contains(string(b), leaky.dir) || strings.Contains(string(b), filepath.Dir(e.mockDir)) {
			t.Errorf("%s leaks a host path: %s", what, b)
		}
	}

	// Events: subscribed before the failures, the sandbox.error events
	// carry the reason, scrubbed.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/events", nil)
	evResp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer evResp.Body.Close()
	rd := bufio.NewReader(evResp.Body)
	if line, err := rd.ReadString('\n'); err != nil || !strings.HasPrefix(line, ": connected") {
		t.Fatalf("events: %q, %v", line, err)
	}

	// A spawn that fails with a typed error (generic message) and with
	// plain text (scrubbed text).
	for _, image := range []string{"typed", "text"} {
		resp := e.call("POST", "/api/v1/sandboxes", map[string]string{"provider": "leaky", "image": image})
		b := readAll(t, resp)
		if resp.StatusCode < 400 || resp.StatusCode == 500 && !strings.Contains(string(b), "request id") {
			t.Fatalf("spawn %s: %d %s", image, resp.StatusCode, b)
		}
		leaked("spawn error "+image, b)
	}
	// The failed records: last_error is shown, scrubbed.
	var failed []sandboxJSON
	e.expectJSON(e.call("GET", "/api/v1/sandboxes?state=error", nil), 200, &failed)
	if len(failed) != 2 {
		t.Fatalf("%d failed sandboxes, want 2", len(failed))
	}
	for _, sb := range failed {
		if sb.Error == "" || !strings.Contains(sb.Error, hostPathMark) {
			t.Errorf("sandbox %s error %q: want the reason with %s in place of the path", sb.ID, sb.Error, hostPathMark)
		}
		resp := e.call("GET", "/api/v1/sandboxes/"+sb.ID, nil)
		leaked("GET sandbox", readAll(t, resp))
		// A request on it quotes its error in a 409.
		resp = e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", map[string]string{"command": "true"})
		b := readAll(t, resp)
		leaked("exec on a failed sandbox", b)
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), hostPathMark) {
			t.Errorf("exec on a failed sandbox: %d %s", resp.StatusCode, b)
		}
	}

	// Stream error frames, NDJSON and WebSocket.
	sb := e.spawn(map[string]string{"provider": "leaky"})
	resp := e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"echo hi","stream":true}`)
	out, _, last := readStream(t, bufio.NewReader(resp.Body))
	resp.Body.Close()
	if out != "hi\n" || last.Type != "error" || !strings.Contains(last.Message, hostPathMark) || strings.Contains(last.Message, leaky.dir) {
		t.Errorf("NDJSON: output %q, last frame %+v", out, last)
	}
	resp = e.call("POST", "/api/v1/sandboxes/"+sb.ID+"/exec", `{"command":"echo hi"}`)
	leaked("buffered exec error", readAll(t, resp))

	errorsSeen := 0
	for errorsSeen < 2 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("events: %v after %d error events", err, errorsSeen)
		}
		if !strings.HasPrefix(line, "data: ") || !strings.Contains(line, `"sandbox.error"`) {
			continue
		}
		errorsSeen++
		leaked("event", []byte(line))
		if !strings.Contains(line, hostPathMark) {
			t.Errorf("error event without its (scrubbed) reason: %s", line)
		}
	}

	// A provider's problem.
	leaky.SetHealth(errors.New("cannot open " + filepath.Join(leaky.dir, "state.json") + ": no space left"))
	var prov struct {
		Problem string `json:"problem"`
	}
	e.expectJSON(e.call("GET", "/api/v1/providers/leaky", nil), 200, &prov)
	if prov.Problem == "" || strings.Contains(prov.Problem, leaky.dir) || !strings.Contains(prov.Problem, hostPathMark) {
		t.Errorf("provider problem %q", prov.Problem)
	}
}
