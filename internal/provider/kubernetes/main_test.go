package kubernetes

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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// These tests drive a real cluster: scripts/ci/k8s-up.sh starts a
// single-node one (etcd, kube-apiserver, kubelet, containerd) and writes
// the variables below to its env file. Without them the tests skip,
// saying so; with STACYVM_TEST_K8S=1 (set by scripts/test) they fail
// instead.
//
//	STACYVM_TEST_K8S_KUBECONFIG   admin kubeconfig
//	STACYVM_TEST_K8S_NAMESPACE    namespace with a "default" service account
//	STACYVM_TEST_K8S_NODE         node name for the pods (no scheduler runs)
//	STACYVM_TEST_K8S_CONTAINERD   the node's containerd socket: the agent
//	                              image is imported there (no registry)
//	STACYVM_TEST_K8S_RUNTIMECLASS optional: a RuntimeClass to run the suite on too

const busyboxImage = "stacyvm/busybox:test"

var env struct {
	skip         string
	kubeconfig   string
	namespace    string
	node         string
	runtimeClass string
	agentImage   string
	runID        string
}

func forced() bool { return os.Getenv("STACYVM_TEST_K8S") == "1" }

func needCluster(t testing.TB) {
	t.Helper()
	if env.skip == "" {
		return
	}
	if forced() {
		t.Fatalf("STACYVM_TEST_K8S=1 but %s (run scripts/ci/k8s-up.sh and source its env file)", env.skip)
	}
	t.Skipf("skipping: %s (run scripts/ci/k8s-up.sh and source its env file, or set STACYVM_TEST_K8S=1 to fail instead)", env.skip)
}

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	env.runID = fmt.Sprintf("t%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	env.kubeconfig = os.Getenv("STACYVM_TEST_K8S_KUBECONFIG")
	env.namespace = os.Getenv("STACYVM_TEST_K8S_NAMESPACE")
	env.node = os.Getenv("STACYVM_TEST_K8S_NODE")
	env.runtimeClass = os.Getenv("STACYVM_TEST_K8S_RUNTIMECLASS")
	if env.kubeconfig == "" || env.namespace == "" {
		env.skip = "no cluster: STACYVM_TEST_K8S_KUBECONFIG and STACYVM_TEST_K8S_NAMESPACE are not set"
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "stacyvm-k8s-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	env.agentImage, err = importAgentImage(ctx, tmp, os.Getenv("STACYVM_TEST_K8S_CONTAINERD"))
	cancel()
	if err != nil {
		env.skip = err.Error()
		return m.Run()
	}
	code := m.Run()
	if left := leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: tests left %d pod(s) behind: %s\n", len(left), strings.Join(left, ", "))
		code = 1
	}
	return code
}

// testConfig is a provider configuration for the test cluster.
func testConfig() Config {
	return Config{
		Kubeconfig: env.kubeconfig,
		Namespace:  env.namespace,
		NodeName:   env.node,
		AgentImage: env.agentImage,
		PullPolicy: PullNever, // nothing can be pulled here: a missing image must fail, not wait
		Labels:     map[string]string{LabelTest: env.runID},
	}
}

func newProvider(t testing.TB, change func(*Config)) *Provider {
	t.Helper()
	needCluster(t)
	cfg := testConfig()
	if change != nil {
		change(&cfg)
	}
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// leftovers lists this run's pods, and deletes them.
func leftovers() []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := testConfig()
	cfg.AgentImage = "unused"
	p, err := New(ctx, cfg)
	if err != nil {
		return []string{"(cannot list: " + err.Error() + ")"}
	}
	defer p.Close()
	list, err := p.pods().List(ctx, metav1.ListOptions{LabelSelector: LabelTest + "=" + env.runID})
	if err != nil {
		return []string{"(cannot list: " + err.Error() + ")"}
	}
	var names []string
	zero := int64(0)
	for _, pod := range list.Items {
		if pod.DeletionTimestamp == nil {
			names = append(names, pod.Name+" "+string(pod.Status.Phase))
		}
		_ = p.pods().Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}
	return names
}

// importAgentImage builds the agent, packs it into a one-layer image (the
// archive `docker save` writes) named after its content, and imports it
// into the node's containerd. Nothing is imported when that name exists.
func importAgentImage(ctx context.Context, dir, containerd string) (string, error) {
	if containerd == "" {
		return "", fmt.Errorf("STACYVM_TEST_K8S_CONTAINERD is not set: no way to give the node the agent image")
	}
	bin := os.Getenv("STACYVM_AGENT_BIN")
	if bin == "" {
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
