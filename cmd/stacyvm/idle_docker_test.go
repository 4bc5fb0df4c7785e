package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestIdleTimeoutWithDocker: the real server with the docker provider
// pauses (with dockerd's pause) a sandbox idle past its idle_timeout and
// destroys one whose on_idle says so; a paused one resumes on exec.
func TestIdleTimeoutWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real server and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	requireDockerImage(t, image)
	bin := buildBinaries(t)
	const key = "idle-test-key"
	s := startRealServer(t, bin, "provider:\n  enabled: [docker]\n  default: docker\ndocker:\n  runtime: runc\n"+
		"sandbox:\n  reaper_interval: 200ms\n  on_idle: destroy\n", key)
	call := func(method, path string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, s.base+"/api/v1"+path, rd)
		req.Header.Set("X-API-Key", key)
		if rd != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		var out map[string]any
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	spawn := func(body map[string]any) string {
		t.Helper()
		body["image"] = image
		code, out := call("POST", "/sandboxes", body)
		id, _ := out["id"].(string)
		if code != 201 || id == "" {
			t.Fatalf("spawn: %d %v\n%s", code, out, s.logs.String())
		}
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", "stacyvm-"+id).Run() })
		return id
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s\n%s", what, s.logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	inspect := func(id, format string) string {
		out, _ := exec.Command("docker", "inspect", "--format", format, "stacyvm-"+id).CombinedOutput()
		return strings.TrimSpace(string(out))
	}

	// on_idle from the request wins over the configured destroy.
	paused := spawn(map[string]any{"idle_timeout": 2, "on_idle": "pause"})
	destroyed := spawn(map[string]any{"idle_timeout": 2})
	waitFor("the idle sandbox paused", func() bool {
		_, out := call("GET", "/sandboxes/"+paused, nil)
		return out["state"] == "paused"
	})
	if got := inspect(paused, "{{.State.Paused}}"); got != "true" {
		t.Errorf("container of the idle-paused sandbox: Paused %q, want true", got)
	}
	waitFor("the idle sandbox destroyed", func() bool {
		code, _ := call("GET", "/sandboxes/"+destroyed, nil)
		return code == http.StatusNotFound
	})
	if out, err := exec.Command("docker", "inspect", "stacyvm-"+destroyed).CombinedOutput(); err == nil {
		t.Errorf("container of the idle-destroyed sandbox still exists: %s", out[:min(len(out), 200)])
	}
	code, out := call("POST", "/sandboxes/"+paused+"/exec", map[string]string{"command": "echo awake"})
	if code != 200 || out["stdout"] != "awake\n" {
		t.Fatalf("exec on the idle-paused sandbox: %d %v", code, out)
	}
	if got := inspect(paused, "{{.State.Paused}}"); got != "false" {
		t.Errorf("container after the exec: Paused %q, want false", got)
	}
	if code, out := call("DELETE", "/sandboxes/"+paused, nil); code != 200 {
		t.Errorf("destroy: %d %v", code, out)
	}
}
