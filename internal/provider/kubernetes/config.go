package kubernetes

import (
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/stacyvm/stacyvm/internal/agent"
	"github.com/stacyvm/stacyvm/internal/errdefs"
)

// Config configures the Kubernetes provider. AgentImage is the one field
// without a default: no public image of the agent can be assumed, so an
// operator builds one (docs/kubernetes.md) and names it.
type Config struct {
	// Name is the provider's registry name and the value of its
	// stacyvm.io/provider label; "kubernetes" when empty. Two providers on
	// one cluster (say one per RuntimeClass) need different names, so that
	// each adopts only its own pods.
	Name string
	// Kubeconfig is the path of a kubeconfig file. Empty means the
	// in-cluster service account when the server runs in a pod, else
	// $KUBECONFIG, else ~/.kube/config.
	Kubeconfig string
	// Context is the kubeconfig context; empty means its current one.
	Context string
	// Namespace holds the sandboxes' pods. Default "stacyvm".
	Namespace string
	// RuntimeClass is the pods' runtimeClassName ("gvisor", "kata"…);
	// empty means the cluster's default runtime.
	RuntimeClass string
	// NodeName pins every pod to this node (spec.nodeName), which needs no
	// scheduler; empty lets the scheduler place pods.
	NodeName string
	// AgentImage is an image holding the static agent binary at
	// /stacyvm-agent; an init container copies it into each pod.
	AgentImage string
	// PullPolicy is the sandbox images' imagePullPolicy: "IfNotPresent"
	// (the default), "Always" or "Never". The agent image is always
	// IfNotPresent.
	PullPolicy string
	// Network is the network of sandboxes whose Spec.Network is empty:
	// "none" (the default) or "bridge". "none" pods carry a label that a
	// deny-all NetworkPolicy selects; enforcing it is the cluster's
	// network plugin's job.
	Network string
	// User runs every container as this numeric "uid[:gid]" with
	// runAsNonRoot, instead of the image's user; the sandbox then gets
	// a /workspace volume it owns, and HOME=/workspace.
	User string
	// MemoryMB and VCPUs are the limits of sandboxes whose Spec leaves
	// them zero. Defaults 1024 and 1.
	MemoryMB int
	VCPUs    int
	// RequestMilliCPU and RequestMemoryMB are every pod's resource
	// requests (capped by its limits): what the scheduler reserves, so
	// that many mostly idle sandboxes fit a node, as on Docker. Defaults
	// 50 and 64.
	RequestMilliCPU int
	RequestMemoryMB int
	// ReadyTimeout bounds how long Spawn waits for the pod to run and its
	// agent to answer. Default 2 minutes.
	ReadyTimeout time.Duration
	// DeleteGrace is the grace period of a Destroy's pod deletion; Destroy
	// waits for the kubelet to finish it (up to DeleteWait), then deletes
	// the pod object at once. Defaults 1s and 30s.
	DeleteGrace time.Duration
	DeleteWait  time.Duration
	// Labels are added to every pod; tests use them to find their own
	// leftovers. Keys must not be in the stacyvm.io/ prefix except
	// stacyvm.io/test.
	Labels map[string]string
	Logger *slog.Logger
	// AgentLimits bound what the host accepts from each sandbox's agent;
	// zero fields take agent.DefaultLimits.
	AgentLimits agent.Limits
}

// Pull policies.
const (
	PullIfNotPresent = "IfNotPresent"
	PullAlways       = "Always"
	PullNever        = "Never"
)

var (
	// A DNS-1123 label: pod names, hostnames and label values derive
	// from sandbox IDs and names.
	validLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	validUser  = regexp.MustCompile(`^[0-9]+(:[0-9]+)?$`)
)

// maxIDLen bounds sandbox IDs: "stacyvm-" + ID is the pod name, and the ID
// is a label value (63 characters at most).
const maxIDLen = 63 - len(podPrefix)

// withDefaults returns c with every default filled in, or an
// errdefs.ErrInvalidArgument error naming the bad field.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, errdefs.New(errdefs.ErrInvalidArgument, "kubernetes: "+format, args...)
	}
	if c.Name == "" {
		c.Name = "kubernetes"
	}
	if !validLabel.MatchString(c.Name) || len(c.Name) > 63 {
		return bad("name %q: want a DNS label (lowercase letters, digits, '-')", c.Name)
	}
	if c.Namespace == "" {
		c.Namespace = "stacyvm"
	}
	if !validLabel.MatchString(c.Namespace) || len(c.Namespace) > 63 {
		return bad("namespace %q: want a DNS label", c.Namespace)
	}
	if c.AgentImage == "" {
		return c, errdefs.WithHint(errdefs.New(errdefs.ErrInvalidArgument, "kubernetes: agent_image is not set"),
			"build an image holding the static agent at /stacyvm-agent and set kubernetes.agent_image (docs/kubernetes.md)")
	}
	switch c.PullPolicy {
	case "":
		c.PullPolicy = PullIfNotPresent
	case PullIfNotPresent, PullAlways, PullNever:
	default:
		return bad("pull_policy %q: want IfNotPresent, Always or Never", c.PullPolicy)
	}
	switch c.Network {
	case "":
		c.Network = "none"
	case "none", "bridge":
	default:
		return bad("network %q: want none or bridge", c.Network)
	}
	if c.User != "" && !validUser.MatchString(c.User) {
		return bad("user %q: want a numeric uid or uid:gid (65534 is nobody on most images)", c.User)
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 1024
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.RequestMilliCPU == 0 {
		c.RequestMilliCPU = 50
	}
	if c.RequestMemoryMB == 0 {
		c.RequestMemoryMB = 64
	}
	if c.MemoryMB < 0 || c.VCPUs < 0 || c.RequestMilliCPU < 0 || c.RequestMemoryMB < 0 {
		return bad("negative memory_mb, vcpus or request")
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Minute
	}
	if c.DeleteGrace == 0 {
		c.DeleteGrace = time.Second
	}
	if c.DeleteWait == 0 {
		c.DeleteWait = 30 * time.Second
	}
	if c.ReadyTimeout < 0 || c.DeleteGrace < 0 || c.DeleteWait < 0 {
		return bad("negative ready_timeout, delete_grace or delete_wait")
	}
	for k := range c.Labels {
		if strings.HasPrefix(k, labelPrefix) && k != LabelTest {
			return bad("label %q: the %s prefix is reserved", k, labelPrefix)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// uidGID splits User; ok is false when User is empty (the image's user).
func (c Config) uidGID() (uid, gid int64, ok bool) {
	if c.User == "" {
		return 0, 0, false
	}
	u, g, hasGID := strings.Cut(c.User, ":")
	uid, _ = strconv.ParseInt(u, 10, 64)
	gid = uid
	if hasGID {
		gid, _ = strconv.ParseInt(g, 10, 64)
	}
	return uid, gid, true
}

func checkID(id string) error {
	if len(id) > maxIDLen || !validLabel.MatchString(id) {
		return errdefs.New(errdefs.ErrInvalidArgument,
			"kubernetes: sandbox id %q: want 1-%d lowercase letters, digits or '-'", id, maxIDLen)
	}
	return nil
}
