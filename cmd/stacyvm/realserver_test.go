package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// realServer is `stacyvm serve` running as its own process.
type realServer struct {
	base   string
	logs   *syncBuffer
	client *client.Client
}

// startRealServer runs the built stacyvm with the YAML configuration (its
// own top-level sections but server and store, which are added) until the
// test ends.
func startRealServer(t *testing.T, bin, yaml, apiKey string) *realServer {
	t.Helper()
	dir := t.TempDir()
	addr := "127.0.0.1:" + freePort(t)
	yaml += "\nstore:\n  path: " + filepath.Join(dir, "stacyvm.db") + "\n" +
		"server:\n  api_key: " + apiKey + "\n  shutdown_timeout: 10s\n"
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &realServer{base: "http://" + addr, logs: &syncBuffer{}}
	cmd := exec.Command(filepath.Join(bin, "stacyvm"), "serve", "--config", cfgPath, "--listen", addr)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		// An interrupt stops the server cleanly; the tests destroy their
		// sandboxes themselves.
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	waitHealthy(t, s.base, exited, s.logs)
	c, err := client.New(s.base, apiKey)
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	return s
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
