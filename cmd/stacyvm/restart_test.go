package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKillNineAndRestartWithDocker is the no-leak story end to end with
// real containers: serve (the real binary, docker provider), spawn, kill
// the server with SIGKILL, remove one container behind its back, start the
// server again on the same database: the surviving sandbox works again
// (exec and files, through a re-attached agent), the vanished one is
// destroyed, and a sandbox started by another server (another database,
// so another instance) is neither adopted nor removed. A sandbox paused
// through the API, and one whose container was paused behind the server's
// back while it was down, are both paused after the restart, and resume
// (explicitly, and by an exec) with their processes intact.
func TestKillNineAndRestartWithDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers and containers; skipped in -short mode")
	}
	const image = "stacyvm/busybox:test"
	requireDockerImage(t, image)
	dir := t.TempDir()
	bin := buildBinaries(t)

	start := func(db string) *serveProcess {
		t.Helper()
		return startServe(t, bin, dir, "", []string{"STACYVM_PROVIDER_ENABLED=docker", "STACYVM_DOCKER_RUNTIME=runc"}, "--db", db)
	}
	call := func(s *serveProcess, method, path string, body any) (int, []byte) {
		t.Helper()
		return s.call(t, method, path, body)
	}
	spawn := func(s *serveProcess) string {
		t.Helper()
		code, out := call(s, "POST", "/sandboxes", map[string]any{"image": image, "ttl": "10m"})
		var sb struct{ ID string }
		if json.Unmarshal(out, &sb); code != 201 || sb.ID == "" {
			t.Fatalf("spawn: %d %s\n%s", code, out, s.logs.String())
		}
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", "stacyvm-"+sb.ID).Run() })
		return sb.ID
	}

	db := filepath.Join(dir, "stacyvm.db")
	s1 := start(db)
	alive, vanished := spawn(s1), spawn(s1)
	if code, out := call(s1, "POST", "/sandboxes/"+alive+"/files", map[string]string{"path": "/workspace/keep.txt", "content": "kept\n"}); code != 200 {
		t.Fatalf("write: %d %s", code, out)
	}
	paused, frozenOutside := spawn(s1), spawn(s1)
	for _, id := range []string{paused, frozenOutside} {
		// A background process whose survival shows the freeze kept it.
		if code, out := call(s1, "POST", "/sandboxes/"+id+"/exec", map[string]string{"command": "sleep 600 >/dev/null 2>&1 & echo $! > /workspace/pid"}); code != 200 {
			t.Fatalf("start a background process: %d %s", code, out)
		}
	}
	if code, out := call(s1, "POST", "/sandboxes/"+paused+"/pause", nil); code != 200 || !strings.Contains(string(out), `"state":"paused"`) {
		t.Fatalf("pause: %d %s", code, out)
	}
	s1.kill9()
	if out, err := exec.Command("docker", "pause", "stacyvm-"+frozenOutside).CombinedOutput(); err != nil {
		t.Fatalf("pause a container behind the server's back: %v %s", err, out)
	}
	if out, err := exec.Command("docker", "rm", "-f", "stacyvm-"+vanished).CombinedOutput(); err != nil {
		t.Fatalf("remove container behind the server's back: %v %s", err, out)
	}

	// A server with another database is another instance: what it spawns
	// is not the first server's to adopt or remove.
	orphanSrv := start(filepath.Join(dir, "other.db"))
	orphan := spawn(orphanSrv)
	orphanSrv.kill9()

	s2 := start(db)
	code, out := call(s2, "POST", "/sandboxes/"+alive+"/exec", map[string]string{"command": "cat /workspace/keep.txt; echo again"})
	if code != 200 || !strings.Contains(string(out), `kept\nagain\n`) {
		t.Fatalf("exec on the survivor after SIGKILL and restart: %d %s\n%s", code, out, s2.logs.String())
	}
	if code, out := call(s2, "GET", "/sandboxes/"+vanished, nil); code != 404 || !strings.Contains(string(out), "SANDBOX_DESTROYED") {
		t.Errorf("vanished container: %d %s, want 404 SANDBOX_DESTROYED", code, out)
	}
	for _, id := range []string{paused, frozenOutside} {
		if code, out := call(s2, "GET", "/sandboxes/"+id, nil); code != 200 || !strings.Contains(string(out), `"state":"paused"`) {
			t.Errorf("paused sandbox %s after the restart: %d %s, want state paused", id, code, out)
		}
	}
	if code, out := call(s2, "POST", "/sandboxes/"+paused+"/resume", nil); code != 200 || !strings.Contains(string(out), `"state":"running"`) {
		t.Errorf("resume after the restart: %d %s", code, out)
	}
	for _, id := range []string{paused, frozenOutside} {
		// The exec resumes frozenOutside first; both background processes live.
		code, out := call(s2, "POST", "/sandboxes/"+id+"/exec", map[string]string{"command": "kill -0 $(cat /workspace/pid) && echo alive"})
		if code != 200 || !strings.Contains(string(out), `alive\n`) {
			t.Errorf("exec in %s after the restart: %d %s\n%s", id, code, out, s2.logs.String())
		}
		if code, out := call(s2, "GET", "/sandboxes/"+id, nil); code != 200 || !strings.Contains(string(out), `"state":"running"`) {
			t.Errorf("%s after the exec: %d %s, want running", id, code, out)
		}
	}
	if code, out := call(s2, "GET", "/sandboxes/"+orphan, nil); code != 404 {
		t.Errorf("another instance's sandbox: %d %s, want 404 (not adopted)", code, out)
	}
	if out, err := exec.Command("docker", "inspect", "--format", "{{.State.Running}}", "stacyvm-"+orphan).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "true" {
		t.Errorf("another instance's container after the restart: %v %s, want it running", err, out)
	}
	if code, out := call(s2, "DELETE", "/sandboxes/"+alive, nil); code != 200 {
		t.Errorf("destroy %s: %d %s", alive, code, out)
	}
	if out, err := exec.Command("docker", "inspect", "stacyvm-"+alive).CombinedOutput(); err == nil {
		t.Errorf("container of %s still exists after destroy: %s", alive, out[:min(len(out), 200)])
	}
	s2.stop(t)
}
