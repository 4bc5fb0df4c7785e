package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/stacyvm/stacyvm/internal/provider/kubernetes/k8stest"
)

// TestKillNineAndRestartWithKubernetes is TestKillNineAndRestartWithDocker
// on a real cluster: serve (the real binary, kubernetes provider), spawn,
// SIGKILL the server, delete one pod behind its back, start the server
// again on the same database: the surviving sandbox works again (exec and
// files, through a re-attached agent), the vanished one is destroyed, and
// a pod of another server (another database, so another instance) is
// neither adopted nor deleted.
func TestKillNineAndRestartWithKubernetes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real servers and pods; skipped in -short mode")
	}
	cluster := k8stest.FromEnv()
	cluster.Need(t)
	const image = "stacyvm/busybox:test"
	dir := t.TempDir()
	bin := buildBinaries(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	agentImage, err := cluster.ImportAgentImage(ctx, filepath.Join(bin, "stacyvm-agent"))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	pods := k8s.NewForConfigOrDie(rc).CoreV1().Pods(cluster.Namespace)
	zero := int64(0)
	deletePod := func(id string) {
		err := pods.Delete(context.Background(), "stacyvm-"+id, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete pod of %s: %v", id, err)
		}
	}

	start := func(db string) *serveProcess {
		t.Helper()
		return startServe(t, bin, dir, "", []string{"STACYVM_PROVIDER_ENABLED=kubernetes",
			"STACYVM_KUBERNETES_KUBECONFIG=" + cluster.Kubeconfig,
			"STACYVM_KUBERNETES_NAMESPACE=" + cluster.Namespace,
			"STACYVM_KUBERNETES_NODE_NAME=" + cluster.Node,
			"STACYVM_KUBERNETES_AGENT_IMAGE=" + agentImage,
			"STACYVM_KUBERNETES_PULL_POLICY=Never"}, "--db", db)
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
		t.Cleanup(func() { deletePod(sb.ID) })
		return sb.ID
	}
	podGone := func(id string) bool {
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if _, err := pods.Get(context.Background(), "stacyvm-"+id, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}

	db := filepath.Join(dir, "stacyvm.db")
	s1 := start(db)
	alive, vanished := spawn(s1), spawn(s1)
	if code, out := call(s1, "POST", "/sandboxes/"+alive+"/files", map[string]string{"path": "/workspace/keep.txt", "content": "kept\n"}); code != 200 {
		t.Fatalf("write: %d %s", code, out)
	}
	s1.kill9()
	deletePod(vanished)
	if !podGone(vanished) {
		t.Fatalf("the pod of %s was not deleted", vanished)
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
		t.Errorf("vanished pod: %d %s, want 404 SANDBOX_DESTROYED", code, out)
	}
	if code, out := call(s2, "GET", "/sandboxes/"+orphan, nil); code != 404 {
		t.Errorf("another instance's sandbox: %d %s, want 404 (not adopted)", code, out)
	}
	if pod, err := pods.Get(context.Background(), "stacyvm-"+orphan, metav1.GetOptions{}); err != nil || pod.DeletionTimestamp != nil {
		t.Errorf("another instance's pod after the restart: %v, want it kept", err)
	}
	if code, out := call(s2, "DELETE", "/sandboxes/"+alive, nil); code != 200 {
		t.Errorf("destroy %s: %d %s", alive, code, out)
	}
	if _, err := pods.Get(context.Background(), "stacyvm-"+alive, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod of %s after destroy: %v, want not found", alive, err)
	}
	s2.stop(t)
}
