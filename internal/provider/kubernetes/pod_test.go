package kubernetes

import (
	"bytes"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/stacyvm/stacyvm/internal/provider"
	"github.com/stacyvm/stacyvm/internal/provider/providertest"
)

// TestPodSpec checks the pod a spawn asks for, without a cluster: its
// security settings, its resources, the labels that adoption and the
// NetworkPolicy select on, and which pods that policy selects.
func TestPodSpec(t *testing.T) {
	cfg, err := Config{AgentImage: "agent:1", NodeName: "n1", Namespace: "ns"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	policy, err := metav1.LabelSelectorAsSelector(&denyAll("ns").Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		change       func(*Config)
		spec         provider.Spec
		network      string
		memMi, milli int64 // limits
		reqMi, reqM  int64 // requests
		runtimeClass string
	}{
		{name: "defaults", spec: provider.Spec{}, network: "none",
			memMi: 1024, milli: 1000, reqMi: 64, reqM: 50},
		{name: "spawn resources", spec: provider.Spec{MemoryMB: 256, VCPUs: 2}, network: "bridge",
			memMi: 256, milli: 2000, reqMi: 64, reqM: 50},
		{name: "requests capped by limits", spec: provider.Spec{MemoryMB: 32}, network: "none",
			change: func(c *Config) { c.RequestMilliCPU = 4000 },
			memMi:  32, milli: 1000, reqMi: 32, reqM: 1000},
		{name: "runtime class", spec: provider.Spec{}, network: "bridge",
			change: func(c *Config) { c.RuntimeClass = "gvisor" },
			memMi:  1024, milli: 1000, reqMi: 64, reqM: 50, runtimeClass: "gvisor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			if tc.change != nil {
				tc.change(&c)
			}
			p := &Provider{cfg: c}
			spec := tc.spec
			spec.ID, spec.Image, spec.Instance, spec.OwnerID = "sb-1", "img:1", "inst-1", "owner-1"
			pod, err := p.podSpec(spec, tc.network, time.Unix(1, 0))
			if err != nil {
				t.Fatal(err)
			}
			checkPod(t, pod, podWant{
				id: "sb-1", instance: "inst-1", network: tc.network, runtimeClass: tc.runtimeClass,
				memMi: tc.memMi, milli: tc.milli, reqMi: tc.reqMi, reqM: tc.reqM,
			})
			if pod.Spec.NodeName != "n1" || pod.Namespace != "ns" {
				t.Errorf("node %q namespace %q, want n1 and ns", pod.Spec.NodeName, pod.Namespace)
			}
			if got, want := policy.Matches(labels.Set(pod.Labels)), tc.network == "none"; got != want {
				t.Errorf("deny-all NetworkPolicy selects the %s pod: %v, want %v", tc.network, got, want)
			}
		})
	}
}

type podWant struct {
	id, instance, network, runtimeClass string
	memMi, milli, reqMi, reqM           int64
}

// checkPod asserts what every sandbox pod must be: no service account
// token, no privilege, the spawn's limits, and the labels that adoption
// and the NetworkPolicy select on.
func checkPod(t *testing.T, pod *corev1.Pod, w podWant) {
	t.Helper()
	s := pod.Spec
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken = %s, want false", boolp(s.AutomountServiceAccountToken))
	}
	if s.EnableServiceLinks == nil || *s.EnableServiceLinks {
		t.Errorf("enableServiceLinks = %s, want false", boolp(s.EnableServiceLinks))
	}
	if s.HostNetwork || s.HostPID || s.HostIPC {
		t.Errorf("host namespaces shared: network %v pid %v ipc %v", s.HostNetwork, s.HostPID, s.HostIPC)
	}
	if s.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q, want Never", s.RestartPolicy)
	}
	gotRC := ""
	if s.RuntimeClassName != nil {
		gotRC = *s.RuntimeClassName
	}
	if gotRC != w.runtimeClass {
		t.Errorf("runtimeClassName %q, want %q", gotRC, w.runtimeClass)
	}
	for _, v := range s.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s is a hostPath", v.Name)
		}
	}
	containers := append(slices.Clone(s.InitContainers), s.Containers...)
	if len(containers) != 2 {
		t.Fatalf("%d containers, want the init container and the sandbox", len(containers))
	}
	for _, c := range containers {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: no securityContext", c.Name)
			continue
		case sc.Privileged == nil || *sc.Privileged:
			t.Errorf("%s: privileged = %s, want false", c.Name, boolp(sc.Privileged))
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s: allowPrivilegeEscalation = %s, want false", c.Name, boolp(sc.AllowPrivilegeEscalation))
		case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s: capabilities %+v, want all dropped and none added", c.Name, sc.Capabilities)
		case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Errorf("%s: seccomp %+v, want RuntimeDefault", c.Name, sc.SeccompProfile)
		}
		for _, q := range []struct {
			what string
			got  resource.Quantity
			want *resource.Quantity
		}{
			{"memory limit", c.Resources.Limits[corev1.ResourceMemory], resource.NewQuantity(w.memMi<<20, resource.BinarySI)},
			{"cpu limit", c.Resources.Limits[corev1.ResourceCPU], resource.NewMilliQuantity(w.milli, resource.DecimalSI)},
			{"memory request", c.Resources.Requests[corev1.ResourceMemory], resource.NewQuantity(w.reqMi<<20, resource.BinarySI)},
			{"cpu request", c.Resources.Requests[corev1.ResourceCPU], resource.NewMilliQuantity(w.reqM, resource.DecimalSI)},
		} {
			if q.got.Cmp(*q.want) != 0 {
				t.Errorf("%s: %s %s, want %s", c.Name, q.what, q.got.String(), q.want.String())
			}
		}
	}
	for k, v := range map[string]string{
		LabelProvider: "kubernetes",
		LabelID:       w.id,
		LabelInstance: w.instance,
		LabelNetwork:  w.network,
		labelManaged:  "stacyvm",
	} {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, pod.Labels[k], v)
		}
	}
	if pod.Annotations[AnnotationInstance] != w.instance {
		t.Errorf("annotation %s = %q, want %q", AnnotationInstance, pod.Annotations[AnnotationInstance], w.instance)
	}
}

// TestPodOnCluster spawns a "none" sandbox on the cluster, on its default
// runtime and on the RuntimeClass it offers (gVisor in scripts/test), and
// checks what the API server stored and what the sandbox sees: the pod as
// TestPodSpec wants it, the deny-all NetworkPolicy, no token, no
// capabilities, and the runtime really being the one asked for (gVisor's
// own kernel, or the host's).
func TestPodOnCluster(t *testing.T) {
	for _, rc := range runtimeClasses() {
		t.Run(rcName(rc), func(t *testing.T) {
			p := newProvider(t, func(c *Config) { c.RuntimeClass = rc })
			ctx := t.Context()
			id := providertest.NewID()
			instance := "inst-" + env.runID
			providertest.Spawn(t, p, provider.Spec{ID: id, Image: busyboxImage, MemoryMB: 256, VCPUs: 2,
				Network: "none", Instance: instance, OwnerID: "owner-1"})

			pod, err := p.pods().Get(ctx, podName(id), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkPod(t, pod, podWant{id: id, instance: instance, network: "none", runtimeClass: rc,
				memMi: 256, milli: 2000, reqMi: 64, reqM: 50})

			np, err := p.cs.NetworkingV1().NetworkPolicies(env.Namespace).Get(ctx, denyAllPolicy, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the deny-all NetworkPolicy: %v", err)
			}
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err != nil {
				t.Fatal(err)
			}
			if !sel.Matches(labels.Set(pod.Labels)) {
				t.Errorf("NetworkPolicy selector %s does not select the none pod (labels %v)", sel, pod.Labels)
			}
			types := slices.Sorted(slices.Values(np.Spec.PolicyTypes))
			if !slices.Equal(types, []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) > 0 || len(np.Spec.Egress) > 0 {
				t.Errorf("NetworkPolicy types %v ingress %v egress %v, want both types and no rules", np.Spec.PolicyTypes, np.Spec.Ingress, np.Spec.Egress)
			}

			// Adoption: a second provider (a restarted server) lists the
			// pod back from its labels and annotations alone.
			q := newProvider(t, func(c *Config) { c.RuntimeClass = rc })
			list, err := q.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(list, func(in provider.Info) bool { return in.ID == id })
			if i < 0 {
				t.Fatalf("List of a new provider misses %s", id)
			}
			if in := list[i]; in.Instance != instance || in.OwnerID != "owner-1" || in.Image != busyboxImage || in.Runtime != rc || in.State != provider.StateRunning {
				t.Errorf("adopted info %+v, want instance %s owner-1 image %s runtime %q running", in, instance, busyboxImage, rc)
			}

			run := func(script string) string {
				t.Helper()
				var out, errb bytes.Buffer
				st, err := p.Exec(ctx, id, provider.ExecRequest{Argv: []string{"sh", "-c", script}}, &out, &errb)
				if err != nil || st.ExitCode != 0 {
					t.Fatalf("exec %q: exit %d, %v, stderr %q", script, st.ExitCode, err, errb.String())
				}
				return out.String()
			}
			if out := run("ls /var/run/secrets/kubernetes.io 2>&1; grep '^Cap' /proc/self/status"); strings.Contains(out, "serviceaccount") {
				t.Errorf("a service account is mounted: %s", out)
			} else {
				for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
					if f := strings.Fields(l); len(f) == 2 && (f[0] == "CapEff:" || f[0] == "CapPrm:") && strings.Trim(f[1], "0") != "" {
						t.Errorf("the sandbox has capabilities: %s", l)
					}
				}
			}

			host, err := os.ReadFile("/proc/version")
			if err != nil {
				t.Fatal(err)
			}
			guest := run("cat /proc/version")
			if p.Capabilities().Isolation == provider.IsolationUserKernel {
				// gVisor's kernel is its own: its version is not the
				// host's, and its log says it is gVisor.
				if guest == string(host) {
					t.Errorf("RuntimeClass %s: the sandbox sees the host's kernel %q", rc, guest)
				}
				if dmesg := run("dmesg"); !strings.Contains(dmesg, "gVisor") {
					t.Errorf("RuntimeClass %s: dmesg does not mention gVisor: %q", rc, dmesg)
				}
			} else if guest != string(host) {
				t.Errorf("runtime %q: /proc/version %q, want the host's %q", rc, guest, host)
			}
		})
	}
}

// runtimeClasses are the runtimes the cluster tests cover: its default,
// and the RuntimeClass k8s-up.sh offers.
func runtimeClasses() []string {
	classes := []string{""}
	if env.RuntimeClass != "" {
		classes = append(classes, env.RuntimeClass)
	}
	return classes
}

func rcName(rc string) string {
	if rc == "" {
		return "default"
	}
	return rc
}

func boolp(b *bool) string {
	if b == nil {
		return "unset"
	}
	return strconv.FormatBool(*b)
}
