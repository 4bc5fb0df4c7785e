package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHostileAgentWithDocker runs the real server binary on Docker. First,
// a client streams a command that prints without end and stops reading:
// the server drops it within server.stream_write_timeout, the command's
// process tree is gone from the container, and the server's memory stays
// flat. Then code in the container stops its agent (the agent runs as the
// same user as the code it serves), so the host's connections to it are
// never answered: an exec (buffered and streamed) still ends at its
// timeout plus guest.exec_grace, reported as a timeout; a file call ends
// at guest.call_timeout as 503; and the sandbox is still destroyed cleanly.
func TestHostileAgentWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real server and container; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	requireDockerImage(t, image)
	dir := t.TempDir()
	bin := buildBinaries(t)
	const grace, callTimeout = time.Second, 3 * time.Second
	srv := startServe(t, bin, dir, "", []string{"STACYVM_PROVIDER_ENABLED=docker", "STACYVM_DOCKER_RUNTIME=runc",
		"STACYVM_GUEST_EXEC_GRACE=" + grace.String(), "STACYVM_GUEST_CALL_TIMEOUT=" + callTimeout.String(),
		"STACYVM_SERVER_STREAM_WRITE_TIMEOUT=1s"}, "--db", filepath.Join(dir, "stacyvm.db"))
	base, logs := srv.base, srv.logs
	addr := strings.TrimPrefix(base, "http://")
	call := func(method, path string, body any) (int, []byte, time.Duration) {
		t.Helper()
		start := time.Now()
		code, out := srv.call(t, method, path, body)
		return code, out, time.Since(start)
	}

	code, out, _ := call("POST", "/sandboxes", map[string]any{"image": image, "ttl": "10m"})
	var sb struct{ ID string }
	if json.Unmarshal(out, &sb); code != 201 || sb.ID == "" {
		t.Fatalf("spawn: %d %s\n%s", code, out, logs.String())
	}
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "stacyvm-"+sb.ID).Run() })
	execPath := "/sandboxes/" + sb.ID + "/exec"

	// A client that stops reading a stream.
	alive := func() string {
		t.Helper()
		code, out, _ := call("POST", execPath, map[string]any{"command": `for f in /tmp/stall-sh.pid /tmp/stall-bg.pid; do [ -s $f ] || { echo missing $f; continue; }; ` +
			`p=$(cat $f); if [ -d /proc/$p ] && ! grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null; then echo alive $p; fi; done`})
		var res struct{ Stdout string }
		if json.Unmarshal(out, &res); code != 200 {
			t.Fatalf("check exec: %d %s", code, out)
		}
		return strings.TrimSpace(res.Stdout)
	}
	rss := func() int64 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.cmd.Process.Pid))
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return n << 10
			}
		}
		return 0
	}
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	slow, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	body := `{"stream":true,"timeout":"1h","command":"echo $$ > /tmp/stall-sh.pid; sleep 1000 & echo $! > /tmp/stall-bg.pid; while :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done"}`
	fmt.Fprintf(slow, "POST /api/v1%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", execPath, addr, len(body), body)
	began := time.Now()
	for strings.Count(alive(), "alive") != 2 {
		if time.Since(began) > 30*time.Second {
			t.Fatalf("the stalling command did not start: %q", alive())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rssBefore := rss()
	for out := alive(); out != ""; out = alive() {
		if time.Since(began) > 60*time.Second {
			t.Fatalf("%s after the client stopped reading, still %q", time.Since(began), out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("stalled stream's process tree gone %s after it began; server RSS %d → %d KiB",
		time.Since(began).Round(time.Millisecond), rssBefore>>10, rss()>>10)
	if grew := rss() - rssBefore; grew > 64<<20 {
		t.Errorf("server RSS grew by %d bytes while a client did not read", grew)
	}

	// The sandbox stops its agent (PID 1 is the reaper; the agent is its
	// child) a moment after this command has answered.
	code, out, _ = call("POST", execPath, map[string]any{"command": `setsid sh -c 'sleep 1; for p in $(pidof stacyvm-agent); do [ "$p" != 1 ] && kill -STOP "$p"; done' >/dev/null 2>&1 &`})
	if code != 200 {
		t.Fatalf("exec: %d %s", code, out)
	}
	time.Sleep(3 * time.Second)

	const timeout = 2 * time.Second
	bound := timeout + grace + 10*time.Second // slack for a loaded machine, far below "never"
	code, out, took := call("POST", execPath, map[string]any{"command": "echo never", "timeout": timeout.String()})
	var res struct {
		Code     string `json:"code"`
		Message  string `json:"message"`
		TimedOut bool   `json:"timed_out"`
		ExitCode int    `json:"exit_code"`
	}
	if json.Unmarshal(out, &res); code != http.StatusRequestTimeout || !res.TimedOut || res.ExitCode != -1 || !strings.Contains(res.Message, "host dropped") {
		t.Fatalf("buffered exec against a stopped agent: %d %s", code, out)
	}
	if took < timeout+grace || took > bound {
		t.Errorf("buffered exec took %s; want about %s", took, timeout+grace)
	}

	// Streamed: the last frame reports the timeout.
	req, _ := http.NewRequest("POST", base+"/api/v1"+execPath, strings.NewReader(`{"command":"echo never","timeout":"2s","stream":true}`))
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		last = sc.Text()
	}
	resp.Body.Close()
	if took := time.Since(start); !strings.Contains(last, `"timed_out":true`) || took > bound {
		t.Fatalf("stream against a stopped agent ended after %s with %q", took, last)
	}

	code, out, took = call("GET", "/sandboxes/"+sb.ID+"/files/stat?path=/etc/passwd", nil)
	if code != http.StatusServiceUnavailable || took < callTimeout || took > callTimeout+10*time.Second {
		t.Fatalf("stat against a stopped agent: %d %s after %s", code, out, took)
	}

	code, out, _ = call("DELETE", "/sandboxes/"+sb.ID, nil)
	if code != 200 {
		t.Fatalf("destroy: %d %s\n%s", code, out, logs.String())
	}
	if out, err := exec.Command("docker", "ps", "-aq", "--filter", "name=stacyvm-"+sb.ID).Output(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("container left behind: %q %v", out, err)
	}
}
