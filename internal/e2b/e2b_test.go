package e2b_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/config"
	"github.com/stacyvm/stacyvm/internal/e2b"
	"github.com/stacyvm/stacyvm/internal/server"
)

const apiKey = "e2b-test-key"

// start runs the real server (server.Serve: the API and the facade on one
// loopback listener) with the mock provider, until the test ends.
func start(t *testing.T, mods ...func(*config.Config)) string {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Store.Path = filepath.Join(dir, "stacyvm.db")
	cfg.Mock.Dir = filepath.Join(dir, "mock")
	cfg.Provider.Enabled = []string{"mock"}
	cfg.Provider.Default = "mock"
	cfg.Server.APIKey = apiKey
	cfg.Server.ShutdownTimeout = 5 * time.Second
	cfg.Sandbox.DefaultImage = "test/image:1"
	for _, m := range mods {
		m(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Serve(ctx, cfg, slog.New(slog.DiscardHandler), ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	})
	return "http://" + ln.Addr().String()
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func do(t *testing.T, method, url string, h map[string]string, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, b}
}

type created struct {
	SandboxID       string `json:"sandboxID"`
	TemplateID      string `json:"templateID"`
	EnvdVersion     string `json:"envdVersion"`
	EnvdAccessToken string `json:"envdAccessToken"`
}

func create(t *testing.T, base, body string) created {
	t.Helper()
	return createAt(t, base, "/e2b/v2/sandboxes", body)
}

func createAt(t *testing.T, base, path, body string) created {
	t.Helper()
	r := do(t, "POST", base+path, map[string]string{"X-API-KEY": apiKey, "Content-Type": "application/json"}, body)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var c created
	r.json(t, &c)
	return c
}

func envd(c created) map[string]string {
	return map[string]string{"E2b-Sandbox-Id": c.SandboxID, "E2b-Sandbox-Port": "49983", "X-Access-Token": c.EnvdAccessToken}
}

func TestControlPlane(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base","metadata":{"team":"a"},"envVars":{"K":"v"},"timeout":120}`)
	if !strings.HasPrefix(c.SandboxID, "sb-") || c.TemplateID != "test/image:1" || c.EnvdAccessToken == "" {
		t.Fatalf("create = %+v", c)
	}
	if c.EnvdVersion != e2b.EnvdVersion {
		t.Fatalf("envdVersion = %q", c.EnvdVersion)
	}
	// The old SDKs' path creates too.
	c2 := createAt(t, base, "/e2b/sandboxes", `{"templateID":"base","metadata":{"team":"b"}}`)
	if c2.EnvdAccessToken == c.EnvdAccessToken {
		t.Fatal("two sandboxes share an access token")
	}
	key := map[string]string{"X-API-KEY": apiKey}
	jsonKey := map[string]string{"X-API-KEY": apiKey, "Content-Type": "application/json"}

	tests := []struct {
		name, method, path string
		h                  map[string]string
		body               string
		status             int
	}{
		{"no API key", "GET", "/e2b/v2/sandboxes", nil, "", 401},
		{"wrong API key", "GET", "/e2b/v2/sandboxes", map[string]string{"X-API-KEY": "nope"}, "", 401},
		{"get", "GET", "/e2b/sandboxes/" + c.SandboxID, key, "", 200},
		{"get unknown", "GET", "/e2b/sandboxes/sb-000000000000000000000000", key, "", 404},
		{"timeout", "POST", "/e2b/sandboxes/" + c.SandboxID + "/timeout", jsonKey, `{"timeout":60}`, 204},
		{"timeout missing", "POST", "/e2b/sandboxes/" + c.SandboxID + "/timeout", jsonKey, `{}`, 400},
		{"timeout not json", "POST", "/e2b/sandboxes/" + c.SandboxID + "/timeout", map[string]string{"X-API-KEY": apiKey, "Content-Type": "text/plain"}, `{"timeout":60}`, 400},
		{"connect v2", "POST", "/e2b/v2/sandboxes/" + c.SandboxID + "/connect", jsonKey, `{"timeout":60}`, 200},
		{"connect v1", "POST", "/e2b/sandboxes/" + c.SandboxID + "/connect", jsonKey, `{"timeout":60}`, 200},
		{"pause is unsupported", "POST", "/e2b/sandboxes/" + c.SandboxID + "/pause", jsonKey, `{}`, 501},
		{"snapshots are unsupported", "POST", "/e2b/sandboxes/" + c.SandboxID + "/snapshots", jsonKey, `{}`, 501},
		{"volumes refused at create", "POST", "/e2b/v2/sandboxes", jsonKey, `{"templateID":"base","volumeMounts":[{"name":"v","path":"/v"}]}`, 400},
		{"auto-pause refused", "POST", "/e2b/sandboxes", jsonKey, `{"templateID":"base","autoPause":true}`, 400},
		{"unknown route", "GET", "/e2b/nothing", key, "", 404},
		{"bad list limit", "GET", "/e2b/v2/sandboxes?limit=0", key, "", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, base+tt.path, tt.h, tt.body)
			if r.status != tt.status {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.status)
			}
			if r.status >= 400 {
				var e struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				r.json(t, &e)
				if e.Code != tt.status || e.Message == "" {
					t.Fatalf("error body %s is not E2B's {code, message}", r.body)
				}
			}
		})
	}

	// Metadata filter and paging.
	var listed []struct {
		SandboxID string            `json:"sandboxID"`
		Metadata  map[string]string `json:"metadata"`
		State     string            `json:"state"`
	}
	r := do(t, "GET", base+"/e2b/v2/sandboxes?metadata="+urlQuery("team=a"), key, "")
	r.json(t, &listed)
	if len(listed) != 1 || listed[0].SandboxID != c.SandboxID || listed[0].State != "running" {
		t.Fatalf("metadata filter: %s", r.body)
	}
	r = do(t, "GET", base+"/e2b/v2/sandboxes?limit=1&order=asc", key, "")
	r.json(t, &listed)
	next := r.header.Get("X-Next-Token")
	if len(listed) != 1 || listed[0].SandboxID != c.SandboxID || next == "" || r.header.Get("X-Total-Running") != "2" {
		t.Fatalf("page 1: %s %v", r.body, r.header)
	}
	r = do(t, "GET", base+"/e2b/v2/sandboxes?limit=1&order=asc&nextToken="+next, key, "")
	r.json(t, &listed)
	if len(listed) != 1 || listed[0].SandboxID != c2.SandboxID || r.header.Get("X-Next-Token") != "" {
		t.Fatalf("page 2: %s %v", r.body, r.header)
	}

	// Kill, then kill again: 404, which the SDK reads as false.
	if r := do(t, "DELETE", base+"/e2b/sandboxes/"+c2.SandboxID, key, ""); r.status != 204 {
		t.Fatalf("kill: %d %s", r.status, r.body)
	}
	if r := do(t, "DELETE", base+"/e2b/sandboxes/"+c2.SandboxID, key, ""); r.status != 404 {
		t.Fatalf("second kill: %d %s", r.status, r.body)
	}
	// The daemon of a killed sandbox reports it gone.
	if r := do(t, "GET", base+"/e2b/envd/health", envd(c2), ""); r.status != http.StatusBadGateway {
		t.Fatalf("health of a killed sandbox: %d", r.status)
	}
}

func urlQuery(s string) string { return strings.NewReplacer("=", "%3D", "&", "%26").Replace(s) }

func TestDaemonTokens(t *testing.T) {
	base := start(t)
	a := create(t, base, `{"templateID":"base"}`)
	b := create(t, base, `{"templateID":"base"}`)
	wrong := envd(a)
	wrong["X-Access-Token"] = b.EnvdAccessToken // b's token does not open a
	noID := envd(a)
	delete(noID, "E2b-Sandbox-Id")
	rpc := func(h map[string]string) map[string]string {
		out := map[string]string{"Content-Type": "application/json"}
		for k, v := range h {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name, method, path string
		h                  map[string]string
		body               string
		status             int
	}{
		{"health", "GET", "/e2b/envd/health", envd(a), "", 204},
		{"health, wrong token", "GET", "/e2b/envd/health", wrong, "", 401},
		{"files, wrong token", "GET", "/e2b/envd/files?path=x", wrong, "", 401},
		{"files, no sandbox ID", "GET", "/e2b/envd/files?path=x", noID, "", 401},
		{"files, missing file", "GET", "/e2b/envd/files?path=nope.txt", envd(a), "", 404},
		{"rpc, wrong token", "POST", "/e2b/envd/filesystem.Filesystem/Stat", rpc(wrong), `{"path":"/"}`, 401},
		{"rpc, no token", "POST", "/e2b/envd/process.Process/List", map[string]string{"Content-Type": "application/json", "E2b-Sandbox-Id": a.SandboxID}, `{}`, 401},
		{"rpc", "POST", "/e2b/envd/process.Process/List", rpc(envd(a)), `{}`, 200},
		{"rpc, unknown pid", "POST", "/e2b/envd/process.Process/SendSignal", rpc(envd(a)), `{"process":{"pid":4242},"signal":"SIGNAL_SIGKILL"}`, 404},
		{"watch a missing directory", "POST", "/e2b/envd/filesystem.Filesystem/CreateWatcher", rpc(envd(a)), `{"path":"/no/such/dir"}`, 404},
		{"another sandbox's watcher", "POST", "/e2b/envd/filesystem.Filesystem/GetWatcherEvents", rpc(envd(b)), `{"watcherId":"` + watcherOf(t, base, a) + `"}`, 404},
		{"unknown daemon route", "GET", "/e2b/envd/metrics", envd(a), "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, base+tt.path, tt.h, tt.body)
			if r.status != tt.status {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, r.status, r.body, tt.status)
			}
		})
	}
	// Connect's unary errors carry Connect's codes.
	r := do(t, "POST", base+"/e2b/envd/filesystem.Filesystem/Stat", rpc(wrong), `{"path":"/"}`)
	var ce struct{ Code string }
	r.json(t, &ce)
	if ce.Code != "unauthenticated" {
		t.Fatalf("unauthenticated rpc body: %s", r.body)
	}
}

func TestHostAndOrigin(t *testing.T) {
	base := start(t)
	port := base[strings.LastIndex(base, ":")+1:]
	jsonKey := map[string]string{"X-API-KEY": apiKey, "Content-Type": "application/json"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for _, m := range []map[string]string{jsonKey, extra} {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}
	tests := []struct {
		name   string
		method string
		h      map[string]string
		status int
	}{
		{"foreign host", "GET", with(map[string]string{"Host": "evil.example:80"}), 421},
		{"localhost", "GET", with(map[string]string{"Host": "localhost:" + port}), 200},
		{"cross-origin create", "POST", with(map[string]string{"Origin": "http://evil.example"}), 403},
		{"cross-origin read", "GET", with(map[string]string{"Origin": "http://evil.example"}), 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method == "POST" {
				body = `{"templateID":"base"}`
			}
			r := do(t, tt.method, base+"/e2b/v2/sandboxes", tt.h, body)
			if r.status != tt.status {
				t.Fatalf("= %d %s, want %d", r.status, r.body, tt.status)
			}
		})
	}
}

// frame is one Connect envelope: flags, then the message.
type frame struct {
	flags byte
	data  []byte
}

func readFrame(r *bufio.Reader) (frame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[1:]))
	_, err := io.ReadFull(r, b)
	return frame{hdr[0], b}, err
}

func envelope(msg string) []byte {
	var b bytes.Buffer
	b.WriteByte(0)
	_ = binary.Write(&b, binary.BigEndian, uint32(len(msg)))
	b.WriteString(msg)
	return b.Bytes()
}

type event struct {
	Event struct {
		Start *struct{ Pid uint32 } `json:"start"`
		Data  *struct {
			Stdout string `json:"stdout"`
			Stderr string `json:"stderr"`
		} `json:"data"`
		End *struct {
			ExitCode int    `json:"exitCode"`
			Exited   bool   `json:"exited"`
			Status   string `json:"status"`
		} `json:"end"`
		Keepalive *struct{} `json:"keepalive"`
	} `json:"event"`
}

// TestProcessStartEnvelopes reads Process.Start's server stream as the
// SDK does (connect+json envelopes over HTTP/1.1): start{pid} first, then
// output while the command still runs (it waits for a file written only
// after the first output arrived), keepalives, end{exitCode}, and the
// end-of-stream frame.
func TestProcessStartEnvelopes(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base","envVars":{"WHO":"e2b"}}`)
	body := `{"process":{"cmd":"/bin/sh","args":["-c","echo first $WHO; i=0; while [ ! -f go.flag ]; do i=$((i+1)); [ $i -gt 300 ] && exit 9; sleep 0.1; done; echo second >&2; exit 7"]},"stdin":false}`
	req, _ := http.NewRequest("POST", base+"/e2b/envd/process.Process/Start", bytes.NewReader(envelope(body)))
	for k, v := range envd(c) {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Keepalive-Ping-Interval", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/connect+json" {
		t.Fatalf("start: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	next := func() (frame, event) {
		t.Helper()
		f, err := readFrame(br)
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		var ev event
		if f.flags == 0 {
			if err := json.Unmarshal(f.data, &ev); err != nil {
				t.Fatalf("decode %s: %v", f.data, err)
			}
		}
		return f, ev
	}
	f0, ev := next()
	if ev.Event.Start == nil || ev.Event.Start.Pid == 0 {
		t.Fatalf("first event is not start{pid}: flags %d %s", f0.flags, f0.data)
	}
	var stdout, stderr string
	var end *struct {
		ExitCode int    `json:"exitCode"`
		Exited   bool   `json:"exited"`
		Status   string `json:"status"`
	}
	released, keepalives := false, 0
	for end == nil {
		f, ev := next()
		if f.flags != 0 {
			t.Fatalf("stream ended before end{}: %s", f.data)
		}
		switch {
		case ev.Event.Data != nil:
			out, _ := base64.StdEncoding.DecodeString(ev.Event.Data.Stdout)
			errb, _ := base64.StdEncoding.DecodeString(ev.Event.Data.Stderr)
			stdout += string(out)
			stderr += string(errb)
			if !released && strings.Contains(stdout, "first") {
				released = true
				// Hold the command a little so that a keepalive passes.
				time.Sleep(1500 * time.Millisecond)
				up := do(t, "POST", base+"/e2b/envd/files?path=go.flag", map[string]string{
					"E2b-Sandbox-Id": c.SandboxID, "X-Access-Token": c.EnvdAccessToken, "Content-Type": "application/octet-stream",
				}, "go")
				if up.status != 200 {
					t.Fatalf("upload: %d %s", up.status, up.body)
				}
			}
		case ev.Event.Keepalive != nil:
			keepalives++
		case ev.Event.End != nil:
			end = ev.Event.End
		}
	}
	if stdout != "first e2b\n" || stderr != "second\n" || end.ExitCode != 7 || !end.Exited || keepalives == 0 {
		t.Fatalf("stdout %q stderr %q end %+v keepalives %d", stdout, stderr, end, keepalives)
	}
	f, _ := next()
	if f.flags != 2 || strings.TrimSpace(string(f.data)) != "{}" {
		t.Fatalf("end-of-stream frame: flags %d %s", f.flags, f.data)
	}
	if _, err := readFrame(br); err != io.EOF {
		t.Fatalf("after end of stream: %v", err)
	}
}

// TestFilesRoundTrip covers /files both ways: multipart and octet-stream
// uploads, raw downloads, binary intact.
func TestFilesRoundTrip(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base"}`)
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	h := envd(c)
	h["Content-Type"] = "application/octet-stream"
	r := do(t, "POST", base+"/e2b/envd/files?path=/data/raw.bin", h, string(bin))
	var entries []struct{ Path, Name, Type string }
	r.json(t, &entries)
	if r.status != 200 || len(entries) != 1 || entries[0].Path != "/data/raw.bin" || entries[0].Name != "raw.bin" || entries[0].Type != "file" {
		t.Fatalf("octet upload: %d %s", r.status, r.body)
	}
	var mp bytes.Buffer
	boundary := "xyzzy"
	fmt.Fprintf(&mp, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"/data/m.txt\"\r\nContent-Type: application/octet-stream\r\n\r\nmultipart body\r\n--%s--\r\n", boundary, boundary)
	h = envd(c)
	h["Content-Type"] = "multipart/form-data; boundary=" + boundary
	r = do(t, "POST", base+"/e2b/envd/files", h, mp.String())
	if r.status != 200 || !strings.Contains(string(r.body), `"/data/m.txt"`) {
		t.Fatalf("multipart upload: %d %s", r.status, r.body)
	}
	for p, want := range map[string]string{"/data/raw.bin": string(bin), "/data/m.txt": "multipart body"} {
		r := do(t, "GET", base+"/e2b/envd/files?path="+p, envd(c), "")
		if r.status != 200 || string(r.body) != want {
			t.Fatalf("download %s: %d %q", p, r.status, r.body)
		}
	}
	r = do(t, "GET", base+"/e2b/envd/files?path=/data", envd(c), "")
	if r.status != 400 {
		t.Fatalf("download of a directory: %d %s", r.status, r.body)
	}
	h = envd(c)
	h["Content-Type"] = "text/plain"
	if r := do(t, "POST", base+"/e2b/envd/files?path=/x", h, "x"); r.status != 400 {
		t.Fatalf("upload as text/plain: %d", r.status)
	}
}

func rpcCall(t *testing.T, base string, c created, method, body string, out any) int {
	t.Helper()
	h := envd(c)
	h["Content-Type"] = "application/json"
	r := do(t, "POST", base+"/e2b/envd/"+method, h, body)
	if out != nil && r.status == 200 {
		r.json(t, out)
	}
	return r.status
}

func watcherOf(t *testing.T, base string, c created) string {
	t.Helper()
	var w struct{ WatcherId string }
	if st := rpcCall(t, base, c, "filesystem.Filesystem/CreateWatcher", `{"path":"/"}`, &w); st != 200 || w.WatcherId == "" {
		t.Fatalf("CreateWatcher: %d", st)
	}
	return w.WatcherId
}

// TestWatcher: the non-streaming watch reports what changed between two
// calls, in E2B's event types.
func TestWatcher(t *testing.T) {
	base := start(t)
	c := create(t, base, `{"templateID":"base"}`)
	up := func(p, body string) {
		h := envd(c)
		h["Content-Type"] = "application/octet-stream"
		if r := do(t, "POST", base+"/e2b/envd/files?path="+p, h, body); r.status != 200 {
			t.Fatalf("upload %s: %d %s", p, r.status, r.body)
		}
	}
	up("/w/keep.txt", "1")
	up("/w/gone.txt", "1")
	var w struct{ WatcherId string }
	if st := rpcCall(t, base, c, "filesystem.Filesystem/CreateWatcher", `{"path":"/w","recursive":true,"includeEntry":true}`, &w); st != 200 {
		t.Fatalf("CreateWatcher: %d", st)
	}
	up("/w/new/deep.txt", "x")
	up("/w/keep.txt", "longer")
	if st := rpcCall(t, base, c, "filesystem.Filesystem/Remove", `{"path":"/w/gone.txt"}`, nil); st != 200 {
		t.Fatalf("Remove: %d", st)
	}
	var got struct {
		Events []struct {
			Name  string
			Type  string
			Entry *struct{ Path string }
		}
	}
	if st := rpcCall(t, base, c, "filesystem.Filesystem/GetWatcherEvents", `{"watcherId":"`+w.WatcherId+`"}`, &got); st != 200 {
		t.Fatalf("GetWatcherEvents: %d", st)
	}
	var seen []string
	for _, e := range got.Events {
		seen = append(seen, e.Name+":"+e.Type)
		if e.Type != "EVENT_TYPE_REMOVE" && (e.Entry == nil || e.Entry.Path != "/w/"+e.Name) {
			t.Errorf("event %s has entry %+v", e.Name, e.Entry)
		}
	}
	want := "gone.txt:EVENT_TYPE_REMOVE keep.txt:EVENT_TYPE_WRITE new:EVENT_TYPE_CREATE new/deep.txt:EVENT_TYPE_CREATE"
	if strings.Join(seen, " ") != want {
		t.Fatalf("events %v, want %s", seen, want)
	}
	// Nothing changed since: no events.
	got.Events = nil
	if st := rpcCall(t, base, c, "filesystem.Filesystem/GetWatcherEvents", `{"watcherId":"`+w.WatcherId+`"}`, &got); st != 200 || len(got.Events) != 0 {
		t.Fatalf("second GetWatcherEvents: %d %+v", st, got.Events)
	}
	if st := rpcCall(t, base, c, "filesystem.Filesystem/RemoveWatcher", `{"watcherId":"`+w.WatcherId+`"}`, nil); st != 200 {
		t.Fatalf("RemoveWatcher: %d", st)
	}
	if st := rpcCall(t, base, c, "filesystem.Filesystem/GetWatcherEvents", `{"watcherId":"`+w.WatcherId+`"}`, nil); st != 404 {
		t.Fatalf("removed watcher: %d", st)
	}
}

// TestStalledClientDoesNotHoldTheCommand: a client that starts a chatty
// command and never reads is dropped after the write timeout, and the
// command goes on (and ends) without it instead of blocking on its output.
func TestStalledClientDoesNotHoldTheCommand(t *testing.T) {
	base := start(t, func(c *config.Config) { c.Server.StreamWriteTimeout = 500 * time.Millisecond })
	c := create(t, base, `{"templateID":"base"}`)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // fill up soon
	}
	body := envelope(`{"process":{"cmd":"/bin/sh","args":["-c","head -c 50000000 /dev/zero; sleep 2"]}}`)
	fmt.Fprintf(conn, "POST /e2b/envd/process.Process/Start HTTP/1.1\r\nHost: %s\r\nContent-Type: application/connect+json\r\n"+
		"E2b-Sandbox-Id: %s\r\nX-Access-Token: %s\r\nContent-Length: %d\r\n\r\n%s",
		strings.TrimPrefix(base, "http://"), c.SandboxID, c.EnvdAccessToken, len(body), body)
	// Never read. The command must leave the process list by itself.
	var list struct{ Processes []struct{ Pid uint32 } }
	deadline := time.Now().Add(60 * time.Second)
	sawIt := false
	for {
		list.Processes = nil
		if st := rpcCall(t, base, c, "process.Process/List", `{}`, &list); st != 200 {
			t.Fatalf("List: %d", st)
		}
		if len(list.Processes) > 0 {
			sawIt = true
		} else if sawIt {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the command is still listed (seen: %v): a stalled client holds it", sawIt)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
