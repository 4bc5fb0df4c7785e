package kubernetes

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stacyvm/stacyvm/internal/provider/kubernetes/k8stest"
)

// These tests drive a real cluster (package k8stest); without one they
// skip, saying so, and with STACYVM_TEST_K8S=1 (set by scripts/test) they
// fail instead.

const busyboxImage = "stacyvm/busybox:test"

var env struct {
	k8stest.Cluster
	agentImage string
	runID      string
}

func needCluster(t testing.TB) { env.Need(t) }

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	env.runID = fmt.Sprintf("t%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)
	env.Cluster = k8stest.FromEnv()
	if env.Skip != "" {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	img, err := env.ImportAgentImage(ctx, os.Getenv("STACYVM_AGENT_BIN"))
	cancel()
	if err != nil {
		env.Skip = err.Error()
		return m.Run()
	}
	env.agentImage = img
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
		Kubeconfig: env.Kubeconfig,
		Namespace:  env.Namespace,
		NodeName:   env.Node,
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
