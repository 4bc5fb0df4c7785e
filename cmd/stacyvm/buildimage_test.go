package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuildImageCommand(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "busybox"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("build-image needs %s (apt-get install e2fsprogs busybox-static)", tool)
		}
	}
	dir := t.TempDir()
	// The agent the image gets, found on PATH as in a real installation.
	agentDir := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-o", filepath.Join(agentDir, "stacyvm-agent"), "../stacyvm-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	t.Setenv("PATH", agentDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	rootfs := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	bb, _ := exec.LookPath("busybox")
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "stacyvm.yaml")
	cfg := "firecracker:\n  state_dir: " + filepath.Join(dir, "fc") + "\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	first := cli(t, nil, "build-image", "--config", cfgPath, rootfs).ok(t)
	path := strings.TrimSpace(first.stdout)
	st, err := os.Stat(path)
	if err != nil || st.Size() == 0 {
		t.Fatalf("build-image printed %q: %v", path, err)
	}
	// Same content, same cached image, by digest.
	again := cli(t, nil, "build-image", "--config", cfgPath, rootfs).ok(t)
	if strings.TrimSpace(again.stdout) != path {
		t.Errorf("rebuild of the same content gave %q, want the cached %q", again.stdout, path)
	}
	missing := cli(t, nil, "build-image", "--config", cfgPath, filepath.Join(dir, "nope"))
	if missing.code == 0 || !strings.Contains(missing.stderr, "nope") {
		t.Errorf("missing source: exit %d, stderr %q", missing.code, missing.stderr)
	}
}
