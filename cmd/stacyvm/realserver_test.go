package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stacyvm/stacyvm/internal/client"
)

// buildBinaries builds stacyvm and stacyvm-agent (the Docker provider
// finds the agent next to stacyvm) and returns their directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []struct{ out, pkg string }{{"stacyvm", "."}, {"stacyvm-agent", "../stacyvm-agent"}} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.out, err, out)
		}
	}
	return dir
}

// requireDockerImage skips the test without dockerd and image, or fails it
// under scripts/test (STACYVM_TEST_DOCKER=1), where they must be there.
func requireDockerImage(t *testing.T, image string) {
	t.Helper()
	if out, err := exec.Command("docker", "image", "inspect", image).CombinedOutput(); err != nil {
		msg := "needs dockerd with the image " + image + " (scripts/ci/docker-up.sh): " + strings.TrimSpace(string(out))
		if os.Getenv("STACYVM_TEST_DOCKER") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// serveProcess is `stacyvm serve` running as its own process (the built
// binary), which a test may stop with SIGTERM or kill with SIGKILL. One
// still running when the test ends is interrupted; if it has not exited a
// minute later (twice its own default shutdown timeout), it hangs: the
// test fails and the process is killed.
type serveProcess struct {
	base   string
	apiKey string
	logs   *syncBuffer
	client *client.Client
	cmd    *exec.Cmd
	done   chan struct{} // closed once the process has exited
	err    error         // how it exited, once done is closed
	ended  sync.Once
}

// startServe runs `stacyvm serve --listen <a free port> args...` from bin
// in dir, with env added to the environment, and returns once this server
// (not another process that took the port) answers healthy. apiKey is
// what the server requires, for the client and call.
func startServe(t *testing.T, bin, dir, apiKey string, env []string, args ...string) *serveProcess {
	t.Helper()
	addr := "127.0.0.1:" + freePort(t)
	s := &serveProcess{base: "http://" + addr, apiKey: apiKey, logs: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(filepath.Join(bin, "stacyvm"), append([]string{"serve", "--listen", addr}, args...)...)
	s.cmd.Dir = dir
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
		exited <- s.err
	}()
	t.Cleanup(func() {
		if err := s.end(os.Interrupt, time.Minute); errors.Is(err, errHung) {
			t.Errorf("serve at the end of the test: %v\n%s", err, s.logs.String())
		}
	})
	waitHealthy(t, s.base, exited, s.logs)
	// Another process may have taken the port between freePort and the
	// server's listen: make sure the health answer was this server's
	// (its "stacyvm serving" line names the address it listens on).
	for deadline := time.Now().Add(10 * time.Second); !servingOn(s.logs.String(), addr); {
		if time.Now().After(deadline) {
			t.Fatalf("%s answered, but not this server\n%s", s.base, s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := client.New(s.base, apiKey)
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	return s
}

// servingOn reports whether a server log (text or JSON) has the line
// saying it serves on addr.
func servingOn(log, addr string) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, "stacyvm serving") &&
			(strings.Contains(line, "addr="+addr) || strings.Contains(line, `"addr":"`+addr+`"`)) {
			return true
		}
	}
	return false
}

// errHung is how end reports a server that did not exit in time.
var errHung = errors.New("did not exit")

// end sends sig to the server (once: later calls return the first
// outcome) and waits for it to exit, killing it after grace.
func (s *serveProcess) end(sig os.Signal, grace time.Duration) error {
	s.ended.Do(func() {
		_ = s.cmd.Process.Signal(sig)
		select {
		case <-s.done:
		case <-time.After(grace):
			_ = s.cmd.Process.Kill()
			<-s.done
			s.err = fmt.Errorf("%w within %s of %v, killed", errHung, grace, sig)
		}
	})
	return s.err
}

// kill9 kills the server with SIGKILL and waits for it to be gone.
func (s *serveProcess) kill9() {
	_ = s.end(syscall.SIGKILL, time.Minute)
}

// stop ends the server with SIGTERM and fails the test unless it exits
// cleanly within 30 s.
func (s *serveProcess) stop(t *testing.T) {
	t.Helper()
	if err := s.end(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("serve after SIGTERM: %v\n%s", err, s.logs.String())
	}
}

// call sends a request with a JSON body (none if body is nil) to path
// under /api/v1, and returns the status and the reply's body; 0 (and an
// error of the test) if there is no reply. Goroutines may call it.
func (s *serveProcess) call(t *testing.T, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Errorf("%s %s: %v", method, path, err)
			return 0, nil
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.base+"/api/v1"+path, rd)
	if err != nil {
		t.Errorf("%s %s: %v", method, path, err)
		return 0, nil
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.apiKey != "" {
		req.Header.Set("X-API-Key", s.apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v\n%s", method, path, err, s.logs.String())
		return 0, nil
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: reading the reply: %v", method, path, err)
	}
	return resp.StatusCode, out
}

// startRealServer runs the built stacyvm with the YAML configuration (its
// own top-level sections but server and store, which are added) until the
// test ends.
func startRealServer(t *testing.T, bin, yaml, apiKey string) *serveProcess {
	t.Helper()
	dir := t.TempDir()
	yaml += "\nstore:\n  path: " + filepath.Join(dir, "stacyvm.db") + "\n" +
		"server:\n  api_key: " + apiKey + "\n  shutdown_timeout: 10s\n"
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServe(t, bin, dir, apiKey, nil, "--config", cfgPath)
}

// dockerReady reports whether dockerd has the busybox test image, and
// whether it knows the runtime runsc.
func dockerReady() (image, runsc bool) {
	if exec.Command("docker", "image", "inspect", "stacyvm/busybox:test").Run() != nil {
		return false, false
	}
	out, _ := exec.Command("docker", "info", "--format", "{{json .Runtimes}}").Output()
	return true, strings.Contains(string(out), `"runsc"`)
}
