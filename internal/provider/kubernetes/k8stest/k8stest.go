// Package k8stest gives tests a real cluster: what scripts/ci/k8s-up.sh
// started (its env file names it), and the agent image imported into the
// node's containerd, since no registry is reachable.
package k8stest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Cluster is the test cluster, from the environment k8s-up.sh writes:
//
//	STACYVM_TEST_K8S_KUBECONFIG   admin kubeconfig
//	STACYVM_TEST_K8S_NAMESPACE    namespace with a "default" service account
//	STACYVM_TEST_K8S_NODE         node name for the pods (no scheduler runs)
//	STACYVM_TEST_K8S_CONTAINERD   the node's containerd socket: the agent
//	                              image is imported there
//	STACYVM_TEST_K8S_RUNTIMECLASS optional: a RuntimeClass to test too
type Cluster struct {
	Kubeconfig, Namespace, Node, Containerd, RuntimeClass string
	// Skip says why there is no cluster; "" when there is one.
	Skip string
}

// FromEnv reads the cluster's description from the environment.
func FromEnv() Cluster {
	c := Cluster{
		Kubeconfig:   os.Getenv("STACYVM_TEST_K8S_KUBECONFIG"),
		Namespace:    os.Getenv("STACYVM_TEST_K8S_NAMESPACE"),
		Node:         os.Getenv("STACYVM_TEST_K8S_NODE"),
		Containerd:   os.Getenv("STACYVM_TEST_K8S_CONTAINERD"),
		RuntimeClass: os.Getenv("STACYVM_TEST_K8S_RUNTIMECLASS"),
	}
	switch {
	case c.Kubeconfig == "" || c.Namespace == "":
		c.Skip = "no cluster: STACYVM_TEST_K8S_KUBECONFIG and STACYVM_TEST_K8S_NAMESPACE are not set"
	case c.Containerd == "":
		c.Skip = "STACYVM_TEST_K8S_CONTAINERD is not set: no way to give the node the agent image"
	}
	return c
}

// Forced reports whether a missing cluster fails tests (scripts/test sets
// STACYVM_TEST_K8S=1) rather than skipping them.
func Forced() bool { return os.Getenv("STACYVM_TEST_K8S") == "1" }

// Need skips t, or fails it when Forced, if the cluster is missing.
func (c Cluster) Need(t testing.TB) {
	t.Helper()
	if c.Skip == "" {
		return
	}
	if Forced() {
		t.Fatalf("STACYVM_TEST_K8S=1 but %s (run scripts/ci/k8s-up.sh and source its env file)", c.Skip)
	}
	t.Skipf("skipping: %s (run scripts/ci/k8s-up.sh and source its env file, or set STACYVM_TEST_K8S=1 to fail instead)", c.Skip)
}

// ImportAgentImage builds the agent (unless bin names one), packs it into a one-layer image (the
// archive `docker save` writes) named after its content, and imports it
// into the node's containerd. Nothing is imported when that name exists.
func (c Cluster) ImportAgentImage(ctx context.Context, bin string) (string, error) {
	containerd := c.Containerd
	if bin == "" {
		dir, err := os.MkdirTemp("", "stacyvm-agent-image-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "stacyvm-agent")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/stacyvm/stacyvm/cmd/stacyvm-agent")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := build.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the agent failed: %v\n%s", err, msg)
		}
	}
	agentBin, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(agentBin)
	ref := "stacyvm.local/agent:" + hex.EncodeToString(sum[:8])
	ctr := func(args ...string) *exec.Cmd {
		return exec.CommandContext(ctx, "ctr", append([]string{"--address", containerd, "-n", "k8s.io"}, args...)...)
	}
	if out, err := ctr("images", "ls", "-q").Output(); err == nil && strings.Contains(string(out), ref+"\n") {
		return ref, nil
	}
	archive, err := imageArchive(ref, map[string][]byte{"stacyvm-agent": agentBin}, []string{"/stacyvm-agent"})
	if err != nil {
		return "", err
	}
	imp := ctr("images", "import", "-")
	imp.Stdin = bytes.NewReader(archive)
	if msg, err := imp.CombinedOutput(); err != nil {
		return "", fmt.Errorf("importing the agent image into containerd failed: %v\n%s", err, msg)
	}
	return ref, nil
}

// imageArchive writes the archive `docker save` makes for a one-layer
// image holding files (mode 0755) with the given entrypoint.
func imageArchive(ref string, files map[string][]byte, entrypoint []string) ([]byte, error) {
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	for name, b := range files {
		if err := lw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := lw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := lw.Close(); err != nil {
		return nil, err
	}
	diff := sha256.Sum256(layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entrypoint},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diff[:])}},
	})
	if err != nil {
		return nil, err
	}
	csum := sha256.Sum256(config)
	configName := hex.EncodeToString(csum[:]) + ".json"
	manifest, err := json.Marshal([]map[string]any{{"Config": configName, "RepoTags": []string{ref}, "Layers": []string{"layer.tar"}}})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	w := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		b    []byte
	}{{"layer.tar", layer.Bytes()}, {configName, config}, {"manifest.json", manifest}} {
		if err := w.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.b)), ModTime: time.Unix(0, 0)}); err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, bytes.NewReader(f.b)); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
